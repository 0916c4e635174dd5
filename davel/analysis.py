"""Statistics of what a trained detector has learnt, computed on feature files.

:func:`mean_of_std` is the LoCo paper's "Mean of std" (its Table / Fig. on the
LCC effect: 0.478 without LCC -> 0.747 with it on I3D-VGGish): for each video,
the population standard deviation of the cross-similarity matrix
``CSM_ij = cos(F_a[i], F_v[j])`` of the unimodal encoder outputs over the
video's steps, averaged over the videos. A larger value means the two
modalities' features tell concurrent segments apart from distant ones. It is
computed on the stem every detector kind shares, so LoCo with and without LCC,
UnAV and CCNet can be compared (LOCO.md A12: cosine on F, population std).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from davel.detectors.lcc import csm_std
from davel.inference import Detector, prepare_inputs
from extractors.devices import strict_fp32
from extractors.feature_files import Features


@dataclass(frozen=True)
class CorrespondenceStats:
    """``mean_of_std`` over ``videos`` videos; ``per_video`` in input order."""

    mean_of_std: float
    per_video: tuple[float, ...]

    @property
    def videos(self) -> int:
        return len(self.per_video)


@torch.inference_mode()
def mean_of_std(detector: Detector, features: Iterable[Features]) -> CorrespondenceStats:
    """The "Mean of std" of ``detector``'s unimodal features on ``features`` (one per video).

    Each video runs whole (as many steps as it has, within the model's single-pass
    limit; longer ones are cut there), with the detector's feature statistics
    applied as in detection.
    """
    model = detector.model
    stds = []
    for feats in features:
        v, a = feats.visual(), feats.audio()
        if detector.feature_norm is not None:
            v, a = detector.feature_norm.apply(v, a)
        steps = min(v.shape[1], model.max_single_pass())
        fv, fa, mask = prepare_inputs(v[:, :steps], a[:, :steps], model.padded_length(steps))
        with strict_fp32():
            f_v, f_a = model.unimodal_features(fv.to(detector.device), fa.to(detector.device),
                                               mask.to(detector.device))
        stds.append(float(csm_std(f_v, f_a, mask.to(detector.device))[0]))
    if not stds:
        raise ValueError("no features to measure")
    return CorrespondenceStats(sum(stds) / len(stds), tuple(stds))
