"""Several `davel extract` processes on one folder: is every video done once?

    PYTHONPATH=. python examples/bench_batch.py [--videos 30] [--procs 3] [--kill-one]

Writes small synthetic videos and stand-in weights to a temporary folder,
runs one process alone (the reference), then ``--procs`` processes at once on
the same inputs and output folder, each with its own ``--report``. With
``--kill-one`` one process is SIGKILLed mid-run (its worker dies with it) and
started again. Prints per-video done counts, duplicates, wall times and
whether the outputs are bit-identical to the single-process run.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
FAST = ["--no-flow", "--short-side", "128", "--crop", "112", "--device", "cpu", "-q"]


def command(videos: list[Path], out: Path, weights: Path, report: Path) -> list[str]:
    return [sys.executable, "-m", "davel", "extract", *map(str, videos), "-o", str(out),
            "--weights-dir", str(weights), "--report", str(report), *FAST]


def start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def report_records(report: Path) -> list[dict]:
    """A finished report, or what a killed process had flushed to its temporary file."""
    paths = [report] if report.exists() else sorted(report.parent.glob(f".{report.name}.*.part"))
    return [json.loads(line) for p in paths for line in p.read_text().splitlines() if line.strip()]


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--kill-one", action="store_true", help="SIGKILL one process mid-run, then restart it")
    ap.add_argument("--kill-after", type=float, default=None, help="seconds before the kill (default: a third "
                    "of the single-process wall time)")
    args = ap.parse_args()

    from weights.standin_files import write_standins

    from media_files import write_video

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    vids = work / "videos"
    vids.mkdir()
    videos = [write_video(vids / f"clip{i:02d}.mp4", 33 + 8 * (i % 3), fps=25) for i in range(args.videos)]
    weights = write_standins(work / "weights", salt=0, detectors=False)

    t0 = time.monotonic()
    ref = start(command(videos, work / "single", weights, work / "single.jsonl"))
    assert ref.wait() == 0, ref.stderr.read()
    single_wall = time.monotonic() - t0

    out = work / "shared"
    reports = [work / f"r{i}.jsonl" for i in range(args.procs)]
    t0 = time.monotonic()
    procs = [start(command(videos, out, weights, r)) for r in reports]
    killed_at = None
    if args.kill_one:
        time.sleep(args.kill_after if args.kill_after is not None else single_wall / 3)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        killed_at = time.monotonic() - t0
        dead = report_records(reports[0])
        reports[0] = work / "r0_restarted.jsonl"
        procs[0] = start(command(videos, out, weights, reports[0]))
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - t0

    records = [r for rep in reports for r in report_records(rep)]
    if args.kill_one:
        records += dead
    done = Counter(Path(r["path"]).name for r in records if r["status"] == "done")
    per_video = Counter(done.get(v.name, 0) for v in videos)
    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    killed = f", one killed at {killed_at:.1f} s and restarted" if killed_at else ""
    print(f"videos {len(videos)}, processes {args.procs}{killed}")
    print(f"exit codes {codes}")
    print(f"per-video done counts: {dict(sorted(per_video.items()))} (count: number of videos)")
    print(f"duplicates (videos done more than once): {sum(n > 1 for n in done.values())}")
    print(f"done per process: {[sum(r['status'] == 'done' for r in report_records(rep)) for rep in reports]}")
    print(f"wall: single process {single_wall:.1f} s, {args.procs} processes {wall:.1f} s")
    print(f"outputs identical to the single-process run: {files(out) == files(work / 'single')}")
    print(f"temporary or claim files left: {leftovers}")


if __name__ == "__main__":
    main()
