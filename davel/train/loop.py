"""Train a detector the way the official repos do: the run loop, checkpoints, resume, log.

Recipe (``configs/*.yaml`` + ``libs/core/config.py`` + ``train.py`` of
ttgeng233/UnAV and zzhhfut/CCNet-AAAI2025, which agree): data
(:mod:`davel.train.data`), targets and losses (:mod:`davel.train.losses`),
model, optimiser, schedule and EMA (:mod:`davel.train.optim`); batch 16,
incomplete last batch dropped.

Differences from the repos, on purpose: validation mAP is computed with the
EMA weights (the repos select ``model_best`` by the raw weights but save and
test the EMA ones); a run whose training set is smaller than one batch trains
on one batch of everything instead of zero steps; randomness comes from
``seed`` and the epoch number only, so a resumed run equals an uninterrupted
one. :func:`train` seeds torch's global generator (drop-path draws from it).

``RUN/log.jsonl`` is rewritten from the history kept in ``last.pth`` after
every epoch, so it always holds exactly the epochs that ``last.pth`` has done
(``--restart`` starts it afresh; a crash between the two writes loses nothing).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from davel.annotations import Annotations, read_annotations
from davel.detectors.base import PyramidDetector
from davel.detectors.meta import CheckpointMeta
from davel.errors import DavelError, InputError
from davel.evaluation import evaluate_map
from davel.feature_norm import FeatureNorm
from davel.inference import Detector, detect_subset
from davel.train.config import TrainConfig
from davel.train.data import CropSampler, FeatureSet, Sample, epoch_rng, make_loader
from davel.train.losses import LossNormalizer, assign_targets, concat_points, detection_losses
from davel.train.optim import build_model, make_ema, make_optimizer, make_scheduler, model_config
from extractors import feature_sets
from extractors.timebase import TimeBase
from weights import store
from weights.atomic import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
# The run's entries written as null when empty (no sidecars, nothing validated yet), as 0.2.0 did.
_RUN_NULLS = frozenset({"extractor", "best_average_mAP", "best_epoch", "val_average_mAP"})


@dataclass
class EpochRecord:
    """One line of ``RUN/log.jsonl`` (``extras``: what the model logs, e.g. LoCo's LCC loss)."""

    epoch: int                 # 1-based
    epochs: int
    steps: int
    lr: float
    loss: float
    cls_loss: float
    reg_loss: float
    seconds: float
    steps_per_s: float
    val_mAP: list[float] | None = None     # at tiou_thresholds
    val_average_mAP: float | None = None
    tiou_thresholds: list[float] | None = None
    best: bool = False
    extras: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {**{k: v for k, v in d.items() if k != "extras"}, **d["extras"]}


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_average_mAP: float | None
    best_epoch: int | None
    skipped_videos: dict[str, list[str]] = field(default_factory=dict)
    history: list[EpochRecord] = field(default_factory=list)


class TrainProgress:
    """What a front end hears from :func:`train` (all optional; the library never prints)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, losses: dict[str, float]) -> None: ...
    def validating(self, videos: int) -> None: ...
    def epoch_end(self, record: EpochRecord) -> None: ...


def train_step(model: PyramidDetector, v: Tensor, a: Tensor, mask: Tensor, samples: list[Sample],
               cfg: TrainConfig, normalizer: LossNormalizer, device: torch.device
               ) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Forward one padded batch and compute the losses (no backward): ``(losses, logs)``.

    ``losses["final_loss"]`` is focal + ``loss_weight`` x DIoU plus the model's own
    extra terms (LoCo: 0.1 x LCC); ``logs`` are the model's scalars (unweighted).
    """
    out, extra, logs = model.forward_train(v.to(device), a.to(device), mask.to(device))
    points = concat_points(out.points).cpu()
    targets = [assign_targets(points, s.segments, s.labels, model.num_classes) for s in samples]
    gt_cls = torch.stack([t[0] for t in targets]).to(device)
    gt_off = torch.stack([t[1] for t in targets]).to(device)
    losses = detection_losses(out, gt_cls, gt_off, normalizer, reg_weight=cfg.loss_weight)
    for term in extra.values():
        losses["final_loss"] = losses["final_loss"] + term
    return losses, logs


def _prefixed(sd: dict) -> dict:
    return {f"module.{k}": v for k, v in sd.items()}


def _save(path: Path, obj: dict) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def _write_log(run: Path, history: list[dict]) -> None:
    atomic_write_text(run / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def _extractor_info(train_set: FeatureSet) -> dict | None:
    """The checkpoint's ``extractor`` entry: what the training features' sidecars say."""
    metas = train_set.sidecars()
    if not metas:
        return None
    keys = {m.settings_key for m in metas}
    if len(keys) > 1:
        log.warning("the training features were made with %d different extractor settings", len(keys))
    first = metas[0]
    return {"settings": None if first.settings is None else dict(first.settings),
            "settings_key": first.settings_key,
            "weights": None if first.weights is None else dict(first.weights)}


def _prepare_data(cfg: TrainConfig, ann: Annotations, feature_dir: Path, timebase: TimeBase | None = None
                  ) -> tuple[FeatureSet, FeatureSet, tuple[int, int]]:
    train_set = FeatureSet(ann, "train", feature_dir, timebase)
    val_set = FeatureSet(ann, "validation", feature_dir, train_set.timebase)
    for name, fs in (("training", train_set), ("validation", val_set)):
        if fs.missing:
            log.warning("%d of %d %s videos have no features in %s and are skipped (e.g. %s)",
                        len(fs.missing), len(fs.missing) + len(fs), name, feature_dir,
                        ", ".join(fs.missing[:3]))
    if len(train_set) == 0:
        raise InputError(f"no training video has features in {feature_dir}")
    dims = train_set.scan()
    if cfg.standardize_features:
        train_set.norm = FeatureNorm.fit(train_set.arrays(i) for i in range(len(train_set)))
    return train_set, val_set, dims


def _validation_detector(model: PyramidDetector, ann: Annotations, train_set: FeatureSet,
                         device: torch.device) -> Detector:
    """The EMA weights as a detector, seeing the validation features as detect will."""
    return Detector(model, labels=ann.class_names, timebase=train_set.timebase, feature_norm=train_set.norm,
                    extraction=None, name="(training)", sha256="", device=device)


def default_loader_workers(device: torch.device) -> int:
    """Worker processes reading features: a GPU must not wait for ``np.load``; on the CPU
    the model is the bottleneck and workers only take cores from it."""
    import os

    return min(4, max(1, (os.cpu_count() or 2) - 1)) if device.type == "cuda" else 0


def train(cfg: TrainConfig, annotations: str | Path, feature_dir: str | Path, run_dir: str | Path,
          device: str | torch.device = "cpu", resume: str | Path | None = None,
          restart: bool = False, progress: TrainProgress | None = None,
          max_epochs: int | None = None, workers: int | None = None,
          timebase: TimeBase | None = None, feature_set: str | None = None) -> TrainResult:
    """Train (or continue training) a detector; writes ``RUN/last.pth``, ``RUN/best.pth``
    and ``RUN/log.jsonl``.

    ``resume``: a checkpoint to continue from; by default ``RUN/last.pth`` is
    continued when present (``restart`` ignores it). ``max_epochs`` stops after
    that many epochs in this call (the schedule still spans the full run).
    ``workers``: feature-reading processes (default: see :func:`default_loader_workers`).
    ``timebase``: how the features' steps map to seconds (default: what their davel
    sidecars say, else I3D + VGGish's); it is kept in the checkpoints. ``feature_set``
    (``extractors.feature_sets``: ``i3d-vggish``, ``one-peace``) names the features: their
    time base unless ``timebase`` is given, and their widths are checked; by default it
    is told by the features' widths. Kept in the checkpoints, so that ``detect`` on a video
    extracts the same set.
    Raises InputError for unusable annotations, features or settings.
    """
    cb = progress or TrainProgress()
    cfg.check()
    run = Path(run_dir)
    feature_dir = Path(feature_dir)
    dev = torch.device(device) if isinstance(device, str) else device
    ann = read_annotations(annotations)
    named = feature_sets.feature_set(feature_set) if feature_set is not None else None
    train_set, val_set, (dim_v, dim_a) = _prepare_data(cfg, ann, feature_dir,
                                                       timebase or (named.timebase if named else None))
    if named is not None and named.dims != (dim_v, dim_a):
        raise InputError(f"--feature-set {named.name} is {named.dims[0]}-d / {named.dims[1]}-d features, "
                         f"but those in {feature_dir} are {dim_v}-d / {dim_a}-d")
    made_of = named or feature_sets.for_dims((dim_v, dim_a))
    skipped = {"train": list(train_set.missing), "validation": list(val_set.missing)}

    ckpt_path = Path(resume) if resume else run / "last.pth"
    state = None
    if resume or (ckpt_path.is_file() and not restart):
        state = _load_resume(ckpt_path, cfg, ann)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, dim_v, dim_a, ann.num_classes, ann.empty_classes()).to(dev)
    ema = make_ema(model, cfg.ema_decay)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    sampler = CropSampler(train_set, cfg.batch_size, cfg.max_seq_len, cfg.seed, cfg.crop_ratio,
                          cfg.trunc_thresh)
    steps_per_epoch = len(sampler)
    scheduler = make_scheduler(optimizer, cfg.warmup_epochs * steps_per_epoch,
                               cfg.total_epochs * steps_per_epoch, cfg.eta_min)
    normalizer = LossNormalizer(cfg.init_loss_norm, 0.9)
    meta = CheckpointMeta(
        format=CHECKPOINT_FORMAT, kind=cfg.model, labels=tuple(ann.class_names), timebase=train_set.timebase,
        config=cfg.as_dict(), model_config=model_config(cfg, dim_v, dim_a, ann.num_classes),
        extractor=_extractor_info(train_set), annotations_sha256=ann.sha256,
        skipped_videos=len(train_set.missing), epochs=cfg.total_epochs, history=(), feature_norm=train_set.norm,
        # absent means I3D + VGGish (as in every checkpoint before ONE-PEACE extraction)
        feature_set=made_of.name if made_of is not None and made_of.name != feature_sets.DEFAULT else None,
        nulls=_RUN_NULLS)
    start_epoch, best, best_epoch = 0, None, None
    if state is not None:
        saved, stored = state.meta, state.checkpoint
        model.load_state_dict(store.strip_module_prefix(stored["state_dict"]))
        ema.module.load_state_dict(store.strip_module_prefix(stored["state_dict_ema"]))
        ema.n_averaged.fill_(saved.ema_updates)
        optimizer.load_state_dict(stored["optimizer"])
        scheduler.load_state_dict(stored["scheduler"])
        normalizer.value = float(saved.loss_normalizer)
        start_epoch, best, best_epoch = saved.epoch, saved.best_average_mAP, saved.best_epoch
        meta = replace(meta, history=saved.history or tuple(_old_log(run, start_epoch)))

    val_det = _validation_detector(ema.module, ann, train_set, dev)
    loader_workers = default_loader_workers(dev) if workers is None else workers
    loader = make_loader(train_set, sampler, cfg.max_seq_len, loader_workers, cfg.seed)
    result = TrainResult(run, start_epoch, best, best_epoch, skipped)
    stop = cfg.total_epochs if max_epochs is None else min(cfg.total_epochs, start_epoch + max_epochs)
    run.mkdir(parents=True, exist_ok=True)
    if start_epoch < stop or not (run / "log.jsonl").is_file():
        _write_log(run, list(meta.history))  # a fresh run (--restart included) starts an empty log
    for epoch in range(start_epoch, stop):
        _, torch_seed = epoch_rng(cfg.seed, epoch)
        torch.manual_seed(torch_seed)
        sampler.set_epoch(epoch)
        cb.epoch_start(epoch + 1, cfg.total_epochs, steps_per_epoch)
        model.train()
        sums: dict[str, float] = {"final_loss": 0.0, "cls_loss": 0.0, "reg_loss": 0.0}
        extras: dict[str, float] = {}
        t0 = time.perf_counter()
        for v, a, mask, samples in loader:
            optimizer.zero_grad(set_to_none=True)
            losses, logs = train_step(model, v, a, mask, samples, cfg, normalizer, dev)
            losses["final_loss"].backward()
            if cfg.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            ema.update_parameters(model)
            values = {k: float(x.detach()) for k, x in losses.items()}
            for k in sums:
                sums[k] += values[k]
            for k, x in logs.items():
                extras[k] = extras.get(k, 0.0) + float(x)
            cb.step({**values, **logs})
        seconds = time.perf_counter() - t0
        n = max(steps_per_epoch, 1)
        record = EpochRecord(epoch + 1, cfg.total_epochs, steps_per_epoch,
                             float(scheduler.get_last_lr()[0]), sums["final_loss"] / n,
                             sums["cls_loss"] / n, sums["reg_loss"] / n, round(seconds, 3),
                             round(steps_per_epoch / seconds, 4) if seconds > 0 else 0.0,
                             extras={k: round(x / n, 6) for k, x in extras.items()})
        if len(val_set):
            ema.module.eval()
            cb.validating(len(val_set))
            preds, _ = detect_subset(val_det, ann, feature_dir, "validation")
            try:
                metrics = evaluate_map(ann, preds, subset="validation")
            except DavelError:  # validation videos without events: nothing to score
                metrics = None
            if metrics is not None:
                record.val_mAP = [round(x, 6) for x in metrics["mAP"]]
                record.val_average_mAP = round(metrics["average_mAP"], 6)
                record.tiou_thresholds = [round(x, 2) for x in metrics["tiou_thresholds"]]
        score = record.val_average_mAP
        if score is None:  # nothing to validate on: best.pth follows the latest epoch
            record.best, best_epoch = True, epoch + 1
        elif best is None or score > best:
            record.best, best, best_epoch = True, score, epoch + 1
        meta = replace(meta, history=(*meta.history, record.to_json()), epoch=epoch + 1,
                       loss_normalizer=normalizer.value, ema_updates=int(ema.n_averaged),
                       best_average_mAP=best, best_epoch=best_epoch, val_average_mAP=score)
        ckpt = {"epoch": epoch, "state_dict": _prefixed(model.state_dict()),
                "state_dict_ema": _prefixed(ema.module.state_dict()),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "davel": meta.to_dict()}
        _save(run / "last.pth", ckpt)
        if record.best:
            _save(run / "best.pth", {k: x for k, x in ckpt.items()
                                     if k not in ("optimizer", "scheduler")})
        _write_log(run, list(meta.history))
        result.history.append(record)
        result.epochs_done, result.best_average_mAP, result.best_epoch = epoch + 1, best, best_epoch
        cb.epoch_end(record)
    return result


def _old_log(run: Path, epochs: int) -> list[dict]:
    """The log lines of the first ``epochs`` epochs, from checkpoints that kept no history."""
    try:
        lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return []
    return [r for r in lines if isinstance(r, dict) and r.get("epoch", 0) <= epochs][-epochs:]


@dataclass(frozen=True)
class _Resume:
    checkpoint: dict  # the file: state dicts, optimizer, scheduler
    meta: CheckpointMeta  # its davel entry (epoch, ema_updates and loss_normalizer are there)


def _load_resume(path: Path, cfg: TrainConfig, ann: Annotations) -> _Resume:
    if not path.is_file():
        raise InputError(f"cannot resume: {path} does not exist")
    state = store.load_state(path)
    entry = state.get("davel") if isinstance(state, dict) else None
    meta = CheckpointMeta.from_dict(entry, str(path)) if isinstance(entry, dict) else None
    if (meta is None or "optimizer" not in state or meta.config is None
            or None in (meta.epoch, meta.ema_updates, meta.loss_normalizer)):
        raise InputError(f"cannot resume from {path}: not a davel training checkpoint "
                         f"with optimizer state (best.pth has none: use last.pth)")
    saved = TrainConfig.from_dict(meta.config)
    if saved != cfg:
        diff = [f"{f.name} {getattr(saved, f.name)!r} -> {getattr(cfg, f.name)!r}"
                for f in fields(cfg) if getattr(saved, f.name) != getattr(cfg, f.name)]
        raise InputError(f"{path} was trained with other settings ({'; '.join(diff[:3])}); "
                         f"use the same options, another -o, or --restart")
    if meta.annotations_sha256 != ann.sha256:
        log.warning("the annotations changed since %s was written", path)
    return _Resume(state, meta)
