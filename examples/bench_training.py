#!/usr/bin/env python
"""Training speed of `davel train` on this machine: optimiser steps per second.

Runs one epoch of the real training loop (data, crops, forward, losses,
backward, AdamW, EMA; no validation) on random I3D + VGGish sized features
(2048-d visual, 128-d audio, 224+ steps per video), side by side for:

- the papers' recipe: embd 512, batch 16, max_seq_len 224 (CCNet, UnAV, LoCo with and
  without LCC),
- the small model the synthetic benchmark trains: embd 64, batch 8, max_seq_len 32 (CCNet, LoCo).

    python examples/bench_training.py [--steps 4] [--device cpu] [--threads N] [--recipe-batch 16]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch


def make_features(root: Path, videos: int, steps: int, classes: int, seed: int = 0) -> Path:
    """``videos`` training videos of ``steps`` random feature steps, three or more events
    each, with labels cycling over all ``classes`` (UnAV-100 has 100: the per-class
    blocks cost with it)."""
    from extractors.feature_files import Features, write

    rng = np.random.default_rng(seed)
    feats = root / "features"
    db = {}
    for k in range(videos):
        vid = f"v{k:03d}"
        write(feats, vid, Features(*(rng.standard_normal((steps, d)).astype(np.float32)
                                     for d in (1024, 1024, 128))))
        duration = (8 * (steps - 1) + 24) / 25
        events, per_video = [], max(3, -(-classes // videos))
        for j in range(per_video):
            start = float(rng.uniform(0, duration * 0.7))
            c = (per_video * k + j) % classes
            events.append({"segment": [start, start + duration / 4], "label": f"c{c}", "label_id": c})
        db[vid] = {"subset": "train", "duration": duration, "annotations": events}
    (root / "ann.json").write_text(json.dumps({"database": db}))
    return feats


def _time_one(cfg, steps: int, classes: int, n_steps: int, device: str,
              threads: int | None) -> tuple[float, int, float]:
    """Child process: one epoch of ``n_steps`` optimiser steps -> (steps/s, steps, peak RSS GiB)."""
    import resource

    from davel.train import train

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        feats = make_features(root, cfg.batch_size * n_steps, steps, classes)
        rec = train(cfg, root / "ann.json", feats, root / "run", device=device).history[0]
    # ru_maxrss is in KiB on Linux
    return rec.steps_per_s, rec.steps, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="optimiser steps timed per configuration")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--recipe-batch", type=int, default=16,
                    help="batch size of the papers' recipe rows (16 needs more than 24 GB on the CPU)")
    args = ap.parse_args()

    from davel.train import TrainConfig

    b = args.recipe_batch
    runs = [
        (f"ccnet, papers' recipe (embd 512, batch {b}, 224 steps, 100 classes)",
         TrainConfig(model="ccnet", epochs=1, warmup_epochs=0, batch_size=b), 300, 100),
        (f"unav, papers' recipe (embd 512, batch {b}, 224 steps, 100 classes)",
         TrainConfig(model="unav", epochs=1, warmup_epochs=0, batch_size=b), 300, 100),
        (f"loco, papers' recipe (embd 512, batch {b}, 224 steps, 100 classes)",
         TrainConfig(model="loco", epochs=1, warmup_epochs=0, batch_size=b), 300, 100),
        (f"loco without LCC (embd 512, batch {b}, 224 steps, 100 classes)",
         TrainConfig(model="loco", epochs=1, warmup_epochs=0, batch_size=b,
                     model_options={"use_lcc": False}), 300, 100),
        ("ccnet, synthetic benchmark (embd 64, batch 8, 32 steps, 3 classes)",
         TrainConfig(model="ccnet", epochs=1, warmup_epochs=0, batch_size=8, embd_dim=64,
                     head_dim=64, dependency_dim=16, max_seq_len=32), 40, 3),
        ("loco, synthetic benchmark (embd 64, batch 8, 32 steps, 3 classes)",
         TrainConfig(model="loco", epochs=1, warmup_epochs=0, batch_size=8, embd_dim=64,
                     head_dim=64, dependency_dim=16, max_seq_len=32), 40, 3),
    ]
    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, device {args.device}")
    # one fresh process per configuration, so that each peak memory figure is its own
    ctx = multiprocessing.get_context("spawn")
    for name, cfg, steps, classes in runs:
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            try:
                steps_per_s, n, peak_gib = pool.submit(
                    _time_one, cfg, steps, classes, args.steps, args.device, args.threads).result()
            except BrokenProcessPool:
                print(f"{name:70s} failed: the process died (usually out of memory)")
                continue
        print(f"{name:70s} {steps_per_s:7.3f} steps/s ({steps_per_s * cfg.batch_size:6.2f} "
              f"videos/s, {n} steps, peak RSS {peak_gib:5.1f} GiB)")


if __name__ == "__main__":
    main()
