"""Claims: how several processes share one output folder without talking to each other.

Before working on an input, a process takes ``<folder>/.<stem>.claim``: it opens
(creating) the file and takes an exclusive ``flock`` on it without blocking.
The lock is the claim, so the kernel drops it when the owner dies however it
dies (SIGKILL, OOM kill, power cut of a client) and the next process takes the
input over. The file holds the owner's host, pid and start time, and its mtime
is a heartbeat the owner refreshes while it works: a claim whose lock cannot be
taken but whose heartbeat is older than ``stale_after`` seconds is taken over
too, for network filesystems where a lock does not cross hosts (or outlives a
client that went away).

A finished input's claim is removed (path first, lock last). Taking a lock on
a file that another process has just removed would give two owners, so an
acquired lock counts only if the path still names the locked file.

A claim file left by a dead owner, with its contents, tells the next owner to
sweep that input's temporary files (a kill between the temporary file and its
rename leaves one).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

STALE_AFTER = 120.0
"""Seconds without a heartbeat after which a claim whose lock is held is taken over."""

CLAIM_SUFFIX = ".claim"


def claim_path(directory: str | os.PathLike, stem: str) -> Path:
    return Path(directory) / f".{stem}{CLAIM_SUFFIX}"


class Claim:
    """A held claim: ``heartbeat()`` while working, ``release()`` when done.
    ``previous``: what a dead (or stale) earlier owner left in the file, else None."""

    def __init__(self, path: Path, fd: int, previous: dict | None):
        self.path = path
        self.fd: int | None = fd
        self.previous = previous
        self._beat = time.monotonic()

    def heartbeat(self, every: float = 0.0) -> None:
        """Refresh the file's mtime (at most once per ``every`` seconds)."""
        now = time.monotonic()
        if self.fd is None or now - self._beat < every:
            return
        self._beat = now
        try:
            os.utime(self.fd)
        except OSError:  # a heartbeat that cannot be written only risks a takeover
            pass

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if _same_file(self.path, self.fd):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def _same_file(path: Path, fd: int) -> bool:
    try:
        st, fst = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    if not data.strip():
        return None
    try:
        found = json.loads(data)
    except ValueError:
        return {"unreadable": data[:200].decode("utf8", "replace")}
    return found if isinstance(found, dict) else {"unreadable": str(found)[:200]}


def try_claim(directory: str | os.PathLike, stem: str, stale_after: float = STALE_AFTER) -> Claim | None:
    """Take the claim on ``stem`` in ``directory``; None when a live owner holds it.
    Raises OSError when the folder does not let us create the claim file."""
    path = claim_path(directory, stem)
    stale_owner: dict | None = None
    for _ in range(5):  # a few rounds against owners that come and go meanwhile
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stale = time.time() - os.fstat(fd).st_mtime > stale_after
            if stale and _same_file(path, fd):
                # the owner stopped beating: new file, so its lock no longer counts
                stale_owner = _read(fd) or {"stale": True}
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                os.close(fd)
                continue
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if not _same_file(path, fd):  # removed by its owner while we waited for the lock
            os.close(fd)
            continue
        try:
            previous = _read(fd) or stale_owner
            mine = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, mine.encode())
        except BaseException:
            os.close(fd)
            raise
        return Claim(path, fd, previous)
    return None
