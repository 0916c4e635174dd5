"""Two-stream I3D (Inception-v1 inflated to 3D, Kinetics-400), as video_features runs it.

The layer names follow the PyTorch port of DeepMind's kinetics-i3d that
video_features ships (``i3d_rgb.pt`` / ``i3d_flow.pt``), so those files load
with ``load_state_dict(strict=True)`` as they are. Numerics that matter for
parity with the published UnAV-100 features:

* "SAME" padding is fixed per layer from kernel and stride alone
  (``k - s`` split as ``floor / ceil``), the port's rule: it equals TensorFlow's
  whenever the input size divides by the stride (224 x 224 x 24 does all the
  way down), and it is what the released features were made with otherwise.
* Max pools pad with zeros (not -inf) and use ``ceil_mode``: their inputs are
  post-ReLU, so zeros never win, but the window count is the port's.
* BatchNorm eps 1e-5 (PyTorch default; the port kept it, the TF model used 1e-3
  folded into the converted statistics).
* After ``mixed_5c`` ([B, 1024, 3, 7, 7] for 24 x 224 x 224) an average pool of
  (2, 7, 7), stride 1, leaves [B, 1024, 2, 1, 1]; features are its mean over what
  remains, logits the 1x1x1 classifier applied before that mean.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weights import store
from weights.errors import WeightsError

Triple = tuple[int, int, int]

# Inception blocks: name, input channels, (branch_0 1x1, branch_1 1x1 -> 3x3,
# branch_2 1x1 -> 3x3, branch_3 pool -> 1x1) widths. A max pool precedes the
# block named in POOL_BEFORE.
MIXED: tuple[tuple[str, int, tuple[int, int, int, int, int, int]], ...] = (
    ("mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
POOL_BEFORE: dict[str, tuple[str, Triple, Triple]] = {
    "mixed_4b": ("maxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    "mixed_5b": ("maxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
}
FEATURE_DIM = 1024
MODALITY_CHANNELS = {"rgb": 3, "flow": 2}


def same_padding(kernel: Triple, stride: Triple) -> tuple[int, ...]:
    """F.pad amounts (W, H, T order, before/after each) for the port's static 'SAME'."""
    pads: list[int] = []
    for k, s in zip(reversed(kernel), reversed(stride)):
        total = max(k - s, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class Unit3d(nn.Module):
    """Conv3d ('SAME') -> BatchNorm3d -> ReLU; [B, C_in, T, H, W] -> [B, C_out, T/s, H/s, W/s]."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Triple = (1, 1, 1),
                 stride: Triple = (1, 1, 1), *, norm_act: bool = True):
        super().__init__()
        pad = same_padding(kernel, stride)
        symmetric = all(p == pad[0] for p in pad)
        # Symmetric padding goes into the conv itself, as the port does; only the
        # stem (7x7x7, stride 2: 2 before, 3 after) needs an explicit pad.
        self.pad = None if symmetric else pad
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride,
                                padding=pad[0] if symmetric else 0, bias=not norm_act)
        self.batch3d = nn.BatchNorm3d(out_channels) if norm_act else None

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        x = self.conv3d(x)
        if self.batch3d is not None:
            x = F.relu(self.batch3d(x))
        return x


class MaxPool3dSame(nn.Module):
    """Zero 'SAME' padding then max pool with ceil_mode (the port's pooling)."""

    def __init__(self, kernel: Triple, stride: Triple):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.pad = same_padding(kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(F.pad(x, self.pad), self.kernel, self.stride, ceil_mode=True)


class Mixed(nn.Module):
    """Inception block: four branches concatenated on channels."""

    def __init__(self, in_channels: int, widths: Sequence[int]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.branch_0 = Unit3d(in_channels, b0)
        self.branch_1 = nn.Sequential(Unit3d(in_channels, b1a), Unit3d(b1a, b1b, (3, 3, 3)))
        self.branch_2 = nn.Sequential(Unit3d(in_channels, b2a), Unit3d(b2a, b2b, (3, 3, 3)))
        self.branch_3 = nn.Sequential(MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3d(in_channels, b3))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], 1)


class I3D(nn.Module):
    """Inception-v1 I3D for one stream (rgb: 3 channels, flow: 2).

    Input [B, C, T, H, W] scaled to [-1, 1]; UnAV-100 uses T = 24, H = W = 224.
    """

    def __init__(self, in_channels: int, num_classes: int = 400):
        super().__init__()
        self.in_channels = in_channels
        self.conv3d_1a_7x7 = Unit3d(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.maxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.conv3d_2b_1x1 = Unit3d(64, 64)
        self.conv3d_2c_3x3 = Unit3d(64, 192, (3, 3, 3))
        self.maxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        # the trunk in execution order; names are the checkpoint's
        self.trunk = ["conv3d_1a_7x7", "maxPool3d_2a_3x3", "conv3d_2b_1x1", "conv3d_2c_3x3",
                      "maxPool3d_3a_3x3"]
        for name, cin, widths in MIXED:
            if name in POOL_BEFORE:
                pool_name, kernel, stride = POOL_BEFORE[name]
                self.add_module(pool_name, MaxPool3dSame(kernel, stride))
                self.trunk.append(pool_name)
            self.add_module(name, Mixed(cin, widths))
            self.trunk.append(name)
        self.avg_pool = nn.AvgPool3d((2, 7, 7), (1, 1, 1))
        self.conv3d_0c_1x1 = Unit3d(FEATURE_DIM, num_classes, norm_act=False)

    def _pooled(self, x: Tensor) -> Tensor:
        """[B, C, T, H, W] -> [B, 1024, T', H', W'] (24x224x224 gives T' = 2, H' = W' = 1)."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"I3D expects [B, {self.in_channels}, T, H, W], got {list(x.shape)}")
        for name in self.trunk:
            x = getattr(self, name)(x)
        # Crops under 224 (the fast non-standard sizes) leave less than 7x7:
        # pool over what is there; at 224 this is the original (2, 7, 7) pool.
        kernel = tuple(min(k, n) for k, n in zip(self.avg_pool.kernel_size, x.shape[-3:]))
        return F.avg_pool3d(x, kernel, self.avg_pool.stride)

    def features(self, x: Tensor) -> Tensor:
        """[B, C, T, H, W] -> [B, 1024]: what video_features saves with ``features=True``."""
        return self._pooled(x).flatten(2).mean(2)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, T, H, W] -> [B, num_classes] pre-softmax logits."""
        return self.features_and_logits(x)[1]

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Both outputs from one pass through the trunk: ([B, 1024], [B, num_classes])."""
        pooled = self._pooled(x)
        return pooled.flatten(2).mean(2), self.conv3d_0c_1x1(pooled).flatten(2).mean(2)


def load_i3d(source: str | os.PathLike | Mapping[str, Tensor],
             modality: Literal["rgb", "flow"]) -> I3D:
    """An I3D stream in eval mode from an original-layout checkpoint (path or state dict).

    Raises WeightsError (one line, naming the file) when the file cannot be read or
    its keys, shapes or input channels are not those of the ``modality`` stream.
    """
    if modality not in MODALITY_CHANNELS:
        raise ValueError(f"modality must be 'rgb' or 'flow', got {modality!r}")
    name = store.describe_source(source)
    state = store.load_state_dict_file(source, "I3D")
    model = I3D(MODALITY_CHANNELS[modality])
    expected = model.state_dict()
    stem = "conv3d_1a_7x7.conv3d.weight"
    got = tuple(state[stem].shape) if stem in state else ()
    if len(got) == 5 and got[1] != model.in_channels:
        other = next((m for m, c in MODALITY_CHANNELS.items() if c == got[1]), None)
        hint = f" ({other} weights given for the {modality} stream?)" if other else ""
        raise WeightsError(f"{name}: {stem} takes {got[1]} input channels, "
                           f"the {modality} stream needs {model.in_channels}{hint}")
    store.check_layout(state, expected, name, f"I3D {modality}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _scale(x: Tensor) -> Tensor:
    # Same float32 operation order as the reference (2 * x / 255 - 1) for identical bits.
    return 2 * x.float() / 255 - 1


def rgb_to_i3d_input(frames: Tensor) -> Tensor:
    """Cropped RGB frames [T, H, W, 3] (uint8 or integer-valued float) -> [1, 3, T, H, W] in [-1, 1]."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected RGB frames [T, H, W, 3], got {list(frames.shape)}")
    return _scale(frames).permute(3, 0, 1, 2).unsqueeze(0)


def flow_to_i3d_input(quantised: Tensor) -> Tensor:
    """Quantised flow (0..256) [T, H, W, 2] or [T, 2, H, W] -> [1, 2, T, H, W] in [-1, 1]."""
    if quantised.dim() == 4 and quantised.shape[-1] == 2:
        order = (3, 0, 1, 2)
    elif quantised.dim() == 4 and quantised.shape[1] == 2:
        order = (1, 0, 2, 3)
    else:
        raise ValueError(f"expected flow [T, H, W, 2] or [T, 2, H, W], got {list(quantised.shape)}")
    return _scale(quantised).permute(*order).unsqueeze(0)
