"""Train a detector (CCNet or the UnAV baseline) the way both official repos do.

Recipe (``configs/*.yaml`` + ``libs/core/config.py`` + ``train.py`` of
ttgeng233/UnAV and zzhhfut/CCNet-AAAI2025, which agree):

* data: the ``train`` subset; visual (rgb + flow) and audio features cut to the
  shorter length; during training a video longer than ``max_seq_len`` is cut
  to a random window of ``max_seq_len`` steps, and a shorter one to a random
  window of 90-100 % of its length (``crop_ratio``); a window must keep at
  least half of one event (200 tries); events are clipped to the window and
  kept if at least half of them lies inside (``trunc_thresh``). Every input is
  zero-padded to ``max_seq_len``;
* targets and losses: :mod:`davel.losses`;
* model: fresh weights (PyTorch's default init, biases zero, classifier bias at
  prior 0.01, classes without any annotation at prior 1e-6), stochastic depth
  0.1 (its AffineDropPath scales start at 1e-4), dropout 0;
* optimiser: AdamW, lr 1e-4, weight decay 1e-4 on the weights of linear and
  convolution layers only; gradients clipped to L2 norm 1; per-iteration
  schedule: linear warm-up from 0 over ``warmup_epochs`` then cosine to 1e-8
  over ``epochs`` more (the official ``epochs`` excludes the warm-up: 40 + 5 =
  45 passes); batch 16, incomplete last batch dropped;
* EMA of the weights (decay 0.999, every step, buffers too); the EMA weights
  are what checkpoints' ``state_dict_ema`` holds and what is evaluated.

Differences from the repos, on purpose: validation mAP is computed with the
EMA weights (the repos select ``model_best`` by the raw weights but save and
test the EMA ones); a run whose training set is smaller than one batch trains
on one batch of everything instead of zero steps; randomness comes from
``seed`` and the epoch number only, so a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from davel.detectors.common import AffineDropPath
from davel.errors import DavelError, InputError
from davel.evaluation import evaluate_map
from davel.feature_norm import FeatureNorm
from davel.labels import read_labels
from davel.losses import LossNormalizer, assign_targets, concat_points, detection_losses
from davel.timebase import I3D_VGGISH, TimeBase
from extractors import feature_files

SUBSETS = ("train", "validation", "test")
CHECKPOINT_FORMAT = 1
MODELS = ("ccnet", "unav")


# ------------------------------------------------------------------ config


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (defaults: the papers' recipe)."""

    model: str = "ccnet"
    epochs: int = 40            # cosine epochs after the warm-up (official meaning)
    warmup_epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    max_seq_len: int = 224
    embd_dim: int = 512
    head_dim: int = 512
    n_head: int = 4
    dependency_dim: int = 128   # per-class hidden size of UnAV's TDM / CCNet's MTGC
    droppath: float = 0.1
    ema_decay: float = 0.999
    clip_grad_norm: float = 1.0
    cls_prior_prob: float = 0.01
    init_loss_norm: float = 250.0
    loss_weight: float = 1.0
    crop_ratio: tuple[float, float] | None = (0.9, 1.0)
    trunc_thresh: float = 0.5
    seed: int = 1234567891
    eta_min: float = 1e-8
    standardize_features: bool = False  # see davel.feature_norm

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.warmup_epochs

    def check(self) -> None:
        """Raise InputError for values no run can use."""
        if self.model not in MODELS:
            raise InputError(f"unknown model '{self.model}' (choose {' or '.join(MODELS)})")
        if self.max_seq_len <= 0 or self.max_seq_len % 32:
            raise InputError(f"--max-seq-len must be a positive multiple of 32 "
                             f"(6 pyramid levels), got {self.max_seq_len}")
        if self.embd_dim <= 0 or self.embd_dim % self.n_head or self.head_dim <= 0:
            raise InputError(f"--embd-dim must be a positive multiple of {self.n_head} "
                             f"(attention heads), got {self.embd_dim}")
        if self.epochs < 0 or self.warmup_epochs < 0 or self.total_epochs == 0:
            raise InputError("need at least one epoch (--epochs + --warmup-epochs > 0)")
        if self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise InputError("--batch-size must be >= 1, --lr > 0, --weight-decay >= 0")
        if not 0.0 <= self.ema_decay < 1.0 or not 0.0 <= self.droppath < 1.0:
            raise InputError("--ema-decay and drop-path must lie in [0, 1)")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["crop_ratio"] = list(self.crop_ratio) if self.crop_ratio is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("crop_ratio") is not None:
            kw["crop_ratio"] = tuple(kw["crop_ratio"])
        return cls(**kw)


# ------------------------------------------------------------------ annotations


@dataclass
class VideoAnnotation:
    """One video of the annotation file: events in seconds."""

    video_id: str
    subset: str
    duration: float | None
    segments: np.ndarray  # [N, 2] float64 seconds
    labels: np.ndarray    # [N] int64 label ids


@dataclass
class Annotations:
    """A UnAV-100-layout annotation file, checked."""

    path: Path
    doc: dict
    videos: list[VideoAnnotation]
    class_names: list[str]
    sha256: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, name: str) -> list[VideoAnnotation]:
        return [v for v in self.videos if v.subset == name]

    def empty_classes(self) -> list[int]:
        """Class ids without a single annotation in any subset (the repos' ``head_empty_cls``)."""
        used = {int(l) for v in self.videos for l in v.labels}
        return [c for c in range(self.num_classes) if c not in used]


def read_annotations(path: str | Path) -> Annotations:
    """Read and check ``{"database": {id: {"subset", "duration", "annotations":
    [{"segment": [s, e], "label", "label_id"}]}}}``; raises InputError (one line) on
    anything a run cannot use: unknown subset, ``end <= start``, a label id that is
    not a non-negative integer, one name with two ids."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        doc = json.loads(raw)
    except OSError as exc:
        raise InputError(f"cannot read annotations {p}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"annotations {p} are not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("database"), dict):
        raise InputError(f'annotations {p}: expected a JSON object with a "database" object')
    videos: list[VideoAnnotation] = []
    name_to_id: dict[str, int] = {}
    for vid, entry in doc["database"].items():
        where = f"annotations {p.name}, video {vid!r}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: not an object")
        subset = str(entry.get("subset", "")).lower()
        if subset not in SUBSETS:
            raise InputError(f"{where}: unknown subset {entry.get('subset')!r} "
                             f"(expected one of {', '.join(SUBSETS)})")
        duration = entry.get("duration")
        if duration is not None and (not isinstance(duration, (int, float)) or duration <= 0):
            raise InputError(f"{where}: duration must be a positive number, got {duration!r}")
        segs, labels = [], []
        for k, ann in enumerate(entry.get("annotations") or []):
            try:
                start, end = (float(x) for x in ann["segment"])
                label_id = ann["label_id"]
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{where}, event {k}: needs \"segment\": [start, end] and "
                                 f"\"label_id\"") from None
            if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
                raise InputError(f"{where}, event {k}: end {end:g} s is not after start {start:g} s")
            if isinstance(label_id, bool) or not isinstance(label_id, int) or label_id < 0:
                raise InputError(f"{where}, event {k}: label_id must be a non-negative integer, "
                                 f"got {label_id!r}")
            name = ann.get("label")
            if name is not None:
                if name_to_id.setdefault(str(name), label_id) != label_id:
                    raise InputError(f"{where}, event {k}: label {name!r} has ids "
                                     f"{name_to_id[str(name)]} and {label_id}")
            segs.append((start, end))
            labels.append(label_id)
        videos.append(VideoAnnotation(str(vid), subset, None if duration is None else float(duration),
                                      np.asarray(segs, np.float64).reshape(-1, 2),
                                      np.asarray(labels, np.int64)))
    if not any(len(v.labels) for v in videos):
        raise InputError(f"annotations {p}: no events at all")
    names = read_labels(p) if name_to_id else []
    num_classes = max(int(l) for v in videos for l in v.labels) + 1
    names = names + [f"class_{i}" for i in range(len(names), num_classes)]
    return Annotations(p, doc, videos, names[:num_classes], hashlib.sha256(raw).hexdigest())


# ------------------------------------------------------------------ features


@dataclass
class Sample:
    """One training input: ``visual [Cv, T]``, ``audio [Ca, T]`` float32, events in grid units."""

    video_id: str
    visual: Tensor
    audio: Tensor
    segments: Tensor  # [N, 2] float32 grid units
    labels: Tensor    # [N] int64


class FeatureSet:
    """The annotated videos of one subset that have feature files in ``feature_dir``.

    Videos without features are left out and listed in ``missing``. Arrays are
    read on demand and kept in memory up to ``cache_bytes``.
    """

    def __init__(self, annotations: Annotations, subset: str, feature_dir: str | Path,
                 timebase: TimeBase | None = None, cache_bytes: int = 2 << 30) -> None:
        self.feature_dir = Path(feature_dir)
        if not self.feature_dir.is_dir():
            raise InputError(f"features directory {self.feature_dir} does not exist")
        self.subset = subset
        self.videos: list[VideoAnnotation] = []
        self.missing: list[str] = []
        for v in annotations.subset(subset):
            files = feature_files.paths(self.feature_dir, v.video_id)
            if all(files[s].is_file() for s in feature_files.STREAMS):
                self.videos.append(v)
            else:
                self.missing.append(v.video_id)
        self.timebase = timebase or self._timebase_from_sidecars()
        self.norm: FeatureNorm | None = None  # applied by sample(), not by arrays()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cache_left = cache_bytes

    def __len__(self) -> int:
        return len(self.videos)

    def sidecars(self) -> list[dict]:
        """The ``<stem>_davel.json`` records of the videos (those that have one)."""
        out = []
        for v in self.videos:
            f = feature_files.paths(self.feature_dir, v.video_id)["meta"]
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def _timebase_from_sidecars(self) -> TimeBase:
        for meta in self.sidecars()[:1]:
            s = meta.get("settings") or {}
            if all(k in s for k in ("fps", "stride", "window")):
                return TimeBase(float(s["fps"]), int(s["stride"]), int(s["window"]))
        return I3D_VGGISH

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(visual [Cv, T], audio [Ca, T])`` float32 of video ``index``."""
        if index in self._cache:
            return self._cache[index]
        feats = feature_files.read(self.feature_dir / self.videos[index].video_id)
        pair = (feats.visual(), feats.audio())
        size = pair[0].nbytes + pair[1].nbytes
        if size <= self._cache_left:
            self._cache[index] = pair
            self._cache_left -= size
        return pair

    def dims(self) -> tuple[int, int]:
        v, a = self.arrays(0)
        return v.shape[0], a.shape[0]

    def sample(self, index: int) -> Sample:
        v, a = self.arrays(index)
        if self.norm is not None:
            v, a = self.norm.apply(v, a)
        rec = self.videos[index]
        grid = self.timebase.seconds_to_grid(rec.segments).astype(np.float32)
        return Sample(rec.video_id, torch.from_numpy(v), torch.from_numpy(a),
                      torch.from_numpy(grid.reshape(-1, 2)), torch.from_numpy(rec.labels))


def random_crop(sample: Sample, max_seq_len: int, rng: np.random.Generator,
                crop_ratio: Sequence[float] | None = (0.9, 1.0), trunc_thresh: float = 0.5,
                max_trials: int = 200) -> Sample:
    """The repos' training crop (``truncate_feats``): see the module doc."""
    length = sample.visual.shape[1]
    window = max_seq_len
    if length <= max_seq_len:
        if crop_ratio is None:
            return sample
        # Python's round, as the repos (ties to even)
        lo = max(round(crop_ratio[0] * length), 1)
        hi = min(round(crop_ratio[1] * length), length)
        window = int(rng.integers(lo, hi + 1))
        if window == length:
            return sample
    segs = sample.segments
    area = (segs[:, 1] - segs[:, 0]).abs()
    for _ in range(max_trials):
        st = int(rng.integers(0, length - window + 1))
        left = segs[:, 0].clamp(min=float(st))
        right = segs[:, 1].clamp(max=float(st + window))
        keep = (right - left).clamp(min=0) / area >= trunc_thresh
        if bool(keep.any()) or len(segs) == 0:
            break
    sl = slice(st, st + window)
    return Sample(sample.video_id, sample.visual[:, sl], sample.audio[:, sl],
                  torch.stack((left[keep], right[keep]), dim=1) - st, sample.labels[keep])


def pad_batch(samples: Sequence[Sample], length: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right zero-padding to ``length``: ``[B, Cv, L]``, ``[B, Ca, L]``, mask ``[B, L]`` bool."""
    b = len(samples)
    v = samples[0].visual.new_zeros(b, samples[0].visual.shape[0], length)
    a = samples[0].audio.new_zeros(b, samples[0].audio.shape[0], length)
    mask = torch.zeros(b, length, dtype=torch.bool)
    for i, s in enumerate(samples):
        t = s.visual.shape[1]
        v[i, :, :t] = s.visual
        a[i, :, :t] = s.audio
        mask[i, :t] = True
    return v, a, mask


# ------------------------------------------------------------------ model, optimiser


def model_kwargs(cfg: TrainConfig, dim_v: int, dim_a: int, num_classes: int) -> dict:
    """Constructor arguments of the detector ``cfg`` describes."""
    common = dict(input_dim_v=dim_v, input_dim_a=dim_a, embd_dim=cfg.embd_dim, n_head=cfg.n_head,
                  num_classes=num_classes, max_seq_len=cfg.max_seq_len, head_dim=cfg.head_dim,
                  layer_scale=cfg.droppath > 0)
    if cfg.model == "unav":
        return {**common, "dependency_dim": cfg.dependency_dim}
    return {**common, "mtgc_dim": cfg.dependency_dim, "cls_prior_prob": cfg.cls_prior_prob}


def build_model(cfg: TrainConfig, dim_v: int, dim_a: int, num_classes: int,
                empty_classes: Sequence[int] = ()) -> nn.Module:
    """A freshly initialised detector in train mode, drop-path set (see the module doc)."""
    kwargs = model_kwargs(cfg, dim_v, dim_a, num_classes)
    if cfg.model == "unav":
        from davel.detectors.unav import UnAVDetector
        model = UnAVDetector(**kwargs)
    else:
        from davel.detectors.ccnet import CCNetDetector
        model = CCNetDetector(**kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)) and m.bias is not None:
                m.bias.zero_()
        bias = model.cls_head.cls_head.conv.bias
        bias.fill_(-math.log((1 - cfg.cls_prior_prob) / cfg.cls_prior_prob))
        for c in empty_classes:
            bias[c] = -math.log((1 - 1e-6) / 1e-6)
    set_drop_path(model, cfg.droppath)
    return model.train()


def set_drop_path(model: nn.Module, prob: float) -> None:
    """Stochastic-depth probability of every AffineDropPath (acts in train mode only)."""
    for m in model.modules():
        if isinstance(m, AffineDropPath):
            m.drop_prob = prob


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; weight decay only on the weights of linear / convolution layers
    (not on biases, LayerNorm parameters or the learnable scales)."""
    decay, no_decay = {}, {}
    for mod_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{name}" if mod_name else name
            # everything else (biases, LayerNorm, the learnable scales) is not decayed
            target = decay if name == "weight" and isinstance(module, (nn.Linear, nn.Conv1d)) else no_decay
            target[full] = p
    groups = [{"params": [decay[k] for k in sorted(decay)], "weight_decay": weight_decay},
              {"params": [no_decay[k] for k in sorted(no_decay)], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


class WarmupCosine:
    """LR factor per iteration: ``k / (w - 1)`` for ``k < w`` (0 at the first step),
    then cosine from 1 to ``eta_min / base_lr`` at ``total`` (the repos' schedule)."""

    def __init__(self, warmup_steps: int, total_steps: int, base_lr: float, eta_min: float = 1e-8):
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.floor = eta_min / base_lr

    def __call__(self, step: int) -> float:
        w = self.warmup_steps
        if step < w:
            return step / max(w - 1, 1)
        if self.total_steps <= w:
            return 1.0
        progress = min((step - w) / (self.total_steps - w), 1.0)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                   eta_min: float = 1e-8) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration linear warm-up + cosine (step it after every optimiser step)."""
    base = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps,
                                                                     base, eta_min))


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """EMA of weights and buffers, starting from the current weights."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.update_parameters(model)  # first call copies
    ema.module.eval()
    return ema


def batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled index batches; an incomplete last batch is dropped (all of a set smaller than one batch)."""
    order = rng.permutation(n)
    if n < batch_size:
        return [order]
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def epoch_rng(seed: int, epoch: int) -> tuple[np.random.Generator, int]:
    """Data RNG and torch seed of one epoch: a function of (seed, epoch) only."""
    ss = np.random.SeedSequence([seed, epoch])
    return np.random.default_rng(ss), int(ss.generate_state(1, np.uint64)[0] % (2 ** 63))


def train_step(model: nn.Module, samples: Sequence[Sample], cfg: TrainConfig,
               normalizer: LossNormalizer, device: torch.device) -> dict[str, Tensor]:
    """Forward one batch and compute the losses (no backward)."""
    v, a, mask = pad_batch(samples, cfg.max_seq_len)
    out = model(v.to(device), a.to(device), mask.to(device))
    points = concat_points(out.points).cpu()
    targets = [assign_targets(points, s.segments, s.labels, model.num_classes) for s in samples]
    gt_cls = torch.stack([t[0] for t in targets]).to(device)
    gt_off = torch.stack([t[1] for t in targets]).to(device)
    return detection_losses(out, gt_cls, gt_off, normalizer, reg_weight=cfg.loss_weight)


# ------------------------------------------------------------------ detection on a subset


def detect_subset(det, annotations: Annotations, feature_dir: str | Path, subset: str,
                  on_video: Callable[[], None] | None = None) -> tuple[list[dict], list[str]]:
    """Run ``det`` (a :class:`davel.pipeline.LoadedDetector`) on every video of
    ``subset`` that has features. Returns ``(predictions, missing_ids)``; predictions
    are davel's per-video results (``video`` = the id)."""
    from davel.pipeline import detect_features

    preds, missing = [], []
    for v in annotations.subset(subset):
        prefix = Path(feature_dir) / v.video_id
        if not all(feature_files.paths(Path(feature_dir), v.video_id)[s].is_file()
                   for s in feature_files.STREAMS):
            missing.append(v.video_id)
            continue
        result = detect_features(det, feature_files.read(prefix), v.duration)
        preds.append({"video": v.video_id, **result})
        if on_video is not None:
            on_video()
    return preds, missing


# ------------------------------------------------------------------ checkpoints


def _prefixed(sd: dict) -> dict:
    return {f"module.{k}": v for k, v in sd.items()}


def _unprefixed(sd: dict) -> dict:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def _save(path: Path, obj: dict) -> None:
    from weights.store import atomic_write

    atomic_write(path, lambda f: torch.save(obj, f))


# ------------------------------------------------------------------ the run


@dataclass
class EpochRecord:
    """One line of ``RUN/log.jsonl``."""

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


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_average_mAP: float | None
    best_epoch: int | None
    skipped_videos: dict[str, list[str]] = field(default_factory=dict)
    history: list[EpochRecord] = field(default_factory=list)


class Callbacks:
    """What a front end hears from :func:`train` (all optional; the library never prints)."""

    def warn(self, message: str) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, losses: dict[str, float]) -> None: ...
    def validating(self, videos: int) -> None: ...
    def epoch_end(self, record: EpochRecord) -> None: ...


def _extractor_info(train_set: FeatureSet, cb: Callbacks) -> dict | None:
    metas = train_set.sidecars()
    if not metas:
        return None
    keys = {m.get("settings_key") for m in metas}
    if len(keys) > 1:
        cb.warn(f"the training features were made with {len(keys)} different extractor settings")
    first = metas[0]
    return {"settings": first.get("settings"), "settings_key": first.get("settings_key"),
            "weights": first.get("weights")}


def train(cfg: TrainConfig, annotations: str | Path, feature_dir: str | Path, run_dir: str | Path,
          device: str | torch.device = "cpu", resume: str | Path | None = None,
          restart: bool = False, callbacks: Callbacks | None = None,
          max_epochs: int | None = None) -> TrainResult:
    """Train (or continue training) a detector; writes ``RUN/last.pth``, ``RUN/best.pth``
    and ``RUN/log.jsonl``.

    ``resume``: a checkpoint to continue from; by default ``RUN/last.pth`` is
    continued when present (``restart`` ignores it). ``max_epochs`` stops after
    that many epochs in this call (the schedule still spans the full run).
    Raises InputError for unusable annotations, features or settings.
    """
    cb = callbacks or Callbacks()
    cfg.check()
    run = Path(run_dir)
    dev = torch.device(device) if isinstance(device, str) else device
    ann = read_annotations(annotations)
    train_set = FeatureSet(ann, "train", feature_dir)
    val_set = FeatureSet(ann, "validation", feature_dir, train_set.timebase, cache_bytes=0)
    val_set_size = len(val_set)
    skipped = {"train": list(train_set.missing), "validation": list(val_set.missing)}
    for name, fs in (("training", train_set), ("validation", val_set)):
        if fs.missing:
            cb.warn(f"{len(fs.missing)} of {len(fs.missing) + len(fs)} {name} videos have no "
                    f"features in {feature_dir} and are skipped (e.g. {', '.join(fs.missing[:3])})")
    if len(train_set) == 0:
        raise InputError(f"no training video has features in {feature_dir}")
    dim_v, dim_a = train_set.dims()
    for i in range(len(train_set)):  # one mismatched file would fail mid-run
        if train_set.arrays(i)[0].shape[0] != dim_v or train_set.arrays(i)[1].shape[0] != dim_a:
            raise InputError(f"features of {train_set.videos[i].video_id} have other sizes than "
                             f"{dim_v}-d visual / {dim_a}-d audio")
    if cfg.standardize_features:
        train_set.norm = FeatureNorm.fit(train_set.arrays(i) for i in range(len(train_set)))

    ckpt_path = Path(resume) if resume else run / "last.pth"
    state = None
    if resume or (ckpt_path.is_file() and not restart):
        state = _load_resume(ckpt_path, cfg, ann, cb)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, dim_v, dim_a, ann.num_classes, ann.empty_classes()).to(dev)
    ema = make_ema(model, cfg.ema_decay)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    steps_per_epoch = len(batches(len(train_set), cfg.batch_size, np.random.default_rng(0)))
    scheduler = make_scheduler(optimizer, cfg.warmup_epochs * steps_per_epoch,
                               cfg.total_epochs * steps_per_epoch, cfg.eta_min)
    normalizer = LossNormalizer(cfg.init_loss_norm, 0.9)
    meta = {
        "format": CHECKPOINT_FORMAT, "model": cfg.model, "labels": ann.class_names,
        "timebase": train_set.timebase.as_dict(), "config": cfg.as_dict(),
        "model_config": model_kwargs(cfg, dim_v, dim_a, ann.num_classes),
        "extractor": _extractor_info(train_set, cb), "annotations_sha256": ann.sha256,
        "skipped_videos": len(train_set.missing), "epochs": cfg.total_epochs,
    }
    if train_set.norm is not None:
        meta["feature_norm"] = train_set.norm.to_meta()
    start_epoch, best, best_epoch = 0, None, None
    if state is not None:
        model.load_state_dict(_unprefixed(state["state_dict"]))
        ema.module.load_state_dict(_unprefixed(state["state_dict_ema"]))
        ema.n_averaged.fill_(int(state["davel"]["ema_updates"]))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        normalizer.value = float(state["davel"]["loss_normalizer"])
        start_epoch = int(state["davel"]["epoch"])
        best = state["davel"].get("best_average_mAP")
        best_epoch = state["davel"].get("best_epoch")

    from davel.pipeline import LoadedDetector

    val_det = LoadedDetector(model=ema.module, kind=cfg.model, name="(training)", sha256="",
                             labels=ann.class_names, timebase=train_set.timebase,
                             max_seq_len=cfg.max_seq_len, device=dev, feature_norm=train_set.norm)
    result = TrainResult(run, start_epoch, best, best_epoch, skipped)
    stop = cfg.total_epochs if max_epochs is None else min(cfg.total_epochs, start_epoch + max_epochs)
    run.mkdir(parents=True, exist_ok=True)
    for epoch in range(start_epoch, stop):
        rng, torch_seed = epoch_rng(cfg.seed, epoch)
        torch.manual_seed(torch_seed)
        order = batches(len(train_set), cfg.batch_size, rng)
        cb.epoch_start(epoch + 1, cfg.total_epochs, len(order))
        model.train()
        sums = {"final_loss": 0.0, "cls_loss": 0.0, "reg_loss": 0.0}
        t0 = time.perf_counter()
        for idx in order:
            samples = [random_crop(train_set.sample(int(i)), cfg.max_seq_len, rng, cfg.crop_ratio,
                                   cfg.trunc_thresh) for i in idx]
            optimizer.zero_grad(set_to_none=True)
            losses = train_step(model, samples, cfg, normalizer, dev)
            losses["final_loss"].backward()
            if cfg.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            ema.update_parameters(model)
            values = {k: float(v.detach()) for k, v in losses.items()}
            for k in sums:
                sums[k] += values[k]
            cb.step(values)
        seconds = time.perf_counter() - t0
        n = max(len(order), 1)
        record = EpochRecord(epoch + 1, cfg.total_epochs, len(order),
                             float(scheduler.get_last_lr()[0]), sums["final_loss"] / n,
                             sums["cls_loss"] / n, sums["reg_loss"] / n, round(seconds, 3),
                             round(len(order) / seconds, 4) if seconds > 0 else 0.0)
        if val_set_size:
            ema.module.eval()
            cb.validating(val_set_size)
            preds, _ = detect_subset(val_det, ann, feature_dir, "validation")
            try:
                metrics = evaluate_map(ann.doc, preds, subset="validation")
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
        meta.update(epoch=epoch + 1, loss_normalizer=normalizer.value,
                    ema_updates=int(ema.n_averaged), best_average_mAP=best, best_epoch=best_epoch,
                    val_average_mAP=score)
        ckpt = {"epoch": epoch, "state_dict": _prefixed(model.state_dict()),
                "state_dict_ema": _prefixed(ema.module.state_dict()),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "davel": dict(meta)}
        _save(run / "last.pth", ckpt)
        if record.best:
            _save(run / "best.pth", {k: v for k, v in ckpt.items()
                                     if k not in ("optimizer", "scheduler")})
        with open(run / "log.jsonl", "a", encoding="utf8") as f:
            f.write(json.dumps(asdict(record)) + "\n")
        result.history.append(record)
        result.epochs_done, result.best_average_mAP, result.best_epoch = epoch + 1, best, best_epoch
        cb.epoch_end(record)
    return result


def _load_resume(path: Path, cfg: TrainConfig, ann: Annotations, cb: Callbacks) -> dict:
    from weights.store import load_state

    if not path.is_file():
        raise InputError(f"cannot resume: {path} does not exist")
    state = load_state(path)
    meta = state.get("davel") if isinstance(state, dict) else None
    if not isinstance(meta, dict) or "optimizer" not in state or "config" not in meta:
        raise InputError(f"cannot resume from {path}: not a davel training checkpoint "
                         f"with optimizer state (best.pth has none: use last.pth)")
    saved = TrainConfig.from_dict(meta["config"])
    if saved != cfg:
        diff = [f"{f.name} {getattr(saved, f.name)!r} -> {getattr(cfg, f.name)!r}"
                for f in fields(cfg) if getattr(saved, f.name) != getattr(cfg, f.name)]
        raise InputError(f"{path} was trained with other settings ({'; '.join(diff[:3])}); "
                         f"use the same options, another -o, or --restart")
    if meta.get("annotations_sha256") != ann.sha256:
        cb.warn(f"the annotations changed since {path} was written")
    return state
