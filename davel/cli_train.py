"""``davel train`` and ``davel eval``: argument parsing and printing only.

Registered in :mod:`davel.cli`; this module does not import it at import time
(it imports this one), so the error-handling decorator is looked up per call.
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

THRESHOLDS_REPORTED = (0.5, 0.6, 0.7, 0.8, 0.9)


def _user_errors(fn: Callable) -> Callable:
    """davel.cli's ``user_errors`` (one line on stderr, exit 1), bound at call time."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from davel.cli import user_errors

        return user_errors(fn)(*args, **kwargs)

    return wrapper


def _tqdm(total: int | None, desc: str, quiet: bool, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr,
                disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)


# ------------------------------------------------------------------ train


@_user_errors
def train_command(
    annotations: Path = typer.Option(..., "--annotations", help="UnAV-100-layout annotation JSON (train/validation/test subsets)."),
    features: Path = typer.Option(..., "--features", help="Directory of <video-id>_{rgb,flow,vggish}.npy (from `davel extract`)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run directory: last.pth, best.pth, log.jsonl."),
    model: str = typer.Option("ccnet", "--model", help="ccnet or unav."),
    epochs: int = typer.Option(40, "--epochs", help="Cosine epochs after the warm-up (the repos' meaning: 40 + 5 passes in all)."),
    warmup_epochs: int = typer.Option(5, "--warmup-epochs", help="Linear warm-up epochs."),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate (AdamW)."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    max_seq_len: int = typer.Option(224, "--max-seq-len", help="Training window in feature steps (multiple of 32)."),
    embd_dim: int = typer.Option(512, "--embd-dim", help="Embedding width (512 in the papers)."),
    head_dim: Optional[int] = typer.Option(None, "--head-dim", help="Head width (default: --embd-dim)."),
    dependency_dim: int = typer.Option(128, "--dependency-dim", help="Per-class width of the TDM / MTGC block."),
    droppath: float = typer.Option(0.1, "--droppath", help="Stochastic-depth probability."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", help="Decay of the weight EMA (per step)."),
    standardize_features: bool = typer.Option(False, "--standardize-features", help="Z-score each feature channel with training-set statistics (kept in the checkpoint, applied by detect/eval). Off in the papers."),
    seed: int = typer.Option(1234567891, "--seed", help="Same seed, same data and settings: same weights (CPU)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue from this checkpoint (default: OUT/last.pth when present)."),
    restart: bool = typer.Option(False, "--restart", help="Ignore OUT/last.pth and start over."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-epoch lines."),
) -> None:
    """Train CCNet or the UnAV baseline on annotated features (the papers' recipe by default)."""
    import torch

    from davel.cli import fail, warn
    from davel.training import Callbacks, TrainConfig, train
    from extractors.devices import resolve_device

    if resume is not None and restart:
        fail("--resume and --restart exclude each other", 2)
    if threads is not None:
        if threads < 1:
            fail("--threads must be at least 1", 2)
        torch.set_num_threads(threads)
    cfg = TrainConfig(model=model, epochs=epochs, warmup_epochs=warmup_epochs, batch_size=batch_size,
                      lr=lr, weight_decay=weight_decay, max_seq_len=max_seq_len, embd_dim=embd_dim,
                      head_dim=head_dim or embd_dim, dependency_dim=dependency_dim, droppath=droppath,
                      ema_decay=ema_decay, seed=seed, standardize_features=standardize_features)

    class Report(Callbacks):
        bar = None

        def warn(self, message: str) -> None:
            warn(message)

        def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            self.bar = _tqdm(steps, f"epoch {epoch}/{epochs}", quiet, "step")

        def step(self, losses: dict[str, float]) -> None:
            self.bar.set_postfix(loss=f"{losses['final_loss']:.3f}", refresh=False)
            self.bar.update()

        def validating(self, videos: int) -> None:
            self.bar.set_description_str(f"validating on {videos} videos")

        def epoch_end(self, r) -> None:
            self.bar.close()
            if quiet:
                return
            line = (f"epoch {r.epoch}/{r.epochs}: loss {r.loss:.4f} (cls {r.cls_loss:.4f}, "
                    f"reg {r.reg_loss:.4f}), lr {r.lr:.2e}, {r.steps} steps in {r.seconds:.1f} s "
                    f"({r.steps_per_s:.2f} steps/s)")
            if r.val_average_mAP is not None:
                at5 = r.val_mAP[r.tiou_thresholds.index(0.5)] if 0.5 in r.tiou_thresholds else None
                line += f"; validation mAP@0.5 {at5:.4f}, average {r.val_average_mAP:.4f}"
            typer.echo(line + ("  [best]" if r.best else ""), err=True)

    result = train(cfg, annotations, features, out, device=resolve_device(device), resume=resume,
                   restart=restart, callbacks=Report())
    if not result.history:
        typer.echo(f"nothing to do: {out / 'last.pth'} already finished all "
                   f"{cfg.total_epochs} epochs (--restart to train again)", err=True)
    best = (f"best validation average mAP {result.best_average_mAP:.4f} (epoch {result.best_epoch})"
            if result.best_average_mAP is not None else "no validation set: best.pth = last epoch")
    typer.echo(f"trained {result.epochs_done}/{cfg.total_epochs} epochs; {best}; "
               f"checkpoints {out / 'best.pth'}, {out / 'last.pth'}; log {out / 'log.jsonl'}")


# ------------------------------------------------------------------ eval


def format_table(metrics: dict) -> str:
    """The mAP table: every threshold and the average, then 0.5:0.1:0.9 (percent)."""
    thr = [round(t, 2) for t in metrics["tiou_thresholds"]]
    maps = metrics["mAP"]
    head = "tIoU    " + " ".join(f"{t:>6.2f}" for t in thr) + "     avg"
    row = "mAP (%) " + " ".join(f"{100 * m:>6.2f}" for m in maps) + f"  {100 * metrics['average_mAP']:>6.2f}"
    lines = [head, row]
    picked = [(t, maps[thr.index(t)]) for t in THRESHOLDS_REPORTED if t in thr]
    if picked:
        lines.append("mAP@0.5:0.1:0.9 (%): " + " / ".join(f"{100 * m:.2f}" for _, m in picked))
    return "\n".join(lines)


@_user_errors
def eval_command(
    annotations: Path = typer.Option(..., "--annotations", help="UnAV-100-layout annotation JSON (the ground truth)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Detections: davel's JSON / JSON Lines, or the official result layout."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Instead of --predictions: detect with this checkpoint ..."),
    features: Optional[Path] = typer.Option(None, "--features", help="... on these features (directory of <video-id>_*.npy)."),
    split: str = typer.Option("test", "--split", help="Subset to evaluate (train, validation, test)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
    save_predictions: Optional[Path] = typer.Option(None, "--save-predictions", help="With --checkpoint: also write the detections (JSON Lines)."),
    device: str = typer.Option("auto", "--device", help="With --checkpoint: auto, cpu or cuda[:N]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Temporal-detection mAP as the papers report it (tIoU 0.1:0.1:0.9)."""
    from davel.cli import fail, warn
    from davel.evaluation import evaluate_map

    split = split.lower()
    if (predictions is None) == (checkpoint is None):
        fail("pass either --predictions FILE or --checkpoint CKPT --features DIR", 2)
    if checkpoint is not None and features is None:
        fail("--checkpoint needs --features DIR", 2)
    if predictions is not None and (features is not None or save_predictions is not None):
        fail("--features and --save-predictions go with --checkpoint", 2)
    if predictions is not None:
        preds = predictions
    else:
        preds = _detect_split(annotations, checkpoint, features, split, device, quiet, warn)
        if save_predictions is not None:
            from davel import outputs

            sink = outputs.ResultSink(str(save_predictions), "jsonl")
            for p in preds:
                sink.add(p)
            sink.close()
    metrics = evaluate_map(annotations, preds, subset=split)
    if as_json:
        typer.echo(json.dumps({k: metrics[k] for k in ("tiou_thresholds", "mAP", "average_mAP",
                                                        "ap_per_class")}))
    else:
        typer.echo(f"split {split}: {len(metrics['ap_per_class'])} classes")
        typer.echo(format_table(metrics))


def _detect_split(annotations: Path, checkpoint: Path, features: Path, split: str, device: str,
                  quiet: bool, warn: Callable[[str], None]) -> list[dict]:
    from davel import pipeline
    from davel.errors import InputError
    from davel.training import detect_subset, read_annotations
    from extractors import feature_files
    from extractors.devices import resolve_device

    ann = read_annotations(annotations)
    videos = ann.subset(split)
    if not videos:
        raise InputError(f"no video of subset '{split}' in {annotations}")
    have = [v for v in videos if (Path(features) / f"{v.video_id}_vggish.npy").is_file()]
    if not have:
        raise InputError(f"no video of subset '{split}' has features in {features}")
    first = feature_files.read(Path(features) / have[0].video_id)
    dims = (first.visual().shape[0], first.audio().shape[0])
    det = pipeline.load(Path(checkpoint), resolve_device(device), ann.class_names, expect_dims=dims)
    with _tqdm(len(have), f"detecting ({split})", quiet, "video") as bar:
        preds, missing = detect_subset(det, ann, features, split, on_video=bar.update)
    if missing:
        warn(f"{len(missing)} of {len(videos)} {split} videos have no features in {features}; "
             f"their events count as missed (e.g. {', '.join(missing[:3])})")
    return preds
