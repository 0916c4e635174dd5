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


def decode_audio(path: str | Path) -> AudioTrack | None:
    """Decode the audio of ``path`` as the reference does (see the module docstring).

    Returns None when the file has no audio stream (the caller substitutes
    :func:`silence`). Raises InputError (one line) for a missing, unreadable or
    undecodable file.
    """
    container = open_container(path)
    problems: list[str] = []
    try:
        stream = pick_audio_stream(container.streams.audio)
        if stream is None:
            return None
        codec = stream.codec_context.name
        if codec == "aac":
            adts = _remux_to_adts(container, stream, path, problems)
            if adts is not None:
                with av.open(adts, "r", format="aac") as raw:
                    track = _collect(_decode_frames(raw.demux(raw.streams.audio[0]), problems),
                                     path, codec, adts_copy=True)
                _warn_if_damaged(path, track, problems)
                return track
            problems.clear()
            container.close()
            container = open_container(path)
            stream = pick_audio_stream(container.streams.audio)
        track = _collect(_decode_frames(_demux_until_error(container, stream, problems), problems),
                         path, codec, adts_copy=False)
        _warn_if_damaged(path, track, problems)
        return track
    finally:
        container.close()


def _warn_if_damaged(path: str | Path, track: AudioTrack, problems: list[str]) -> None:
    if problems:
        log.warning("%s: the audio stream is damaged (%s); %.2f s of audio decoded",
                    path, "; ".join(dict.fromkeys(problems)), track.duration)


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


def _collect(frames: Iterator[av.AudioFrame], path, codec: str, adts_copy: bool) -> AudioTrack:
    """s16 at the source rate and layout, / 32768, channel mean; float64 mono."""
    resampler = None
    rate = channels = None
    pieces: list[np.ndarray] = []

    def take(out_frames) -> None:
        for f in out_frames:
            # Packed s16 comes out as [1, n * channels], interleaved.
            pcm = f.to_ndarray().reshape(-1, channels)
            # The exact integer sum of the channels: a quarter of the float64 samples' memory
            # while a long track is gathered (see the division below).
            pieces.append(pcm.sum(axis=1, dtype=np.int32))

    try:
        for frame in frames:
            if resampler is None:
                rate, channels = frame.sample_rate, frame.layout.nb_channels
                resampler = av.AudioResampler(format="s16", layout=frame.layout, rate=rate)
            elif frame.sample_rate != rate or frame.layout.nb_channels != channels:
                raise InputError(f"{path}: the audio changes rate or channel count mid-stream "
                                 f"({rate} Hz x {channels} -> {frame.sample_rate} Hz x "
                                 f"{frame.layout.nb_channels}); not supported")
            take(resampler.resample(frame))
        if resampler is not None:
            take(resampler.resample(None))
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: audio cannot be converted ({reason(exc)})") from exc
    if resampler is None:
        raise InputError(f"{path}: no audio frame could be decoded")
    sums = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    del pieces[:]
    # The reference divides by 32768, then averages the channels: the first division is exact
    # (a power of two) and the sum of the quotients is exact too, so both are one rounding of
    # sum / (32768 * channels), the same float64 bits as this single division.
    samples = sums / (32768.0 * channels)
    return AudioTrack(samples, int(rate), int(channels), codec=codec, adts_copy=adts_copy)
