#!/usr/bin/env python
"""Peak memory of feature extraction: does it grow with the video's length, or over a batch?

Prints figures (not a test). Each case runs in a fresh subprocess, and its peak
RSS is the child's own ``ru_maxrss`` (from ``os.wait4``), so one case's
high-water mark never hides in another's.

- length: a short and a long synthetic video (320x240, 25 fps, AAC tone), at
  the standard settings and at the fast ones (``--no-flow --short-side 128
  --crop 112``); prints each peak and long/short (target <= 1.3).
  RAFT at the standard settings takes minutes per second of video on a CPU, so
  by default the standard case swaps the RAFT, I3D and VGGish forward passes
  for cheap modules with outputs of the right shape (``--stub-networks``):
  what is measured is then decoding, resizing, windowing, audio and buffering.
  The fast case runs the real networks with stand-in weights.
  Loading the networks has its own peak (the state dicts and the modules
  briefly coexist), which a short video may not pass; so each case also prints
  the peak while extracting, counted from after loading (``VmHWM`` reset
  through ``/proc/self/clear_refs``), above the RSS the loaded networks hold.
- ``--leak``: one process, one FeatureExtractor, many tiny videos in a row;
  prints RSS after the first 10 and after all (target within 10 %).

- ``--detect-example``: ``davel detect examples/example.mp4 --top-k 5`` as
  ``examples/run_example.sh`` runs it (stand-in weights, written once to
  ``--standin-dir``, default ``$DAVEL_HOME/standin``), sampling every 0.2 s the RSS,
  peak RSS (``VmHWM``) and PSS (``/proc/PID/smaps_rollup``) of EVERY process of the
  command's tree: the driver and all its descendants, found through ``/proc``
  (no psutil). Prints the driver's peak and its RSS while the worker runs, the
  worker's peak, and the tree's peak (max over time of the sum of RSS, and of PSS:
  RSS counts torch's shared libraries once per process, PSS splits them). Then the
  same with ``--ray local`` when ``import ray`` works, inside a fresh network
  namespace with only loopback (``unshare -n``, needs root): Ray's processes
  (gcs_server, raylet and the workers it starts) are children of the driver and are
  counted in its tree; processes of that namespace outside the tree, if any
  appeared, are listed and not counted. The first run extracts the video's
  features unless the feature cache ($DAVEL_HOME/features) has them; the runs
  after it read them from there (the driver's figures do not depend on it).
  ``--old-driver`` adds runs whose driver loads the detector and drops it
  (``load_detector`` + ``gc``), as ``davel detect`` did before it checked
  the checkpoint memory-mapped (``davel.inference.check_checkpoint``); and a fresh
  process prints what each way of checking holds.

    python examples/bench_memory.py [--minutes 10] [--cases standard,fast]
    python examples/bench_memory.py --leak [--videos 200]
    python examples/bench_memory.py --detect-example [--old-driver] [--no-ray] [--standin-dir DIR]

``--max-gb`` kills a child whose RSS passes it (reported as '>'), so that a
run which would swallow the machine's memory does not.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
W, H, FPS, RATE = 320, 240, 25, 44100
FAST = {"flow": False, "short_side": 128, "crop": 112}


# ---------------------------------------------------------------- inputs


def write_video(path: Path, seconds: float, seed: int = 0) -> Path:
    """A moving-bar video with a tone, encoded as it goes (nothing held but one frame)."""
    import av
    from mp4_writer import open_h264_aac

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    c, v, a = open_h264_aac(path, W, H, FPS, RATE, layout="stereo", crf=28)
    step = a.codec_context.frame_size or 1024
    frames = int(round(seconds * FPS))
    samples = int(round(seconds * RATE))
    sent = 0
    for i in range(frames):
        img = base.copy()
        x = (i * 4) % W
        img[:, x:x + 16] = 255
        for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
        upto = min(samples, int(round((i + 1) * RATE / FPS)))
        while sent + step <= upto or (i == frames - 1 and sent < samples):
            n = min(step, samples - sent)
            t = (sent + np.arange(n)) / RATE
            tone = (0.3 * np.sin(2 * np.pi * (220 + 20 * (i % 11)) * t)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = RATE, sent, Fraction(1, RATE)
            for p in a.encode(af):
                c.mux(p)
            sent += n
    for s in (v, a):
        for p in s.encode():
            c.mux(p)
    c.close()
    return path


# ---------------------------------------------------------------- child side


def stub_networks() -> None:
    """Replace the three networks' forward passes with cheap ones of the same output shapes."""
    import torch

    from extractors.i3d import I3D
    from extractors.raft import FlowEstimator
    from extractors.vggish import VGGish

    def flow(self, a, b):  # [P, 3, H, W] x2 -> [P, 2, H, W], touching its memory like RAFT's
        return (a[:, :2] - b[:, :2]) * 0.01

    def i3d(self, x):  # [B, C, T, H, W] -> [B, 1024]
        return x.mean(dim=(1, 2, 3, 4))[:, None].repeat(1, 1024)

    def vggish(self, x):  # [N, 1, 96, 64] -> [N, 128]
        return torch.relu(x.mean(dim=(1, 2, 3)))[:, None].repeat(1, 128)

    FlowEstimator.__call__ = flow
    I3D.features = i3d
    VGGish.forward = vggish


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Start the kernel's peak-RSS count (VmHWM) afresh from now (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(args: argparse.Namespace) -> None:
    import torch

    from extractors.extract import ExtractionSettings, FeatureExtractor

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stub:
        stub_networks()
    settings = ExtractionSettings(**(FAST if args.settings == "fast" else {}))
    fx = FeatureExtractor(args.weights, "cpu", settings, tune_allocator=True)  # as `davel extract` runs it
    fx.load_networks()
    videos = args.videos_list
    report: dict = {"rss_mb": {}, "load_peak_mb": round(rss_mb("VmHWM"), 1),
                    "loaded_mb": round(rss_mb(), 1)}
    counted = reset_peak()
    t0 = time.perf_counter()
    for n, video in enumerate(videos, 1):
        feats = fx.extract(video)
        if n in (1, 10, len(videos)):
            report["rss_mb"][n] = round(rss_mb(), 1)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if counted:  # the peak while extracting, above what loading the networks left
        report["extract_peak_mb"] = round(rss_mb("VmHWM"), 1)
    report["T"] = int(len(feats.rgb))
    print("RESULT " + json.dumps(report), flush=True)


# ---------------------------------------------------------------- parent side


def run_child(argv: list[str], max_gb: float) -> tuple[float, dict | None, bool]:
    """(peak RSS in MB of the child, its report, whether it was killed at ``max_gb``)."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", *argv], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(HERE.parent), os.environ.get("PYTHONPATH", "")])})
    killed = threading.Event()

    def watch() -> None:  # the kernel's peak is only known at exit; poll to stop a runaway early
        status = Path(f"/proc/{proc.pid}/status")
        while proc.returncode is None:
            try:
                kb = next(int(x.split()[1]) for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
            except (OSError, StopIteration):
                return
            if kb > max_gb * 1024 * 1024:
                killed.set()
                proc.kill()
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    report = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            report = json.loads(line[7:])
    if report is None and not killed.is_set():
        raise SystemExit(f"case {argv} failed (exit {proc.returncode})")
    peak = max(usage.ru_maxrss / 1024, (report or {}).get("load_peak_mb", 0))  # VmHWM was reset
    return peak, report, killed.is_set()


def fmt(peak: float, killed: bool) -> str:
    return f"{'>' if killed else ''}{peak:8.0f} MB"


# ---------------------------------------------------------------- davel detect's process tree


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant of it alive now."""
    from davel.batch.reaper import descendants

    return [root, *descendants(root)]


def proc_memory(pid: int) -> tuple[int, int, int | None] | None:
    """``(RSS, peak RSS, PSS)`` in kB of a process (PSS None when smaps_rollup cannot be
    read), or None when it is gone or holds no memory (a zombie, a kernel thread)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = {k: v for k, _, v in (line.partition(":") for line in status.splitlines())}
    if "VmRSS" not in fields:
        return None
    rss, hwm = int(fields["VmRSS"].split()[0]), int(fields.get("VmHWM", fields["VmRSS"]).split()[0])
    pss = None
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
                break
    except OSError:
        pass
    return rss, hwm, pss


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def role(pid: int, root: int, cmd: str) -> str:
    """What a process of the tree is, from its command line."""
    if pid == root:
        return "driver"
    if "spawn_main" in cmd:
        return "worker"
    if "resource_tracker" in cmd:
        return "resource tracker"
    for name in ("gcs_server", "raylet"):
        if name in cmd.split(" ", 1)[0]:
            return name
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "ray worker"
    if "ray" in cmd:
        return "ray (other)"
    return Path(cmd.split(" ", 1)[0]).name or "?"


def sample_tree(argv: list[str], env: dict[str, str], every: float = 0.2) -> dict:
    """Run ``argv`` and sample its process tree every ``every`` s until it exits."""
    before = {p for p in os.listdir("/proc") if p.isdigit()}
    errors = tempfile.TemporaryFile("w+")  # not a pipe: Ray's notices could fill one and block the run
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=errors, text=True)
    root = proc.pid
    procs: dict[int, dict] = {}  # pid -> role, cmd, peaks
    totals = {"rss": 0, "pss": 0}
    driver_while_worker: list[int] = []
    outside: dict[int, str] = {}
    own_netns, netns = os.readlink("/proc/self/ns/net"), None
    t0 = time.perf_counter()
    while proc.poll() is None:
        rss_sum = pss_sum = 0
        working = False
        tree = process_tree(root)
        for pid in tree:
            mem = proc_memory(pid)
            if mem is None:
                continue
            info = procs.get(pid)
            if info is None:
                cmd = cmdline(pid)
                info = procs[pid] = {"cmd": cmd, "role": role(pid, root, cmd), "rss": 0, "hwm": 0, "pss": 0,
                                     "last": 0}
            if info["role"] == "ray worker" or info["role"] == "ray (other)":  # ray renames its workers
                cmd = cmdline(pid)
                if cmd:
                    info["cmd"], info["role"] = cmd, role(pid, root, cmd)
            rss, hwm, pss = mem
            info["rss"], info["hwm"], info["last"] = max(info["rss"], rss), max(info["hwm"], hwm), rss
            info["pss"] = max(info["pss"], pss or 0)
            rss_sum += rss
            pss_sum += pss or 0
            working = working or info["role"] in ("worker", "ray worker") and rss > 200 * 1024
        if working and root in procs:
            driver_while_worker.append(procs[root]["last"])
        totals["rss"], totals["pss"] = max(totals["rss"], rss_sum), max(totals["pss"], pss_sum)
        if netns is None:
            try:
                netns = os.readlink(f"/proc/{root}/ns/net")
            except OSError:
                pass
        if netns is not None and netns != own_netns:
            # a run in its own network namespace (--ray): processes of that namespace that
            # are not in the tree escaped it (daemonised); other runs share ours with everyone
            in_tree = set(tree)
            for d in os.listdir("/proc"):
                if d.isdigit() and d not in before and int(d) not in in_tree and int(d) not in outside:
                    try:
                        if os.readlink(f"/proc/{d}/ns/net") == netns:
                            outside[int(d)] = cmdline(int(d))[:100]
                    except OSError:
                        pass
        time.sleep(every)
    rc = proc.wait()
    errors.seek(0)
    err = errors.read()
    errors.close()
    if rc != 0:
        raise SystemExit(f"{' '.join(argv)[-300:]} failed (exit {rc}):\n{err[-2000:]}")
    driver_while_worker.sort()
    return {"procs": procs, "tree_rss": totals["rss"], "tree_pss": totals["pss"], "seconds":
            time.perf_counter() - t0, "outside": outside,
            "driver_steady": driver_while_worker[len(driver_while_worker) // 2] if driver_while_worker else None}


_OLD_DRIVER = """
import gc, sys
import davel.inference as inference

def check_checkpoint(name_or_path, device="auto", labels=None, weights_dir=None, expect_dims=None):
    # the driver before: the whole detector loaded, asked, then dropped (task.release())
    d = inference.load_detector(name_or_path, device, labels, weights_dir, expect_dims)
    s = inference.CheckpointSummary(name=d.name, kind=d.kind, input_dims=d.model.input_dims,
                                    feature_set=d.feature_set, has_labels=d.labels is not None,
                                    device=d.device, weights_dir=weights_dir)
    del d
    gc.collect()
    return s

inference.check_checkpoint = check_checkpoint
from davel.cli import main
sys.argv[0] = "davel"
main()
"""

_CHECK_ONLY = """
import gc, json, sys
from pathlib import Path

def kb(field):
    return next(int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines()
                if x.startswith(field + ":"))

import davel.inference as inference
imported = kb("VmRSS")
fn = inference.check_checkpoint if sys.argv[2] == "check" else inference.load_detector
got = fn(sys.argv[1], "cpu")
held = kb("VmRSS")
del got
gc.collect()
print("RESULT " + json.dumps({"imported": imported, "peak": kb("VmHWM"), "held": held, "dropped": kb("VmRSS")}))
"""


def _mb(kb: float | None) -> str:
    return "    n/a" if kb is None else f"{kb / 1024:7.0f} MB"


def report_tree(label: str, res: dict) -> None:
    procs = res["procs"].values()
    driver = next((p for p in procs if p["role"] == "driver"), None)
    workers = [p for p in procs if p["role"] in ("worker", "ray worker")]
    big = max(workers, key=lambda p: p["hwm"], default=None)
    print(f"{label} ({res['seconds']:.0f} s, {len(res['procs'])} processes seen):", flush=True)
    if driver:
        print(f"  driver peak RSS {_mb(driver['hwm'])} (sampled {_mb(driver['rss'])}, PSS {_mb(driver['pss'])}); "
              f"RSS while the worker ran (median) {_mb(res['driver_steady'])}")
    if big:
        print(f"  worker peak RSS {_mb(big['hwm'])} (sampled {_mb(big['rss'])}, PSS {_mb(big['pss'])})"
              f"{'  [' + big['cmd'][:40] + ']' if big['role'] == 'ray worker' else ''}")
    print(f"  tree peak (max over time of the sum): RSS {_mb(res['tree_rss'])}, PSS {_mb(res['tree_pss'])}")
    others: dict[str, list[int]] = {}
    for p in procs:
        if p["role"] not in ("driver",) and p is not big:
            others.setdefault(p["role"], []).append(p["hwm"])
    if others:
        print("  others (peak RSS each): " + "; ".join(
            f"{r} x{len(v)} max {_mb(max(v)).strip()}" for r, v in sorted(others.items())))
    if res["outside"]:
        print(f"  processes of its network namespace outside the tree (not counted): {len(res['outside'])}: "
              + "; ".join(list(res["outside"].values())[:5]))


def detect_example(args: argparse.Namespace) -> None:
    from weights import store
    from weights.standin_files import write_standins

    weights = Path(args.standin_dir) if args.standin_dir else store.cache_dir() / "standin"
    if not (weights / "ccnet_unav100.pth").is_file() or not (weights / "davel-weights.json").is_file():
        print(f"writing stand-in weights to {weights} (about 2 GB, once)", flush=True)
        write_standins(weights, salt=0)  # as `davel weights standin --no-one-peace`
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("DAVEL_DEBUG", None)
    ray_ok = not args.no_ray and subprocess.run([sys.executable, "-c", "import ray"], env=env,
                                                capture_output=True).returncode == 0
    netns = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    with tempfile.TemporaryDirectory() as tmp:
        def command(old: bool, ray: bool) -> list[str]:
            head = [sys.executable, "-c", _OLD_DRIVER] if old else [sys.executable, "-m", "davel"]
            argv = [*head, "detect", str(HERE / "example.mp4"), "--weights-dir", str(weights),
                    "--top-k", "5", "--quiet", "-o", str(Path(tmp) / "events.json"), "--overwrite"]
            return [*netns, *argv, "--ray", "local"] if ray else argv

        runs = [("davel detect", False, False)]
        if args.old_driver:
            runs.append(("davel detect, driver loading the detector (before)", True, False))
        if ray_ok:
            runs.append(("davel detect --ray local", False, True))
            if args.old_driver:
                runs.append(("davel detect --ray local, driver loading the detector (before)", True, True))
        for label, old, ray in runs:
            report_tree(label, sample_tree(command(old, ray), env))
        if not ray_ok:
            print("--ray local: not measured (" + ("--no-ray" if args.no_ray else "ray does not import") + ")")
    if args.old_driver:
        ckpt = weights / "ccnet_unav100.pth"
        print(f"checking {ckpt.name} ({ckpt.stat().st_size / 2**20:.0f} MB) in a fresh process:")
        for how, what in (("load", "load_detector (the driver before)"), ("check", "check_checkpoint (now)")):
            out = subprocess.run([sys.executable, "-c", _CHECK_ONLY, str(ckpt), how], env=env,
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
            print(f"  {what:36s} RSS after imports {_mb(r['imported'])}, peak {_mb(r['peak'])}, "
                  f"holding {_mb(r['held'])}, after dropping it {_mb(r['dropped'])}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the long video")
    ap.add_argument("--short-seconds", type=float, default=10.0)
    ap.add_argument("--cases", default="standard,fast", help="comma-separated: standard, fast")
    ap.add_argument("--stub-networks", choices=("auto", "all", "none"), default="auto",
                    help="auto: stubs for the standard case only; all; none (real RAFT: very slow)")
    ap.add_argument("--leak", action="store_true", help="many tiny videos in one process instead")
    ap.add_argument("--videos", type=int, default=200, help="--leak: videos in the loop")
    ap.add_argument("--leak-settings", choices=("fast", "standard"), default="fast")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the child (0: default)")
    ap.add_argument("--max-gb", type=float, default=12.0, help="kill a child whose RSS passes this")
    ap.add_argument("--workdir", help="keep the videos and weights here (default: a temp dir)")
    ap.add_argument("--detect-example", action="store_true",
                    help="the process tree of `davel detect examples/example.mp4` instead")
    ap.add_argument("--standin-dir", help="--detect-example: stand-in weights (default: $DAVEL_HOME/standin)")
    ap.add_argument("--old-driver", action="store_true",
                    help="--detect-example: also with a driver that loads the detector (as before)")
    ap.add_argument("--no-ray", action="store_true", help="--detect-example: skip the --ray local run")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--settings", default="standard", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--stub", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("videos_list", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    sys.path.insert(0, str(HERE.parent))
    if args.detect_example:
        return detect_example(args)
    from weights.standin_files import write_standins

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        weights = work / "weights"
        if not (weights / "vggish-10086976.pth").is_file():
            write_standins(weights, salt=0, detectors=False)
        common = ["--weights", str(weights), "--threads", str(args.threads)]

        if args.leak:
            videos = []
            for i in range(min(args.videos, 20)):  # 20 distinct files, cycled
                p = work / f"tiny{i:02d}.mp4"
                if not p.is_file():
                    write_video(p, 1.0 + (i % 3) * 0.25, seed=i)
                videos.append(str(p))
            loop = [videos[i % len(videos)] for i in range(args.videos)]
            stub = args.stub_networks == "all" or (args.leak_settings == "standard"
                                                   and args.stub_networks == "auto")
            peak, rep, killed = run_child(["--settings", args.leak_settings, *common,
                                           *(["--stub"] if stub else []), *loop], args.max_gb)
            r = rep["rss_mb"] if rep else {}
            after10, after_all = r.get("10"), r.get(str(args.videos))
            print(f"leak ({args.leak_settings}, {'stub' if stub else 'real'} networks): "
                  f"RSS after 1 video {r.get('1')} MB, after 10 {after10} MB, "
                  f"after {args.videos} {after_all} MB, peak {fmt(peak, killed)}")
            if after10 and after_all:
                print(f"  growth 10 -> {args.videos}: {100 * (after_all / after10 - 1):+.1f} % (target within 10 %)")
            return

        short = work / f"short_{args.short_seconds:g}s.mp4"
        long = work / f"long_{args.minutes:g}min.mp4"
        for p, s in ((short, args.short_seconds), (long, args.minutes * 60)):
            if not p.is_file():
                t0 = time.perf_counter()
                write_video(p, s)
                print(f"wrote {p.name} ({s:g} s) in {time.perf_counter() - t0:.0f} s", flush=True)
        for case in args.cases.split(","):
            stub = args.stub_networks == "all" or (args.stub_networks == "auto" and case == "standard")
            peaks, growth = [], []
            for video in (short, long):
                peak, rep, killed = run_child(["--settings", case, *common, *(["--stub"] if stub else []),
                                               str(video)], args.max_gb)
                peaks.append(peak)
                took = f"{rep['seconds']} s, T={rep['T']}" if rep else "killed"
                above = ""
                if rep and "extract_peak_mb" in rep:
                    growth.append(rep["extract_peak_mb"] - rep["loaded_mb"])
                    above = (f"; networks loaded {rep['loaded_mb']:.0f} MB, peak while extracting "
                             f"{rep['extract_peak_mb']:.0f} MB (+{growth[-1]:.0f})")
                print(f"{case:8s} ({'stub' if stub else 'real'} networks) {video.name:16s} "
                      f"peak RSS {fmt(peak, killed)}{above}  ({took})", flush=True)
            print(f"{case:8s} long/short peak ratio: {peaks[1] / peaks[0]:.2f} (target <= 1.3)", flush=True)
            if len(growth) == 2:
                print(f"{case:8s} extraction's own growth above the loaded networks: "
                      f"{growth[0]:+.0f} MB short, {growth[1]:+.0f} MB long", flush=True)


if __name__ == "__main__":
    main()
