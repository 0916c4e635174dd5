"""RAFT optical flow (torchvision's ``raft_large``) run the way video_features runs it.

UnAV-100's flow stream used princeton-vl's RAFT with ``raft-sintel.pth``. The
network is torchvision's port (same operations in the same order, so the same
bits on CPU); only the checkpoint keys differ, and ``convert_original_raft_state_dict``
renames them. Frames are replicate-padded to a multiple of 8 (RAFT's
``InputPadder``, sintel mode) and the flow is kept padded: the I3D crop is taken
from the padded field, as the reference does.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.optical_flow import raft_large

from weights import store
from weights.errors import WeightsError

NUM_FLOW_UPDATES = 20  # video_features' RAFT call (torchvision's default is 12)
PAD_MULTIPLE = 8

# Original RAFT key (after stripping ``module.``) -> torchvision key. Each rule is
# a full-match pattern and its replacement; ``{E}`` stands for the encoder name.
# Nothing is reshaped: the two layouts differ in names only (RAFT_KEYMAP.md).
_ENCODERS = {"fnet": "feature_encoder", "cnet": "context_encoder"}
_ENCODER_RULES: tuple[tuple[str, str], ...] = (
    (r"conv1\.(.+)", r"convnormrelu.0.\1"),
    (r"norm1\.(.+)", r"convnormrelu.1.\1"),
    (r"layer(\d)\.(\d)\.conv([12])\.(.+)", r"layer\1.\2.convnormrelu\3.0.\4"),
    (r"layer(\d)\.(\d)\.norm([12])\.(.+)", r"layer\1.\2.convnormrelu\3.1.\4"),
    (r"layer(\d)\.0\.downsample\.([01])\.(.+)", r"layer\1.0.downsample.\2.\3"),
    (r"conv2\.(.+)", r"conv.\1"),
)
_UPDATE_RULES: tuple[tuple[str, str], ...] = (
    (r"update_block\.encoder\.convc([12])\.(.+)", r"update_block.motion_encoder.convcorr\1.0.\2"),
    (r"update_block\.encoder\.convf([12])\.(.+)", r"update_block.motion_encoder.convflow\1.0.\2"),
    (r"update_block\.encoder\.conv\.(.+)", r"update_block.motion_encoder.conv.0.\1"),
    (r"update_block\.gru\.conv([zrq])([12])\.(.+)", r"update_block.recurrent_block.convgru\2.conv\1.\3"),
    (r"update_block\.flow_head\.(conv[12]\..+)", r"update_block.flow_head.\1"),
    (r"update_block\.mask\.0\.(.+)", r"mask_predictor.convrelu.0.\1"),
    (r"update_block\.mask\.2\.(.+)", r"mask_predictor.conv.\1"),
)
# In the original ResidualBlock ``norm3`` is the very module ``downsample.1``, so
# state_dict() lists it twice; ``downsample.1`` is the name whose values load last.
_ALIAS = re.compile(r"[fc]net\.layer\d\.0\.norm3\..+")

_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    [(re.compile(rf"{src}\.{pat}"), f"{dst}.{rep}")
     for src, dst in _ENCODERS.items() for pat, rep in _ENCODER_RULES]
    + [(re.compile(pat), rep) for pat, rep in _UPDATE_RULES])

# One key per layout that the other layouts (and I3D / VGGish files) never have.
_ORIGINAL_MARK = "update_block.gru.convz1.weight"
_TORCHVISION_MARK = "update_block.recurrent_block.convgru1.convz.weight"


def convert_original_raft_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """princeton-vl RAFT keys (``module.``-prefixed or not) -> torchvision ``raft_large`` keys.

    The 10 ``norm3`` alias keys are dropped; any other key that no rule maps
    raises WeightsError. Tensors are passed through untouched.
    """
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        bare = key.removeprefix("module.")
        if _ALIAS.fullmatch(bare):
            continue
        for pattern, repl in _RULES:
            if pattern.fullmatch(bare):
                out[pattern.sub(repl, bare)] = value
                break
        else:
            raise WeightsError(f"unexpected key in RAFT checkpoint: {key}")
    return out


def load_raft(source: str | os.PathLike | Mapping[str, Tensor]) -> nn.Module:
    """torchvision ``raft_large`` in eval mode from either RAFT checkpoint layout.

    ``source`` is a path or a state dict, in the original princeton-vl layout
    (``raft-sintel.pth``, keys ``module.``-prefixed) or torchvision's own
    (``raft_large_C_T_SKHT_V1-0b8c9e55.pth``); the layout is told by its keys.
    Raises WeightsError (one line, naming the file) for anything else.
    """
    name = store.describe_source(source)
    state = store.load_state_dict_file(source, "RAFT")
    bare = {k.removeprefix("module.") for k in state}
    if _ORIGINAL_MARK in bare:
        try:
            state = convert_original_raft_state_dict(state)
        except WeightsError as exc:
            raise WeightsError(f"{name}: {exc}") from exc
    elif _TORCHVISION_MARK not in state:
        example = next(iter(state), "no keys at all")
        raise WeightsError(f"{name}: not a RAFT checkpoint (first key: {example})")

    model = raft_large(weights=None)
    store.check_layout(state, model.state_dict(), name, "RAFT-large")
    model.load_state_dict(state, strict=True)
    return model.eval()


def pad_amounts(h: int, w: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) to reach multiples of 8; odd totals put the extra pixel last."""
    pad_h = -h % PAD_MULTIPLE
    pad_w = -w % PAD_MULTIPLE
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def pad_frames(x: Tensor) -> Tensor:
    """Replicate-pad frames [N, C, H, W] to [N, C, H', W'] with H', W' multiples of 8.

    Integer frames are padded through float32 (exact for 0..255) because
    replicate padding is only implemented for floating types.
    """
    if x.dim() != 4:
        raise ValueError(f"expected frames [N, C, H, W], got {list(x.shape)}")
    pad = pad_amounts(x.shape[-2], x.shape[-1])
    if not any(pad):
        return x
    padded = F.pad(x if x.is_floating_point() else x.float(), pad, mode="replicate")
    return padded.to(x.dtype)


class FlowEstimator:
    """Padded frame pairs -> RAFT flow, as video_features computes it.

    ``__call__(frames1, frames2)``: [N, 3, H, W] each, RGB values 0..255 (uint8 or
    integer-valued float), H and W multiples of 8 (see ``pad_frames``) ->
    [N, 2, H, W] float32 flow in pixels (x, y) on ``device``: the upsampled flow
    after the last of ``num_flow_updates`` refinements, still padded.
    Pairs run ``batch_size`` at a time (all at once if None); on CPU the batch
    size does not change the bits.
    """

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu",
                 num_flow_updates: int = NUM_FLOW_UPDATES, batch_size: int | None = None):
        if num_flow_updates < 1:
            raise ValueError(f"num_flow_updates must be >= 1, got {num_flow_updates}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.num_flow_updates = num_flow_updates
        self.batch_size = batch_size

    def _prepare(self, frames: Tensor) -> Tensor:
        """[N, 3, H, W] 0..255 -> float32 in [-1, 1], contiguous NCHW, on ``device``."""
        x = frames.to(device=self.device, dtype=torch.float32)
        # The original RAFT's own scaling, 2 * (x / 255) - 1. It is torchvision's
        # preset ((x / 255 - 0.5) / 0.5) bit for bit: subtracting 0.5 and dividing
        # by 0.5 is the same single rounding as doubling and subtracting 1, since
        # scaling by 2 is exact in binary floating point.
        # The original also makes its inputs contiguous; torchvision does not, and
        # frames permuted from HWC arrays are channels-last in memory, which sends
        # the convolutions down other kernels (1e-4 px at iteration 1, tens of px
        # at iteration 20 on the parity pair).
        return (2 * (x / 255) - 1).contiguous()

    def iterations(self, frames1: Tensor, frames2: Tensor,
                   num_flow_updates: int | None = None) -> list[Tensor]:
        """The upsampled flow after each refinement: a list of [N, 2, H, W] float32."""
        updates = self.num_flow_updates if num_flow_updates is None else num_flow_updates
        return self._run(frames1, frames2, updates, keep_all=True)

    def __call__(self, frames1: Tensor, frames2: Tensor) -> Tensor:
        return self._run(frames1, frames2, self.num_flow_updates, keep_all=False)[-1]

    def _run(self, frames1: Tensor, frames2: Tensor, updates: int, keep_all: bool) -> list[Tensor]:
        if updates < 1:
            raise ValueError(f"num_flow_updates must be >= 1, got {updates}")
        if frames1.shape != frames2.shape or frames1.dim() != 4 or frames1.shape[1] != 3:
            raise ValueError(f"expected two frame batches [N, 3, H, W] of one shape, "
                             f"got {list(frames1.shape)} and {list(frames2.shape)}")
        n, _, h, w = frames1.shape
        if h % PAD_MULTIPLE or w % PAD_MULTIPLE:
            raise ValueError(f"frames must be padded to multiples of {PAD_MULTIPLE} "
                             f"(pad_frames), got {h} x {w}")
        if n == 0:
            empty = torch.zeros((0, 2, h, w), dtype=torch.float32, device=self.device)
            return [empty] * (updates if keep_all else 1)
        step = self.batch_size or n
        chunks: list[list[Tensor]] = []
        with torch.inference_mode():
            for start in range(0, n, step):
                flows = self.model(self._prepare(frames1[start:start + step]),
                                   self._prepare(frames2[start:start + step]),
                                   num_flow_updates=updates)
                # Only the last field is wanted in extraction; let the rest go per chunk.
                chunks.append(flows if keep_all else flows[-1:])
        return [torch.cat(parts) for parts in zip(*chunks)]
