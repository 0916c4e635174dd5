"""Training data: annotated feature files -> random crops -> padded batches (torch.utils.data).

The repos' recipe: visual (rgb + flow) and audio features cut to the shorter
length; a video longer than ``max_seq_len`` is cut to a random window of
``max_seq_len`` steps, a shorter one to a random window of 90-100 % of its
length (``crop_ratio``); a window must keep at least half of one event (200
tries); events are clipped to the window and kept if at least half of them
lies inside (``trunc_thresh``). Every input is zero-padded to ``max_seq_len``.

The crops are drawn in the main process by :class:`CropSampler` from the
annotations and the lengths alone (which never needs the arrays), with one
random generator per epoch, so the crops are the same whatever the number of
loader workers; the workers only read, standardise and slice the arrays.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from davel.annotations import Annotations, VideoAnnotation
from davel.errors import InputError
from davel.feature_norm import FeatureNorm
from extractors import feature_files
from extractors.feature_files import FeatureMeta
from extractors.timebase import I3D_VGGISH, TimeBase


@dataclass
class Sample:
    """One training input: ``visual [Cv, T]``, ``audio [Ca, T]`` float32, events in grid units."""

    video_id: str
    visual: Tensor
    audio: Tensor
    segments: Tensor  # [N, 2] float32 grid units
    labels: Tensor    # [N] int64


@dataclass(frozen=True)
class Crop:
    """Which steps of video ``index`` a sample takes, and its events in those steps."""

    index: int
    start: int
    length: int
    segments: Tensor  # [N, 2] float32, grid units of the window
    labels: Tensor    # [N] int64


def plan_crop(length: int, segments: Tensor, labels: Tensor, max_seq_len: int,
              rng: np.random.Generator, crop_ratio: Sequence[float] | None = (0.9, 1.0),
              trunc_thresh: float = 0.5, max_trials: int = 200, index: int = 0) -> Crop:
    """The repos' training crop (``truncate_feats``) of a video of ``length`` steps: see the module doc."""
    window = max_seq_len
    if length <= max_seq_len:
        if crop_ratio is None:
            return Crop(index, 0, length, segments, labels)
        # Python's round, as the repos (ties to even)
        lo = max(round(crop_ratio[0] * length), 1)
        hi = min(round(crop_ratio[1] * length), length)
        window = int(rng.integers(lo, hi + 1))
        if window == length:
            return Crop(index, 0, length, segments, labels)
    area = (segments[:, 1] - segments[:, 0]).abs()
    for _ in range(max_trials):
        st = int(rng.integers(0, length - window + 1))
        left = segments[:, 0].clamp(min=float(st))
        right = segments[:, 1].clamp(max=float(st + window))
        keep = (right - left).clamp(min=0) / area >= trunc_thresh
        if bool(keep.any()) or len(segments) == 0:
            break
    return Crop(index, st, window, torch.stack((left[keep], right[keep]), dim=1) - st, labels[keep])


def random_crop(sample: Sample, max_seq_len: int, rng: np.random.Generator,
                crop_ratio: Sequence[float] | None = (0.9, 1.0), trunc_thresh: float = 0.5,
                max_trials: int = 200) -> Sample:
    """:func:`plan_crop` applied to a whole sample (the same draws)."""
    crop = plan_crop(sample.visual.shape[1], sample.segments, sample.labels, max_seq_len, rng,
                     crop_ratio, trunc_thresh, max_trials)
    if crop.start == 0 and crop.length == sample.visual.shape[1]:
        return sample if crop.segments is sample.segments else Sample(
            sample.video_id, sample.visual, sample.audio, crop.segments, crop.labels)
    sl = slice(crop.start, crop.start + crop.length)
    return Sample(sample.video_id, sample.visual[:, sl], sample.audio[:, sl], crop.segments, crop.labels)


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


class FeatureSet(Dataset):
    """The annotated videos of one subset that have feature files in ``feature_dir``.

    Videos without features are left out and listed in ``missing``. Only the
    array headers are read here (lengths and sizes); items are read when a
    loader asks for them. ``norm`` standardises what :meth:`__getitem__` returns.
    """

    def __init__(self, annotations: Annotations, subset: str, feature_dir: str | Path,
                 timebase: TimeBase | None = None) -> None:
        self.feature_dir = Path(feature_dir)
        if not self.feature_dir.is_dir():
            raise InputError(f"features directory {self.feature_dir} does not exist")
        self.subset = subset
        self.videos: list[VideoAnnotation] = []
        self.missing: list[str] = []
        for v in annotations.subset(subset):
            if feature_files.has_features(self.feature_dir, v.video_id):
                self.videos.append(v)
            else:
                self.missing.append(v.video_id)
        self.timebase = timebase or self._timebase_from_sidecars()
        self.norm: FeatureNorm | None = None
        self.lengths: list[int] = []
        self.dims: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.videos)

    def sidecars(self) -> list[FeatureMeta]:
        """The ``<stem>_davel.json`` records of the videos (those that have one)."""
        metas = (feature_files.read_meta(self.feature_dir / v.video_id) for v in self.videos)
        return [m for m in metas if m is not None]

    def _timebase_from_sidecars(self) -> TimeBase:
        for meta in self.sidecars()[:1]:
            if meta.timebase is not None:
                return meta.timebase
        return I3D_VGGISH

    def scan(self) -> tuple[int, int]:
        """Read every video's array headers once: lengths, and the (visual, audio) sizes,
        which must agree across videos (one mismatched file would fail mid-run)."""
        self.lengths = []
        for v in self.videos:
            (t_rgb, c_rgb), (t_flow, c_flow), (t_aud, c_aud) = feature_files.read_shapes(
                self.feature_dir / v.video_id)
            dims = (c_rgb + c_flow, c_aud)
            if self.dims is None:
                self.dims = dims
            elif dims != self.dims:
                raise InputError(f"features of {v.video_id} have other sizes than "
                                 f"{self.dims[0]}-d visual / {self.dims[1]}-d audio")
            self.lengths.append(min(t_rgb, t_aud))
        if self.dims is None:
            raise InputError(f"no {self.subset} video has features in {self.feature_dir}")
        return self.dims

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(visual [Cv, T], audio [Ca, T])`` float32 of video ``index``, not standardised."""
        feats = feature_files.read(self.feature_dir / self.videos[index].video_id)
        return feats.visual(), feats.audio()

    def grid_events(self, index: int) -> tuple[Tensor, Tensor]:
        """Events of video ``index`` in grid units ``[N, 2]`` float32 and their labels."""
        rec = self.videos[index]
        grid = self.timebase.seconds_to_grid(rec.segments).astype(np.float32)
        return torch.from_numpy(grid.reshape(-1, 2)), torch.from_numpy(rec.labels)

    def __getitem__(self, crop: Crop) -> Sample:
        v, a = self.arrays(crop.index)
        if self.norm is not None:
            v, a = self.norm.apply(v, a)
        sl = slice(crop.start, crop.start + crop.length)
        return Sample(self.videos[crop.index].video_id, torch.from_numpy(np.ascontiguousarray(v[:, sl])),
                      torch.from_numpy(np.ascontiguousarray(a[:, sl])), crop.segments, crop.labels)


class CropSampler(Sampler):
    """Batches of :class:`Crop` for one epoch (call :meth:`set_epoch` first): the order
    and every crop come from :func:`epoch_rng`, in the repos' order of draws."""

    def __init__(self, data: FeatureSet, batch_size: int, max_seq_len: int, seed: int,
                 crop_ratio: Sequence[float] | None, trunc_thresh: float) -> None:
        self.data = data
        self.batch_size = batch_size
        self.max_seq_len = max_seq_len
        self.seed = seed
        self.crop_ratio = crop_ratio
        self.trunc_thresh = trunc_thresh
        self.events = [data.grid_events(i) for i in range(len(data))]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(batches(len(self.data), self.batch_size, np.random.default_rng(0)))

    def __iter__(self) -> Iterator[list[Crop]]:
        rng, _ = epoch_rng(self.seed, self.epoch)
        order = batches(len(self.data), self.batch_size, rng)
        plans = [[plan_crop(self.data.lengths[int(i)], *self.events[int(i)], self.max_seq_len, rng,
                            self.crop_ratio, self.trunc_thresh, index=int(i)) for i in idx]
                 for idx in order]
        return iter(plans)


def make_loader(data: FeatureSet, sampler: CropSampler, max_seq_len: int, workers: int,
                seed: int) -> DataLoader:
    """A loader of padded batches ``(visual, audio, mask, samples)`` in the sampler's order."""

    def collate(samples: list[Sample]) -> tuple[Tensor, Tensor, Tensor, list[Sample]]:
        return (*pad_batch(samples, max_seq_len), samples)

    # A generator of its own: the loader must not draw from torch's global RNG,
    # which decides the drop-path masks.
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                      generator=gen, persistent_workers=workers > 0)
