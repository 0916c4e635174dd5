#!/usr/bin/env python
"""Speed figures for davel on this machine (stand-in weights; timing does not depend on them).

Prints, side by side in one run:
- visual extraction (RAFT + I3D) frames/s on the first N frames of a video,
  with each flow field computed once (davel) vs the reference's three times
  per field (estimated from the measured per-field RAFT cost),
- audio (VGGish) seconds of audio per second,
- detector forward + post-processing per 224-step window, UnAV and CCNet.

    python examples/bench_speed.py [VIDEO] [--frames 49] [--device cpu]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", default=str(Path(__file__).parent / "example.mp4"))
    ap.add_argument("--frames", type=int, default=49, help="frames to extract (49 -> 4 windows)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import davel
    from extractors import audio, decode
    from extractors.extract import FeatureExtractor
    from extractors.feature_files import Features
    from extractors.timebase import I3D_VGGISH
    from extractors.vggish import vggish_features
    from weights.standin_files import write_standins

    with tempfile.TemporaryDirectory() as tmp:
        w = write_standins(tmp, detectors=True)
        fx = FeatureExtractor(w, args.device)
        visual, vggish, _ = fx.load_networks()
        windows = []
        t0 = time.perf_counter()
        rgb, _ = visual(decode.iter_frames(args.video, max_frames=args.frames), on_window=windows.append)
        dt = time.perf_counter() - t0
        n = I3D_VGGISH.window + 1 + I3D_VGGISH.stride * (len(rgb) - 1)
        fields = n - 1
        print(f"threads: {torch.get_num_threads()}, device: {args.device}")
        print(f"visual: {len(rgb)} windows from {n} frames in {dt:.1f} s = {n / dt:.2f} frames/s "
              f"({dt / fields:.2f} s per frame incl. its flow field and I3D)")

        flow = visual.flow
        pair = torch.randint(0, 255, (1, 3, 256, 344)).float()
        t0 = time.perf_counter()
        flow(pair, pair)
        per_field = time.perf_counter() - t0
        ref = per_field * 24 * len(rgb)  # the reference: 24 fields per window, none shared
        ours = per_field * fields
        print(f"RAFT per field: {per_field:.2f} s; flow fields for these windows: davel {fields} "
              f"(~{ours:.0f} s), reference {24 * len(rgb)} (~{ref:.0f} s): {ref / ours:.2f}x fewer")

        track = audio.decode_audio(args.video) or audio.silence(4.0)
        t0 = time.perf_counter()
        emb = vggish_features(track, vggish, device=args.device)
        dt = time.perf_counter() - t0
        print(f"audio: {track.duration:.1f} s of audio -> {len(emb)} rows in {dt:.2f} s "
              f"({track.duration / dt:.1f}x real time)")

        rng = np.random.default_rng(0)
        feats = Features(rng.random((224, 1024), np.float32), rng.random((224, 1024), np.float32),
                         rng.random((224, 128), np.float32))
        for name in ("unav", "ccnet"):
            det = davel.load_detector(name, args.device, weights_dir=w)
            det.detect_features(feats)  # warm-up
            t0 = time.perf_counter()
            det.detect_features(feats)
            print(f"detect {det.kind}: {time.perf_counter() - t0:.2f} s per 224-step window (71.7 s of video)")


if __name__ == "__main__":
    main()
