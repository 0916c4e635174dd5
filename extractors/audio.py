"""Audio decoding with PyAV, as the published UnAV-100 features got their audio.

The reference (v-iashin/video_features) runs ``ffmpeg -i X.mp4 -acodec copy X.aac``
and then ``ffmpeg -i X.aac X.wav``. Copying AAC into a raw ADTS stream loses the
mp4 edit list, so every packet is decoded, including the encoder pre-roll packet
the mp4 hides (flagged discard, pts -1024): about 23 ms of priming that the
published features contain. Here the packets are remuxed into an in-memory ADTS
stream and decoded from it: same packets, same decoder, no ffmpeg binary and no
temporary file. Other codecs cannot be copied to ADTS; they are decoded as the
container presents them.

Samples then pass through signed 16-bit (libswresample's conversion, the one
ffmpeg uses when it writes the WAV), are divided by 32768 and averaged over
channels, in float64, at the source rate.

Like ffmpeg, a packet the decoder rejects is skipped and a read error ends the
stream; either is reported as a warning with how much audio was kept.

Extraction reads the track in pieces (:func:`open_audio`), so a long video's
decoded audio is never in memory whole; :func:`decode_audio` gathers the same
pieces into one array.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from extractors.media import open_container, pick_audio_stream, reason
from weights.errors import InputError

log = logging.getLogger(__name__)

VGGISH_RATE = 16000


@dataclass(frozen=True)
class AudioTrack:
    """Mono audio at its source rate.

    ``samples``: float64 ``[n]``, the channel average of ``s16 / 32768``.
    ``adts_copy``: True when the samples came through the ADTS copy (AAC), i.e.
    the encoder pre-roll is included like in the reference.
    """

    samples: np.ndarray
    sample_rate: int
    source_channels: int = 1
    codec: str = ""
    adts_copy: bool = False

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def silence(seconds: float, sample_rate: int = VGGISH_RATE) -> AudioTrack:
    """A silent track of ``seconds``: what a video without audio contributes.

    The caller decides how long it must be (e.g. the video's duration) and
    should warn the user; VGGish turns it into a constant embedding.
    """
    n = max(0, int(round(seconds * sample_rate)))
    return AudioTrack(np.zeros(n, np.float64), sample_rate, 1, codec="silence")


class AudioReader:
    """An audio stream being decoded: mono float64 pieces at the source rate.

    ``sample_rate`` and ``source_channels`` are those of the first decoded frame
    (known once the reader is open); ``num_samples`` counts what ``pieces()`` has
    yielded. Pieces are ``s16 / 32768`` averaged over channels, the same values
    as :func:`decode_audio`'s whole track cut into pieces. Use as a context
    manager, or call ``close()``.
    """

    def __init__(self, path: str | Path, container, frames: Iterator[av.AudioFrame], codec: str,
                 adts_copy: bool, problems: list[str]) -> None:
        self.path, self.codec, self.adts_copy = path, codec, adts_copy
        self._container, self._frames, self._problems = container, frames, problems
        self.num_samples = 0
        self._to_s16: av.AudioResampler | None = None  # libswresample: format only, same rate
        self._flushed = False
        self._first = self._next_piece()
        if self._first is None:
            raise InputError(f"{path}: no audio frame could be decoded")

    @property
    def duration(self) -> float:
        """Seconds read so far (the whole track's, once ``pieces()`` is exhausted)."""
        return self.num_samples / self.sample_rate

    def pieces(self) -> Iterator[np.ndarray]:
        """The decoded samples, piece by piece; warns at the end if the stream was damaged."""
        piece = self._first
        self._first = None
        while piece is not None:
            self.num_samples += len(piece)
            yield piece
            piece = self._next_piece()
        _warn_if_damaged(self.path, self.duration, self._problems)

    def _next_piece(self) -> np.ndarray | None:
        try:
            for frame in self._frames:
                if self._to_s16 is None:
                    self.sample_rate, self.source_channels = int(frame.sample_rate), frame.layout.nb_channels
                    self._to_s16 = av.AudioResampler(format="s16", layout=frame.layout, rate=frame.sample_rate)
                elif frame.sample_rate != self.sample_rate or frame.layout.nb_channels != self.source_channels:
                    raise InputError(f"{self.path}: the audio changes rate or channel count mid-stream "
                                     f"({self.sample_rate} Hz x {self.source_channels} -> "
                                     f"{frame.sample_rate} Hz x {frame.layout.nb_channels}); not supported")
                piece = self._mono(self._to_s16.resample(frame))
                if len(piece):
                    return piece
            if self._to_s16 is not None and not self._flushed:
                self._flushed = True
                piece = self._mono(self._to_s16.resample(None))
                if len(piece):
                    return piece
        except av.error.FFmpegError as exc:
            raise InputError(f"{self.path}: audio cannot be converted ({reason(exc)})") from exc
        return None

    def _mono(self, frames) -> np.ndarray:
        """s16 frames -> their channel mean / 32768 as float64."""
        channels = self.source_channels
        # Packed s16 comes out as [1, n * channels], interleaved. The exact integer sum of the
        # channels, divided once: the reference divides by 32768 (exact, a power of two), then
        # averages, and the sum of the quotients is exact too, so both are one rounding of
        # sum / (32768 * channels): the same float64 bits.
        sums = [f.to_ndarray().reshape(-1, channels).sum(axis=1, dtype=np.int32) for f in frames]
        if not sums:
            return np.zeros(0, np.float64)
        return (np.concatenate(sums) if len(sums) > 1 else sums[0]) / (32768.0 * channels)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_audio(path: str | Path) -> AudioReader | None:
    """Start decoding the audio of ``path`` as the reference does (see the module docstring).

    Returns None when the file has no audio stream (the caller substitutes
    :func:`silence`). Raises InputError (one line) for a missing, unreadable or
    undecodable file. Only the compressed stream and a piece at a time are held:
    the decoded track is never in memory whole.
    """
    container = open_container(path)
    try:
        stream = pick_audio_stream(container.streams.audio)
        if stream is None:
            container.close()
            return None
        codec = stream.codec_context.name
        problems: list[str] = []
        if codec == "aac":
            adts = _remux_to_adts(container, stream, path, problems)
            if adts is not None:
                container.close()
                container = av.open(adts, "r", format="aac")
                frames = _decode_frames(container.demux(container.streams.audio[0]), problems)
                return AudioReader(path, container, frames, codec, True, problems)
            problems.clear()
            container.close()
            container = open_container(path)
            stream = pick_audio_stream(container.streams.audio)
        frames = _decode_frames(_demux_until_error(container, stream, problems), problems)
        return AudioReader(path, container, frames, codec, False, problems)
    except BaseException:
        container.close()
        raise


def decode_audio(path: str | Path) -> AudioTrack | None:
    """The whole decoded track of ``path`` (see :func:`open_audio`); None without audio."""
    reader = open_audio(path)
    if reader is None:
        return None
    with reader:
        pieces = list(reader.pieces())
    return AudioTrack(np.concatenate(pieces), reader.sample_rate, reader.source_channels,
                      codec=reader.codec, adts_copy=reader.adts_copy)


def _warn_if_damaged(path: str | Path, seconds: float, problems: list[str]) -> None:
    if problems:
        log.warning("%s: the audio stream is damaged (%s); %.2f s of audio decoded",
                    path, "; ".join(dict.fromkeys(problems)), seconds)


def resample_to_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample mono float64 audio to 16 kHz with resampy's ``kaiser_best`` filter.

    Output length ``int(n * 16000 / sample_rate)``; audio already at 16 kHz is
    returned as is (the reference skips resampling then).
    """
    import resampy  # imported here: numba start-up is slow and only audio needs it

    x = np.asarray(samples, dtype=np.float64)
    if sample_rate == VGGISH_RATE:
        return x
    if int(len(x) * float(VGGISH_RATE) / float(sample_rate)) < 1:
        raise InputError(f"audio too short to resample: {len(x)} samples at {sample_rate} Hz")
    return resampy.resample(x, sample_rate, VGGISH_RATE, filter="kaiser_best")


# ---------------------------------------------------------------- internals


def _demux_until_error(container, stream, problems: list[str]) -> Iterator[av.Packet]:
    """Packets of ``stream``; a read error ends the stream like EOF (ffmpeg keeps
    what it read from a file with a broken tail) and is noted in ``problems``."""
    try:
        for packet in container.demux(stream):
            if packet.size:
                yield packet
    except av.error.FFmpegError as exc:
        problems.append(f"reading stopped: {reason(exc)}")


def _remux_to_adts(container, stream, path, problems: list[str]) -> io.BytesIO | None:
    """Every AAC packet, discard-flagged pre-roll included, in an ADTS byte stream;
    None if the ADTS muxer refuses this AAC flavour."""
    buf = io.BytesIO()
    try:
        out = av.open(buf, "w", format="adts")
        try:
            target = out.add_stream_from_template(stream)
            for packet in _demux_until_error(container, stream, problems):
                packet.stream = target
                out.mux(packet)
        finally:
            out.close()
    except (av.error.FFmpegError, ValueError):
        return None
    if buf.tell() == 0:
        raise InputError(f"{path}: the audio stream holds no readable packet")
    buf.seek(0)
    return buf


def _decode_frames(packets: Iterable[av.Packet], problems: list[str]) -> Iterator[av.AudioFrame]:
    """Decoded frames; a packet the decoder rejects is skipped, as ffmpeg does, and noted."""
    decoder = None
    skipped = 0
    for packet in packets:
        if decoder is None:
            decoder = packet.stream.codec_context
        try:
            yield from decoder.decode(packet)
        except av.error.FFmpegError:
            skipped += 1
    if skipped:
        problems.append(f"{skipped} packet(s) could not be decoded")
    if decoder is not None:
        try:
            yield from decoder.decode(None)
        except av.error.FFmpegError:
            pass
