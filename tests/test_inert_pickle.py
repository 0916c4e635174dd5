"""Reading tensors out of a pickle that holds foreign (and hostile) objects, running none of it."""
from __future__ import annotations

import argparse
import os

import pytest
import torch

from weights.errors import WeightsError
from weights.inert_pickle import Inert, load_inert, tensors_of


class _Touch:
    """A payload that creates a marker file when unpickled by a trusting reader."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


class _Config:  # a class of this module: importing it would run this file
    def __init__(self):
        self.lr = 0.1


@pytest.fixture
def hostile(tmp_path):
    weights = {"backbone.w": torch.arange(6.0).reshape(2, 3), "backbone.b": torch.ones(3),
               "head.w": torch.zeros(4)}
    path = tmp_path / "hostile.pt"
    torch.save({"cfg": _Touch(tmp_path / "marker1"), "args": argparse.Namespace(x=1),
                "hook": _Eval(tmp_path / "marker2"), "config": _Config(),
                "model": weights}, path)
    return path, weights


def test_no_code_runs_and_the_tensors_come_back_memory_mapped(hostile, tmp_path, monkeypatch):
    path, weights = hostile
    asked = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: asked.append(kw) or real_load(*a, **kw))
    obj, replaced = load_inert(path)
    assert asked[0]["mmap"] is True and asked[0]["weights_only"] is False
    assert not (tmp_path / "marker1").exists() and not (tmp_path / "marker2").exists()
    assert {"posix.system", "argparse.Namespace"} <= set(replaced)
    assert any(name.endswith(".eval") for name in replaced)  # __builtin__.eval at protocol 2
    assert any(name.endswith("._Config") for name in replaced)
    assert all(isinstance(obj[k], Inert) for k in ("cfg", "args", "hook", "config"))
    kept = tensors_of(obj, ("state_dict", "model"), lambda k: k.startswith("backbone."), str(path))
    assert set(kept) == {"backbone.w", "backbone.b"}
    assert all(torch.equal(kept[k], weights[k]) for k in kept)


def test_the_kept_tensors_save_to_a_file_weights_only_loads(hostile, tmp_path):
    path, weights = hostile
    with pytest.raises(Exception):  # the original needs pickle code: the safe loader refuses it
        torch.load(path, weights_only=True)
    kept = tensors_of(load_inert(path)[0], ("model",), lambda k: True, str(path))
    out = tmp_path / "converted.pt"
    torch.save({"state_dict": kept}, out)
    again = torch.load(out, weights_only=True)["state_dict"]
    assert all(torch.equal(again[k], weights[k]) for k in weights)


def test_unreadable_or_unexpected_files_are_one_line_errors(tmp_path, hostile):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="not a readable torch checkpoint") as err:
        load_inert(junk)
    assert "\n" not in str(err.value)
    obj, _ = load_inert(hostile[0])
    with pytest.raises(WeightsError, match="has none of the entries state_dict"):
        tensors_of(obj, ("state_dict",), lambda k: True, "x")
    with pytest.raises(WeightsError, match="none of the weights"):
        tensors_of(obj, ("model",), lambda k: False, "x")
