#!/usr/bin/env python
"""Training speed of `davel train` on this machine: optimiser steps per second.

Runs one epoch of the real training loop (data, crops, forward, losses,
backward, AdamW, EMA; no validation) on random I3D + VGGish sized features
(2048-d visual, 128-d audio, 224+ steps per video), side by side for:

- the papers' recipe: embd 512, batch 16, max_seq_len 224 (CCNet and UnAV),
- the small model the synthetic benchmark trains: embd 64, batch 8, max_seq_len 32 (CCNet).

    python examples/bench_training.py [--steps 4] [--device cpu] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import tempfile
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
                                     for d in (1024, 1024, 128))), {})
        duration = (8 * (steps - 1) + 24) / 25
        events, per_video = [], max(3, -(-classes // videos))
        for j in range(per_video):
            start = float(rng.uniform(0, duration * 0.7))
            c = (per_video * k + j) % classes
            events.append({"segment": [start, start + duration / 4], "label": f"c{c}", "label_id": c})
        db[vid] = {"subset": "train", "duration": duration, "annotations": events}
    (root / "ann.json").write_text(json.dumps({"database": db}))
    return feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="optimiser steps timed per configuration")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from davel.training import TrainConfig, train

    runs = [
        ("ccnet, papers' recipe (embd 512, batch 16, 224 steps, 100 classes)",
         TrainConfig(model="ccnet", epochs=1, warmup_epochs=0), 300, 100),
        ("unav, papers' recipe (embd 512, batch 16, 224 steps, 100 classes)",
         TrainConfig(model="unav", epochs=1, warmup_epochs=0), 300, 100),
        ("ccnet, synthetic benchmark (embd 64, batch 8, 32 steps, 3 classes)",
         TrainConfig(model="ccnet", epochs=1, warmup_epochs=0, batch_size=8, embd_dim=64,
                     head_dim=64, dependency_dim=16, max_seq_len=32), 40, 3),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    for name, cfg, steps, classes in runs:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            feats = make_features(root, cfg.batch_size * args.steps, steps, classes)
            res = train(cfg, root / "ann.json", feats, root / "run", device=args.device)
            rec = res.history[0]
            print(f"{name:70s} {rec.steps_per_s:7.3f} steps/s "
                  f"({rec.steps_per_s * cfg.batch_size:6.2f} videos/s, {rec.steps} steps)")


if __name__ == "__main__":
    main()
