"""The bad-input corpus (tests/corpus.py) through the real command line, one batch per group.

Each group runs ``python -m davel`` as a user would (a subprocess: stderr, exit code
and left-over files are what a user sees) with good inputs mixed in. Every bad input
must cost exactly one ``davel: error:`` line that names it and says why, never a
traceback or a hang, and never the good inputs' results or earlier outputs.
Extraction uses the fast settings (no flow, short side 128, crop 112) with stand-in
weights: the corpus is about input handling, not numbers.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from corpus import (
    DONE,
    FAILED,
    MARKER,
    WARNING,
    can_emulate_unreadable,
    checkpoint_cases,
    eval_cases,
    feature_cases,
    good_checkpoint,
    video_cases,
)

REPO = Path(__file__).resolve().parents[1]
FAST = ["--no-flow", "--short-side", "128", "--crop", "112", "--device", "cpu", "--quiet"]
TIMEOUT = 300  # a hang shows as a failed test, not a stuck CI job


def davel(*args, cwd: Path, timeout: int = TIMEOUT, one_thread: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if one_thread:  # two runs side by side on two cores: torch must not start two threads each
        env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("DAVEL_DEBUG", None)  # the one-line messages are what is tested
    return subprocess.run([sys.executable, "-m", "davel", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def lines(stderr: str, kind: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"davel: {kind}:")]


def check_report(res: subprocess.CompletedProcess, expected: dict[str, tuple[str, str]]) -> None:
    """``expected``: input name -> (outcome, reason). One error line per failed input
    (naming it, with its reason), a warning naming each warned input, nothing else."""
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    errors, warnings = lines(res.stderr, "error"), lines(res.stderr, "warning")
    failed = {n: r for n, (o, r) in expected.items() if o == FAILED}
    assert res.returncode == (1 if failed else 0), res.stderr
    assert len(errors) == len(failed), "\n".join(errors)
    for line in errors:
        named = [n for n in expected if n in line]
        assert len(named) == 1, f"error line names {named or 'no input'}: {line}"
        outcome, reason = expected[named[0]]
        assert outcome == FAILED, f"{named[0]} should have been {outcome}: {line}"
        assert reason in line, f"{named[0]}: expected reason {reason!r} in: {line}"
    for name, (outcome, reason) in expected.items():
        about = [line for line in warnings if name in line]
        if outcome == WARNING:
            assert any(reason in line for line in about), f"{name}: no warning with {reason!r}:\n{res.stderr}"
        elif outcome == DONE:
            assert not about, f"{name} was expected to pass quietly: {about}"


def no_temp_files(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if p.name.endswith(".part") or p.name.startswith(".")]
    assert not left, f"left-over temporary files: {left}"


# ------------------------------------------------------------------- videos
def test_video_corpus_one_batch(standin_weights, tmp_path):
    src, out = tmp_path / "videos", tmp_path / "feats"
    src.mkdir()
    out.mkdir()
    cases = video_cases()
    for case in cases:
        case.build(src)
    # an earlier result for a stem whose video is now broken must survive the batch
    earlier = {f"text_{s}.npy": np.full((3, 4), 7, np.float32) for s in ("rgb", "flow", "vggish")}
    for name, array in earlier.items():
        np.save(out / name, array)
    (out / "text_davel.json").write_text(json.dumps({"settings_key": "an-older-extractor"}))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    # every name after `--`: "-dash.mp4" is a file, not an option
    res = davel("extract", "-o", out, "--weights-dir", standin_weights, *FAST, "--",
                *(c.arg for c in cases), cwd=src)

    check_report(res, {c.arg: (c.outcome, c.reason) for c in cases})
    good = [c for c in cases if c.outcome != FAILED]
    bad = [c for c in cases if c.outcome == FAILED]
    assert f"extracted {len(good)}, skipped 0 (already done), failed {len(bad)}" in res.stderr
    for c in good:
        meta = json.loads((out / f"{c.stem}_davel.json").read_text())
        rgb, flow, vggish = (np.load(out / f"{c.stem}_{s}.npy") for s in ("rgb", "flow", "vggish"))
        assert rgb.shape == flow.shape == (meta["T"], 1024) and meta["T"] >= 1, c.arg
        assert vggish.shape == (meta["T_audio"], 128) and meta["T_audio"] >= 1, c.arg
        assert all(np.isfinite(a).all() for a in (rgb, flow, vggish)), c.arg
        assert meta["video"] == c.arg and meta["duration"] > 0
    for c in bad:
        if c.stem == "text":
            continue
        left = [n for n in ("rgb.npy", "flow.npy", "vggish.npy", "davel.json") if (out / f"{c.stem}_{n}").exists()]
        assert not left, f"{c.arg} failed but left outputs {left}"
    for name, data in before.items():
        assert (out / name).read_bytes() == data, f"earlier result {name} was changed"
    no_temp_files(out)


def test_unreadable_video_is_in_the_corpus_unless_root():
    if not can_emulate_unreadable():
        pytest.skip("running as root: mode bits do not stop root from reading a file, so no "
                    "unreadable file can be made (a dangling symlink and a FIFO stand in)")
    assert any(c.arg == "locked.mp4" for c in video_cases())


# ----------------------------------------------------------------- features
@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory) -> Path:
    return good_checkpoint(tmp_path_factory.mktemp("ckpt") / "ccnet_standin.pth")


def test_feature_corpus_one_batch(detector_checkpoint, tmp_path):
    src = tmp_path / "feats"
    src.mkdir()
    cases = feature_cases()
    for case in cases:
        case.build(src, case.stem)
    out = tmp_path / "out" / "events.jsonl"
    args = [a for c in cases for a in ("--features", c.stem)]
    res = davel("detect", *args, "--checkpoint", detector_checkpoint, "--device", "cpu", "-q",
                "-o", out, cwd=src)

    # the stand-in detector has no class names: that warning is about the run, not an input
    check_report(res, {c.stem: (c.outcome, c.reason) for c in cases})
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["video"] for r in results] == [c.stem for c in cases if c.outcome != FAILED]
    for r in results:
        assert r["num_steps"] == 40 and r["duration"] > 0
        for e in r["events"]:
            assert 0 <= e["start"] < e["end"] <= r["duration"] and 0 <= e["score"] <= 1
    no_temp_files(out.parent)


# -------------------------------------------------------------- checkpoints
def test_checkpoint_corpus(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    next(c for c in feature_cases() if c.stem == "good").build(feats, "good")
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    cases = checkpoint_cases()
    paths = {c.name: c.build(ckpts) for c in cases}
    earlier = '{"video": "an earlier run"}\n'

    def run(name: str, checkpoint: Path) -> tuple[str, subprocess.CompletedProcess, Path]:
        out = tmp_path / f"out_{name}" / "events.jsonl"
        out.parent.mkdir()
        out.write_text(earlier)
        return name, davel("detect", "--features", feats / "good", "--checkpoint", checkpoint,
                           "--device", "cpu", "-q", "-o", out, cwd=tmp_path, one_thread=True), out

    # the good checkpoint on the same features is test_feature_corpus_one_batch's run
    with ThreadPoolExecutor(max_workers=2) as pool:  # CI runners have 2 cores
        runs = list(pool.map(lambda c: run(c.name, paths[c.name]), cases))
    for case, (name, res, out) in zip(cases, runs):
        check_report(res, {name: (FAILED, case.reason)})
        assert out.read_text() == earlier, f"{name}: an earlier output was replaced"
        no_temp_files(out.parent)
    assert not (ckpts / MARKER).exists(), "unpickling the checkpoint ran its code"


def test_the_code_carrying_checkpoint_really_carries_code(tmp_path):
    # without this, a payload that never ran would let the refusal above pass for nothing
    import torch

    case = next(c for c in checkpoint_cases() if c.name == "code.pth")
    torch.load(case.build(tmp_path), weights_only=False)
    assert (tmp_path / MARKER).exists()


# --------------------------------------------------------------------- eval
def test_eval_corpus(tmp_path):
    cases = eval_cases()

    def run(case) -> subprocess.CompletedProcess:
        d = tmp_path / case.name
        d.mkdir()
        (d / "annotations.json").write_text(case.annotations)
        (d / "predictions.json").write_text(case.predictions)
        return davel("eval", "--annotations", "annotations.json", "--predictions", "predictions.json",
                     "--json", cwd=d, one_thread=True)

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(run, cases))
    for case, res in zip(cases, runs):
        name = f"{case.bad_file}.json" if case.outcome == FAILED else "predictions"
        reason = case.reason
        check_report(res, {name: (case.outcome, reason)} if case.outcome != DONE else {})
        if case.outcome != FAILED:
            metrics = json.loads(res.stdout)
            assert len(metrics["mAP"]) == 9 and 0 <= metrics["average_mAP"] <= 1, case.name
            if case.name == "good":
                assert metrics["average_mAP"] > 0.9
        else:
            assert res.stdout == "", case.name
