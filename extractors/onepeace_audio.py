"""ONE-PEACE audio encoder: 16 kHz waveform -> normalised 1536-d embedding (eval only).

A plain-PyTorch port of the audio path of OFA-Sys/ONE-PEACE (``AudioAdapter``, the
shared ``TransformerEncoder`` with the audio FFNs, ``audio_proj``): no fairseq,
omegaconf, timm or einops. Dropout and drop path are left out (eval mode).

* Feature encoder (wav2vec 2.0 style): seven Conv1d without bias, kernels / strides
  ``10/5, (3/2) x 4, (2/2) x 2`` (a hop of 320 samples: 49 tokens per second at
  16 kHz), each followed by a LayerNorm over channels and GELU; then LayerNorm and a
  Linear to the model width.
* Conv positional embedding: 5 x (grouped Conv1d, kernel 19, 16 groups, padding 9,
  LayerNorm without affine, GELU), added to the tokens; a CLS token with its own
  positional vector goes first.
* Relative position bias: one table ``[2 * bucket + 2, heads]`` (bucket 512) shared by
  every layer, indexed by log-spaced token-offset buckets; CLS rows and columns have
  their own entries.
* Each layer (pre-LN): ``x + gamma_1 * out_proj(LN(attention(LN(x))))`` then
  ``x + gamma_2 * W_o LN(GELU(W_0 LN(x)) * W_1 LN(x))`` (the attention's inner LN is
  "magneto"; the FFN is GeGLU with a LayerNorm before its output projection).
  Attention: ``q / sqrt(head_dim)``, keys without bias, softmax in float32.
* Output (ONEPEACE.md D5): ``normalize(audio_proj(CLS))`` after the final
  ``audio_layer_norm``, L2 norm 1, as the retrieval model's ``encoder_type="audio"``.

Module names follow ``one-peace.pt`` (fairseq; the tensors under its ``model`` entry):
:func:`audio_keys` picks the keys this encoder uses, which then load with
``load_state_dict(strict=True)``. Every size is read from tensor shapes
(:func:`from_state_dict`); the conv strides are not in any shape and are the
release's. The released size: width 1536, 40 layers, 24 heads, FFN 6144 (GeGLU),
512 conv channels, about 1.53 B parameters (6.1 GB in float32).

Preprocessing, [DECIDE] D4: :func:`prepare_window` is the hub's ``process_audio``
for one clip (``F.layer_norm`` over all its samples, cut to 15 s, repeated to at
least 1 s), applied to each 1 s window on its own: a window's embedding depends on
that window only, as when ONE-PEACE embeds a 1 s clip. The alternative, normalising
the whole track once and cutting windows from it, keeps the loudness differences
between windows; nothing published says which one the UniAV features used.
Resampling to 16 kHz happens before (the hub used ``librosa.load(sr=16000)``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from extractors.onepeace_layers import GeGLU
from weights import store
from weights.errors import InputError, WeightsError

SAMPLE_RATE = 16000
WINDOW_SAMPLES = SAMPLE_RATE  # 1 s windows (UniAV / LoCo)
MAX_SAMPLES = 15 * SAMPLE_RATE  # process_audio keeps the first 15 s
FEATURE_CONVS = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))  # (kernel, stride)
MAX_POSITIONS = 1024  # the relative-position buckets cover this many tokens (CLS included)
LN_EPS = 1e-5  # every LayerNorm, and the waveform's F.layer_norm
EMBEDDING_SIZE = 1536


def _receptive_field() -> int:
    r = 1
    for kernel, stride in reversed(FEATURE_CONVS):
        r = (r - 1) * stride + kernel
    return r


MIN_SAMPLES = _receptive_field()  # 400: one token
HOP = math.prod(stride for _, stride in FEATURE_CONVS)  # 320: 49 tokens per second
MAX_SAMPLES_MODEL = MIN_SAMPLES + (MAX_POSITIONS - 2) * HOP + HOP - 1  # 1023 tokens + CLS
FULL_SIZE = dict(embed_dim=1536, layers=40, heads=24, ffn_dim=6144, conv_channels=(512,) * 7,
                 pos_depth=5, pos_kernel=19, pos_groups=16, bucket_size=512)

# The keys of one-peace.pt's model state dict that the audio encoder uses: the audio
# adapter (less the masked-pretraining mask_embedding and the rp_bucket buffer, which
# is recomputed), the shared part of every layer (less the text and image FFNs), the
# final audio LayerNorm and audio_proj. Not: decoder_wrapper.*, the other adapters,
# fusion_model.version, logit_scale, the *_mask_* tensors.
AUDIO_KEY_PREFIXES = ("encoder_wrapper.audio_adapter.", "encoder_wrapper.fusion_model.layers.",
                      "encoder_wrapper.fusion_model.audio_layer_norm.", "audio_proj.")
_AUDIO_KEY = re.compile(
    r"encoder_wrapper\.audio_adapter\.(?!(?:mask_embedding|rp_bucket)$).+"
    r"|encoder_wrapper\.fusion_model\.layers\.\d+\.(?!(?:text|image)_ffn\.).+"
    r"|encoder_wrapper\.fusion_model\.audio_layer_norm\..+"
    r"|audio_proj\..+")
_LEGACY_TABLE = "encoder_wrapper.audio_adapter.rel_pos_table.weight"  # renamed by the original's upgrade
_TABLE = "encoder_wrapper.audio_adapter.rel_pos_table_list.0.weight"


def audio_keys(names: Iterable[str]) -> list[str]:
    """The names (of one-peace.pt's ``model`` state dict) the audio encoder uses, in order."""
    return [n for n in names if _AUDIO_KEY.fullmatch(n)]


# ---------------------------------------------------------------- preprocessing


def prepare_window(samples: np.ndarray) -> Tensor:
    """Mono 16 kHz samples ``[n]`` -> the encoder's input ``float32 [max(min(n, 240000), 16000)]``.

    The hub's ``process_audio`` for one clip: float32, ``F.layer_norm`` over all ``n``
    samples (mean 0, variance 1, eps 1e-5), cut to 15 s, and a clip under 1 s repeated
    (after normalising) until it fills 1 s. Used on each 1 s window (D4).
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"prepare_window expects mono samples [n], got shape {x.shape}")
    if x.size == 0:
        raise InputError("no audio samples to embed (empty window)")
    wave = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    wave = F.layer_norm(wave, wave.shape, eps=LN_EPS)[:MAX_SAMPLES]
    if len(wave) < WINDOW_SAMPLES:
        wave = wave.repeat(math.ceil(WINDOW_SAMPLES / len(wave)))[:WINDOW_SAMPLES]
    return wave


def num_tokens(num_samples: int) -> int:
    """Tokens the feature encoder makes of ``num_samples`` samples (CLS not counted)."""
    n = num_samples
    for kernel, stride in FEATURE_CONVS:
        n = (n - kernel) // stride + 1
    return max(n, 0)


def token_padding_mask(lengths: Sequence[int]) -> Tensor:
    """``bool [B, T + 1]`` (True = padding) for clips of ``lengths`` samples zero-padded to
    the longest, as the hub builds it: each clip's own tokens and CLS are False."""
    counts = [num_tokens(n) + 1 for n in lengths]
    mask = torch.ones(len(counts), max(counts), dtype=torch.bool)
    for row, count in zip(mask, counts):
        row[:count] = False
    return mask


def token_buckets(bucket_size: int, max_positions: int = MAX_POSITIONS) -> Tensor:
    """``int64 [max_positions, max_positions]``: the relative-position table row of each
    (query, key) pair; position 0 is CLS.

    Offsets with ``|d| <= bucket_size // 2`` keep their own bucket, farther ones share
    buckets spaced logarithmically up to ``max_positions - 1``; rows for CLS -> token,
    token -> CLS and CLS -> CLS are ``2 b - 1``, ``2 b`` and ``2 b + 1``. The log is
    taken in float64: for bucket sizes 16 to 512 this gives the original's float32
    buckets exactly (checked by hash in the tests) with wider margins at the roundings.
    """
    pos = torch.arange(max_positions)
    offset = pos[:, None] - pos[None, :]
    mid = bucket_size // 2
    near = (offset < mid) & (offset > -mid)
    dist = torch.where(near, mid - 1, offset.abs())
    spread = torch.log(dist.double() / mid) / math.log((max_positions - 1) / mid) * (mid - 1)
    far = mid + torch.ceil(spread).long()
    buckets = torch.where(dist <= mid, offset, far * torch.sign(offset)) + bucket_size - 1
    buckets[0, :] = 2 * bucket_size - 1
    buckets[:, 0] = 2 * bucket_size
    buckets[0, 0] = 2 * bucket_size + 1
    return buckets


# ---------------------------------------------------------------- model


class Transpose(nn.Module):
    """Swap the last two axes (``[B, C, T] <-> [B, T, C]``)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(-2, -1)


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    # Indices are the checkpoint's: 0 conv, (1 dropout), 2.1 LayerNorm over channels, 3 GELU.
    return nn.Sequential(nn.Conv1d(c_in, c_out, kernel, stride, bias=False), nn.Identity(),
                         nn.Sequential(Transpose(), nn.LayerNorm(c_out, eps=LN_EPS), Transpose()),
                         nn.GELU())


class FeatureEncoder(nn.Module):
    """Waveform ``[B, N]`` -> conv features ``[B, C, T]``, ``T = num_tokens(N)``."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        if len(channels) != len(FEATURE_CONVS):
            raise ValueError(f"the feature encoder has {len(FEATURE_CONVS)} convs, got {len(channels)} widths")
        ins = (1, *channels[:-1])
        self.conv_layers = nn.ModuleList(_conv_block(i, o, k, s)
                                         for i, o, (k, s) in zip(ins, channels, FEATURE_CONVS))

    def forward(self, wave: Tensor) -> Tensor:
        x = wave[:, None]
        for block in self.conv_layers:
            x = block(x)
        return x


class ConvPositionalEmbedding(nn.Module):
    """Tokens ``[B, T, D]`` -> positional vectors ``[B, T, D]``.

    ``depth`` x (Conv1d kernel k, ``groups``, padding k // 2 (one output dropped for an
    even k), LayerNorm over channels without affine, GELU). The convs sit at
    ``<i>.0`` for i = 1..depth, where the original's Sequential has them (its other
    entries hold no weights).
    """

    def __init__(self, dim: int, depth: int, kernel: int, groups: int):
        super().__init__()
        self.dim, self.kernel = dim, kernel
        for i in range(1, depth + 1):
            self.add_module(str(i), nn.ModuleList([nn.Conv1d(dim, dim, kernel, padding=kernel // 2,
                                                             groups=groups)]))

    def forward(self, tokens: Tensor) -> Tensor:
        x = tokens.transpose(1, 2)
        for block in self.children():
            x = block[0](x)
            if self.kernel % 2 == 0:
                x = x[:, :, :-1]
            x = F.layer_norm(x.transpose(1, 2), (self.dim,), eps=LN_EPS).transpose(1, 2)
            x = F.gelu(x)
        return x.transpose(1, 2)


class AudioAdapter(nn.Module):
    """Waveform ``[B, N]`` -> tokens ``[B, 1 + T, D]`` (CLS first, positions added) and the
    relative position bias ``[1, H, 1 + T, 1 + T]``."""

    def __init__(self, embed_dim: int, heads: int, conv_channels: Sequence[int], pos_depth: int,
                 pos_kernel: int, pos_groups: int, bucket_size: int):
        super().__init__()
        self.bucket_size = bucket_size
        # 0 conv stack, (1 transpose), 2 LayerNorm over channels, 3 Linear to the width
        self.embed_audios = nn.Sequential(FeatureEncoder(conv_channels), Transpose(),
                                          nn.LayerNorm(conv_channels[-1], eps=LN_EPS),
                                          nn.Linear(conv_channels[-1], embed_dim))
        self.embed_positions = ConvPositionalEmbedding(embed_dim, pos_depth, pos_kernel, pos_groups)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.rel_pos_table_list = nn.ModuleList([nn.Embedding(2 * bucket_size + 2, heads)])
        self.register_buffer("rp_bucket", token_buckets(bucket_size), persistent=False)

    def reset_buffers(self, device: torch.device | str) -> None:
        """Compute ``rp_bucket`` (derived from the bucket size; not loaded) on ``device``."""
        self.rp_bucket = token_buckets(self.bucket_size).to(device)

    def forward(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.embed_audios(wave)  # [B, T, D]
        batch = len(feats)
        pos = self.embed_positions(feats)
        x = torch.cat([self.cls_embedding.expand(batch, -1, -1), feats], 1)
        x = x + torch.cat([self.cls_pos_embed.expand(batch, -1, -1), pos], 1)
        n = x.shape[1]
        bias = self.rel_pos_table_list[0](self.rp_bucket[:n, :n]).permute(2, 0, 1)[None]
        return x, bias


class SharedAttention(nn.Module):
    """Multi-head self-attention ``[B, L, D] -> [B, L, D]`` with an additive bias
    ``[B | 1, H, L, L]``; LayerNorm ("magneto") on the heads' output before out_proj."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.heads = heads
        self.scaling = (dim // heads) ** -0.5
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ln = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, n, d = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # [B, H, L, hd]

        q = heads(self.q_proj(x) * self.scaling)
        weights = q @ heads(self.k_proj(x)).transpose(-2, -1) + bias
        probs = torch.softmax(weights, -1, dtype=torch.float32).type_as(weights)
        out = (probs @ heads(self.v_proj(x))).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(self.ln(out))


class Layer(nn.Module):
    """One layer of the shared transformer as the audio path runs it: the shared
    attention and LayerNorms, the audio FFN (``audio_ffn``: 0 GeGLU, 2 LayerNorm,
    3 Linear), layer scales ``gamma_1`` / ``gamma_2``. ``[B, L, D] -> [B, L, D]``."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn = SharedAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.audio_ffn = nn.Sequential(GeGLU(dim, ffn_dim), nn.Identity(), nn.LayerNorm(ffn_dim, eps=LN_EPS),
                                       nn.Linear(ffn_dim, dim))
        self.final_layer_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.gamma_1 = nn.Parameter(torch.ones(dim))
        self.gamma_2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = x + self.gamma_1 * self.self_attn(self.self_attn_layer_norm(x), bias)
        return x + self.gamma_2 * self.audio_ffn(self.final_layer_norm(x))


class FusionModel(nn.Module):
    """The shared transformer's layers and the audio output LayerNorm."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(Layer(dim, heads, ffn_dim) for _ in range(layers))
        self.audio_layer_norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, bias)
        return self.audio_layer_norm(x)


class EncoderWrapper(nn.Module):
    """Holds ``audio_adapter`` and ``fusion_model`` under the checkpoint's names."""

    def __init__(self, adapter: AudioAdapter, fusion: FusionModel):
        super().__init__()
        self.audio_adapter = adapter
        self.fusion_model = fusion


class OnePeaceAudio(nn.Module):
    """The ONE-PEACE audio encoder; defaults are the released size (:data:`FULL_SIZE`).

    ``forward(wave [B, N], padding_mask [B, T + 1] | None) -> [B, D]``, L2 norm 1.
    ``wave``: 16 kHz float32 already normalised (:func:`prepare_window`), zero-padded
    past each clip's end in a batch of different lengths; ``padding_mask``: True on the
    padded tokens (:func:`token_padding_mask`), None when no clip is padded.
    """

    def __init__(self, embed_dim: int = 1536, layers: int = 40, heads: int = 24, ffn_dim: int = 6144,
                 conv_channels: Sequence[int] = (512,) * 7, pos_depth: int = 5, pos_kernel: int = 19,
                 pos_groups: int = 16, bucket_size: int = 512):
        super().__init__()
        self.embed_dim = embed_dim
        adapter = AudioAdapter(embed_dim, heads, conv_channels, pos_depth, pos_kernel, pos_groups, bucket_size)
        self.encoder_wrapper = EncoderWrapper(adapter, FusionModel(embed_dim, heads, ffn_dim, layers))
        self.audio_proj = nn.Linear(embed_dim, embed_dim)

    def tokens(self, wave: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``[B, N]`` -> every token after ``audio_layer_norm``, ``[B, 1 + T, D]`` (CLS first)."""
        if wave.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, N], got shape {list(wave.shape)}")
        count = num_tokens(wave.shape[1])
        if count < 1 or count + 1 > MAX_POSITIONS:
            raise InputError(f"{wave.shape[1]} samples make {count} audio tokens; ONE-PEACE takes "
                             f"{MIN_SAMPLES} to {MAX_SAMPLES_MODEL} samples (1 to {MAX_POSITIONS - 1} tokens)")
        wrapper = self.encoder_wrapper
        x, bias = wrapper.audio_adapter(wave)
        if padding_mask is not None and padding_mask.any():
            if tuple(padding_mask.shape) != tuple(x.shape[:2]):
                raise ValueError(f"padding mask {list(padding_mask.shape)} for {list(x.shape[:2])} tokens")
            x = x.masked_fill(padding_mask[:, :, None], 0.0)
            bias = bias.masked_fill(padding_mask[:, None, None, :], float("-inf"))
        return wrapper.fusion_model(x, bias)

    def forward(self, wave: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return F.normalize(self.audio_proj(self.tokens(wave, padding_mask)[:, 0]), dim=1)


# ---------------------------------------------------------------- loading


def _sizes(state: Mapping[str, Tensor]) -> dict:
    """Constructor arguments read from the tensor shapes (KeyError when a key is missing)."""
    adapter = "encoder_wrapper.audio_adapter."
    table = state[_TABLE]
    layer = re.compile(r"encoder_wrapper\.fusion_model\.layers\.(\d+)\.audio_ffn\.0\.wi_0\.weight")
    layers = [int(m.group(1)) for k in state if (m := layer.fullmatch(k))]
    pos = re.compile(re.escape(adapter) + r"embed_positions\.(\d+)\.0\.weight")
    pos_ids = [int(m.group(1)) for k in state if (m := pos.fullmatch(k))]
    first_pos = state[f"{adapter}embed_positions.1.0.weight"]
    dim = state["audio_proj.weight"].shape[0]
    convs = [state[f"{adapter}embed_audios.0.conv_layers.{i}.0.weight"] for i in range(len(FEATURE_CONVS))]
    kernels = tuple(c.shape[-1] for c in convs)
    if kernels != tuple(k for k, _ in FEATURE_CONVS):
        raise WeightsError(f"feature encoder kernels are {kernels}, ONE-PEACE's are "
                           f"{tuple(k for k, _ in FEATURE_CONVS)}")
    if table.shape[0] % 2:
        raise WeightsError(f"{_TABLE} has {table.shape[0]} rows, expected 2 * bucket size + 2")
    return dict(embed_dim=dim, layers=max(layers) + 1 if layers else 0, heads=table.shape[1],
                ffn_dim=state["encoder_wrapper.fusion_model.layers.0.audio_ffn.0.wi_0.weight"].shape[0],
                conv_channels=tuple(c.shape[0] for c in convs), pos_depth=max(pos_ids),
                pos_kernel=first_pos.shape[-1], pos_groups=dim // first_pos.shape[1],
                bucket_size=(table.shape[0] - 2) // 2)


def from_state_dict(state_dict: Mapping[str, Tensor], where: str = "the given state dict",
                    dtype: torch.dtype = torch.float32) -> OnePeaceAudio:
    """The audio encoder in eval mode from one-peace.pt's ``model`` state dict (all of it,
    or only its :func:`audio_keys`); sizes from the tensor shapes.

    Built on the meta device, then the tensors are taken over (``assign=True``, cast to
    ``dtype``: float32, the reference, by default) and ``rp_bucket`` is computed where
    they are. One-line WeightsError when a key is missing, unexpected or misshapen.
    """
    state = {k: v for k, v in state_dict.items() if _AUDIO_KEY.fullmatch(k)}
    if _LEGACY_TABLE in state and _TABLE not in state:  # older name, as the original's upgrade
        state[_TABLE] = state.pop(_LEGACY_TABLE)
    if not state:
        raise WeightsError(f"{where} has no ONE-PEACE audio encoder keys (encoder_wrapper.audio_adapter...)")
    try:
        sizes = _sizes(state)
        with torch.device("meta"):
            model = OnePeaceAudio(**sizes)
    except KeyError as exc:
        raise WeightsError(f"{where} does not have the ONE-PEACE audio layout (missing {exc.args[0]})") from exc
    except (IndexError, ValueError, ZeroDivisionError) as exc:
        raise WeightsError(f"{where}: ONE-PEACE audio tensors have unexpected shapes "
                           f"({store.first_line(exc)})") from exc
    store.check_layout(state, model.state_dict(), where, "ONE-PEACE audio encoder")
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.encoder_wrapper.audio_adapter.reset_buffers(state["audio_proj.weight"].device)
    return model.eval()


def load_onepeace_audio(source, dtype: torch.dtype = torch.float32) -> OnePeaceAudio:
    """:func:`from_state_dict` of a weights file (``torch.load(weights_only=True)``) or a mapping."""
    state = store.load_state_dict_file(source, "ONE-PEACE audio encoder")
    return from_state_dict(state, store.describe_source(source), dtype)
