"""``--device auto|cpu|cuda[:N]`` -> a torch device, and the fp32 scope parity needs.

:func:`resolve_device` is a pure lookup. TF32 (cuDNN's default for
convolutions on Ampere and newer GPUs) moves I3D, RAFT and detector outputs
past the parity tolerances, so the code that must match the reference runs
inside :func:`strict_fp32`, which restores the caller's settings afterwards;
training keeps the GPU's defaults.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

from weights.errors import DavelError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device ``device`` names; DavelError (one line) when it does not exist here."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DavelError(f"unknown device '{device}' (use auto, cpu or cuda[:N])") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DavelError(f"device {device} requested but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DavelError(f"device {device} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return dev


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Full fp32 matmuls and convolutions on CUDA inside the block (no TF32), as the
    reference computed; the previous settings come back on exit."""
    with warnings.catch_warnings():  # newer torch prefers fp32_precision; both still work
        warnings.simplefilter("ignore")
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
