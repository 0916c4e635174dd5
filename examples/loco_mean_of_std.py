#!/usr/bin/env python
"""The LoCo paper's "Mean of std" of a trained detector on a set of feature files.

For each video: the population std of the cross-similarity matrix (cosine of
every audio step's against every visual step's unimodal feature); then the
mean over videos. The paper reports 0.478 without LCC and 0.747 with it on
I3D-VGGish (UnAV-100 test set). Works for any davel detector (they share the stem).

    python examples/loco_mean_of_std.py --checkpoint runs/loco/best.pth --features features/ \\
        [--annotations unav100_annotations.json --split test]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a detector checkpoint (or model name)")
    ap.add_argument("--features", type=Path, required=True, help="folder of <id>_{rgb,flow,vggish}.npy")
    ap.add_argument("--annotations", type=Path, help="take the videos of --split from these annotations")
    ap.add_argument("--split", default="test")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    import davel
    from davel.analysis import mean_of_std
    from davel.annotations import read_annotations
    from extractors import feature_files

    if args.annotations:
        ids = [v.video_id for v in read_annotations(args.annotations).subset(args.split)]
    else:
        ids = sorted(p.name[:-len("_vggish.npy")] for p in args.features.glob("*_vggish.npy"))
    ids = [i for i in ids if feature_files.has_features(args.features, i)]
    if not ids:
        sys.exit(f"no feature files in {args.features}")
    det = davel.load_detector(args.checkpoint, args.device)
    stats = mean_of_std(det, (feature_files.read(args.features / i) for i in ids))
    print(f"{det.name} ({det.kind}): Mean of std {stats.mean_of_std:.4f} over {stats.videos} videos")
    return stats.mean_of_std


if __name__ == "__main__":
    main()
