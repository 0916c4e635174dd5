"""Throughput of `davel extract`: one process vs `--ray local`, and how the work splits.

    python examples/bench_scale.py [--videos 12] [--seconds 4,8] [--standard] [--configs ...]

Writes synthetic videos (640x360, 30 fps, AAC; durations cycling through
``--seconds``) and stand-in weights (same architectures as the real ones, so the
same cost) to a temporary folder, then runs the SAME inputs through each
configuration, each into an empty output folder:

* ``plain``: ``davel extract`` (one worker process);
* ``ray-K``: ``davel extract --ray local`` with K workers (on a GPU machine
  ``--actors-per-gpu K``; on a CPU-only one, K CPU workers sharing the CPUs);
* ``ray-gpus-N``: on a machine with several GPUs, N of them (``CUDA_VISIBLE_DEVICES``),
  for the scaling efficiency E(N) = throughput(N) / (N x throughput(1)).

Per configuration: wall time, videos/hour and x real time end to end and in the
steady state (first to last finished video), the start-up (command start to the
first finished video) and the tail (time the last 5 % of videos took), the mean
per-video seconds the workers report, and, with ``nvidia-smi``, each GPU's mean
utilisation and peak memory while it ran. The time to decode the videos alone
(PyAV at 25 fps, resized frames and 16 kHz audio, one process) is measured
once and divided by the plain run's per-video time: the share of a worker's time
that is decoding. Ray commands run inside a private network namespace with
only loopback when ``unshare`` works (root), else on the machine's network.

By default the fast non-standard settings are used (``--no-flow --short-side
128 --crop 112``: RAFT dominates a CPU run at the standard ones);
``--standard`` uses the published settings (meant for a GPU machine).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
FAST = ["--no-flow", "--short-side", "128", "--crop", "112"]


def make_videos(folder: Path, count: int, seconds: list[float]) -> tuple[list[Path], float]:
    """``count`` videos 640x360 at 30 fps with a tone; returns them and their total seconds."""
    import av
    import numpy as np
    from mp4_writer import open_h264_aac

    folder.mkdir(parents=True, exist_ok=True)
    paths, total = [], 0.0
    w, h, fps, rate = 640, 360, 30, 44100
    for i in range(count):
        length = seconds[i % len(seconds)]
        path = folder / f"s{i:03d}.mp4"
        c, v, a = open_h264_aac(path, w, h, fps, rate, layout="stereo", crf=30)
        rng = np.random.default_rng(i)
        base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        for k in range(int(length * fps)):
            frame = np.roll(base, 4 * k, axis=1)
            for p in v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        step = a.codec_context.frame_size or 1024
        t = np.arange(int(length * rate)) / rate
        tone = (0.2 * np.sin(2 * np.pi * (220 + 20 * i) * t)).astype(np.float32)
        for s in range(0, len(tone), step):
            chunk = np.ascontiguousarray(np.stack([tone[s:s + step]] * 2))
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate = rate
            for p in a.encode(af):
                c.mux(p)
        for stream in (v, a):
            for p in stream.encode(None):
                c.mux(p)
        c.close()
        paths.append(path)
        total += length
    return paths, total


def gpu_sampler(stop: threading.Event, samples: list[list[tuple[float, float]]]) -> None:
    """``nvidia-smi`` every 0.5 s: per GPU (utilisation %, memory MiB)."""
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return
        row = [tuple(float(x) for x in line.split(",")) for line in out.strip().splitlines() if line.strip()]
        samples.append(row)
        stop.wait(0.5)


def isolated(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]
    return cmd


def run_config(name: str, videos: list[Path], weights: Path, work: Path, settings: list[str],
               extra: list[str], env_extra: dict[str, str], total_seconds: float) -> dict:
    out, report = work / f"out-{name}", work / f"report-{name}.jsonl"
    cmd = [sys.executable, "-m", "davel", "extract", *map(str, videos), "-o", str(out), "--weights-dir", str(weights),
           "--report", str(report), "-q", *settings, *extra]
    if "--ray" in extra:
        cmd = isolated(cmd)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    stop, samples = threading.Event(), []
    sampler = threading.Thread(target=gpu_sampler, args=(stop, samples), daemon=True)
    if shutil.which("nvidia-smi"):
        sampler.start()
    t0 = time.time()
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    stop.set()
    if res.returncode != 0:
        print(f"{name}: exit {res.returncode}: {res.stderr.strip().splitlines()[-3:]}", file=sys.stderr)
    finished = sorted(p.stat().st_mtime - t0 for p in out.glob("*_davel.json"))
    records = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    row = {"config": name, "videos": len(finished), "wall_s": wall}
    if finished:
        row["startup_s"] = finished[0]
        k = max(1, round(0.05 * len(finished)))
        row["tail_s"] = finished[-1] - finished[-1 - k] if len(finished) > k else 0.0
        steady = finished[-1] - finished[0]
        row["videos_per_hour"] = 3600 * len(finished) / wall
        row["x_real_time"] = total_seconds / wall
        row["steady_videos_per_hour"] = 3600 * (len(finished) - 1) / steady if steady > 0 else None
        row["per_video_s"] = sum(r["seconds"] for r in records if r["status"] == "done") / max(1, len(records))
    if samples:
        gpus = len(samples[0])
        row["gpu_util_mean"] = [sum(s[g][0] for s in samples) / len(samples) for g in range(gpus)]
        row["gpu_mem_peak_mib"] = [max(s[g][1] for s in samples) for g in range(gpus)]
    return row


def decode_seconds(videos: list[Path], short_side: int) -> float:
    """Decode alone (frames at 25 fps resized, audio at 16 kHz), one process."""
    code = ("import sys, time\n"
            "from extractors import audio, decode\n"
            "t0 = time.perf_counter()\n"
            "for p in sys.argv[2:]:\n"
            "    for frame in decode.iter_frames(p, 25.0):\n"
            "        decode.resize_short_side(frame, int(sys.argv[1]))\n"
            "    track = audio.decode_audio(p)\n"
            "    audio.resample_to_16k(track.samples, track.sample_rate)\n"
            "print(time.perf_counter() - t0)\n")
    res = subprocess.run([sys.executable, "-c", code, str(short_side), *map(str, videos)], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"decode-only pass failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return float("nan")
    return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--seconds", default="4,8", help="video durations, cycled (comma-separated)")
    ap.add_argument("--standard", action="store_true", help="the published settings (GPU machines)")
    ap.add_argument("--configs", default="plain,ray-1,ray-2", help="plain, ray-K, ray-gpus-N (comma-separated)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="davel-bench-scale-"))
    try:
        from weights.standin_files import write_standins

        weights = write_standins(work / "weights", salt=0, detectors=False)
        videos, total = make_videos(work / "videos", args.videos, [float(s) for s in args.seconds.split(",")])
        settings = [] if args.standard else FAST
        gpus = 0
        try:
            import torch

            gpus = torch.cuda.device_count()
        except ImportError:
            pass
        cpus = len(os.sched_getaffinity(0))
        print(f"{len(videos)} videos, {total:.0f} s of video in all; {cpus} CPUs, {gpus} GPUs; "
              f"settings: {'standard' if args.standard else 'fast (' + ' '.join(FAST) + ')'}")
        rows = []
        for name in args.configs.split(","):
            extra: list[str] = []
            env_extra: dict[str, str] = {}
            if name.startswith("ray-gpus-"):
                n = int(name.rsplit("-", 1)[1])
                if n > gpus:
                    print(f"{name}: skipped ({gpus} GPUs here)")
                    continue
                env_extra["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(n)))
                extra = ["--ray", "local"]
            elif name.startswith("ray-"):
                k = int(name.split("-", 1)[1])
                if gpus:
                    extra = ["--ray", "local", "--actors-per-gpu", str(k)]
                else:  # K CPU workers that leave the probe stage its share
                    extra = ["--ray", "local", "--cpus-per-actor", f"{(cpus - 0.25) / k:.3f}"]
            elif name == "plain":
                if not gpus:  # the same torch thread count as a single Ray CPU worker would get
                    env_extra["OMP_NUM_THREADS"] = str(max(1, cpus - 1))
            else:
                raise SystemExit(f"unknown config {name}")
            row = run_config(name, videos, weights, work, settings + (["--device", "cpu"] if not gpus else []),
                             extra, env_extra, total)
            rows.append(row)
            print(json.dumps(row))
        decode = decode_seconds(videos, 128 if not args.standard else 256)
        plain = next((r for r in rows if r["config"] == "plain" and r.get("per_video_s")), None)
        print()
        print(f"{'config':<12} {'videos':>6} {'wall s':>8} {'videos/h':>9} {'x real':>7} {'steady v/h':>10} "
              f"{'start s':>8} {'tail s':>7} {'s/video':>8}")
        for r in rows:
            steady = r.get("steady_videos_per_hour")
            print(f"{r['config']:<12} {r['videos']:>6} {r['wall_s']:>8.1f} {r.get('videos_per_hour', 0):>9.0f} "
                  f"{r.get('x_real_time', 0):>7.2f} {steady if steady is None else round(steady):>10} "
                  f"{r.get('startup_s', 0):>8.1f} {r.get('tail_s', 0):>7.1f} {r.get('per_video_s', 0):>8.2f}")
            if "gpu_util_mean" in r:
                print(f"{'':<12} GPU utilisation % {[round(u) for u in r['gpu_util_mean']]}, "
                      f"peak MiB {r['gpu_mem_peak_mib']}")
        base = next((r for r in rows if r["config"] == "ray-gpus-1"), None)
        for r in rows:
            if base and r["config"].startswith("ray-gpus-") and r is not base:
                n = int(r["config"].rsplit("-", 1)[1])
                print(f"scaling efficiency E({n}) = {r['videos_per_hour'] / (n * base['videos_per_hour']):.2f}")
        if plain:
            print(f"decode alone: {decode:.1f} s for all videos = {decode / len(videos):.2f} s/video, "
                  f"{decode / len(videos) / plain['per_video_s']:.0%} of a plain worker's time per video")
        for r in rows:
            if r["config"] != "plain" and plain and r.get("videos_per_hour"):
                ratio = r["videos_per_hour"] / plain["videos_per_hour"]
                print(f"{r['config']}: throughput vs plain, end to end: {ratio:.2f}x")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
