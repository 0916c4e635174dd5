"""ONE-PEACE's video encoder (Kinetics-400 fine-tune with ST-adapters), ported to plain PyTorch.

A port of ``OnePeaceViT`` (OFA-Sys/ONE-PEACE, ``one_peace_vision/video/mmaction_custom/
models/backbones/onepeace.py``, Apache-2.0) doing only what an eval-mode forward pass
needs: no dropout, no drop path, no mmcv / mmaction / timm / einops. Module names are
the original's, so the ``backbone.*`` tensors of ``onepeace_video_k400.pth`` (an
mmaction checkpoint; ``cls_head.*`` is not used) load with ``strict=True`` once the
``backbone.`` prefix is stripped; :meth:`OnePeaceVideoEncoder.from_state_dict` does
that and reads every size from the tensor shapes.

Official size (``configs/_base_/models/onepeace.py`` + ``configs/recognition/onepeace_k400.py``):
hidden 1536, 40 layers, 24 heads (head dim 64), FFN 6144 (GeGLU), adapters 384 wide
(a quarter of the hidden size), adapter_scale 0.5, num_frames 16, a conv stem of total
stride 16 (kernels = strides 4, 2, 2) on 256 x 256 frames: 16 x 16 patches + CLS =
257 tokens per frame, relative position bucket 16. About 1.66 B parameters (the
ST-adapters included), 6.6 GB in float32.

What one layer does (the original, kept as is; ``x`` is [B*T, L, D], one row per frame):

* temporal attention: the frame axis becomes the sequence (each of the L token
  positions of a clip attends over its T frames), through the layer's one shared
  ``self_attn`` with its pre-LayerNorm and no position bias, then the T-adapter
  (no skip);
* spatial attention: the same ``self_attn`` and LayerNorm over the L tokens of each
  frame, on ``x`` plus the temporal update, with the shared relative position bias,
  then the S-adapter (with skip) and layer scale ``gamma_1``. The residual is the
  layer's input, taken *before* the temporal update: the temporal branch reaches the
  stream only through the spatial attention's input;
* FFN: ``x + gamma_2 * ffn(ln(x)) + adapter_scale * mlp_adapter(ln(x))`` with one
  LayerNorm shared by the GeGLU FFN and the MLP adapter.

Attention is "magneto"-style: a LayerNorm between the weighted values and ``out_proj``;
``k_proj`` has no bias; queries are scaled by ``head_dim ** -0.5`` before ``q k^T``.
Absolute position embeddings (``pos_embed``, CLS first) are added per frame, then a
learned per-frame ``temporal_embedding``: T must equal ``num_frames``.

[DECIDE] D3, the output (nothing official says which): :meth:`OnePeaceVideoEncoder.forward`
returns the mean over the T frames of the per-frame CLS token after the final
LayerNorm (``image_layer_norm``), not normalised: the input that mmaction's I3DHead
average-pools before its classifier, and what the unofficial reconstruction of
UniAV's published features measured (rows of norm 20-32). The alternatives (the
spatio-temporal mean of all tokens, an L2-normalised row) are not offered;
:meth:`OnePeaceVideoEncoder.frame_cls` gives the original backbone's own output
(per-frame CLS, [B, D, T, 1, 1]) for anyone who wants another reduction.

[DECIDE] D2, the frame transform (:func:`preprocess_frames`): the K400 val pipeline of
``onepeace_k400.py``, i.e. mmaction's ``Resize(scale=(-1, 256))`` (short side to 256,
long side ``int(long * 256 / short + 0.5)``, bilinear), ``CenterCrop(256)`` (offset
``(size - 256) // 2``) and ``Normalize(mean=[122.771, 116.746, 104.094],
std=[68.5, 66.632, 70.323])`` on RGB; not the hub's direct bicubic 256 x 256 resize.
mmcv resizes with OpenCV's ``INTER_LINEAR``, which does not antialias when
shrinking: it blends the 2 x 2 nearest source pixels at half-pixel centres. This port
resizes with ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
antialias=False)``, the same sampling positions and weights, then rounds to 0..255 as
OpenCV's uint8 output does. Pillow's BILINEAR (davel's resize for I3D,
``extractors/decode.py``) is not used: it widens its filter when shrinking
(antialiasing), which for a 720p frame is a different image, not a rounding
difference. OpenCV itself is not a davel dependency; what remains is its fixed-point
arithmetic (11-bit weights), which moves some pixels by one level.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from extractors.onepeace_layers import GeGLU
from weights import store
from weights.errors import WeightsError

# The K400 val pipeline (onepeace_k400.py): short side and centre crop, RGB statistics.
IMAGE_SIZE = 256
NORM_MEAN = (122.771, 116.746, 104.094)
NORM_STD = (68.5, 66.632, 70.323)
# The stem: kernel = stride 4, 2, 2 (16 in all); its first two convs are a quarter of D wide.
STEM_STRIDES = (4, 2, 2)
PATCH_STRIDE = math.prod(STEM_STRIDES)
ADAPTER_SCALE = 0.5  # onepeace_k400.py's adapter_scale; not stored in the checkpoint
LABEL = "ONE-PEACE video"


def relative_position_index(bucket_size: int) -> Tensor:
    """[L, L] int64 rows of the relative position table, L = bucket_size ** 2 + 1 (CLS first).

    Patch tokens (row-major on a ``bucket_size`` grid) at offsets (dy, dx) use row
    ``(dy + b - 1) * (2b - 1) + (dx + b - 1)``; the last three rows of the
    ``(2b - 1) ** 2 + 3`` are CLS -> patch, patch -> CLS and CLS -> CLS.
    """
    b = bucket_size
    ys, xs = torch.meshgrid(torch.arange(b), torch.arange(b), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    patch = (ys[:, None] - ys[None, :] + b - 1) * (2 * b - 1) + (xs[:, None] - xs[None, :] + b - 1)
    n = (2 * b - 1) ** 2 + 3
    index = torch.empty(b * b + 1, b * b + 1, dtype=torch.int64)
    index[1:, 1:] = patch
    index[0, 1:] = n - 3
    index[1:, 0] = n - 2
    index[0, 0] = n - 1
    return index


class Adapter(nn.Module):
    """Bottleneck MLP ``fc2(gelu(fc1(x)))``, plus ``x`` when ``skip``; [..., D] -> [..., D]."""

    def __init__(self, dim: int, hidden: int, skip: bool):
        super().__init__()
        self.skip = skip
        self.D_fc1 = nn.Linear(dim, hidden)
        self.D_fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.D_fc2(F.gelu(self.D_fc1(x)))
        return x + y if self.skip else y


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of [N, C, H, W] (the stem's; key ``layer_norm``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ImageAdapter(nn.Module):
    """Frames [B*T, 3, H, W] (H = W = bucket_size * 16) -> tokens [B*T, L, D], L = bucket_size ** 2 + 1.

    Conv stem, CLS token, absolute positions, then the per-frame temporal
    embedding (frames of a clip are consecutive rows). Also holds the relative
    position table every layer's spatial attention shares (``rp_bucket`` is a
    stored buffer in the original, so it is one here; it is checked on loading).
    """

    def __init__(self, dim: int, num_heads: int, bucket_size: int, num_frames: int):
        super().__init__()
        stem = dim // 4
        (s1, s2, s3) = STEM_STRIDES
        # Indices are the original nn.Sequential's (1 and 4 hold the LayerNorms).
        self.embed_images = nn.Sequential(
            nn.Conv2d(3, stem, s1, s1), LayerNorm2d(stem), nn.GELU(),
            nn.Conv2d(stem, stem, s2, s2), LayerNorm2d(stem), nn.GELU(),
            nn.Conv2d(stem, dim, s3, s3))
        self.bucket_size = bucket_size
        self.num_frames = num_frames
        self.cls_embedding = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(bucket_size ** 2 + 1, dim))
        self.temporal_embedding = nn.Parameter(torch.empty(1, num_frames, dim))
        self.rel_pos_table = nn.Embedding((2 * bucket_size - 1) ** 2 + 3, num_heads)
        self.register_buffer("rp_bucket", relative_position_index(bucket_size))

    def rel_pos_bias(self) -> Tensor:
        """[heads, L, L]: the spatial attention's additive bias."""
        return self.rel_pos_table.weight[self.rp_bucket].permute(2, 0, 1)

    def forward(self, frames: Tensor) -> Tensor:
        x = self.embed_images(frames).flatten(2).transpose(1, 2)  # [B*T, L - 1, D]
        x = torch.cat([self.cls_embedding.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        bt, n, d = x.shape
        # temporal_embedding [1, T, D] -> one vector per frame, every token of it
        x = x.view(bt // self.num_frames, self.num_frames, n, d) + self.temporal_embedding[:, :, None]
        return x.view(bt, n, d)


class Attention(nn.Module):
    """Multi-head self-attention with a LayerNorm before ``out_proj``; [N, S, D] -> [N, S, D].

    Written out (not ``F.scaled_dot_product_attention``) so the operations are the
    original's in its order: scaled queries, ``q k^T`` plus the bias, softmax, values.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise WeightsError(f"{LABEL}: width {dim} is not a multiple of {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.ln = nn.LayerNorm(dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        n, s, _ = x.shape
        return x.view(n, s, self.num_heads, self.head_dim).transpose(1, 2)  # [N, heads, S, hd]

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """``bias``: [heads, S, S] added to every sequence's logits, or None."""
        q = self._heads(self.q_proj(x) * self.scaling)
        k = self._heads(self.k_proj(x))
        v = self._heads(self.v_proj(x))
        logits = q @ k.transpose(-1, -2)
        if bias is not None:
            logits = logits + bias
        out = logits.softmax(dim=-1) @ v
        out = out.transpose(1, 2).reshape(x.shape)
        return self.out_proj(self.ln(out))


class EncoderLayer(nn.Module):
    """One layer: temporal attention + T-adapter, spatial attention + S-adapter, GeGLU FFN
    + MLP adapter (see the module docstring); [B*T, L, D] -> [B*T, L, D]."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, adapter_dim: int,
                 num_frames: int, adapter_scale: float):
        super().__init__()
        self.num_frames = num_frames
        self.adapter_scale = adapter_scale
        self.self_attn = Attention(dim, num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        # Index 1 was the (activation) dropout: an identity in eval mode, kept for the key indices.
        self.image_ffn = nn.Sequential(GeGLU(dim, ffn_dim), nn.Identity(), nn.LayerNorm(ffn_dim),
                                       nn.Linear(ffn_dim, dim))
        self.final_layer_norm = nn.LayerNorm(dim)
        self.gamma_1 = nn.Parameter(torch.empty(dim))
        self.gamma_2 = nn.Parameter(torch.empty(dim))
        self.MLP_Adapter = Adapter(dim, adapter_dim, skip=False)
        self.S_Adapter = Adapter(dim, adapter_dim, skip=True)
        self.T_Adapter = Adapter(dim, adapter_dim, skip=False)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        bt, n, d = x.shape
        t = self.num_frames
        # temporal: [B*T, L, D] -> [B*L, T, D], each token position over the clip's frames
        xt = x.view(bt // t, t, n, d).transpose(1, 2).reshape(-1, t, d)
        xt = self.T_Adapter(self.self_attn(self.self_attn_layer_norm(xt)))
        xt = xt.view(bt // t, n, t, d).transpose(1, 2).reshape(bt, n, d)
        # spatial: sees x + the temporal update, but the residual is x itself (the original's)
        xs = self.S_Adapter(self.self_attn(self.self_attn_layer_norm(x + xt), bias))
        x = x + self.gamma_1 * xs
        xn = self.final_layer_norm(x)
        return x + self.gamma_2 * self.image_ffn(xn) + self.adapter_scale * self.MLP_Adapter(xn)


class Encoder(nn.Module):
    """The layers and the final LayerNorm; [B*T, L, D] -> [B*T, L, D]."""

    def __init__(self, depth: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(**layer_kwargs) for _ in range(depth)])
        self.image_layer_norm = nn.LayerNorm(layer_kwargs["dim"])

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, bias)
        return self.image_layer_norm(x)


class OnePeaceVideoEncoder(nn.Module):
    """ONE-PEACE ViT with ST-adapters: clips [B, 3, T, H, W] -> [B, D] (D3: mean per-frame CLS).

    Input: RGB frames normalised as :func:`preprocess_frames` does, T = ``num_frames``
    and H = W = ``bucket_size * 16`` (16 and 256 for the official checkpoint). The
    defaults are the official sizes; use :meth:`from_state_dict` to build from a file.
    """

    def __init__(self, embed_dim: int = 1536, depth: int = 40, num_heads: int = 24,
                 ffn_dim: int = 6144, adapter_dim: int = 384, num_frames: int = 16,
                 bucket_size: int = 16, adapter_scale: float = ADAPTER_SCALE):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_frames = num_frames
        self.image_size = bucket_size * PATCH_STRIDE
        self.image_adapter = ImageAdapter(embed_dim, num_heads, bucket_size, num_frames)
        self.encoder = Encoder(depth, dim=embed_dim, num_heads=num_heads, ffn_dim=ffn_dim,
                               adapter_dim=adapter_dim, num_frames=num_frames,
                               adapter_scale=adapter_scale)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor],
                        adapter_scale: float = ADAPTER_SCALE) -> OnePeaceVideoEncoder:
        """The encoder in eval mode holding ``state_dict``'s tensors (taken over, not copied).

        ``state_dict``: the mmaction checkpoint's ``state_dict`` (``backbone.*`` keys are
        used, ``cls_head.*`` ignored) or the backbone's own keys without the prefix.
        Sizes are read from shapes: width from ``cls_embedding``, heads from the
        relative position table's columns, its bucket from the table's rows, frames
        from ``temporal_embedding``, FFN and adapter widths from layer 0, depth from
        the layer count. ``adapter_scale`` is not stored in checkpoints (0.5 for K400).
        Tensors keep their dtype. WeightsError (one line) for anything else.
        """
        if any(k.startswith("backbone.") for k in state_dict):
            state_dict = {k.removeprefix("backbone."): v for k, v in state_dict.items()
                          if k.startswith("backbone.")}
        sizes = read_sizes(state_dict)
        with torch.device("meta"):
            model = cls(adapter_scale=adapter_scale, **sizes)
        store.check_layout(state_dict, model.state_dict(), "the given state dict", LABEL)
        model.load_state_dict(state_dict, strict=True, assign=True)
        # rp_bucket is stored but derived: a different one means a model this port is not.
        bucket = model.image_adapter.rp_bucket
        expected = relative_position_index(sizes["bucket_size"])
        if bucket.dtype != expected.dtype or not torch.equal(bucket.cpu(), expected):
            raise WeightsError(f"{LABEL}: image_adapter.rp_bucket is not the relative position "
                               f"index of a {sizes['bucket_size']} x {sizes['bucket_size']} grid")
        return model.eval()

    def frame_cls(self, x: Tensor) -> Tensor:
        """[B, 3, T, H, W] -> [B, D, T, 1, 1]: the per-frame CLS after the final LayerNorm,
        the original backbone's output (what mmaction's I3DHead receives)."""
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[2] != self.num_frames \
                or x.shape[3] != self.image_size or x.shape[4] != self.image_size:
            raise ValueError(f"{LABEL} expects [B, 3, {self.num_frames}, {self.image_size}, "
                             f"{self.image_size}], got {list(x.shape)}")
        b, _, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, 3, h, w)  # frames of a clip are consecutive
        tokens = self.encoder(self.image_adapter(frames), self.image_adapter.rel_pos_bias())
        return tokens[:, 0].view(b, t, -1).permute(0, 2, 1)[..., None, None]

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, T, H, W] -> [B, D]: [DECIDE] D3, the mean over T of :meth:`frame_cls`."""
        return self.frame_cls(x).flatten(2).mean(2)


def read_sizes(state_dict: Mapping[str, Tensor]) -> dict[str, int]:
    """Constructor sizes from the shapes of a backbone state dict (keys without ``backbone.``)."""
    try:
        table = state_dict["image_adapter.rel_pos_table.weight"]
        num_rel, num_heads = table.shape
        bucket = (math.isqrt(num_rel - 3) + 1) // 2
        if (2 * bucket - 1) ** 2 + 3 != num_rel:
            raise WeightsError(f"{LABEL}: a relative position table of {num_rel} rows fits no square grid")
        layer = re.compile(r"encoder\.layers\.(\d+)\.")
        depth = 1 + max((int(m.group(1)) for k in state_dict if (m := layer.match(k))), default=-1)
        return {
            "embed_dim": state_dict["image_adapter.cls_embedding"].shape[-1],
            "depth": depth,
            "num_heads": num_heads,
            "ffn_dim": state_dict["encoder.layers.0.image_ffn.0.wi_0.weight"].shape[0],
            "adapter_dim": state_dict["encoder.layers.0.S_Adapter.D_fc1.weight"].shape[0],
            "num_frames": state_dict["image_adapter.temporal_embedding"].shape[1],
            "bucket_size": bucket,
        }
    except KeyError as exc:
        example = next(iter(state_dict), "no keys at all")
        raise WeightsError(f"the given state dict is not a {LABEL} backbone "
                           f"(no {exc.args[0]}; first key: {example})") from exc
    except ValueError as exc:  # a tensor without the dimensions read above
        raise WeightsError(f"the given state dict is not a {LABEL} backbone ({exc})") from exc


# ---------------------------------------------------------------- the frame transform (D2)


def resized_size(height: int, width: int, short: int = IMAGE_SIZE) -> tuple[int, int]:
    """(height, width) after mmcv's short-side rescale: each side ``int(side * short / min + 0.5)``."""
    scale = short / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def preprocess_frames(frames: Tensor | np.ndarray, size: int = IMAGE_SIZE) -> Tensor:
    """RGB frames [N, H, W, 3] uint8 -> [N, 3, size, size] float32, the K400 val transform (D2).

    Short side to ``size`` (bilinear, no antialias, rounded to 0..255), centre crop
    ``size`` x ``size`` at ``((H' - size) // 2, (W' - size) // 2)``, then
    ``(x - mean) * (1 / std)`` per channel (mmcv's ``imnormalize_``: the reciprocal
    taken in float64). Runs on the frames' device. Stack a clip's T frames on
    dim 2 (``x.transpose(0, 1)[None]``) for :class:`OnePeaceVideoEncoder`.
    """
    x = torch.as_tensor(frames)
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB frames [N, H, W, 3], got {list(x.shape)}")
    x = x.permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    new_h, new_w = resized_size(h, w, size)
    if (new_h, new_w) != (h, w):
        # Same sampling as cv2.INTER_LINEAR; OpenCV's uint8 result is rounded, so is this.
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False,
                          antialias=False).round_().clamp_(0, 255)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(NORM_MEAN, dtype=torch.float32, device=x.device).view(3, 1, 1)
    inv_std = torch.tensor([1 / s for s in np.float64(np.float32(NORM_STD))], dtype=torch.float32,
                           device=x.device).view(3, 1, 1)
    return (x - mean) * inv_std
