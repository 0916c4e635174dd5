"""A corpus of bad (and a few good) inputs, built at test time into a folder.

Each case is a small file made here with PyAV or a few bytes, never a blob kept
in git, so the corpus documents how each input is made. A case states what
davel must do with it: finish it (``done``), finish it with a warning whose
text contains ``reason`` (``warning``), or refuse it with one error line whose
text contains ``reason`` (``failed``). tests/test_corpus.py runs each group
through the real command line in one batch.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from weights.standin import standin_state_dict
from weights.standin_files import official_checkpoint

from media_files import write_video, write_with_cover_art

DONE, WARNING, FAILED = "done", "warning", "failed"
SIZE = (64, 48)  # upscaled to the 128 short side: tiny files, same work for I3D
FRAMES = 33  # two feature rows at 25 fps (8k + 25 frames make k + 1 rows)


@dataclass(frozen=True)
class Case:
    """``arg``: what the command line gets (a name relative to the corpus folder);
    ``build(folder)`` makes the input there."""

    arg: str
    build: Callable[[Path], object]
    outcome: str
    reason: str = ""

    @property
    def stem(self) -> str:
        return Path(self.arg).stem


# ------------------------------------------------------------------- videos
def _video(name: str, **kw) -> Callable[[Path], Path]:
    kw.setdefault("size", SIZE)
    n = kw.pop("n", FRAMES)
    return lambda d: write_video(d / name, n, **kw)


def _bytes(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(data)


def _good_mp4_bytes(d: Path, **kw) -> bytes:
    scratch = d / ".scratch"
    scratch.mkdir(exist_ok=True)
    path = write_video(scratch / "src.mp4", kw.pop("n", FRAMES), size=SIZE, **kw)
    data = path.read_bytes()
    path.unlink()
    scratch.rmdir()
    return data


def _box(data: bytes, kind: bytes) -> tuple[int, int]:
    """(offset, size) of the first top-level mp4 box of ``kind``."""
    pos = 0
    while pos + 8 <= len(data):
        size, name = struct.unpack(">I4s", data[pos:pos + 8])
        if name == kind:
            return pos, size
        if size < 8:
            break
        pos += size
    raise AssertionError(f"no {kind!r} box")


def _truncated(name: str, keep: Callable[[int], int], **kw) -> Callable[[Path], None]:
    def build(d: Path) -> None:
        data = _good_mp4_bytes(d, **kw)
        (d / name).write_bytes(data[:keep(len(data))])

    return build


def _bit_flipped(name: str, box: bytes) -> Callable[[Path], None]:
    """Every 7th byte of the ``box`` payload inverted (a fixed pattern: same damage every run)."""
    def build(d: Path) -> None:
        data = bytearray(_good_mp4_bytes(d))
        off, size = _box(bytes(data), box)
        for i in range(off + 16, off + size, 7):
            data[i] ^= 0xFF
        (d / name).write_bytes(bytes(data))

    return build


def _rotated(name: str) -> Callable[[Path], None]:
    """An mp4 whose video track's display matrix (in ``tkhd``) says: rotate 90 degrees."""
    def build(d: Path) -> None:
        data = bytearray(_good_mp4_bytes(d))
        at = data.index(b"tkhd") + 4  # the first track is the video
        version = data[at]
        matrix = at + (52 if version == 1 else 40)
        one, minus_one = 0x00010000, 0xFFFF0000
        values = (0, one, 0, minus_one, 0, 0, 0, 0, 0x40000000)
        data[matrix:matrix + 36] = struct.pack(">9I", *values)
        (d / name).write_bytes(bytes(data))

    return build


def _with_cover_art(name: str, video: bool) -> Callable[[Path], None]:
    """An mp4/m4a with an attached picture (cover art), with or without a real video stream."""
    def build(d: Path) -> None:
        write_with_cover_art(d / name, art=(96, 96), audio_blocks=FRAMES * 44100 // 25 // 1024 + 1,
                             video_frames=FRAMES if video else 0, size=SIZE)

    return build


def _symlink(name: str, target: str) -> Callable[[Path], None]:
    return lambda d: os.symlink(target, d / name)


def _unreadable(name: str) -> Callable[[Path], None]:
    def build(d: Path) -> None:
        write_video(d / name, FRAMES, size=SIZE)
        os.chmod(d / name, 0)

    return build


def can_emulate_unreadable() -> bool:
    """Root reads a file whatever its mode bits say: there is no unreadable file to make."""
    return os.geteuid() != 0


def video_cases() -> list[Case]:
    cases = [
        Case("good.mp4", _video("good.mp4"), DONE),
        Case("empty.mp4", _bytes("empty.mp4", b""), FAILED, "empty file (0 bytes)"),
        Case("text.mp4", _bytes("text.mp4", b"this is not a video\n" * 50), FAILED, "cannot be opened"),
        Case("half.mp4", _truncated("half.mp4", lambda n: n // 2), FAILED, "cannot be opened"),
        Case("half_faststart.mp4", _truncated("half_faststart.mp4", lambda n: n // 2,
                                              options={"movflags": "faststart"}, n=60),
             WARNING, "s of video decode"),
        Case("first_1k.mp4", _truncated("first_1k.mp4", lambda n: 1024), FAILED, "cannot be opened"),
        Case("flipped_moov.mp4", _bit_flipped("flipped_moov.mp4", b"moov"), FAILED,
             "no stream can be read"),
        Case("flipped_mdat.mp4", _bit_flipped("flipped_mdat.mp4", b"mdat"), FAILED,
             "video cannot be decoded"),
        Case("no_audio.mp4", _video("no_audio.mp4", audio=None), WARNING, "no audio track"),
        Case("audio_only.m4a", _video("audio_only.m4a", n=0, seconds_audio=1.5), FAILED,
             "has no video stream"),
        Case("audio_only_mp4.mp4", _video("audio_only_mp4.mp4", n=0, seconds_audio=1.5), FAILED,
             "has no video stream"),
        Case("short17.mp4", _video("short17.mp4", n=17), FAILED, "too short"),
        Case("tiny2x2.mp4", _video("tiny2x2.mp4", size=(2, 2)), DONE),
        Case("odd33x17.mkv", _video("odd33x17.mkv", size=(33, 17), pix_fmt="yuv444p"), DONE),
        Case("vfr.mp4", _video("vfr.mp4", n=40, durations_ms=[20, 60]), DONE),
        Case("rotated.mp4", _rotated("rotated.mp4"), DONE),
        Case("vp9_opus.webm", _video("vp9_opus.webm", codec="libvpx-vp9", audio="libopus"), DONE),
        Case("h264_aac.mkv", _video("h264_aac.mkv"), DONE),
        Case("mjpeg.avi", _video("mjpeg.avi", codec="mjpeg", pix_fmt="yuvj420p", audio="pcm_s16le"), DONE),
        Case("h264.mov", _video("h264.mov"), DONE),
        Case("flac.mkv", _video("flac.mkv", audio="flac"), DONE),
        Case("pcm.mov", _video("pcm.mov", audio="pcm_s16le"), DONE),
        Case("surround51.mp4", _video("surround51.mp4", layout="5.1"), DONE),
        Case("audio8k.mp4", _video("audio8k.mp4", audio_rate=8000), DONE),
        Case("audio96k.mp4", _video("audio96k.mp4", audio_rate=96000), DONE),
        Case("vidéo_日本語.mp4", _video("vidéo_日本語.mp4"), DONE),
        Case("-dash.mp4", _video("-dash.mp4"), DONE),  # passed after `--`
        Case("folder.mp4", lambda d: (d / "folder.mp4").mkdir(), FAILED, "is a directory"),
        Case("dangling.mp4", _symlink("dangling.mp4", "gone.mp4"), FAILED, "broken symbolic link"),
        Case("fifo.mp4", lambda d: os.mkfifo(d / "fifo.mp4"), FAILED, "not a regular file"),
        Case("cover_only.m4a", _with_cover_art("cover_only.m4a", video=False), FAILED, "has no video stream"),
        Case("cover_and_video.mp4", _with_cover_art("cover_and_video.mp4", video=True), DONE),
    ]
    if can_emulate_unreadable():
        cases.append(Case("locked.mp4", _unreadable("locked.mp4"), FAILED, "ermission denied"))
    return cases


# ----------------------------------------------------------------- features
T = 40


def _features(rgb=(T, 1024), flow=(T, 1024), vggish=(T, 128), fill: float | None = None):
    def build(d: Path, stem: str) -> None:
        gen = np.random.default_rng(0)
        for s, shape in (("rgb", rgb), ("flow", flow), ("vggish", vggish)):
            a = gen.standard_normal(shape).astype(np.float32)
            if fill is not None and s == "rgb" and a.size:
                a[len(a) // 2, 3] = fill
            np.save(d / f"{stem}_{s}.npy", a)

    return build


def _truncated_npy(d: Path, stem: str) -> None:
    _features()(d, stem)
    f = d / f"{stem}_flow.npy"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])


def _garbage_npy(d: Path, stem: str) -> None:
    _features()(d, stem)
    (d / f"{stem}_vggish.npy").write_bytes(b"PK\x03\x04 certainly not numpy" * 20)


def _missing(d: Path, stem: str) -> None:
    _features()(d, stem)
    (d / f"{stem}_vggish.npy").unlink()


@dataclass(frozen=True)
class FeatureCase:
    stem: str
    build: Callable[[Path, str], None]
    outcome: str
    reason: str = ""


def feature_cases() -> list[FeatureCase]:
    return [
        FeatureCase("good", _features(), DONE),
        FeatureCase("no_vggish", _missing, FAILED, "missing feature file"),
        FeatureCase("truncated", _truncated_npy, FAILED, "is truncated"),
        FeatureCase("with_nan", _features(fill=np.nan), FAILED, "rgb features contain NaN or infinity"),
        FeatureCase("with_inf", _features(fill=np.inf), FAILED, "rgb features contain NaN or infinity"),
        FeatureCase("width1000", _features(rgb=(T, 1000), flow=(T, 1000)), FAILED, "2000-d visual"),
        FeatureCase("empty_t0", _features(rgb=(0, 1024), flow=(0, 1024), vggish=(0, 128)), FAILED,
                    "must be a non-empty 2-D numeric array"),
        FeatureCase("mismatch", _features(flow=(T - 5, 1024)), FAILED, "differ in shape"),
        FeatureCase("garbage", _garbage_npy, FAILED, "not a .npy file"),
        FeatureCase("no_such_stem", lambda d, stem: None, FAILED, "missing feature file"),
    ]


# -------------------------------------------------------------- checkpoints
class CodeCarrier:
    """Unpickling this runs ``open(marker, "w")``: a checkpoint that carries code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def good_checkpoint(path: Path) -> Path:
    torch.save(official_checkpoint(standin_state_dict("ccnet_unav100", salt=0)), path)
    return path


def _ckpt_bytes(name: str, make: Callable[[Path], bytes]) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        (d / name).write_bytes(make(d))
        return d / name

    return build


def _torch_saved(name: str, obj_of: Callable[[Path], object]) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        torch.save(obj_of(d), d / name)
        return d / name

    return build


def _other_widths(_d: Path) -> dict:
    sd = standin_state_dict("ccnet_unav100", salt=0)
    key = "module.backbone.embd_V.0.conv.weight"
    w = sd[key]
    sd[key] = torch.zeros((w.shape[0], 1536, *w.shape[2:]))  # ONE-PEACE's visual width
    return official_checkpoint(sd)


def _good_ckpt_bytes(d: Path) -> bytes:
    path = good_checkpoint(d / "scratch.pth")
    data = path.read_bytes()
    path.unlink()
    return data


def _corrupt(d: Path) -> bytes:
    data = bytearray(_good_ckpt_bytes(d))
    for i in range(0, len(data), 97):
        data[i] ^= 0x5A
    return bytes(data)


MARKER = "code_ran.marker"


@dataclass(frozen=True)
class CheckpointCase:
    name: str
    build: Callable[[Path], Path]
    reason: str


def checkpoint_cases() -> list[CheckpointCase]:
    return [
        CheckpointCase("corrupt.pth", _ckpt_bytes("corrupt.pth", _corrupt), "not a readable weights file"),
        CheckpointCase("truncated.pth", _ckpt_bytes("truncated.pth", lambda d: _good_ckpt_bytes(d)[:5000]),
                       "truncated or damaged"),
        CheckpointCase("code.pth", _torch_saved("code.pth", lambda d: {"state_dict": CodeCarrier(d / MARKER)}),
                       "needs pickle code to load and is refused"),
        CheckpointCase("optimizer_only.pth",
                       _torch_saved("optimizer_only.pth", lambda d: {"epoch": 3, "optimizer": {"state": {}}}),
                       "not a detector checkpoint"),
        CheckpointCase("other_widths.pth", _torch_saved("other_widths.pth", _other_widths), "1536-d visual"),
        CheckpointCase("empty.pth", _ckpt_bytes("empty.pth", lambda d: b""), "empty file, 0 bytes"),
        CheckpointCase("missing.pth", lambda d: d / "missing.pth", "does not exist"),
    ]


# --------------------------------------------------------------------- eval
def annotations_doc() -> dict:
    db = {f"v{i}": {"subset": "test", "duration": 20.0,
                    "annotations": [{"segment": [1.0 + i, 5.0 + i], "label": "dog", "label_id": 0},
                                    {"segment": [8.0, 12.0], "label": "car", "label_id": 1}]}
          for i in range(3)}
    return {"database": db}


def predictions_doc() -> list[dict]:
    return [{"video": f"v{i}.mp4", "events": [
        {"label": "dog", "label_id": 0, "start": 1.0 + i, "end": 5.2 + i, "score": 0.9},
        {"label": "car", "label_id": 1, "start": 7.5, "end": 12.0, "score": 0.8}]} for i in range(3)]


@dataclass(frozen=True)
class EvalCase:
    name: str
    annotations: str  # text of the annotation file
    predictions: str  # text of the predictions file
    outcome: str
    reason: str = ""
    bad_file: str = ""  # which of the two the error line must name: "annotations" or "predictions"


def eval_cases() -> list[EvalCase]:
    good_ann = json.dumps(annotations_doc())
    good_pred = json.dumps(predictions_doc())
    no_segment = annotations_doc()
    del no_segment["database"]["v1"]["annotations"][0]["segment"]
    wrong_type = predictions_doc()
    wrong_type[0]["events"][0]["start"] = "one second"
    segment_string = {"database": {"v0": [{"segment": "1.0-5.0", "label_id": 0, "scores": 0.9}]}}
    return [
        EvalCase("good", good_ann, good_pred, DONE),
        EvalCase("empty_predictions", good_ann, "[]", WARNING, "no predictions at all"),
        EvalCase("malformed_annotations", good_ann[:-7], good_pred, FAILED, "not valid JSON", "annotations"),
        EvalCase("annotations_missing_keys", json.dumps(no_segment), good_pred, FAILED,
                 '"segment": [start, end]', "annotations"),
        EvalCase("annotations_no_database", json.dumps({"videos": {}}), good_pred, FAILED,
                 '"database"', "annotations"),
        EvalCase("predictions_not_json", good_ann, "video,label\nv0,dog\n", FAILED,
                 "neither JSON nor JSON Lines", "predictions"),
        EvalCase("predictions_wrong_types", good_ann, json.dumps(wrong_type), FAILED,
                 "must be a number", "predictions"),
        EvalCase("predictions_segment_string", good_ann, json.dumps(segment_string), FAILED,
                 '"segment" must be [start, end]', "predictions"),
        EvalCase("predictions_empty_file", good_ann, "", FAILED, "empty file", "predictions"),
    ]
