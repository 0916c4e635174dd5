"""davel.batch.reaper: a driver killed with SIGKILL leaves nothing of what it started."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DRIVER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-m", "davel.batch.reaper", str(__import__("os").getpid())])
child = subprocess.Popen(["sleep", "120"])
print(child.pid, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_what_a_killed_driver_started_is_killed():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=env, stdout=subprocess.PIPE, text=True)
    orphan = int(driver.stdout.readline())
    time.sleep(1.5)  # the reaper has noted the child
    assert alive(orphan)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 5
    while alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(orphan)


def test_a_recycled_pid_is_left_alone():
    from davel.batch import reaper

    me = reaper.descendants(os.getppid())
    assert os.getpid() in me
    # start times tell a process from a later one with the same pid
    assert me[os.getpid()] == reaper._table()[os.getpid()][1]
