"""Converting the official ONE-PEACE files: no pickled code runs, only the encoders' tensors
are kept, the result loads with ``weights_only=True`` and gives the same outputs."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from extractors import onepeace_audio
from extractors.onepeace_video import OnePeaceVideoEncoder
from extractors.onepeace_weights import convert
from weights import store
from weights.errors import WeightsError

FIXTURES = Path(__file__).parent / "fixtures" / "onepeace"
VIDEO = FIXTURES / "video_small.pt"
AUDIO = FIXTURES / "audio_small.pt"


class _Touch:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _official_video(path, marker):
    fx = torch.load(VIDEO, weights_only=True)
    sd = {**fx["state_dict"], "cls_head.fc_cls.weight": torch.ones(400, 64), "cls_head.fc_cls.bias": torch.ones(400)}
    torch.save({"meta": {"config": argparse.Namespace(model="OnePeaceViT"), "hook": _Touch(marker)},
                "state_dict": sd}, path)
    return fx


def _official_audio(path, marker):
    fx = torch.load(AUDIO, weights_only=True)
    sd = {**fx["state_dict"], "text_proj.weight": torch.ones(8, 48), "logit_scale": torch.ones(()),
          "encoder_wrapper.fusion_model.layers.0.text_ffn.0.wi_0.weight": torch.ones(8, 48)}
    torch.save({"cfg": _Touch(marker), "args": argparse.Namespace(arch="one_peace"), "model": sd}, path)
    return fx


def test_video_conversion_runs_no_pickled_code_and_keeps_only_the_backbone(tmp_path):
    src = tmp_path / "dl" / "onepeace_video_k400.pth"
    src.parent.mkdir()
    fx = _official_video(src, tmp_path / "marker")
    dst = convert(src, directory=tmp_path / "weights")
    assert not (tmp_path / "marker").exists()
    assert dst == tmp_path / "weights" / "onepeace_video.pt"
    sd = torch.load(dst, weights_only=True)
    assert set(sd) == set(fx["state_dict"]) and all(k.startswith("backbone.") for k in sd)
    model = OnePeaceVideoEncoder.from_state_dict(sd).double()
    with torch.no_grad():
        out = model(fx["input"].double())
    assert torch.allclose(out, fx["features"], rtol=0, atol=1e-12 * float(fx["features"].abs().max()))
    entry = store.read_lock(dst.parent)["onepeace_video.pt"]
    assert entry["origin"] == "converted" and entry["source_sha256"] == store.sha256_of(src)
    store.check_file(dst, store.spec("onepeace_video.pt"))  # what locate() does before loading


def test_audio_conversion_keeps_only_the_audio_path(tmp_path):
    src = tmp_path / "one-peace.pt"
    fx = _official_audio(src, tmp_path / "marker")
    dst = convert(src, directory=tmp_path / "weights")
    assert not (tmp_path / "marker").exists()
    sd = torch.load(dst, weights_only=True)
    assert set(sd) == set(fx["state_dict"])
    model = onepeace_audio.from_state_dict(sd)
    with torch.no_grad():
        emb = model(fx["input"][1:, :16000])  # the fixture's two 1 s windows, prepared
    torch.testing.assert_close(emb, fx["windows_embedding"], rtol=0, atol=2e-6)


def test_a_file_that_is_not_the_expected_checkpoint_is_one_line(tmp_path):
    src = tmp_path / "onepeace_video_k400.pth"
    torch.save({"state_dict": {"backbone.x": torch.ones(2)}}, src)
    with pytest.raises(WeightsError, match="is not the onepeace_video_k400.pth checkpoint davel expects") as err:
        convert(src, directory=tmp_path)
    assert "\n" not in str(err.value) and not (tmp_path / "onepeace_video.pt").exists()
    with pytest.raises(WeightsError, match="not a file davel converts"):
        convert(src, name="raft-sintel.pth", directory=tmp_path)
    with pytest.raises(WeightsError, match="has none of the entries model"):
        convert(src, name="one-peace.pt", directory=tmp_path)


def test_missing_converted_file_says_how_to_make_it(tmp_path):
    with pytest.raises(WeightsError, match="converted from onepeace_video_k400.pth.*davel weights download "
                                           "onepeace_video_k400.pth"):
        store.locate("onepeace_video.pt", tmp_path)
    with pytest.raises(WeightsError, match="is not downloaded: it is converted from one-peace.pt"):
        store.download("onepeace_audio.pt", tmp_path)
