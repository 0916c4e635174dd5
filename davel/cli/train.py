"""``davel train``: argument parsing and printing only.

Each detector kind's own options (:attr:`PyramidDetector.options`, e.g. LoCo's
``--attention``) become flags of the command when the app is built
(:func:`train_command_for`), with their help, choices and checks taken from the
registry: this module names no kind's options.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

import typer

from davel.cli._common import fail, progress_bar, user_errors
from davel.detectors.base import ModelOption
from davel.detectors.registry import DETECTORS


@user_errors
def train_command(
    annotations: Path = typer.Option(..., "--annotations", help="UnAV-100-layout annotation JSON (train/validation/test subsets)."),
    features: Path = typer.Option(..., "--features", help="Directory of <video-id>_{rgb,flow,vggish}.npy (from `davel extract`)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run directory: last.pth, best.pth, log.jsonl."),
    model: str = typer.Option("ccnet", "--model", help="The detector kind (the registry's names)."),
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
    loader_workers: Optional[int] = typer.Option(None, "--loader-workers", help="Processes reading features (default: 0 on CPU, up to 4 with a GPU)."),
    feature_set: Optional[str] = typer.Option(None, "--feature-set", help="The features' set: i3d-vggish or one-peace (their time base and widths; default: told by the features' widths). Kept in the checkpoint: `davel detect VIDEO` extracts the same set."),
    timebase: Optional[str] = typer.Option(None, "--timebase", help="How feature steps map to time: i3d-vggish (25 fps, stride 8, window 24), one-peace (16, 4, 16) or FPS,STRIDE,WINDOW (default: the features' davel sidecars, else i3d-vggish)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-epoch lines."),
    model_options: Optional[Mapping[str, Any]] = None,
) -> None:
    """Train a detector on annotated features.

    The papers' recipe by default; LoCo: Eq. 12, focal + DIoU + 0.1 x LCC.
    """
    import torch

    from davel.train import TrainConfig, TrainProgress, train
    from extractors.devices import resolve_device
    from extractors.timebase import TimeBase

    if resume is not None and restart:
        fail("--resume and --restart exclude each other", 2)
    if threads is not None:
        if threads < 1:
            fail("--threads must be at least 1", 2)
        torch.set_num_threads(threads)
    if loader_workers is not None and loader_workers < 0:
        fail("--loader-workers must be 0 or more", 2)
    try:
        tb = TimeBase.parse(timebase) if timebase is not None else None
    except ValueError as exc:
        fail(f"--timebase: {exc}", 2)
    model_options = _kind_options(model, model_options or {})
    cfg = TrainConfig(model=model, epochs=epochs, warmup_epochs=warmup_epochs, batch_size=batch_size,
                      lr=lr, weight_decay=weight_decay, max_seq_len=max_seq_len, embd_dim=embd_dim,
                      head_dim=head_dim or embd_dim, dependency_dim=dependency_dim, droppath=droppath,
                      ema_decay=ema_decay, seed=seed, standardize_features=standardize_features,
                      model_options=model_options)

    class Report(TrainProgress):
        bar = None

        def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            self.bar = progress_bar(steps, f"epoch {epoch}/{epochs}", quiet, "step")

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
            if r.extras:
                line += "".join(f", {k} {v:.4g}" for k, v in r.extras.items())
            if r.val_average_mAP is not None:
                at5 = r.val_mAP[r.tiou_thresholds.index(0.5)] if 0.5 in r.tiou_thresholds else None
                line += f"; validation mAP@0.5 {at5:.4f}, average {r.val_average_mAP:.4f}"
            typer.echo(line + ("  [best]" if r.best else ""), err=True)

    result = train(cfg, annotations, features, out, device=resolve_device(device), resume=resume,
                   restart=restart, progress=Report(), workers=loader_workers, timebase=tb,
                   feature_set=feature_set)
    if not result.history:
        typer.echo(f"nothing to do: {out / 'last.pth'} already finished all "
                   f"{cfg.total_epochs} epochs (--restart to train again)", err=True)
    best = (f"best validation average mAP {result.best_average_mAP:.4f} (epoch {result.best_epoch})"
            if result.best_average_mAP is not None else "no validation set: best.pth = last epoch")
    typer.echo(f"trained {result.epochs_done}/{cfg.total_epochs} epochs; {best}; "
               f"checkpoints {out / 'best.pth'}, {out / 'last.pth'}; log {out / 'log.jsonl'}")


def _owners(name: str) -> list[str]:
    return [kind for kind, cls in DETECTORS.items() if any(o.name == name for o in cls.options)]


def _typed_flag(opt: ModelOption, value: Any) -> str:
    """The flag as the user typed it (``--no-lcc`` for a false ``--lcc/--no-lcc``)."""
    flags = opt.flags.split("/")
    return flags[1] if len(flags) == 2 and value is False else flags[0]


def _kind_options(model: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The options given on the command line (None: not given), checked against the
    declarations of ``model``'s class; exit 2 with one line otherwise."""
    given = {k: v for k, v in given.items() if v is not None}
    cls = DETECTORS.get(model)
    own = {o.name: o for o in cls.options} if cls is not None else {}
    for name, value in given.items():
        if name not in own:
            owners = _owners(name)
            opt = DETECTORS[owners[0]].option(name)
            label = DETECTORS[owners[0]].label() if len(owners) == 1 else "kind"
            fail(f"{_typed_flag(opt, value)} and the other {label} options go with "
                 f"--model {' or '.join(owners)}", 2)
        problem = own[name].problem(value)
        if problem:
            fail(f"{own[name].cli_name} {problem}", 2)
    return given


def _option_parameter(name: str) -> inspect.Parameter:
    owners = _owners(name)
    opt = DETECTORS[owners[0]].option(name)
    detail = f"one of {', '.join(map(str, opt.choices))}; " if opt.choices else ""
    default = opt.default if opt.value_type is not bool else ("on" if opt.default else "off")
    text = f"{' and '.join(DETECTORS[k].label() for k in owners)}: {opt.help} ({detail}default {default})."
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                             default=typer.Option(None, opt.flags, help=text),
                             annotation=Optional[opt.value_type])


def train_command_for() -> Callable[..., None]:
    """``davel train`` with a flag for every option of every registered detector kind."""
    names = list(dict.fromkeys(o.name for cls in DETECTORS.values() for o in cls.options))
    base = inspect.signature(train_command, eval_str=True)
    clash = sorted(set(names) & set(base.parameters))
    if clash:
        raise TypeError(f"detector options clash with davel train's own: {', '.join(clash)}")

    @functools.wraps(train_command)
    def command(**kwargs: Any) -> None:
        train_command(**{k: v for k, v in kwargs.items() if k not in names},
                      model_options={k: kwargs[k] for k in names})

    params = [p for p in base.parameters.values() if p.name != "model_options"]
    params = [p.replace(default=typer.Option("ccnet", "--model", help=f"The detector kind: {', '.join(DETECTORS)}."))
              if p.name == "model" else p for p in params]
    command.__signature__ = base.replace(parameters=[*params, *map(_option_parameter, names)])
    return command
