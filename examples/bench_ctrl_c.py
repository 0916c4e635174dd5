"""Ctrl-C at random moments, under CPU load: does `davel extract` always stop fast and clean?

    PYTHONPATH=. python examples/bench_ctrl_c.py [--runs 30] [--engine plain|ray|both] [--no-load]

Writes a few tiny synthetic videos and stand-in weights to a temporary folder,
starts one busy-loop process per core, times one uninterrupted batch per engine,
then ``--runs`` times starts the batch in its own session and sends SIGINT to the
whole process group (as a terminal does) at a moment drawn uniformly from start-up
to the end of that batch. Each run must: exit 130 within ``--limit`` seconds
(default 2), print no traceback, leave no temporary (``.part``) or claim file,
leave every video's outputs complete or absent (a sidecar ``<stem>_davel.json``
only with all its arrays; arrays without their sidecar are the kill between the
array renames and the sidecar's, redone on resume, and allowed), and leave no
process of its group (or, with Ray, of its network namespace) alive 3 s after
it exits. ``--report`` is passed too, so its temporary file is checked as well.

``--ray local`` runs inside a private network namespace with only loopback
(``unshare -n``, needs root), so its Ray cluster cannot meet another one.

Prints per engine: runs, exits 130, max / median seconds from SIGINT to exit,
and each failure with the tail of its stderr.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
FAST = ["--no-flow", "--short-side", "128", "--crop", "112", "--device", "cpu", "-q"]
NETNS = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def command(engine: str, videos: list[Path], out: Path, weights: Path, report: Path) -> list[str]:
    cmd = [sys.executable, "-m", "davel", "extract", *map(str, videos), "-o", str(out),
           "--weights-dir", str(weights), "--report", str(report), *FAST]
    return [*NETNS, *cmd, "--ray", "local"] if engine == "ray" else cmd


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DAVEL_BATCH_INLINE", None)
    with open(log, "w") as err:  # a file, not a pipe: a leftover process cannot hold our reads
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def processes() -> list[tuple[int, int, str, str]]:
    """(pid, pgid, state, network namespace) of every process."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ns = os.readlink(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out.append((int(entry), int(fields[2]), fields[0], ns))
    return out


def leftovers(pgid: int, netns: str | None) -> list[int]:
    """Live processes of the group, or (with Ray) of its private network namespace."""
    return sorted(pid for pid, group, state, ns in processes()
                  if state != "Z" and (group == pgid or (netns is not None and ns == netns)))


def describe(pids: list[int]) -> str:
    names = []
    for pid in pids:
        try:
            names.append(f"{pid}:" + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:80].decode())
        except OSError:
            names.append(f"{pid}:?")
    return "; ".join(names)


def check_outputs(out: Path) -> list[str]:
    """What is wrong in the output folder after an interrupted batch."""
    problems = []
    if not out.exists():
        return problems
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    if hidden:
        problems.append(f"temporary or claim files left: {hidden}")
    names = {p.name for p in out.iterdir()}
    for sidecar in sorted(n for n in names if n.endswith("_davel.json")):
        stem = sidecar[: -len("_davel.json")]
        missing = [s for s in ("rgb", "flow", "vggish") if f"{stem}_{s}.npy" not in names]
        if missing:
            problems.append(f"{sidecar} without {missing}")
    return problems


def one_run(engine: str, cmd_for, delay: float, limit: float, work: Path, i: int) -> dict:
    out, report, log = work / f"out{i}", work / f"report{i}.jsonl", work / f"err{i}.txt"
    p = start(cmd_for(out, report), log)
    failures: list[str] = []
    try:
        p.wait(timeout=delay)
        return {"skipped": True}  # finished before the SIGINT
    except subprocess.TimeoutExpired:
        pass
    netns = None
    if engine == "ray":
        try:
            netns = os.readlink(f"/proc/{p.pid}/ns/net")
        except OSError:
            pass
    t0 = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)
    try:
        code = p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = None
    seconds = time.monotonic() - t0
    if code is None:
        failures.append(f"no exit 30 s after SIGINT (alive: {describe(leftovers(p.pid, netns))})")
    elif code != 130:
        failures.append(f"exit {code}")
    elif seconds > limit:
        failures.append(f"exit after {seconds:.2f} s")
    time.sleep(3.0)
    left = leftovers(p.pid, netns)
    if left:
        failures.append(f"alive 3 s after exit: {describe(left)}")
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    err = log.read_text(errors="replace")
    if "Traceback" in err:
        failures.append("a traceback on stderr")
    failures += check_outputs(out)
    if report.parent.exists() and any(n.name.startswith(f".{report.name}") for n in report.parent.iterdir()):
        failures.append("the --report temporary file left")
    return {"skipped": False, "code": code, "seconds": seconds, "failures": failures, "delay": delay,
            "tail": "\n".join(err.strip().splitlines()[-6:])}


def busy() -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
            for _ in range(os.cpu_count() or 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--engine", choices=["plain", "ray", "both"], default="both")
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--limit", type=float, default=2.0, help="seconds from SIGINT to exit 130")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-load", action="store_true", help="no busy-loop processes")
    args = ap.parse_args()

    from weights.standin_files import write_standins

    from media_files import write_video

    rng = random.Random(args.seed)
    engines = ["plain", "ray"] if args.engine == "both" else [args.engine]
    with tempfile.TemporaryDirectory(prefix="bench_ctrl_c_") as tmp:
        work = Path(tmp)
        videos = [write_video(work / f"v{i}.mp4", 33 + 8 * i, fps=25) for i in range(args.videos)]
        weights = write_standins(work / "weights", salt=0, detectors=False)
        load = [] if args.no_load else busy()
        try:
            for engine in engines:
                def cmd_for(out: Path, report: Path, engine: str = engine) -> list[str]:
                    return command(engine, videos, out, weights, report)

                t0 = time.monotonic()
                log = work / f"full_{engine}.txt"
                full = start(cmd_for(work / f"full_{engine}", work / f"full_{engine}.jsonl"), log).wait()
                span = time.monotonic() - t0
                if full != 0:
                    print(f"{engine}: the uninterrupted batch failed (exit {full}):\n{log.read_text()[-2000:]}")
                    continue
                print(f"{engine}: uninterrupted batch {span:.1f} s; SIGINT at U(0, {span:.1f}) s", flush=True)
                results = []
                (work / engine).mkdir()
                for i in range(args.runs):
                    r = one_run(engine, cmd_for, rng.uniform(0.0, span), args.limit, work / engine, i)
                    results.append(r)
                    if not r["skipped"]:
                        mark = "ok" if not r["failures"] else "FAIL " + "; ".join(r["failures"])
                        print(f"  run {i:2d}: SIGINT at {r['delay']:5.2f} s, exit {r['code']} "
                              f"after {r['seconds']:.2f} s: {mark}", flush=True)
                ran = [r for r in results if not r["skipped"]]
                times = [r["seconds"] for r in ran if r["code"] is not None]
                bad = [r for r in ran if r["failures"]]
                print(f"{engine}: runs {len(ran)} (+{len(results) - len(ran)} finished before the SIGINT), "
                      f"exits 130: {sum(r['code'] == 130 for r in ran)}, seconds to exit: "
                      f"max {max(times, default=float('nan')):.2f}, "
                      f"median {statistics.median(times) if times else float('nan'):.2f}, failures: {len(bad)}")
                for r in bad:
                    print(f"  FAILED (SIGINT at {r['delay']:.2f} s): {'; '.join(r['failures'])}\n"
                          + "\n".join("    | " + line for line in r["tail"].splitlines()))
        finally:
            for p in load:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
