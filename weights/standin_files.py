"""Stand-in weights written as files in the ORIGINAL layouts (offline tests and demos).

Each file goes where the real one would (same name, same keys and shapes),
recorded in the directory's lock with origin ``standin``. Detector
checkpoints are wrapped like the official training scripts save them.
"""
from __future__ import annotations

from pathlib import Path

import torch

from weights import store
from weights.atomic import atomic_write
from weights.standin import standin_state_dict

EXTRACTOR_FILES = {
    "raft-sintel.pth": "raft_sintel",
    "i3d_rgb.pt": "i3d_rgb",
    "i3d_flow.pt": "i3d_flow",
    "vggish-10086976.pth": "vggish",
    "vggish_pca_params-970ea276.pth": "vggish_pca",
}
DETECTOR_FILES = {"ccnet_unav100.pth": "ccnet_unav100", "unav_unav100.pth": "unav_unav100"}


def official_checkpoint(state_dict: dict, epoch: int = 0) -> dict:
    """The dict the official ``save_checkpoint`` writes (only what evaluation reads is real)."""
    return {"epoch": epoch, "state_dict": state_dict, "state_dict_ema": state_dict,
            "optimizer": {}, "scheduler": {}}


def write_standins(directory: str | Path | None = None, salt: int = 0, detectors: bool = True,
                   only: list[str] | None = None) -> Path:
    d = store.weights_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = dict(EXTRACTOR_FILES)
    if detectors:
        files.update(DETECTOR_FILES)
    for name, manifest in files.items():
        if only is not None and name not in only:
            continue
        sd = standin_state_dict(manifest, salt)
        obj = official_checkpoint(sd) if name in DETECTOR_FILES else sd
        atomic_write(d / name, lambda f: torch.save(obj, f))
        store.record_in_lock(d, name, origin="standin", salt=salt)
    return d
