"""`davel extract -o URL`: outputs written through fsspec (weights/storage.py), no network.

``memory://`` runs in this process (CliRunner, DAVEL_BATCH_INLINE=1, so the work
happens where the memory filesystem lives); ``file://`` runs through the real
command in its own process. Both must give the bytes a plain-folder run gives,
the sidecar after the arrays, resume by listing, and one-line errors.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from davel.cli import app

from media_files import write_video

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--no-flow", "--short-side", "128", "--crop", "112", "--device", "cpu", "-q"]
NAMES = ["v0", "v1"]
runner = CliRunner()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for i, name in enumerate(NAMES):
        write_video(d / f"{name}.mp4", 33 + 8 * i, fps=25)  # T = 2, 3
    (d / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x13" * 4000)
    return d


@pytest.fixture
def inline(monkeypatch):
    monkeypatch.setenv("DAVEL_BATCH_INLINE", "1")  # the memory filesystem lives in this process


def cli(*args):
    return runner.invoke(app, ["extract", *map(str, args)])


def extract_args(videos, out, weights, names=NAMES):
    return [*[videos / f"{n}.mp4" for n in names], "-o", out, "--weights-dir", weights, *FAST]


def errors(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("davel: error:")]


@pytest.fixture(scope="module")
def reference(videos, standin_weights, tmp_path_factory):
    """The files of a plain-folder run (in this process, inline: as the memory runs)."""
    out = tmp_path_factory.mktemp("reference")
    os.environ["DAVEL_BATCH_INLINE"] = "1"
    try:
        res = cli(*extract_args(videos, out, standin_weights))
    finally:
        del os.environ["DAVEL_BATCH_INLINE"]
    assert res.exit_code == 0, res.stderr
    got = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert sorted(got) == sorted(f"{n}_{s}" for n in NAMES for s in ("rgb.npy", "flow.npy", "vggish.npy",
                                                                     "davel.json"))
    return got


@pytest.fixture
def memory_calls(monkeypatch):
    """The memory filesystem, wrapped: every object opened for writing (in order), every
    object read, every listing."""
    from fsspec.implementations.memory import MemoryFileSystem

    calls: dict[str, list[str]] = {"write": [], "read": [], "ls": []}
    original_open, original_cat, original_ls = MemoryFileSystem._open, MemoryFileSystem.cat_file, MemoryFileSystem.ls

    def _open(self, path, mode="rb", *args, **kwargs):
        calls["write" if "w" in mode else "read"].append(path.rsplit("/", 1)[-1])
        return original_open(self, path, mode, *args, **kwargs)

    def cat_file(self, path, *args, **kwargs):
        calls["read"].append(path.rsplit("/", 1)[-1])
        return original_cat(self, path, *args, **kwargs)

    def ls(self, path, *args, **kwargs):
        calls["ls"].append(path)
        return original_ls(self, path, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "_open", _open)
    monkeypatch.setattr(MemoryFileSystem, "cat_file", cat_file)
    monkeypatch.setattr(MemoryFileSystem, "ls", ls)
    return calls


def memory_objects(url: str) -> dict[str, bytes]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        return {}
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.find(path)}


def test_memory_url_same_bytes_sidecar_last_resume_by_listing(videos, standin_weights, reference, inline,
                                                            memory_calls):
    url = f"memory://davel-tests/{uuid.uuid4().hex}/feats"
    res = cli(*extract_args(videos, url, standin_weights))
    assert res.exit_code == 0, res.stderr
    assert "extracted 2, skipped 0" in res.stderr
    assert memory_objects(url) == reference  # byte for byte; no probe or temporary object left
    for name in NAMES:
        mine = [w for w in memory_calls["write"] if w.startswith(f"{name}_")]
        assert sorted(mine) == sorted(f for f in reference if f.startswith(f"{name}_"))
        assert mine[-1] == f"{name}_davel.json"  # the sidecar after the arrays

    # a rerun skips both from one listing, reading only the sidecars (no array)
    for kind in memory_calls:
        memory_calls[kind].clear()
    res = cli(*extract_args(videos, url, standin_weights))
    assert res.exit_code == 0, res.stderr
    assert "extracted 0, skipped 2" in res.stderr
    assert [w for w in memory_calls["write"] if not w.startswith(".davel-write-check")] == []
    assert len(memory_calls["ls"]) == 1
    assert not [r for r in memory_calls["read"] if r.endswith(".npy")]

    # a deleted sidecar: exactly that video is redone
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    fs.rm_file(f"{path}/v0_davel.json")
    memory_calls["write"].clear()
    res = cli(*extract_args(videos, url, standin_weights))
    assert res.exit_code == 0, res.stderr
    assert "extracted 1, skipped 1" in res.stderr
    written = [w for w in memory_calls["write"] if not w.startswith(".davel-write-check")]
    assert sorted(written) == sorted(f for f in reference if f.startswith("v0_"))
    assert memory_objects(url) == reference


def test_memory_url_bad_video_is_one_line_and_no_objects(videos, standin_weights, inline):
    url = f"memory://davel-tests/{uuid.uuid4().hex}/feats"
    res = cli(*extract_args(videos, url, standin_weights, names=["bad"]))
    assert res.exit_code == 1
    assert len(errors(res)) == 1 and "bad.mp4" in errors(res)[0]
    assert "Traceback" not in res.output + res.stderr
    assert memory_objects(url) == {}


def test_task_resumes_by_listing(standin_weights, reference, videos):
    """The task on its own (as a worker or Ray actor runs it): objects already at the URL
    with the same settings key are skipped, from one listing; another key is redone."""
    import fsspec

    from davel.batch.records import SKIPPED
    from davel.batch.tasks import ExtractTask, Item
    from extractors.extract import ExtractionSettings

    url = f"memory://davel-tests/{uuid.uuid4().hex}/feats"
    fs, path = fsspec.core.url_to_fs(url)
    for name, data in reference.items():
        fs.pipe_file(f"{path}/{name}", data)
    task = ExtractTask(url, ExtractionSettings(short_side=128, crop=112, flow=False), standin_weights, "cpu")
    items = [Item(str(videos / f"{n}.mp4")) for n in NAMES]
    assert task.outputs(items[0]) == [f"{url}/v0_{s}" for s in ("rgb.npy", "flow.npy", "vggish.npy", "davel.json")]
    assert [task.process(item).status for item in items] == [SKIPPED, SKIPPED]
    other = ExtractTask(url, ExtractionSettings(short_side=128, crop=112, flow=False, vggish_pca=True),
                        standin_weights, "cpu")
    assert not other.is_done(items[0])
    fs.rm_file(f"{path}/v1_vggish.npy")
    assert not ExtractTask(url, task.settings, standin_weights, "cpu").is_done(items[1])


def run_davel(*args, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DAVEL_BATCH_INLINE", None)
    return subprocess.run([sys.executable, "-m", "davel", *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_file_url_through_the_command(videos, standin_weights, reference, tmp_path, monkeypatch):
    out = tmp_path / "made" / "here"  # made by the check
    url = f"file://{out}"
    res = run_davel("extract", *extract_args(videos, url, standin_weights))  # the task goes to a worker process
    assert res.returncode == 0, res.stderr
    assert {p.name: p.read_bytes() for p in sorted(out.iterdir())} == reference  # no .part, no claim left
    assert not (ROOT / "file:").exists()  # no claim folder made from the URL taken as a path
    sidecar = out / "v0_davel.json"
    assert all(sidecar.stat().st_mtime_ns >= (out / f).stat().st_mtime_ns for f in reference if f.startswith("v0_"))

    # resume (in this process, to keep the test short): only the video without its sidecar is redone
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    sidecar.unlink()
    monkeypatch.setenv("DAVEL_BATCH_INLINE", "1")
    res = cli(*extract_args(videos, url, standin_weights))
    assert res.exit_code == 0, res.stderr
    assert "extracted 1, skipped 1" in res.stderr
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert {n for n in after if after[n] != before.get(n)} == {f for f in reference if f.startswith("v0_")}
    assert {p.name: p.read_bytes() for p in sorted(out.iterdir())} == reference


def test_unusable_urls_are_one_line_and_exit_2(videos, standin_weights, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    cases = {
        "nosuchproto://bucket/x": "unknown protocol 'nosuchproto'",
        f"file://{tmp_path}/afile": "is a file, not a folder",
        f"file://{tmp_path}/afile/below": "cannot create the output folder",
    }
    if importlib.util.find_spec("s3fs") is None:
        cases["s3://bucket/prefix"] = "s3fs"
    for url, words in cases.items():
        res = cli(*extract_args(videos, url, standin_weights, names=["v0"]))
        assert res.exit_code == 2, (url, res.stderr)
        assert len(errors(res)) == 1 and words in errors(res)[0], (url, res.stderr)
        assert "Traceback" not in res.output + res.stderr

    monkeypatch.setitem(sys.modules, "fsspec.core", None)  # fsspec not installed
    res = cli(*extract_args(videos, "memory://x/y", standin_weights, names=["v0"]))
    assert res.exit_code == 2 and "pip install fsspec" in errors(res)[0]


def test_plain_paths_never_import_fsspec():
    code = ("import sys; from weights.storage import is_url; from davel.batch.inputs import check_output_dir; "
            "import tempfile; check_output_dir(tempfile.mkdtemp()); "
            "assert not is_url('/a/b') and not is_url('C:/x') and is_url('s3://b/p'); "
            "assert 'fsspec' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
