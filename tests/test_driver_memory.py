"""The driver of ``davel detect VIDEO`` checks the checkpoint without holding the model:
:func:`davel.inference.check_checkpoint` reads it memory-mapped and refuses a bad one
with the very line :func:`load_detector` gives."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from davel.detectors.ccnet import CCNetDetector
from davel.errors import DavelError, InputError, WeightsError
from davel.feature_norm import FeatureNorm
from davel.inference import check_checkpoint, load_detector
from weights.standin_files import official_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def onepeace_ckpt(tmp_path_factory) -> Path:
    """A tiny 1536/1536 CCNet (ONE-PEACE widths) in the official layout, three classes."""
    torch.manual_seed(0)
    m = CCNetDetector(input_dim_v=1536, input_dim_a=1536, embd_dim=32, head_dim=32, mtgc_dim=4,
                      num_classes=3, max_seq_len=256)
    path = tmp_path_factory.mktemp("onepeace") / "ccnet_onepeace.pth"
    torch.save(official_checkpoint({f"module.{k}": v for k, v in m.state_dict().items()}), path)
    return path


def _tiny_obj(tiny_checkpoint: Path) -> dict:
    return torch.load(tiny_checkpoint, weights_only=True)


def test_i3d_vggish_checkpoint(tiny_checkpoint):
    s = check_checkpoint(tiny_checkpoint, "cpu")
    d = load_detector(tiny_checkpoint, "cpu")
    assert (s.name, s.kind, s.input_dims, s.feature_set) == (d.name, d.kind, d.model.input_dims, d.feature_set)
    assert s.feature_set == "i3d-vggish" and s.video_feature_set().name == "i3d-vggish"
    assert s.has_labels and s.device == torch.device("cpu")


def test_onepeace_checkpoint(onepeace_ckpt):
    s = check_checkpoint(onepeace_ckpt, "cpu")
    assert s.kind == "ccnet" and s.input_dims == (1536, 1536)
    assert s.feature_set == "one-peace" and s.video_feature_set().name == "one-peace"
    assert not s.has_labels  # three classes, no names: the driver warns
    assert load_detector(onepeace_ckpt, "cpu").labels is None
    assert check_checkpoint(onepeace_ckpt, "cpu", labels=["a", "b", "c"]).has_labels


def test_widths_no_set_refused_as_the_detector(tmp_path):
    torch.manual_seed(0)
    m = CCNetDetector(input_dim_v=64, input_dim_a=32, embd_dim=32, head_dim=32, mtgc_dim=4,
                      num_classes=3, max_seq_len=256)
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": m.state_dict()}, path)
    s = check_checkpoint(path, "cpu")
    assert s.feature_set is None
    with pytest.raises(InputError) as ours:
        s.video_feature_set()
    with pytest.raises(InputError) as theirs:
        load_detector(path, "cpu").video_feature_set()
    assert str(ours.value) == str(theirs.value) and "pass pre-extracted features" in str(ours.value)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _bad_files(tmp: Path, tiny: Path) -> dict[str, tuple[Path, dict]]:
    """name -> (checkpoint path, load options) that load_detector refuses."""
    out: dict[str, tuple[Path, dict]] = {}

    def save(name: str, obj, **kw) -> Path:
        p = tmp / f"{name}.pth"
        torch.save(obj, p, **kw)
        return p

    out["missing"] = (tmp / "nope.pth", {})
    (tmp / "empty.pth").write_bytes(b"")
    out["empty"] = (tmp / "empty.pth", {})
    (tmp / "text.pth").write_text("not a checkpoint\n")
    out["text"] = (tmp / "text.pth", {})
    data = tiny.read_bytes()
    (tmp / "cut.pth").write_bytes(data[: len(data) // 2])
    out["cut"] = (tmp / "cut.pth", {})
    (tmp / "evil.pth").write_bytes(pickle.dumps({"state_dict": _Evil()}, protocol=2))
    out["evil"] = (tmp / "evil.pth", {})
    out["list"] = (save("list", [torch.zeros(2)]), {})
    out["no-tensors"] = (save("no_tensors", {"state_dict": {"a": 1}}), {})
    out["unknown-layout"] = (save("unknown", {"state_dict": {"foo.weight": torch.zeros(2)}}), {})
    obj = _tiny_obj(tiny)
    sd = obj["state_dict_ema"]
    out["missing-key"] = (save("missing_key", {"state_dict_ema": {k: v for k, v in list(sd.items())[:-1]}}), {})
    out["widths"] = (tiny, {"expect_dims": (1536, 1536)})
    out["bad-labels"] = (save("bad_labels", {**obj, "davel": {"labels": 3}}), {})
    out["bad-timebase"] = (save("bad_tb", {**obj, "davel": {"timebase": {"fps": -1}}}), {})
    out["bad-kind-config"] = (save("bad_cfg", {**obj, "davel": {"model_config": "x"}}), {})
    norm = FeatureNorm(*(torch.ones(n).numpy() for n in (16, 16, 8, 8)))
    out["norm-widths"] = (save("norm", {**obj, "davel": {"feature_norm": norm.to_meta()}}), {})
    return out


BAD = ["missing", "empty", "text", "cut", "evil", "list", "no-tensors", "unknown-layout", "missing-key",
       "widths", "bad-labels", "bad-timebase", "bad-kind-config", "norm-widths"]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, tiny_checkpoint):
    return _bad_files(tmp_path_factory.mktemp("bad"), tiny_checkpoint)


@pytest.mark.parametrize("case", BAD)
def test_bad_checkpoint_same_line(bad_files, case):
    path, kw = bad_files[case]
    with pytest.raises(DavelError) as theirs:
        load_detector(path, "cpu", **kw)
    with pytest.raises(DavelError) as ours:
        check_checkpoint(path, "cpu", **kw)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)
    assert "\n" not in str(ours.value)
    if case != "missing":
        assert isinstance(ours.value, WeightsError)


def test_old_format_file_still_checked(tmp_path, tiny_checkpoint):
    """A checkpoint saved without the zip format cannot be mapped: it is read whole, as before."""
    path = tmp_path / "legacy.pth"
    torch.save(_tiny_obj(tiny_checkpoint), path, _use_new_zipfile_serialization=False)
    s = check_checkpoint(path, "cpu")
    assert s.feature_set == "i3d-vggish" and s.has_labels


def test_bad_device_same_line(tiny_checkpoint):
    with pytest.raises(DavelError) as theirs:
        load_detector(tiny_checkpoint, "bogus")
    with pytest.raises(DavelError) as ours:
        check_checkpoint(tiny_checkpoint, "bogus")
    assert str(ours.value) == str(theirs.value)


_PEAK = """
import json, sys
from pathlib import Path
from davel.inference import check_checkpoint, load_detector

def kb(field):
    return next(int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines()
                if x.startswith(field + ":"))

Path("/proc/self/clear_refs").write_text("5")
base = kb("VmHWM")
fn = check_checkpoint if sys.argv[2] == "check" else load_detector
keep = fn(sys.argv[1], "cpu")
print(json.dumps({"peak_mb": (kb("VmHWM") - base) / 1024, "held_mb": (kb("VmRSS") - base) / 1024}))
"""


def _growth(path: Path, how: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path), how], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_check_does_not_read_the_weights(tmp_path, tiny_checkpoint):
    """A checkpoint with 128 MB of training weights besides the tiny evaluated (EMA) ones:
    loading reads them all, the check leaves them in the file."""
    obj = _tiny_obj(tiny_checkpoint)
    obj["state_dict"] = {"big": torch.ones(32 * 1024 * 1024)}  # 128 MB, never evaluated
    path = tmp_path / "big.pth"
    torch.save(obj, path)
    del obj
    loaded, checked = _growth(path, "load"), _growth(path, "check")
    assert loaded["peak_mb"] > 100, loaded
    assert checked["peak_mb"] < 48 and checked["held_mb"] < 48, checked
