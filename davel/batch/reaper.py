"""``python -m davel.batch.reaper PID``: when process PID dies, kill what it had started.

The Ray instance ``--ray local`` starts is made of processes below the driver
(GCS, raylet, agents, workers). Killed with SIGKILL, the driver cannot stop
them; most die with the raylet, but Ray's per-node agents were measured alive
minutes later (../shared/SCALE.md). This watcher, a child of the driver, notes
the driver's descendants twice a second and, once the driver is gone, kills
the ones it noted last (each checked by its start time, so that a recycled pid
is left alone), and for a few seconds any Ray worker whose raylet was one of
them. It ignores Ctrl-C: on Ctrl-C the driver stops everything itself.
Linux only (/proc); elsewhere it exits at once.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

PERIOD = 0.5
LINGER = 5.0  # seconds the reaper goes on looking after the driver died


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process."""
    out: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            out[int(entry)] = (int(fields[1]), fields[19])
    return out


def descendants(root: int, table: dict[int, tuple[int, str]] | None = None) -> dict[int, str]:
    """pid -> start time of every descendant of ``root``."""
    table = _table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = table[child][1]
            todo.append(child)
    return found


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    driver = int(argv[0])
    if not Path("/proc").is_dir():
        return
    noted: dict[int, str] = {}
    while os.getppid() == driver:
        noted = descendants(driver)
        noted.pop(os.getpid(), None)
        time.sleep(PERIOD)
    # a worker the raylet was starting as it died is not noted yet: it carries its
    # raylet's pid in its environment (RAY_RAYLET_PID); look for those a few times
    marks = {f"RAY_RAYLET_PID={pid}".encode() for pid in noted}
    for _ in range(int(LINGER / PERIOD)):
        table = _table()
        for pid, (_, started) in table.items():
            if noted.get(pid) == started or _carries(pid, marks):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(PERIOD)


def _carries(pid: int, marks: set[bytes]) -> bool:
    try:
        return any(entry in marks for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return False


if __name__ == "__main__":
    main(sys.argv[1:])
