"""Batches that survive: shared folders, kills, Ctrl-C, stalls, crashes, full disks (issue 14).

Every test runs the real command in its own process (session) so that kills,
signals and exit codes are the ones a user sees; videos are tiny and the
settings the fast non-standard ones. Misbehaving decoders and disks are
simulated by running ``tests/hooked_davel.py HOOKS`` instead of ``davel``: it
wraps the batch's task so that the named inputs stall, crash or fail their
writes in the worker (see tests/batch_hooks.py).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from media_files import write_video

ROOT = Path(__file__).resolve().parents[1]
HOOKED = Path(__file__).resolve().parent / "hooked_davel.py"  # davel, with inputs misbehaving
FAST = ["--no-flow", "--short-side", "128", "--crop", "112", "--device", "cpu", "-q"]
NAMES = ["v0", "v1", "v2"]


def env() -> dict[str, str]:
    e = {**os.environ, "PYTHONPATH": str(ROOT)}
    e.pop("DAVEL_BATCH_INLINE", None)
    return e


def start(*args, hook: str | None = None) -> subprocess.Popen:
    davel = [str(HOOKED), hook] if hook else ["-m", "davel"]
    return subprocess.Popen([sys.executable, *davel, *map(str, args)], env=env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def run(*args, hook: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    p = start(*args, hook=hook)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def extract(videos, out, *extra, weights):
    return ["extract", *[videos / f"{n}.mp4" for n in NAMES], "-o", out, "--weights-dir", weights, *FAST, *extra]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def leftovers(folder: Path) -> list[str]:
    """Temporary (.part) and claim files: none may stay after a normal finish."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def no_orphans(pgid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def report_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for i, name in enumerate(NAMES):
        write_video(d / f"{name}.mp4", 33 + 8 * i, fps=25)  # T = 2, 3, 4
    return d


@pytest.fixture(scope="module")
def reference(videos, standin_weights, tmp_path_factory):
    """The outputs of one uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("reference")
    res = run(*extract(videos, out, weights=standin_weights))
    assert res.returncode == 0, res.stderr
    assert leftovers(out) == []
    return files(out)


def test_three_processes_share_one_folder(videos, standin_weights, reference, tmp_path):
    out = tmp_path / "out"
    procs = [start(*extract(videos, out, "--report", tmp_path / f"r{i}.jsonl", weights=standin_weights))
             for i in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    done: dict[str, int] = {}
    for i in range(3):
        lines = report_lines(tmp_path / f"r{i}.jsonl")
        assert sorted(Path(r["path"]).stem for r in lines) == NAMES  # every process accounts for all
        for r in lines:
            assert r["status"] in ("done", "skipped")
            done[Path(r["path"]).stem] = done.get(Path(r["path"]).stem, 0) + (r["status"] == "done")
    assert done == {n: 1 for n in NAMES}
    assert files(out) == reference
    assert leftovers(out) == []


def test_sigkill_at_random_points_then_resume(videos, standin_weights, reference, tmp_path):
    out = tmp_path / "out"
    rng = random.Random(14)
    for _ in range(5):
        p = start(*extract(videos, out, weights=standin_weights))
        try:
            p.wait(timeout=rng.uniform(0.5, 8.0))  # the kill lands anywhere: start, model load, writes
        except subprocess.TimeoutExpired:
            pass
        os.kill(p.pid, signal.SIGKILL)  # the driver only: its worker must die with it
        p.communicate()
        assert no_orphans(p.pid), f"orphans of {p.pid}: {group_alive(p.pid)}"
    res = run(*extract(videos, out, weights=standin_weights))
    assert res.returncode == 0, res.stderr
    assert files(out) == reference
    assert leftovers(out) == []


def test_ctrl_c_stops_fast_and_leaves_no_partial_file(videos, standin_weights, tmp_path):
    out = tmp_path / "out"
    # the last video blocks inside its first write: its temporary file exists when Ctrl-C comes
    # (v0's and v1's own temporary files come and go before: only v2's says the first two are done)
    p = start(*extract(videos, out, "--timeout", "60", weights=standin_weights), hook="stall-write:v2")
    deadline = time.monotonic() + 180
    while not (out.exists() and any(f.startswith(".v2_") and f.endswith(".part") for f in leftovers(out))):
        assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.poll() is not None else ""
        time.sleep(0.05)
    t0 = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)  # as a terminal does: the whole process group
    _, err = p.communicate(timeout=30)
    elapsed = time.monotonic() - t0
    # the requirement is 2 s (met with room on an idle 2-core machine); the bound here only
    # catches a hang, so a CI machine busy with other jobs does not fail it
    assert elapsed < 6.0, elapsed
    assert p.returncode == 130, err
    assert "extracted 2, skipped 0 (already done), failed 0, timed out 0 (interrupted)" in err
    assert "Traceback" not in err
    assert leftovers(out) == []
    assert sorted(files(out)) == sorted(f"{n}_{s}" for n in ("v0", "v1")
                                        for s in ("davel.json", "flow.npy", "rgb.npy", "vggish.npy"))
    assert no_orphans(p.pid)


class SlowStartTask:
    """A task whose unpickling, in the worker before ``worker.main`` runs, says so in
    ``marker`` and takes ``seconds``: the window a group Ctrl-C used to kill it in."""

    def __init__(self, marker: str, seconds: float) -> None:
        self.marker, self.seconds = marker, seconds

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        Path(self.marker).write_text(str(os.getpid()))
        time.sleep(self.seconds)

    def prepare(self) -> None:
        pass


def test_a_worker_is_not_killed_by_ctrl_c_while_it_starts(tmp_path, capfd):
    # Ctrl-C reaches every process of the group; a worker still unpickling its task has not
    # yet ignored SIGINT: it must start with SIGINT blocked (it died with a traceback)
    from davel.batch.engines import WatchedRunner

    marker = tmp_path / "unpickling"
    runner = WatchedRunner(SlowStartTask(str(marker), 3.0), quiet=True, timeout=None)

    def interrupt_the_child() -> None:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(int(marker.read_text()), signal.SIGINT)

    import threading

    sender = threading.Thread(target=interrupt_the_child, daemon=True)
    sender.start()
    try:
        runner._start(None)  # BatchError "died while loading the models" before the fix
        sender.join(5)
        assert runner.proc.is_alive()
    finally:
        runner.close()
    assert "KeyboardInterrupt" not in capfd.readouterr().err


def test_a_stall_times_out_a_crash_fails_and_the_batch_goes_on(videos, standin_weights, reference, tmp_path):
    out, rep = tmp_path / "out", tmp_path / "report.jsonl"
    t0 = time.monotonic()
    # the limit leaves a real tiny video (first call in a fresh worker, busy machine) time enough
    res = run(*extract(videos, out, "--timeout", "5", "--report", rep, weights=standin_weights),
              hook="crash:v0.mp4,stall:v1")
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("davel: error:")]
    assert errors == [f"davel: error: {videos / 'v0.mp4'}: worker died (signal 9, SIGKILL)",
                      f"davel: error: {videos / 'v1.mp4'}: timed out: no progress for 5 s "
                      f"(a stalled decoder, pipe or mount? see --timeout)"]
    assert "extracted 1, skipped 0 (already done), failed 1, timed out 1" in res.stderr
    lines = report_lines(rep)
    assert [(Path(r["path"]).name, r["status"]) for r in lines] == [
        ("v0.mp4", "failed"), ("v1.mp4", "timed-out"), ("v2.mp4", "done")]
    assert set(lines[0]) == {"path", "status", "reason", "seconds", "T", "T_a", "warnings"}
    assert lines[2]["T"] == 4 and lines[2]["T_a"] >= 4 and lines[2]["reason"] is None
    assert 5 <= lines[1]["seconds"] < 60
    assert {k: v for k, v in files(out).items()} == {k: v for k, v in reference.items() if k.startswith("v2")}
    assert leftovers(out) == []
    assert time.monotonic() - t0 < 300
    # everything there: exit 0 without starting a worker; the report says skipped
    res = run("extract", videos / "v2.mp4", "-o", out, "--weights-dir", standin_weights, *FAST, "--report", rep)
    assert res.returncode == 0 and "skipped 1" in res.stderr
    assert [r["status"] for r in report_lines(rep)] == ["skipped"]


def test_inputs_are_checked_before_any_model_loads(tmp_path):
    fifo, folder = tmp_path / "pipe.mp4", tmp_path / "folder.mp4"
    os.mkfifo(fifo)
    folder.mkdir()
    t0 = time.monotonic()
    # an empty weights folder: loading anything would fail with "missing weights file"
    res = run("extract", tmp_path / "missing.mp4", fifo, folder, "-o", tmp_path / "out",
              "--weights-dir", tmp_path / "empty", "--report", tmp_path / "r.jsonl", timeout=30)
    elapsed = time.monotonic() - t0
    assert res.returncode == 1, res.stderr
    assert res.stderr.splitlines() == [
        f"davel: error: {tmp_path / 'missing.mp4'}: no such file (or a dangling link)",
        f"davel: error: {fifo}: not a regular file (a pipe, socket or device cannot be decoded safely)",
        f"davel: error: {folder}: is a directory, not a video file",
        "extracted 0, skipped 0 (already done), failed 3, timed out 0"]
    assert elapsed < 5, elapsed  # about a second alone; the machine may be busy
    assert [r["status"] for r in report_lines(tmp_path / "r.jsonl")] == ["failed"] * 3
    assert not (tmp_path / "out").exists()


def test_full_disk_and_read_only_folder_fail_one_video_each(videos, standin_weights, reference, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name, data in reference.items():  # an earlier result in the folder
        if name.startswith("v2"):
            (out / name).write_bytes(data)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    res = run(*extract(videos, out, weights=standin_weights), hook="enospc:v0,erofs:v1")
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("davel: error:")]
    assert len(errors) == 2
    assert "v0.mp4" in errors[0] and "No space left on device" in errors[0]
    assert "v1.mp4" in errors[1] and "Read-only file system" in errors[1]
    assert "extracted 0, skipped 1 (already done), failed 2" in res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert leftovers(out) == []


def test_output_folder_problems_are_one_usage_line(videos, standin_weights, tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("earlier")
    for out, needle in [(a_file, "is a file, not a folder"), (a_file / "sub", "cannot create the output folder")]:
        res = run(*extract(videos, out, weights=standin_weights), timeout=60)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"davel: error: {out}: {needle}"), res.stderr
        assert a_file.read_text() == "earlier"
    res = run(*extract(videos, tmp_path / "o", "--shard", "4/3", weights=standin_weights), timeout=60)
    assert res.returncode == 2 and "--shard 4/3" in res.stderr


def test_shards_split_the_inputs():
    from davel.batch.runner import in_shard, parse_shard
    from davel.batch.tasks import Item

    items = [Item(f"/v/clip{i}.mp4") for i in range(40)]
    shards = [[it for it in items if in_shard(it, parse_shard(f"{k}/3"))] for k in (1, 2, 3)]
    assert sorted(it.path for s in shards for it in s) == sorted(it.path for it in items)
    assert all(s for s in shards)


def test_claims_are_exclusive_and_taken_over(tmp_path):
    from davel.batch.claims import claim_path, try_claim

    first = try_claim(tmp_path, "a")
    assert first is not None and first.previous is None
    # a lock held by a live owner (another open file description) cannot be taken...
    assert try_claim(tmp_path, "a") is None
    # ...unless its heartbeat is stale (a filesystem where locks do not cross hosts)
    old = time.time() - 1000
    os.utime(claim_path(tmp_path, "a"), (old, old))
    second = try_claim(tmp_path, "a", stale_after=120)
    assert second is not None and second.previous["pid"] == os.getpid()
    first.release()  # the stale owner's release leaves the new claim alone
    assert claim_path(tmp_path, "a").exists()
    second.release()
    assert not claim_path(tmp_path, "a").exists()


@pytest.fixture(scope="module")
def detect_inputs(tmp_path_factory):
    from davel.detectors.unav import UnAVDetector

    d = tmp_path_factory.mktemp("detect")
    torch.manual_seed(0)
    m = UnAVDetector(embd_dim=32, head_dim=32, num_classes=4, dependency_dim=16)
    ckpt = d / "tiny_unav.pth"
    torch.save({"state_dict_ema": {f"module.{k}": v for k, v in m.state_dict().items()},
                "davel": {"labels": ["dog", "car", "bell", "guitar"]}}, ckpt)
    rng = np.random.default_rng(0)
    stems = [f"f{i}" for i in range(4)]
    for s in stems:
        for name, dim in (("rgb", 1024), ("flow", 1024), ("vggish", 128)):
            np.save(d / f"{s}_{name}.npy", rng.random((24, dim), dtype=np.float32))
    return d, ckpt, stems


def test_detect_into_a_folder_shared_and_skipping(detect_inputs, tmp_path):
    d, ckpt, stems = detect_inputs
    out = tmp_path / "events"
    args = ["detect", *[a for s in stems for a in ("--features", d / s)], "--checkpoint", ckpt,
            "--device", "cpu", "-o", f"{out}/"]
    procs = [start(*args, "--report", tmp_path / f"r{i}.jsonl") for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    done = [r["path"] for i in range(2) for r in report_lines(tmp_path / f"r{i}.jsonl") if r["status"] == "done"]
    assert sorted(done) == sorted(str(d / s) for s in stems)
    assert sorted(files(out)) == [f"{s}.json" for s in stems] and leftovers(out) == []
    for s in stems:
        doc = json.loads((out / f"{s}.json").read_text())
        assert doc["video"] == s and doc["model"] == "unav"
    before = files(out)
    res = run(*args[:-1], out)  # an existing folder is a folder with or without the '/'
    assert res.returncode == 0 and "detected 0, skipped 4 (already done)" in res.stderr
    assert files(out) == before
