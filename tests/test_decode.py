"""Decoding: ffmpeg `fps` filter frame choice, rotation, pixels, bad files.

Kinds (see tests/helpers.py): exact by construction. Frame selection is integer
timestamp arithmetic, pixels come from integer decoders and PIL's fixed-point
resize: bit-exact for the FFmpeg-in-PyAV and Pillow versions the fixtures were
made with (tests/constraints.txt pins them for CI).
"""
from fractions import Fraction

import av
import numpy as np
import pytest

from davel.errors import InputError
from extractors.decode import _iter_selected, iter_frames, probe, resize_short_side

from media_files import index_frame, read_index, write_timed_video, write_video, write_with_cover_art

# Source frame chosen for each 25 fps output frame by `ffmpeg -i X -filter:v fps=fps=25`
# (ffmpeg 5.1), measured on the files these tests write.
FFMPEG_30FPS = [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 28,
                29, 30, 31, 32, 34, 35, 36, 37, 38, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 52, 53, 54,
                55, 56, 58, 59]
FFMPEG_VFR = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 21, 21, 23, 24, 25, 26, 27,
              28, 29, 30, 31, 33, 34, 35, 36, 37, 38, 39, 41, 41, 43, 44, 45, 46, 47, 49, 49, 51, 52, 53,
              54, 55, 56, 57, 58]

# What the ffmpeg 5.1 CLI writes for the timed files below (Debian bookworm's ffmpeg 5.1.9:
# `ffmpeg -i X -filter:v fps=fps=R out.mp4`, out.mp4's frames read back with PyAV, source index
# from the pixels): the source frame of each output frame. Their timestamps were 0, 1/R, 2/R, ...
# in every case. In brackets: what the FFmpeg inside PyAV gives on its own (8.1, EOF at the last
# frame's pts + duration, timestamps as the container has them).
CLI_TIMED = {
    # 22 frames at 19.62 fps (a YouTube-like rate), B-frames, an AAC track: the mp4 demuxer of
    # FFmpeg <= 7.0 gave those packets no duration, so the CLI's EOF came 1/19620 s after the
    # last frame's start and that frame is never shown [28 and 18 frames, ending on frame 21]
    ("b_1962", 25): [0, 1, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 9, 10, 11, 12, 12, 13, 14, 15, 16, 16,
                     17, 18, 19, 20, 20],
    ("b_1962", 16): [0, 1, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20],
    # 20 frames of 40 ms and a last one of 500 ms: held for 500 ms where its packet has the
    # duration (no B-frames) ...
    ("long_last", 25): list(range(21)) + [20] * 12,
    ("long_last", 16): [0, 2, 3, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19] + [20] * 8,
    # ... and not at all with B-frames [21 and 13 frames]
    ("long_last_b", 25): list(range(20)),
    ("long_last_b", 16): [0, 2, 3, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19],
    # 30 frames of 40 ms from 80 ms, with an AAC track from 0: the CLI's output (vsync cfr, its
    # default for an input of several streams) starts at 0 with the first frame repeated
    # [29 and 19 frames]
    ("late_with_audio", 25): [0, 0, 0] + list(range(1, 29)),
    ("late_with_audio", 16): [0, 0, 1, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 19, 20, 22, 23, 25, 26, 28],
    # ... alone, counted from the container's start (80 ms) [29 frames; 19 from other frames]
    ("late_alone", 25): list(range(29)),
    ("late_alone", 16): [0, 2, 3, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19, 21, 22, 24, 25, 27, 28],
    # ... in Matroska, whose AAC track FFmpeg 5.1 started at -23 ms (its first packet, before
    # the encoder delay that newer FFmpeg skips) [30 and 19 frames]
    ("late_with_audio_mkv", 25): [0, 0, 0] + list(range(30)),
    ("late_with_audio_mkv", 16): [1, 1, 1, 2, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 20, 21, 23, 24, 26,
                                  27, 29],
}
TIMED_FILES = {
    "b_1962": dict(durations=[1000] * 22, time_base=Fraction(1, 19620), bframes=3, audio=True),
    "long_last": dict(durations=[40] * 20 + [500]),
    "long_last_b": dict(durations=[40] * 20 + [500], bframes=3),
    "late_with_audio": dict(durations=[40] * 30, start=80, audio=True),
    "late_alone": dict(durations=[40] * 30, start=80),
    "late_with_audio_mkv": dict(durations=[40] * 30, start=80, audio=True, fmt="matroska"),
}


@pytest.mark.parametrize("name, fps", sorted(CLI_TIMED))
def test_frames_and_timestamps_are_those_of_the_ffmpeg_5_1_cli(tmp_path, name, fps):
    spec = TIMED_FILES[name]
    path = write_timed_video(tmp_path / f"{name}.{'mkv' if spec.get('fmt') else 'mp4'}", **spec)
    got = list(_iter_selected(path, fps, None))
    assert [read_index(f) for _, f in got] == CLI_TIMED[name, fps]
    assert [pts for pts, _ in got] == list(range(len(CLI_TIMED[name, fps])))
    assert len(list(iter_frames(path, fps=fps))) == len(got)


def test_30fps_source_gives_ffmpeg_frames(tmp_path):
    path = write_video(tmp_path / "v30.mp4", 60, fps=30, audio=None)
    assert [read_index(f) for f in iter_frames(path)] == FFMPEG_30FPS


def test_variable_rate_source_gives_ffmpeg_frames(tmp_path):
    path = write_video(tmp_path / "vfr.mp4", 60, fps=30, durations_ms=[20, 50, 33, 40], audio=None)
    assert [read_index(f) for f in iter_frames(path)] == FFMPEG_VFR


def test_25fps_source_passes_every_frame_with_reference_pixels(fixtures):
    frames = list(iter_frames(fixtures / "media" / "sample_a.mp4"))
    assert len(frames) == 200
    ref = np.load(fixtures / "visual" / "i3d_stacks.npz")
    crop = np.stack([resize_short_side(f)[16:240, 58:282] for f in frames[56:80]])
    assert np.array_equal(crop, ref["rgb_in"])  # decoder pixels + PIL resize, bit-exact
    pair = np.load(fixtures / "visual" / "raft_pair.npz")
    assert np.array_equal(resize_short_side(frames[110]), pair["frame1"])


def test_rotation_metadata_is_applied(fixtures):
    # rot90.mp4: 320x240 coded, display matrix 90 degrees (made with ffmpeg -metadata:s:v rotate=90);
    # ffmpeg's autorotate shows it as 240x320.
    frames = list(iter_frames(fixtures / "media" / "rot90.mp4"))
    assert frames[0].shape == (320, 240, 3)


def test_resize_keeps_reference_geometry():
    assert resize_short_side(np.zeros((240, 320, 3), np.uint8)).shape == (256, 341, 3)
    assert resize_short_side(np.zeros((1080, 1920, 3), np.uint8)).shape == (256, 455, 3)
    assert resize_short_side(np.zeros((320, 240, 3), np.uint8)).shape == (341, 256, 3)


def test_probe_facts(fixtures):
    info = probe(fixtures / "media" / "sample_a.mp4")
    assert (info.width, info.height, info.source_fps, info.has_audio) == (320, 240, 25.0, True)
    assert info.duration == pytest.approx(8.0, abs=0.05)


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_garbage_file_is_a_one_line_input_error(tmp_path, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(InputError) as err:
        list(iter_frames(bad))
    assert "\n" not in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        probe(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="directory"):
        probe(tmp_path)


def test_truncated_mp4_without_its_index_is_a_one_line_error(fixtures, tmp_path):
    # sample_a.mp4 keeps its index (moov) at the end: cut in half, nothing can be decoded
    data = (fixtures / "media" / "sample_a.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot be opened") as err:
        list(iter_frames(cut))
    assert "\n" not in str(err.value)


def test_cover_art_is_never_the_video_stream(tmp_path):
    # the cover art (first, larger than the video) is a video stream too
    path = write_with_cover_art(tmp_path / "cover.mp4", art=(128, 128), audio_blocks=0, video_frames=30,
                                size=(64, 48))
    with av.open(str(path)) as c:
        assert any(s.disposition & av.stream.Disposition.attached_pic for s in c.streams.video)
    info = probe(path)
    assert (info.width, info.height) == (64, 48)
    frames = list(iter_frames(path))
    assert len(frames) == 30 and frames[0].shape == (48, 64, 3)
    assert [read_index(f) for f in frames[:5]] == [0, 1, 2, 3, 4]


def test_a_music_file_with_cover_art_has_no_video(tmp_path):
    # an .m4a with an attached picture: the picture is a "video stream" but not a video
    path = tmp_path / "song.m4a"
    write_with_cover_art(path)
    with av.open(str(path)) as c:
        assert [bool(s.disposition & av.stream.Disposition.attached_pic) for s in c.streams.video] == [True]
    with pytest.raises(InputError, match="has no video stream"):
        probe(path)
    with pytest.raises(InputError, match="has no video stream"):
        list(iter_frames(path))


def test_the_largest_of_several_video_streams_is_taken(tmp_path):
    c = av.open(str(tmp_path / "two.mkv"), "w")
    small = c.add_stream("libx264", rate=25)
    small.width, small.height, small.pix_fmt = 64, 48, "yuv420p"
    big = c.add_stream("libx264", rate=25)
    big.width, big.height, big.pix_fmt = 160, 120, "yuv420p"
    for i in range(10):
        for s in (small, big):
            for p in s.encode(av.VideoFrame.from_ndarray(index_frame(i, s.width, s.height), format="rgb24")):
                c.mux(p)
    for s in (small, big):
        for p in s.encode():
            c.mux(p)
    c.close()
    assert next(iter_frames(tmp_path / "two.mkv")).shape == (120, 160, 3)
