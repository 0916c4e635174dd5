"""``davel eval``: mAP of detections (a file, or a checkpoint run on features) against annotations."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from davel.cli._common import fail, progress_bar, user_errors

THRESHOLDS_REPORTED = (0.5, 0.6, 0.7, 0.8, 0.9)


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


@user_errors
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
    """Score detections: mAP over tIoU 0.1:0.1:0.9, as in the papers.

    Temporal-detection mAP as the papers report it: the mean over the thresholds,
    and the table of each.
    """
    from davel.annotations import read_annotations
    from davel.evaluation import evaluate_map

    split = split.lower()
    if (predictions is None) == (checkpoint is None):
        fail("pass either --predictions FILE or --checkpoint CKPT --features DIR", 2)
    if checkpoint is not None and features is None:
        fail("--checkpoint needs --features DIR", 2)
    if predictions is not None and (features is not None or save_predictions is not None):
        fail("--features and --save-predictions go with --checkpoint", 2)
    ann = read_annotations(annotations)
    if predictions is not None:
        preds = predictions
    else:
        preds = _detect_split(ann, checkpoint, features, split, device, quiet)
        if save_predictions is not None:
            from davel import outputs

            with outputs.ResultSink(str(save_predictions), "jsonl") as sink:
                for p in preds:
                    sink.add(p)
    metrics = evaluate_map(ann, preds, subset=split)
    if as_json:
        typer.echo(json.dumps({k: metrics[k] for k in ("tiou_thresholds", "mAP", "average_mAP",
                                                        "ap_per_class")}))
    else:
        typer.echo(f"split {split}: {len(metrics['ap_per_class'])} classes")
        typer.echo(format_table(metrics))


def _detect_split(ann, checkpoint: Path, features: Path, split: str, device: str,
                  quiet: bool) -> list[dict]:
    from davel.errors import InputError
    from davel.inference import detect_subset, load_detector
    from extractors import feature_files

    videos = ann.subset(split)
    if not videos:
        raise InputError(f"no video of subset '{split}' in {ann.source}")
    have = [v for v in videos if feature_files.has_features(Path(features), v.video_id)]
    if not have:
        raise InputError(f"no video of subset '{split}' has features in {features}")
    (_, c_rgb), (_, c_flow), (_, c_aud) = feature_files.read_shapes(Path(features) / have[0].video_id)
    det = load_detector(checkpoint, device, ann.class_names, expect_dims=(c_rgb + c_flow, c_aud))
    with progress_bar(len(have), f"detecting ({split})", quiet, "video") as bar:
        preds, missing = detect_subset(det, ann, features, split, on_video=bar.update)
    if missing:
        typer.echo(f"davel: warning: {len(missing)} of {len(videos)} {split} videos have no features in "
                   f"{features}; their events count as missed (e.g. {', '.join(missing[:3])})", err=True)
    return preds
