"""How features are made: the extractor settings a sidecar and a checkpoint record.

Kept apart from :mod:`extractors.extract` (which imports the networks and
torchvision) so that reading a sidecar or a checkpoint's record costs no model
import.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from extractors.timebase import I3D_VGGISH, TimeBase
from weights.errors import InputError


@dataclass(frozen=True)
class ExtractionSettings:
    """How features are made. The defaults are the published UnAV-100 procedure;
    other sizes or iteration counts make faster, NON-standard features (fine for
    experiments and training your own detector, not for the published checkpoints).

    The time base is not a setting: it is I3D + VGGish's (25 fps, a row every 8
    frames over 24), which both streams and every detector assume.
    """

    feature_set: ClassVar[str] = "i3d-vggish"  # extractors.feature_sets

    vggish_pca: bool = False
    flow: bool = True
    raft_iterations: int = 20
    short_side: int = 256
    crop: int = 224

    @property
    def timebase(self) -> TimeBase:
        return I3D_VGGISH

    def is_standard(self) -> bool:
        return (self.flow, self.raft_iterations, self.short_side, self.crop) == (True, 20, 256, 224)

    def check(self) -> None:
        """InputError (one line) for sizes the networks cannot take."""
        if self.short_side < 128 or not 32 <= self.crop <= self.short_side or self.raft_iterations < 1:
            raise InputError("need short side >= 128 (RAFT's smallest input), 32 <= crop <= short side "
                             "and at least one RAFT iteration")

    def record(self) -> dict[str, Any]:
        """What a sidecar and a checkpoint store: the settings and the time base."""
        return {**asdict(self), **self.timebase.as_dict()}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> ExtractionSettings:
        """Settings from a stored record (unknown keys, e.g. the time base, are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (record or {}).items() if k in known})
