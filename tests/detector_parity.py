"""The per-level comparison of a detector's outputs with the original code's (fixtures/detector).

Kinds (see tests/helpers.py): masks and points are exact by construction (integer
positions, nearest-neighbour downsampling); logits and offsets are float
tolerance: ATOL is ~6x the 1-vs-2-thread spread of the parity README and ~15x
the largest deviation measured between CPU code paths here (6.4e-6 on O(1) values).
"""
from __future__ import annotations

import numpy as np
import torch

from davel.inference import prepare_inputs

from helpers import report

# parity/detector/README.md: 1 vs 2 threads differ by <= 1.6e-5 abs (max |x| ~ 4)
ATOL = 1e-4
LEVELS = 6


def assert_matches_reference(model: torch.nn.Module, ref: np.lib.npyio.NpzFile) -> None:
    """Run ``model`` on the fixture's features; masks and points must be equal,
    logits and offsets within ATOL, at every pyramid level."""
    length = model.padded_length(int(ref["T"]))
    assert length == int(ref["padded_len"])
    v, a, mask = prepare_inputs(ref["feats_visual"], ref["feats_audio"], length)
    with torch.inference_mode():
        out = model(v, a, mask)

    assert len(out.cls_logits) == len(out.offsets) == len(out.masks) == len(out.points) == LEVELS
    name = f"{type(model).__name__}_T{int(ref['T'])}"
    report(name, "max_abs_logits", max(float(np.abs(out.cls_logits[i][0].numpy() - ref[f"cls_logits_l{i}"]).max())
                                       for i in range(LEVELS)))
    report(name, "max_abs_offsets", max(float(np.abs(out.offsets[i][0].numpy() - ref[f"offsets_l{i}"]).max())
                                        for i in range(LEVELS)))
    for i in range(LEVELS):
        t_i = length // 2 ** i
        logits, offsets = out.cls_logits[i], out.offsets[i]
        assert logits.shape == (1, t_i, 100) and offsets.shape == (1, t_i, 100, 2)
        np.testing.assert_array_equal(out.masks[i][0].numpy(), ref[f"mask_l{i}"])
        np.testing.assert_array_equal(out.points[i].numpy(), ref[f"points_l{i}"])
        np.testing.assert_allclose(logits[0].numpy(), ref[f"cls_logits_l{i}"], rtol=0, atol=ATOL,
                                   err_msg=f"cls_logits level {i}")
        np.testing.assert_allclose(offsets[0].numpy(), ref[f"offsets_l{i}"], rtol=0, atol=ATOL,
                                   err_msg=f"offsets level {i}")
