"""``--device auto|cpu|cuda[:N]`` -> a torch device, with a clear error if unavailable."""
from __future__ import annotations

import torch

from davel.errors import DavelError


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DavelError(f"unknown device '{device}' (use auto, cpu or cuda[:N])") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DavelError(f"device {device} requested but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DavelError(f"device {device} requested but only {torch.cuda.device_count()} GPU(s) exist")
    if dev.type == "cuda":
        # TF32 convolutions (cuDNN's default on Ampere and newer) move I3D and RAFT
        # outputs past the parity tolerances: keep full fp32 like the reference.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return dev
