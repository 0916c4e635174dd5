"""Resampling to 16 kHz in pieces, with the same bits as resampy on the whole signal.

The reference resamples the whole track at once with resampy's ``kaiser_best``
filter; a 10-minute 44.1 kHz track then holds the input, the output and the
output's time table (about 370 MB) at the same time. ``StreamResampler`` takes
the track in pieces and keeps only a filter's width of input.

Why the bits are the same: resampy computes output ``t`` from the time
``t_out[t] = t * (1 / ratio)`` (one rounding, whatever else is computed) and
the input samples within the filter's half-width of ``int(t_out[t])``, in a
fixed order. Here each batch of outputs gets the same ``t_out`` values, shifted
by a whole number ``s`` of input samples together with the input slice (the
shift is exact in float64 below 2**53, and so are the integer and fractional
parts resampy takes of it), and each slice reaches at least one half-width past
the outputs' samples, so no wing is cut where the whole signal does not cut it.
``tests/test_resample.py`` compares the two bit for bit.

It uses resampy's filter table and its compiled inner loop (``resampy.filters``,
``resampy.interpn``); the pyproject range keeps resampy on the 0.4 series they
belong to.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

TARGET_RATE = 16000
_BATCH = 1 << 17  # outputs per call of the inner loop (8 s at 16 kHz): amortises the call


class StreamResampler:
    """Mono float64 pieces at ``sample_rate`` in, 16 kHz pieces out.

    ``push(piece)`` returns the outputs that piece completes (possibly none);
    ``finish()`` the rest. Concatenated, they equal
    ``resampy.resample(whole, sample_rate, 16000, filter="kaiser_best")``, whose
    length is ``int(n * 16000 / sample_rate)``. At 16 kHz pieces pass unchanged.
    """

    def __init__(self, sample_rate: int, filter: str = "kaiser_best") -> None:
        self.sample_rate = int(sample_rate)
        self.received = 0  # input samples pushed so far
        self._pieces: list[np.ndarray] = []
        self._base = 0  # absolute index of the first sample kept in _pieces
        self._next = 0  # next output index
        if self.sample_rate == TARGET_RATE:
            return
        from resampy.filters import get_filter
        from resampy.interpn import resample_f_s

        self._loop = resample_f_s
        ratio = float(TARGET_RATE) / self.sample_rate  # as resampy.resample computes it
        win, self._precision, _ = get_filter(filter)
        if ratio < 1:
            win = ratio * win
        self._win = win
        self._delta = np.diff(win, append=win[-1])
        self._scale = min(1.0, ratio)
        self._increment = 1.0 / ratio
        # The most input samples either wing reads, plus one: slices reach this far past
        # their outputs' samples.
        self._reach = len(win) // int(self._scale * self._precision) + 1

    def push(self, piece: np.ndarray) -> np.ndarray:
        piece = np.asarray(piece, dtype=np.float64)
        self.received += len(piece)
        if self.sample_rate == TARGET_RATE:
            return piece
        if len(piece):
            self._pieces.append(piece)
        # Output t needs input up to int(t_out[t]) + reach (two outputs of margin for rounding).
        ready = int((self.received - self._reach - 1) / self._increment) - 2
        if ready - self._next < _BATCH:
            return np.zeros(0, np.float64)
        return self._run(ready, final=False)

    def finish(self) -> np.ndarray:
        """The remaining outputs, once every piece is in."""
        if self.sample_rate == TARGET_RATE:
            return np.zeros(0, np.float64)
        total = int(self.received * float(TARGET_RATE) / float(self.sample_rate))
        return self._run(total, final=True)

    def _run(self, stop: int, final: bool) -> np.ndarray:
        buffer = np.concatenate(self._pieces) if len(self._pieces) != 1 else self._pieces[0]
        out = []
        while self._next < stop:
            t = np.arange(self._next, min(stop, self._next + _BATCH))
            t_out = t * self._increment  # the same values resampy computes for these t
            first, last = int(t_out[0]), int(t_out[-1])
            start = max(0, first - self._reach)
            end = self.received if final else last + self._reach + 1
            if start < self._base or end > self.received:  # `ready` and `keep` rule this out
                raise AssertionError("resampler slice outside the kept input")
            y = np.zeros(len(t), np.float64)
            self._loop(buffer[start - self._base:end - self._base], t_out - start,
                       self._win, self._delta, self._precision, self._scale, y)
            out.append(y)
            self._next = int(t[-1]) + 1
        # Keep only what the next output's left wing can read.
        keep = max(self._base, int(self._next * self._increment) - self._reach)
        rest = buffer[keep - self._base:]
        self._pieces = [rest.copy()] if len(rest) else []
        self._base = keep
        return np.concatenate(out) if out else np.zeros(0, np.float64)


def resample_pieces(pieces: Iterable[np.ndarray], sample_rate: int) -> Iterator[np.ndarray]:
    """16 kHz pieces of a stream of pieces at ``sample_rate`` (empty ones skipped)."""
    resampler = StreamResampler(sample_rate)
    for piece in pieces:
        y = resampler.push(piece)
        if len(y):
            yield y
    y = resampler.finish()
    if len(y):
        yield y
