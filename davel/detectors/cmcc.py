"""CCNet's cross-modal consistency collaboration (CMCC) layer.

One CMCC layer turns the visual and audio streams of pyramid level ``k`` into
those of level ``k + 1``: each stream is queried by the other modality
(cross-modal interaction, a :class:`~davel.detectors.layers.TransformerBlock`)
and the result is re-weighted by a temporal-consistency gate computed from the
other modality alone (``y + y * gate``).

The modules live in the backbone's ModuleLists (``CMI_Visual``, ``audio_TCG``,
...) because that is how the official checkpoint names them; :func:`cmcc_layer`
runs one layer given those modules.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from davel.detectors.layers import ChannelLayerNorm, MaskedConv1D, MaskedMHCA, TransformerBlock


class TemporalConsistencyGate(MaskedMHCA):
    """Temporal-consistency gate (official ``TCG_block``): a per-step weight in (0, 1).

    Pre-LN self-attention over one modality ``[B, D, T]`` followed by a 1x1
    masked conv to one channel and a sigmoid. ``stride`` > 1 downsamples like
    the cross-modal block it accompanies. Returns ``[B, 1, T / stride]``.

    The attention parameters sit at the top level of the module (no ``attn.``
    prefix), as in the checkpoint, hence the subclassing of :class:`MaskedMHCA`.
    """

    def __init__(self, n_embd: int, n_head: int, stride: int = 1) -> None:
        super().__init__(n_embd, n_head, stride, stride)
        self.ln11 = ChannelLayerNorm(n_embd)
        self.ln12 = ChannelLayerNorm(n_embd)
        self.gate_linear = MaskedConv1D(n_embd, 1, 1)

    def forward(self, x_kv: Tensor, x_q: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        out, out_mask = super().forward(self.ln11(x_kv), self.ln12(x_q), mask)
        gate, _ = self.gate_linear(out, out_mask)
        return torch.sigmoid(gate)


def cmcc_layer(cmi_visual: TransformerBlock, cmi_audio: TransformerBlock,
               gate_from_audio: TemporalConsistencyGate, gate_from_visual: TemporalConsistencyGate,
               x_v: Tensor, x_a: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One CMCC layer: ``x_v, x_a [B, D, T]``, ``mask [B, 1, T]`` -> level outputs and mask.

    ``cmi_visual`` keeps the visual stream (keys, values, skip path) and takes
    its queries from audio; the audio gate then scales it. Symmetrically for
    audio. Returns ``(v [B, D, T'], a [B, D, T'], mask [B, 1, T'])`` with
    ``T' = T / stride``.

    The official backbone hands each gate the mask of the *output* level.
    When the layer downsamples, that mask no longer matches the gate's input
    length, so the gate's attention falls back to the per-sample path: padded
    keys still take part in the softmax (only their values are zeroed) and
    padded query rows are zeroed. This is reproduced on purpose; it changes
    the numbers of every strided level whenever the video is shorter than the
    padded length.
    """
    y_v, out_mask = cmi_visual(x_v, x_a, mask)
    gate_a = gate_from_audio(x_a, x_a, out_mask)
    y_a, _ = cmi_audio(x_a, x_v, mask)
    gate_v = gate_from_visual(x_v, x_v, out_mask)
    return y_v + y_v * gate_a, y_a + y_a * gate_v, out_mask


def gate_list(n_embd: int, n_head: int, num_levels: int, scale_factor: int) -> nn.ModuleList:
    """Gates for ``num_levels`` CMCC layers: the first at full resolution, the rest strided."""
    return nn.ModuleList(TemporalConsistencyGate(n_embd, n_head, 1 if i == 0 else scale_factor)
                         for i in range(num_levels))
