"""Deterministic stand-in weights for a checkpoint layout.

Real pretrained weights cannot be downloaded everywhere davel is tested, so
parity is checked with weights that anyone can rebuild bit for bit from a
manifest (``{key: shape}``): each tensor is drawn from a generator seeded by
the key's CRC-32 plus ``1_000_003 * salt``. The rule is the one documented by
the parity fixtures; the same rule also lets ``davel weights standin`` write
files in the original layouts so the bundled example runs offline.
"""
from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import torch

MANIFESTS = ("raft_sintel", "i3d_rgb", "i3d_flow", "vggish", "vggish_pca",
             "ccnet_unav100", "unav_unav100")


def standin_tensor(key: str, shape: Sequence[int], salt: int = 0) -> torch.Tensor:
    """One stand-in tensor for ``key`` of ``shape`` (float32, or int64 counters)."""
    shape = tuple(int(s) for s in shape)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.int64)
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()) + 1_000_003 * salt)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=gen)
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=gen)
    if not shape:
        return 1.0 + 0.1 * torch.randn((), generator=gen)
    if sum(d > 1 for d in shape) <= 1:  # per-channel vectors, however they are stored
        if leaf == "weight":
            return 1.0 + 0.1 * torch.randn(shape, generator=gen)
        if leaf == "scale":
            return 0.5 + 0.1 * torch.randn(shape, generator=gen)
        return 0.02 * torch.randn(shape, generator=gen)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)


def standin_state_dict(manifest: Mapping[str, Sequence[int]] | str | Path,
                       salt: int = 0) -> dict[str, torch.Tensor]:
    """Stand-in state dict for a manifest (a mapping, a manifest name or a JSON path)."""
    if not isinstance(manifest, Mapping):
        manifest = load_manifest(manifest)
    return {k: standin_tensor(k, s, salt) for k, s in manifest.items()}


def load_manifest(name_or_path: str | Path) -> dict[str, list[int]]:
    """A key -> shape manifest, by bundled name (``"i3d_rgb"``) or by path."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        return json.loads(path.read_text())
    text = resources.files("weights").joinpath("manifests", f"{name_or_path}.json").read_text()
    return json.loads(text)
