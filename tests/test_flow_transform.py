"""Crop -> clamp -> quantise -> scale of a padded RAFT field, exactly as video_features.

Fixture: tests/fixtures/visual/flow_transform.npz. The integers must be equal:
a one-pixel crop shift or floor instead of round would hide inside RAFT's
float noise further down, so this is the only place they can be caught.

Kind (see tests/helpers.py): exact by construction (elementwise clamp, scale and
round of the fixture's own field, then integer quantisation).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.flow_transform import crop_offset, quantise_flow
from extractors.i3d import flow_to_i3d_input


@pytest.fixture(scope="module")
def ft(fixtures):
    return dict(np.load(fixtures / "visual" / "flow_transform.npz"))


def test_crop_offset_of_the_padded_field(ft):
    assert list(crop_offset((256, 344))) == ft["crop_offset"].tolist() == [16, 60]
    assert crop_offset((256, 341)) == (16, 58)  # the RGB crop: one pixel right of the flow crop
    assert crop_offset((224, 224)) == (0, 0)
    with pytest.raises(ValueError):
        crop_offset((200, 344))


@pytest.mark.parametrize("field, expected", [("flow_padded", "flow_quantised"),
                                             ("flow_padded_iter4", "flow_quantised_iter4")])
def test_quantised_flow_is_exact(ft, field, expected):
    got = quantise_flow(torch.from_numpy(ft[field]))
    ref = ft[expected]
    assert got.dtype == torch.uint16 and tuple(got.shape) == ref.shape == (2, 224, 224)
    mismatches = int((got.numpy() != ref).sum())
    assert mismatches == 0, f"{mismatches} of {ref.size} quantised values differ"
    # Both ends are reached: -20 px -> 0.5 -> 0 and +20 px -> 255.5 -> 256 (half to even).
    assert got.numpy().min() == 0 and got.numpy().max() == 256


def test_quantise_keeps_leading_dims(ft):
    field = torch.from_numpy(ft["flow_padded"])
    batch = quantise_flow(torch.stack([field, field]))
    assert batch.shape == (2, 2, 224, 224)
    assert torch.equal(batch[1], quantise_flow(field))


def test_i3d_input_matches(ft):
    quantised = quantise_flow(torch.from_numpy(ft["flow_padded"]))  # [2, H, W]
    got = flow_to_i3d_input(quantised[None])[0, :, 0]  # [1, 2, 1, H, W] -> [2, H, W]
    ref = torch.from_numpy(ft["i3d_input"])
    assert got.dtype == torch.float32
    assert torch.equal(got, ref), f"max abs {(got - ref).abs().max().item():.3g}"


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        quantise_flow(torch.zeros(3, 256, 344))
    with pytest.raises(ValueError):
        quantise_flow(torch.zeros(2, 256, 344, dtype=torch.int32))
