"""ONE-PEACE encoders: seconds per window and per second of video, peak memory, shallow
vs full depth, and (on a GPU) bf16 against fp32.

Stand-in weights at the official widths are written once per depth under --workdir
(the official depth, 40, is about 12 GB on disk). Every configuration runs in its own
process, so each peak memory figure is that configuration's alone.

    PYTHONPATH=. python examples/bench_onepeace.py --workdir /tmp/bop              # CPU: 1 window each
    PYTHONPATH=. python examples/bench_onepeace.py --workdir /tmp/bop --windows 8  # GPU: fp32 and bf16

A second of video is 4 visual and 4 audio windows (a row every 0.25 s), so
``s per video-s = 4 x s per window``.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROWS_PER_SECOND = 4


def child(args: argparse.Namespace) -> None:
    import torch

    from extractors import onepeace_audio
    from extractors.onepeace import PRECISIONS, OnePeaceExtractor, OnePeaceSettings

    ex = OnePeaceExtractor(args.weights, device=args.device, settings=OnePeaceSettings(args.precision))
    t = time.perf_counter()
    video, audio = ex.load_networks()
    load_s = time.perf_counter() - t
    dtype = PRECISIONS[args.precision]
    dev = ex.device
    gen = torch.Generator().manual_seed(0)
    clips = torch.randn(args.windows, 1, 3, 16, 256, 256, generator=gen)
    waves = torch.stack([onepeace_audio.prepare_window(w.numpy())
                         for w in torch.randn(args.windows, 16000, generator=gen).double()])
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out_v, out_a = [], []
    with torch.inference_mode():
        video(clips[0].to(dev, dtype))  # warm-up (kernels, allocator)
        sync()
        t = time.perf_counter()
        for c in clips:
            out_v.append(video(c.to(dev, dtype)).float().cpu())
        sync()
        v_s = (time.perf_counter() - t) / args.windows
        audio(waves[:1].to(dev, dtype))
        sync()
        t = time.perf_counter()
        for w in waves:
            out_a.append(audio(w[None].to(dev, dtype)).float().cpu())
        sync()
        a_s = (time.perf_counter() - t) / args.windows
    torch.save({"video": torch.cat(out_v), "audio": torch.cat(out_a)}, args.out)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    print(json.dumps({"load_s": load_s, "video_s_per_window": v_s, "audio_s_per_window": a_s,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "peak_gpu_gb": peak_gpu, "device": str(dev)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--depths", default="1,40", help="Encoder depths to compare (40: official).")
    p.add_argument("--windows", type=int, default=1, help="Windows timed per encoder.")
    p.add_argument("--device", default="auto")
    p.add_argument("--precisions", default=None, help="Default: fp32 on CPU, fp32,bf16 on CUDA.")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    import torch

    from extractors.onepeace_weights import standin_sources

    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    precisions = (args.precisions or ("fp32,bf16" if cuda else "fp32")).split(",")
    rows = []
    for depth in map(int, args.depths.split(",")):
        wdir = args.workdir / f"depth{depth}"
        if not (wdir / "onepeace_audio.pt").is_file():
            t = time.perf_counter()
            standin_sources(wdir, depth=depth)
            print(f"stand-ins at depth {depth} written in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        for precision in precisions:
            out = args.workdir / f"out_d{depth}_{precision}.pt"
            cmd = [sys.executable, __file__, "--child", "--workdir", str(args.workdir), "--weights", str(wdir),
                   "--device", args.device, "--precision", precision, "--windows", str(args.windows),
                   "--out", str(out)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(res.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"depth {depth} {precision}: failed")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append((depth, precision, r, out))
    print(f"{'depth':>5} {'prec':>5} {'device':>7} {'load s':>7} {'video s/win':>11} {'video s/video-s':>15} "
          f"{'audio s/win':>11} {'audio s/video-s':>15} {'peak RSS GB':>11} {'peak GPU GB':>11}")
    for depth, precision, r, _ in rows:
        gpu = f"{r['peak_gpu_gb']:.2f}" if r["peak_gpu_gb"] is not None else "-"
        print(f"{depth:5d} {precision:>5} {r['device']:>7} {r['load_s']:7.1f} {r['video_s_per_window']:11.3f} "
              f"{ROWS_PER_SECOND * r['video_s_per_window']:15.3f} {r['audio_s_per_window']:11.3f} "
              f"{ROWS_PER_SECOND * r['audio_s_per_window']:15.3f} {r['peak_rss_gb']:11.2f} {gpu:>11}")
    by = {(d, pr): out for d, pr, _, out in rows}
    for depth in sorted({d for d, *_ in rows}):
        if (depth, "fp32") in by and (depth, "bf16") in by:
            a, b = torch.load(by[depth, "fp32"]), torch.load(by[depth, "bf16"])
            for stream in ("video", "audio"):
                ref, low = a[stream], b[stream]
                rel = float((low - ref).abs().max() / ref.abs().max())
                cos = float(torch.nn.functional.cosine_similarity(low, ref, dim=1).min())
                print(f"bf16 vs fp32, depth {depth}, {stream}: max |diff| / max |fp32| {rel:.2e}, "
                      f"min cosine {cos:.6f}")


if __name__ == "__main__":
    main()
