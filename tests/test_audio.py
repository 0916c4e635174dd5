"""Audio decoding: the reference's ADTS copy (pre-roll included), the s16 step, odd files.

Kinds (see tests/helpers.py): exact by construction. Samples are 16-bit integers
divided by 32768 (exact in float64) and averaged over two channels (one IEEE
addition and a halving, exact on every CPU); lossy codecs are checked loosely.
"""
from fractions import Fraction

import av
import numpy as np
import pytest

from davel.errors import InputError
from extractors.audio import decode_audio, resample_to_16k, silence

from media_files import write_video


def test_sample_a_decodes_every_aac_packet_including_preroll(fixtures):
    track = decode_audio(fixtures / "media" / "sample_a.mp4")
    # 346 packets x 1024: the mp4's edit list would hide the first (pre-roll) one -> 353280.
    assert (len(track.samples), track.sample_rate, track.source_channels) == (354304, 44100, 2)
    assert track.adts_copy and track.codec == "aac"
    assert track.samples.dtype == np.float64
    # The s16 step: a mean of two s16 / 32768 values is a whole multiple of 1 / 65536.
    scaled = track.samples * 65536.0
    assert np.array_equal(scaled, np.round(scaled))
    assert len(resample_to_16k(track.samples, track.sample_rate)) == 128545


def test_preroll_is_the_packet_the_container_hides(fixtures):
    path = fixtures / "media" / "sample_a.mp4"
    with av.open(str(path)) as c:
        hidden = []
        for frame in c.decode(audio=0):
            hidden.append(frame.to_ndarray())
    plain = np.concatenate(hidden, axis=1)
    s16 = np.clip(np.rint(plain.astype(np.float64) * 32768.0), -32768, 32767)
    track = decode_audio(path)
    assert plain.shape[1] == 353280
    assert np.array_equal(track.samples[1024:], (s16.T / 32768.0).mean(axis=1))


def test_aac_the_adts_muxer_refuses_is_decoded_from_the_container(fixtures, monkeypatch):
    import extractors.audio as audio

    monkeypatch.setattr(audio, "_remux_to_adts", lambda *args: None)
    track = decode_audio(fixtures / "media" / "sample_a.mp4")
    assert (track.adts_copy, len(track.samples)) == (False, 353280)


def test_resample_length_rule_and_16k_passthrough():
    x = np.random.default_rng(0).standard_normal(48001)
    assert len(resample_to_16k(x, 48000)) == int(48001 * 16000 / 48000)
    assert len(resample_to_16k(x[:22051], 22050)) == int(22051 * 16000 / 22050)
    assert np.array_equal(resample_to_16k(x, 16000), x)
    with pytest.raises(InputError):
        resample_to_16k(x[:2], 48000)


def test_video_without_audio_gives_none_and_silence_stands_in(tmp_path):
    path = write_video(tmp_path / "mute.mp4", 5, audio=None, size=(64, 48))
    assert decode_audio(path) is None
    quiet = silence(2.0)
    assert (quiet.sample_rate, len(quiet.samples)) == (16000, 32000) and not quiet.samples.any()


def test_pcm_in_mkv_decodes_exactly(tmp_path):
    path = write_video(tmp_path / "pcm.mkv", 25, audio="pcm_s16le", size=(64, 48))
    track = decode_audio(path)
    assert (track.codec, track.adts_copy, track.sample_rate, track.source_channels) == \
        ("pcm_s16le", False, 44100, 2)
    tt = np.arange(44100) / 44100
    written = (0.3 * np.sin(2 * np.pi * 440 * tt)).astype(np.float32)
    expected = (written * 32767).astype(np.int16) / 32768.0  # same in both channels
    assert np.array_equal(track.samples, expected)


@pytest.mark.parametrize("codec,suffix", [("mp2", ".mkv"), ("libopus", ".mkv"), ("flac", ".mkv")])
def test_other_codecs_decode(tmp_path, codec, suffix):
    path = write_video(tmp_path / f"a{suffix}", 25, audio=codec, size=(64, 48))
    track = decode_audio(path)
    assert track.codec in (codec, codec.removeprefix("lib")) and not track.adts_copy
    assert abs(track.duration - 1.0) < 0.1
    # A 0.3 amplitude tone survived (lossy codecs: loosely). (tests/media_files.py writes
    # s16/float sample formats only, hence mp2 rather than mp3's s32p.)
    assert 0.25 < np.abs(track.samples[len(track.samples) // 4:]).max() < 0.35


def test_faststart_file_with_broken_tail_keeps_what_decoded(tmp_path):
    path = tmp_path / "fast.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
        wave = (0.3 * np.sin(np.arange(44100 * 2) * 0.05)).astype(np.float32)
        for k in range(0, len(wave), 1024):
            f = av.AudioFrame.from_ndarray(wave[None, k:k + 1024], format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = 44100, k, Fraction(1, 44100)
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    whole = decode_audio(path)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    partial = decode_audio(cut)
    assert whole.adts_copy and 0 < len(partial.samples) < len(whole.samples)


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "missing"])
def test_unreadable_files_are_one_line_input_errors(tmp_path, fixtures, how):
    bad = tmp_path / "bad.mp4"
    data = (fixtures / "media" / "sample_a.mp4").read_bytes()
    if how == "truncated":
        bad.write_bytes(data[: len(data) // 2])  # moov is at the end: nothing to read
    elif how == "garbage":
        bad.write_bytes(b"this is not a video " * 200)
    elif how == "empty":
        bad.write_bytes(b"")
    with pytest.raises(InputError) as err:
        decode_audio(bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
