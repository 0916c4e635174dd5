"""Per-class dependency branches shared by UnAV's TDM and CCNet's MTGC block.

Both blocks expand a level's features to ``H`` channels per class and mix
them along two axes: a temporal branch attends along time within each class,
a co-occurrence branch attends across classes at each time step; the sum is
returned flattened back to channels.
"""
from __future__ import annotations

from torch import Tensor

from davel.detectors.layers import TransformerBlock


def dependency_branches(temporal_branch: TransformerBlock, cooccur_branch: TransformerBlock,
                        expanded: Tensor, mask: Tensor) -> Tensor:
    """``expanded [B, C, H, T]``, ``mask [B, 1, T]`` -> ``[B, C * H, T]``.

    The official code tiles the mask with ``repeat()`` while the features are
    class-major per video; identical for one video per batch, and this gives
    each (video, class) sequence its own video's mask otherwise. In the
    co-occurrence branch a padded step is switched off as a whole (1-D mask).
    """
    batch, n_cls, hidden, length = expanded.shape
    per_class = expanded.reshape(batch * n_cls, hidden, length)
    temporal, _ = temporal_branch(per_class, per_class, mask.repeat_interleave(n_cls, dim=0))
    per_step = expanded.transpose(1, 3).reshape(batch * length, hidden, n_cls)
    cooccur, _ = cooccur_branch(per_step, per_step, mask.flatten())
    cooccur = cooccur.reshape(batch, length, hidden, n_cls).transpose(1, 3)
    return (temporal.reshape(batch, n_cls, hidden, length) + cooccur).reshape(batch, -1, length)
