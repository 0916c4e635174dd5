"""``--ray``: the same batch on a Ray cluster (issue 27).

Every command that starts Ray runs in a private network namespace holding only
loopback (``unshare -n``; CI runs as root), so all of Ray's traffic stays on
this machine. Ray not starting is a failure here, not a skip. Videos are tiny
and the settings the fast non-standard ones, as in test_batch.py.

Outputs are bit-identical to the one-process command run with the same torch
thread count: each Ray worker runs torch on the CPUs it holds (1 here), and the
one-process command is run with ``OMP_NUM_THREADS=1`` to match (float sums in
another order differ in their last bits).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from media_files import write_video

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FAST = ["--no-flow", "--short-side", "128", "--crop", "112", "--device", "cpu", "-q"]
NAMES = ["v0", "v1", "v2", "v3"]

pytestmark = pytest.mark.ray


def env(**extra: str) -> dict[str, str]:
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    e.pop("DAVEL_BATCH_INLINE", None)
    e.pop("RAY_ADDRESS", None)
    return {**e, **extra}


def isolated(argv: list[str]) -> list[str]:
    """``argv`` in a new network namespace with only ``lo`` up."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("the Ray tests need unshare and ip (util-linux, iproute2) to keep Ray on loopback")
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def davel(*args, hook: str | None = None, ray: bool = False, timeout: float = 300,
          **extra_env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *([str(TESTS / "hooked_davel.py"), hook] if hook else ["-m", "davel"]),
           *map(str, args)]
    if ray:
        cmd = isolated(cmd)
    res = subprocess.run(cmd, env=env(**extra_env), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if ray and "cannot connect to a Ray cluster" in res.stderr:
        pytest.fail(f"Ray did not start: {res.stderr}")
    return res


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def report(path: Path) -> list[dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        line.pop("seconds")
    return sorted(lines, key=lambda r: r["path"])


def errors(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if line.startswith("davel: error:"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray_videos")
    for i, name in enumerate(NAMES):
        write_video(d / f"{name}.mp4", 33 + 8 * i, fps=25)  # T = 2, 3, 4, 5
    (d / "bad.mp4").write_bytes(b"not a video, whatever its name says" * 20)
    return d


def extract(videos: Path, out: Path, weights: Path, *extra) -> list:
    return ["extract", "--dir", videos, "-o", out, "--weights-dir", weights, *FAST, *extra]


def test_ray_extract_is_the_one_process_extract(videos, standin_weights, tmp_path):
    """Parity, a bad file, resume, deleted sidecars redone, a video that kills its worker."""
    plain, out = tmp_path / "plain", tmp_path / "ray"
    one = davel(*extract(videos, plain, standin_weights, "--report", tmp_path / "plain.jsonl"), OMP_NUM_THREADS="1")
    assert one.returncode == 1, one.stderr
    res = davel(*extract(videos, out, standin_weights, "--report", tmp_path / "ray.jsonl", "--ray", "local"),
                ray=True)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert files(out) == files(plain)  # bit for bit
    assert len(files(out)) == 4 * len(NAMES)
    assert leftovers(out) == []
    assert errors(res.stderr) == errors(one.stderr) == [
        f"davel: error: {videos / 'bad.mp4'}: cannot be opened as a media file (Invalid data found when "
        f"processing input)"]
    assert res.stderr.splitlines()[-1] == one.stderr.splitlines()[-1] == \
        "extracted 4, skipped 0 (already done), failed 1, timed out 0"
    assert report(tmp_path / "ray.jsonl") == report(tmp_path / "plain.jsonl")
    # only Ray's own lines would be noise: the user sees davel's
    assert [line for line in res.stderr.splitlines() if not line.startswith("davel:")] == [
        line for line in one.stderr.splitlines() if not line.startswith("davel:")]

    # rerun: everything done is skipped in the driver (Ray not even started)
    again = davel(*extract(videos, out, standin_weights, "--ray", "local"), ray=True)
    assert again.returncode == 1 and "extracted 0, skipped 4 (already done), failed 1" in again.stderr

    # two sidecars gone: v3 is redone to the same bytes; v2 kills the process working on
    # it (the actor itself: the work runs inline in it), Ray restarts the actor and retries,
    # and after two deaths v2 is reported failed, not retried forever; the batch finishes
    before = files(out)
    (out / "v2_davel.json").unlink()
    (out / "v3_davel.json").unlink()
    third = davel(*extract(videos, out, standin_weights, "--ray", "local", "--report", tmp_path / "third.jsonl"),
                  hook="crash:v2", ray=True, DAVEL_BATCH_INLINE="1")
    assert third.returncode == 1, third.stderr
    assert errors(third.stderr) == sorted([
        f"davel: error: {videos / 'bad.mp4'}: cannot be opened as a media file (Invalid data found when "
        f"processing input)",
        f"davel: error: {videos / 'v2.mp4'}: worker process died 2 times on this video"])
    assert "extracted 1, skipped 2 (already done), failed 2, timed out 0" in third.stderr
    statuses = {Path(r["path"]).stem: r["status"] for r in report(tmp_path / "third.jsonl")}
    assert statuses == {"bad": "failed", "v0": "skipped", "v1": "skipped", "v2": "failed", "v3": "done"}
    assert files(out) == {k: v for k, v in before.items() if k != "v2_davel.json"}
    assert leftovers(out) == []


def test_without_ray_installed_the_option_is_one_line(videos, standin_weights, tmp_path):
    blocker = tmp_path / "noray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('no ray here')\n")
    (blocker / "sitecustomize.py").write_text(
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name.split('.')[0] == 'ray' else real(name, *a)\n")
    e = {"PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    res = subprocess.run([sys.executable, "-m", "davel", *map(str, extract(videos, tmp_path / "o", standin_weights,
                                                                             "--ray", "local"))],
                         env={**os.environ, **e}, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == "davel: error: --ray needs Ray: pip install 'davel[ray]'"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--ray", "nowhere"], "--ray nowhere: expected local, auto or HOST:PORT"),
    (["--actors-per-gpu", "2"], "--actors-per-gpu and --cpus-per-actor go with --ray"),
    (["--ray", "local", "--cpus-per-actor", "0"], "--cpus-per-actor must be positive"),
])
def test_engine_options_are_checked_first(videos, standin_weights, tmp_path, args, message):
    res = davel(*extract(videos, tmp_path / "o", standin_weights, *args))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == f"davel: error: {message}"


def test_a_cluster_places_workers_on_gpu_nodes_and_survives_losing_one(tmp_path_factory, standin_weights, tmp_path):
    """A CPU-only head and two nodes declaring one GPU each: the workers run only on the
    GPU nodes, each with its own CUDA_VISIBLE_DEVICES; one GPU node is removed after it
    finished a video and the batch still completes, every output valid."""
    many = tmp_path_factory.mktemp("ray_many")
    for i in range(10):
        write_video(many / f"m{i}.mp4", 33 + 8 * (i % 3), fps=25)
    out, result = tmp_path / "out", tmp_path / "cluster.json"
    cmd = [sys.executable, str(TESTS / "ray_cluster_run.py"), str(result), "--",
           *map(str, extract(many, out, standin_weights, "--report", tmp_path / "r.jsonl"))]
    run = subprocess.run(isolated(cmd), env=env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr
    got = json.loads(result.read_text())
    assert got["returncode"] == 0, got["stderr"]
    assert "extracted 10, skipped 0 (already done), failed 0, timed out 0" in got["stderr"]
    where = got["where"]
    assert {w["raylet"] for w in where} <= set(got["nodes"]["gpu"])  # never on the CPU-only head
    assert len({w["raylet"] for w in where}) == 2  # both GPU nodes worked
    for w in where:  # Ray gave each worker its node's one GPU
        assert w["CUDA_VISIBLE_DEVICES"] == "0"
    assert got["removed"] in got["nodes"]["gpu"]
    survivor = [n for n in got["nodes"]["gpu"] if n != got["removed"]][0]
    assert any(w["raylet"] == survivor for w in where)
    # the batch is complete: every output set there and readable, nothing temporary left
    from extractors import feature_files

    assert sorted(p.name for p in out.glob("*_davel.json")) == [f"m{i}_davel.json" for i in range(10)]
    for i in range(10):
        assert feature_files.read(out / f"m{i}").rgb.shape[0] >= 2
    assert leftovers(out) == []
    assert sorted(r["status"] for r in report(tmp_path / "r.jsonl")) == ["done"] * 10


def test_ray_detect_and_one_peace_extract_are_the_one_process_ones(videos, standin_weights, tiny_checkpoint,
                                                                   tmp_path):
    """``detect --ray`` gives the events and the timeouts of ``detect`` (the records carry
    the events to the driver's writer); ``extract --feature-set one-peace --ray`` the same
    bytes."""
    import torch

    from extractors.settings import ExtractionSettings

    ckpt = torch.load(tiny_checkpoint, weights_only=True)  # made on the fast settings: cheap to extract
    ckpt["davel"]["extractor"] = {"settings": ExtractionSettings(flow=False, short_side=128, crop=112).record()}
    torch.save(ckpt, tmp_path / "fast.pth")
    args = ["detect", videos / "v1.mp4", videos / "v2.mp4", "--checkpoint", tmp_path / "fast.pth",
            "--weights-dir", standin_weights, "--device", "cpu", "-q", "-f", "jsonl", "--timeout", "5"]
    # v2 stalls before any progress: --timeout gives up on it the same way on both engines
    plain = davel(*args, hook="stall:v2", OMP_NUM_THREADS="1")
    assert plain.returncode == 1, plain.stderr
    on_ray = davel(*args, "--ray", "local", hook="stall:v2", ray=True)
    assert on_ray.returncode == 1, on_ray.stderr
    assert on_ray.stdout == plain.stdout and len(on_ray.stdout.splitlines()) == 1
    assert json.loads(on_ray.stdout)["events"]
    assert errors(on_ray.stderr) == errors(plain.stderr) == [
        f"davel: error: {videos / 'v2.mp4'}: timed out: no progress for 5 s (a stalled decoder, pipe or mount? "
        f"see --timeout)"]
    assert on_ray.stderr.splitlines()[-1] == plain.stderr.splitlines()[-1] == \
        "detected 1, skipped 0 (already done), failed 0, timed out 1"

    from extractors.onepeace_weights import standin_sources

    weights = tmp_path / "onepeace"
    standin_sources(weights, depth=1)
    (tmp_path / "clips").mkdir()
    clip = write_video(tmp_path / "clips" / "clip.mp4", 38, fps=30, seconds_audio=1.25)
    one_peace = ["extract", clip, "--feature-set", "one-peace", "--weights-dir", weights, "--device", "cpu", "-q"]
    plain = davel(*one_peace, "-o", tmp_path / "plain", OMP_NUM_THREADS="1")
    assert plain.returncode == 0, plain.stderr
    on_ray = davel(*one_peace, "-o", tmp_path / "ray", "--ray", "local", ray=True)
    assert on_ray.returncode == 0, on_ray.stderr
    assert files(tmp_path / "ray") == files(tmp_path / "plain")
    assert sorted(files(tmp_path / "ray")) == ["clip_davel.json", "clip_one_peace_audio.npy",
                                               "clip_one_peace_video_finetune.npy"]


def test_a_node_with_other_weights_refuses_to_work(standin_weights, tmp_path):
    """Each worker compares its extractor's settings key (weights hashed) with the one the
    driver started the batch with: a node with other weights stops with one line."""
    from davel.batch.tasks import ExtractTask
    from davel.errors import WeightsError
    from extractors.settings import ExtractionSettings

    task = ExtractTask(tmp_path / "out", ExtractionSettings(flow=False, short_side=128, crop=112), standin_weights,
                       "cpu")
    task.prepare()  # the same weights: fine
    task.settings_key = "0" * 64  # as if the driver had hashed other files
    with pytest.raises(WeightsError, match="put the same weights on every node"):
        task.prepare()
