"""Atomic, durable writes with the user's file mode, and the lock that serialises the weights lock file."""
from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest
import torch

from weights import atomic, store


def test_old_file_survives_a_failed_write_and_nothing_is_left(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic.atomic_write(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_new_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic.atomic_write_text(tmp_path / "a.json", "{}")
        tmp = tmp_path / "dl.part"
        tmp.write_bytes(b"x")
        os.chmod(tmp, 0o600)  # what tempfile-based downloaders leave
        atomic.commit_file(tmp, tmp_path / "b.pth")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "b.pth").stat().st_mode) == mode


def test_file_and_folder_are_flushed_before_the_write_returns(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    events = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", list(synced))),
                                                     real_replace(a, b)))
    atomic.atomic_write_text(tmp_path / "x.txt", "data")
    # the file is synced before the rename, the folder after it
    assert events == [("replace", [False])] and synced == [False, True]


def _record(directory: str, index: int) -> None:
    for j in range(20):  # every name once: an update lost to a race is never made good
        name = f"f{index}_{j}.pth"
        (Path(directory) / name).write_bytes(bytes([index, j]) * 10)
        store.record_in_lock(Path(directory), name, origin="test")


def test_concurrent_lock_updates_keep_every_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record, args=(str(tmp_path), i)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    lock = json.loads((tmp_path / store.LOCK_NAME).read_text())
    assert len(lock) == 8 * 20


def test_downloads_and_stand_ins_get_the_umask_mode(tmp_path, monkeypatch):
    def fake(url, dst, hash_prefix=None, progress=True):
        # torch.hub writes through a NamedTemporaryFile: mode 0600
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"weights")
        os.close(fd)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    spec = store.registry()["vggish-10086976.pth"]
    monkeypatch.setitem(store.registry(), "vggish-10086976.pth",
                        type(spec)(**{**spec.__dict__, "sha256_prefix": None}))
    old = os.umask(0o022)
    try:
        path = store.download("vggish-10086976.pth", tmp_path, progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
