#!/usr/bin/env python
"""Proof that the whole chain learns: render -> extract -> train -> detect -> eval.

Renders short videos in which audio-visual events happen: a coloured shape
appears (and drifts) while a tone of its class plays. Each video also has
distractors that are NOT events: a tone with nothing visible, and a shape that
appears in silence. Annotations (UnAV-100 layout, train/validation/test) list
only the audio-visual events; the distractors are kept in each video's
``"distractors"`` entry, which the readers ignore.

Then, with the ``davel`` command line only:

1. ``davel weights standin --no-detectors --no-one-peace``: deterministic random extractor
   weights (no downloads);
2. ``davel extract`` with small, NON-standard sizes (frames 128 px high, a
   small centre crop, no optical flow) so a CPU does it in minutes;
3. ``davel train --standardize-features`` (``--model ccnet`` by default, ``unav``
   or ``loco``, with ``--no-lcc`` for LoCo without its LCC loss; a small width);
4. ``davel detect --features`` on the held-out test videos;
5. ``davel eval`` on them, plus a check that no distractor is detected;
6. the LoCo paper's "Mean of std" of the trained model on the test videos
   (``davel.analysis.mean_of_std``, the one step that uses the Python API).

Why ``--standardize-features``: I3D with random (stand-in) weights maps every
clip to nearly the same vector; a visible shape changes it mostly in scale,
which the detectors' LayerNorm after the input convolution removes. Without
per-channel standardisation the detectors learn the audio cue at once but need
well over a thousand steps to use the visual one, so they keep scoring "a tone
with nothing visible" as an event within a CI budget. Real I3D / VGGish
features need no such step (the papers use them raw); ``--raw-features``
leaves the option out to see the difference.

Usage::

    python examples/synthetic_benchmark.py --quick --workdir /tmp/davel_bench
    python examples/synthetic_benchmark.py --workdir /tmp/davel_bench_full

``--quick`` is the reduced version CI runs. Results go to
``WORKDIR/benchmark.json`` (and ``benchmark_<model>.json``) and a summary is
printed. Steps whose outputs exist are not redone (delete WORKDIR to start
over), so runs of several models in one WORKDIR share the rendering and the
extraction.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from mp4_writer import open_h264_aac

FPS = 25
# 128 px high: `--short-side 128` leaves frames as rendered; shapes stay inside the centre crop
WIDTH, HEIGHT = 160, 128
SAMPLE_RATE = 44100

# name, RGB colour, shape, tone (Hz)
CLASSES = (
    ("red_square_440hz", (230, 40, 40), "square", 440.0),
    ("blue_disc_1100hz", (40, 90, 240), "disc", 1100.0),
    ("yellow_bar_2600hz", (240, 220, 40), "bar", 2600.0),
)


@dataclass(frozen=True)
class Scale:
    """How big a benchmark is."""

    train: int
    validation: int
    test: int
    seconds: tuple[float, float]   # video length range
    av_events: tuple[int, int]     # audio-visual events per video (inclusive range)
    crop: int                      # centre crop fed to I3D
    extract: tuple[str, ...]       # extra `davel extract` options
    epochs: int
    warmup_epochs: int
    batch_size: int
    lr: float
    embd_dim: int
    max_seq_len: int
    ema_decay: float


# Fast, NON-standard extraction (fine for training your own detector): frames
# 128 px high, a small centre crop, no optical flow (RAFT is what costs most on
# a CPU; the flow features are written as zeros).
QUICK = Scale(train=28, validation=6, test=10, seconds=(7.0, 9.0), av_events=(1, 1),
              crop=64, extract=("--short-side", "128", "--crop", "64", "--no-flow"),
              epochs=30, warmup_epochs=3, batch_size=8, lr=2e-3, embd_dim=64, max_seq_len=32,
              ema_decay=0.95)
FULL = Scale(train=96, validation=16, test=32, seconds=(9.0, 13.0), av_events=(1, 2),
             crop=96, extract=("--short-side", "128", "--crop", "96", "--no-flow"),
             epochs=30, warmup_epochs=3, batch_size=8, lr=1e-3, embd_dim=128, max_seq_len=64,
             ema_decay=0.99)


# ------------------------------------------------------------------ rendering


@dataclass
class Span:
    start: float
    end: float
    cls: int
    kind: str  # "av" (an event), "audio_only", "visual_only" (distractors)


def plan_video(rng: np.random.Generator, seconds: float, scale: Scale) -> list[Span]:
    """Audio-visual events plus one distractor of each kind, in random order, at least 0.6 s apart."""
    kinds = ["av"] * int(rng.integers(scale.av_events[0], scale.av_events[1] + 1))
    kinds += ["audio_only", "visual_only"]
    rng.shuffle(kinds)
    lengths = rng.uniform(1.5, 3.5, size=len(kinds))
    room = seconds - 0.6 - 0.6 * (len(kinds) + 1)  # 0.3 s margins, 0.6 s minimum gaps
    if lengths.sum() > room:
        lengths *= room / lengths.sum()
    gaps = 0.6 + rng.dirichlet(np.ones(len(kinds) + 1)) * (room - lengths.sum())
    spans, t = [], 0.3
    for kind, length, gap in zip(kinds, lengths, gaps):
        t += gap
        spans.append(Span(round(float(t), 2), round(float(t + length), 2),
                          int(rng.integers(0, len(CLASSES))), kind))
        t += length
    return spans


def _shape_mask(shape: str, cx: float, cy: float, size: float) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    if shape == "square":
        return (abs(xx - cx) <= size / 2) & (abs(yy - cy) <= size / 2)
    if shape == "disc":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= (size / 2) ** 2
    return (abs(xx - cx) <= size / 2) & (abs(yy - cy) <= size / 4)  # bar


def render_video(path: Path, spans: list[Span], seconds: float, seed: int, crop: int = 64) -> None:
    """Write an H.264 + AAC mp4 with PyAV (no ffmpeg binary needed)."""
    rng = np.random.default_rng(seed)
    n_frames = int(round(seconds * FPS))
    # the same plain grey scene in every video (a fixed camera): what changes is the events
    background = np.full((HEIGHT, WIDTH, 3), 64, np.int16)
    visual = [s for s in spans if s.kind in ("av", "visual_only")]
    # A shape fills most of the centre crop and drifts slowly: with stand-in
    # (random) I3D weights a small object barely moves the features.
    motion = {id(s): (WIDTH / 2 + rng.uniform(-crop / 10, crop / 10),
                      HEIGHT / 2 + rng.uniform(-crop / 10, crop / 10),
                      rng.uniform(-crop / 20, crop / 20), rng.uniform(-crop / 20, crop / 20),
                      rng.uniform(0.75, 0.95) * crop) for s in visual}

    container, vs, aus = open_h264_aac(path, WIDTH, HEIGHT, FPS, SAMPLE_RATE)

    for i in range(n_frames):
        t = i / FPS
        img = background + rng.integers(-3, 4, size=background.shape)
        for s in visual:
            if s.start <= t < s.end:
                x0, y0, vx, vy, size = motion[id(s)]
                dt = t - s.start
                mask = _shape_mask(CLASSES[s.cls][2], x0 + vx * dt, y0 + vy * dt, size)
                img[mask] = CLASSES[s.cls][1]
        frame = av.VideoFrame.from_ndarray(img.clip(0, 255).astype(np.uint8), format="rgb24")
        for packet in vs.encode(frame):
            container.mux(packet)
    for packet in vs.encode():
        container.mux(packet)

    n_samples = int(seconds * SAMPLE_RATE)
    tt = np.arange(n_samples) / SAMPLE_RATE
    wave = 0.01 * rng.standard_normal(n_samples)  # faint noise floor
    for s in spans:
        if s.kind in ("av", "audio_only"):
            on = (tt >= s.start) & (tt < s.end)
            ramp = np.clip(np.minimum(tt - s.start, s.end - tt) / 0.02, 0, 1)  # 20 ms fades
            wave += on * ramp * 0.3 * np.sin(2 * np.pi * CLASSES[s.cls][3] * tt)
    samples = wave.astype(np.float32)
    fmt = aus.codec_context.format.name if aus.codec_context.format else "fltp"
    step = aus.codec_context.frame_size or 1024
    for k in range(0, n_samples, step):
        chunk = samples[None, k:k + step]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, k
        for packet in aus.encode(frame):
            container.mux(packet)
    for packet in aus.encode():
        container.mux(packet)
    container.close()


def render_dataset(work: Path, scale: Scale, seed: int) -> Path:
    """Videos in ``work/videos`` and ``work/annotations.json``; returns the annotation path."""
    videos = work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    database = {}
    for subset, count in (("train", scale.train), ("validation", scale.validation), ("test", scale.test)):
        for k in range(count):
            vid = f"{subset}_{k:03d}"
            seconds = round(float(rng.uniform(*scale.seconds)), 2)
            spans = plan_video(rng, seconds, scale)
            video_seed = int(rng.integers(2 ** 31))
            path = videos / f"{vid}.mp4"
            if not path.is_file():
                tmp = path.with_suffix(".part.mp4")
                render_video(tmp, spans, seconds, video_seed, scale.crop)
                tmp.replace(path)
            database[vid] = {
                "subset": subset,
                "duration": seconds,
                "annotations": [{"segment": [s.start, s.end], "label": CLASSES[s.cls][0],
                                 "label_id": s.cls} for s in spans if s.kind == "av"],
                "distractors": [{"segment": [s.start, s.end], "kind": s.kind, "label_id": s.cls}
                                for s in spans if s.kind != "av"],
            }
    ann = work / "annotations.json"
    ann.write_text(json.dumps({"database": database}, indent=1))
    return ann


# ------------------------------------------------------------------ the chain


def davel(*args: str, stdout_path: Path | None = None) -> str:
    """Run ``python -m davel ARGS``; stop the benchmark with its error line if it fails."""
    cmd = [sys.executable, "-m", "davel", *args]
    print("$ davel " + " ".join(args), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed (exit {proc.returncode}): davel {' '.join(args)}")
    if stdout_path is not None:
        stdout_path.write_text(proc.stdout)
    return proc.stdout


def distractor_report(annotations: dict, predictions: list[dict], threshold: float) -> dict:
    """Highest score of a detection lying mostly (> 50 % of it) inside a distractor, per test video,
    and the highest score that each true event gets from a detection overlapping it."""
    def inside_fraction(ev, seg):
        inter = max(0.0, min(ev["end"], seg[1]) - max(ev["start"], seg[0]))
        return inter / max(ev["end"] - ev["start"], 1e-6)

    by_video = {p["video"]: p["events"] for p in predictions}
    distractor_scores, event_scores = [], []
    for vid, entry in annotations["database"].items():
        if entry["subset"] != "test":
            continue
        events = by_video.get(vid, [])
        for d in entry["distractors"]:
            hits = [e["score"] for e in events if inside_fraction(e, d["segment"]) > 0.5]
            distractor_scores.append(max(hits, default=0.0))
        for a in entry["annotations"]:
            hits = [e["score"] for e in events if inside_fraction(e, a["segment"]) > 0.5
                    and e["label_id"] == a["label_id"]]
            event_scores.append(max(hits, default=0.0))
    return {
        "threshold": threshold,
        "distractors": len(distractor_scores),
        "distractors_detected": int(sum(s >= threshold for s in distractor_scores)),
        "max_distractor_score": max(distractor_scores, default=0.0),
        "events": len(event_scores),
        "events_detected": int(sum(s >= threshold for s in event_scores)),
        "min_event_score": min(event_scores, default=0.0),
    }


def correspondence(checkpoint: Path, features: Path, ids: list[str], device: str) -> float:
    """The LoCo paper's "Mean of std" of the trained model on the test videos (davel.analysis)."""
    import davel
    from davel.analysis import mean_of_std
    from extractors import feature_files

    det = davel.load_detector(checkpoint, "cpu" if device == "auto" else device)
    return mean_of_std(det, (feature_files.read(features / i) for i in ids)).mean_of_std


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True, help="Where everything is written.")
    ap.add_argument("--quick", action="store_true", help="The reduced CI version.")
    ap.add_argument("--model", default="ccnet", choices=["ccnet", "unav", "loco"])
    ap.add_argument("--no-lcc", action="store_true", help="With --model loco: train without LCC.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of every step (OMP_NUM_THREADS); 1 is fastest on a busy machine.")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--raw-features", action="store_true",
                    help="Train without --standardize-features.")
    ap.add_argument("--score-threshold", type=float, default=0.3,
                    help="A detection at or above this score counts as 'detected'.")
    args = ap.parse_args(argv)
    scale = QUICK if args.quick else FULL
    if args.threads:  # every davel step below inherits it
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    timings = {}

    t = time.perf_counter()
    ann_path = render_dataset(work, scale, args.seed)
    timings["render_s"] = round(time.perf_counter() - t, 1)
    annotations = json.loads(ann_path.read_text())

    weights = work / "weights"
    if not (weights / "i3d_rgb.pt").is_file():
        davel("weights", "standin", "--no-detectors", "--no-one-peace", "--weights-dir", str(weights))
    t = time.perf_counter()
    features = work / "features"
    davel("extract", "--dir", str(work / "videos"), "-o", str(features), "--weights-dir", str(weights),
          "--device", args.device, "--quiet", *scale.extract)
    timings["extract_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    if args.no_lcc and args.model != "loco":
        ap.error("--no-lcc goes with --model loco")
    run = work / f"run_{args.model}{'_nolcc' if args.no_lcc else ''}{'_raw' if args.raw_features else ''}"
    train_args = ["train", "--annotations", str(ann_path), "--features", str(features), "-o", str(run),
                  "--model", args.model, "--epochs", str(scale.epochs),
                  "--warmup-epochs", str(scale.warmup_epochs), "--batch-size", str(scale.batch_size),
                  "--lr", str(scale.lr), "--embd-dim", str(scale.embd_dim),
                  "--dependency-dim", "16", "--max-seq-len", str(scale.max_seq_len),
                  "--ema-decay", str(scale.ema_decay),
                  "--seed", str(args.seed), "--device", args.device, "--quiet"]
    if not args.raw_features:
        train_args.append("--standardize-features")
    if args.no_lcc:
        train_args.append("--no-lcc")
    davel(*train_args)
    timings["train_s"] = round(time.perf_counter() - t, 1)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]

    t = time.perf_counter()
    test_ids = [v for v, e in annotations["database"].items() if e["subset"] == "test"]
    preds_path = work / f"test_predictions_{run.name[4:]}.jsonl"
    feature_args = [a for v in test_ids for a in ("--features", str(features / v))]
    davel("detect", "--checkpoint", str(run / "best.pth"), *feature_args, "--device", args.device,
          "--format", "jsonl", "-o", str(preds_path), "--quiet")
    timings["detect_s"] = round(time.perf_counter() - t, 1)
    metrics = json.loads(davel("eval", "--annotations", str(ann_path), "--predictions", str(preds_path),
                               "--split", "test", "--json"))
    table = davel("eval", "--annotations", str(ann_path), "--predictions", str(preds_path), "--split", "test")
    predictions = [json.loads(line) for line in preds_path.read_text().splitlines() if line.strip()]
    distractors = distractor_report(annotations, predictions, args.score_threshold)
    csm = correspondence(run / "best.pth", features, test_ids, args.device)

    thresholds = [round(x, 2) for x in metrics["tiou_thresholds"]]
    summary = {
        "mode": "quick" if args.quick else "full",
        "model": args.model,
        "features": "raw" if args.raw_features else "standardized",
        "run": str(run),
        "videos": {"train": scale.train, "validation": scale.validation, "test": scale.test},
        "epochs": scale.epochs + scale.warmup_epochs,
        "test_mAP": dict(zip([str(x) for x in thresholds], metrics["mAP"])),
        "test_mAP@0.5": metrics["mAP"][thresholds.index(0.5)],
        "test_average_mAP": metrics["average_mAP"],
        "distractor_check": distractors,
        "test_mean_of_std": round(csm, 4),
        "train_steps_per_s": round(float(np.mean([r["steps_per_s"] for r in log])), 3),
        "best_validation_average_mAP": max((r["val_average_mAP"] or 0.0) for r in log),
        "timings": timings,
    }
    (work / "benchmark.json").write_text(json.dumps(summary, indent=1))
    (work / f"benchmark_{run.name[4:]}.json").write_text(json.dumps(summary, indent=1))
    print(table.rstrip())
    print(f"test mAP@0.5 {summary['test_mAP@0.5']:.3f}, average mAP {summary['test_average_mAP']:.3f}; "
          f"distractors detected (score >= {args.score_threshold}): "
          f"{distractors['distractors_detected']}/{distractors['distractors']} "
          f"(max score {distractors['max_distractor_score']:.3f}); events detected "
          f"{distractors['events_detected']}/{distractors['events']}; Mean of std {csm:.3f}; "
          f"training {summary['train_steps_per_s']} steps/s; times {timings}")
    return summary


if __name__ == "__main__":
    main()
