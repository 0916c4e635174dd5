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

    python examples/bench_memory.py [--minutes 10] [--cases standard,fast]
    python examples/bench_memory.py --leak [--videos 200]

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
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--settings", default="standard", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--stub", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("videos_list", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    sys.path.insert(0, str(HERE.parent))
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
