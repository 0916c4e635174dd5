"""Weights registry, cache location, hash checks and safe loading."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

from davel.errors import WeightsError
from weights import store
from weights.standin import load_manifest, standin_state_dict, standin_tensor


def test_standin_rule_matches_reference_rule_examples():
    # Values of the reference rule (synth.py) for fixed keys: vector weight ~1, scale ~0.5,
    # counters zero, matrices He-scaled; any change of the rule changes these bits.
    t = standin_tensor("a.weight", [4])
    g = torch.Generator().manual_seed(__import__("zlib").crc32(b"a.weight"))
    assert torch.equal(t, 1.0 + 0.1 * torch.randn((4,), generator=g))
    assert standin_tensor("x.num_batches_tracked", []).dtype == torch.int64
    assert standin_tensor("m.weight", [8, 4, 3]).std() < 1.0
    assert torch.allclose(standin_tensor("n.scale", [1, 16, 1]).mean(), torch.tensor(0.5), atol=0.1)
    assert not torch.equal(standin_tensor("a.weight", [4], salt=7), t)


def test_every_registry_entry_has_a_manifest_and_source():
    for spec in store.registry().values():
        assert spec.urls and spec.licence
        assert load_manifest(spec.layout) if spec.layout != "torchvision_raft_large" else True


def test_cache_dir_follows_davel_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAVEL_HOME", str(tmp_path))
    assert store.cache_dir() == tmp_path


def test_missing_file_names_source_and_command(tmp_path):
    with pytest.raises(WeightsError) as err:
        store.locate("i3d_rgb.pt", tmp_path)
    msg = str(err.value)
    assert "i3d_rgb.pt" in msg and "davel weights download i3d_rgb.pt" in msg and "github.com" in msg
    assert "\n" not in msg


def test_tampered_file_is_refused(tmp_path):
    path = tmp_path / "i3d_rgb.pt"
    torch.save({"w": torch.zeros(3)}, path)
    store.record_in_lock(tmp_path, path.name, origin="standin")
    assert store.locate("i3d_rgb.pt", tmp_path) == path
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1, 1))  # a new mtime: the digest cache must not hide the change
    with pytest.raises(WeightsError, match="fails its hash check"):
        store.locate("i3d_rgb.pt", tmp_path)


def test_published_hash_is_enforced_for_registry_files(tmp_path):
    path = tmp_path / "vggish-10086976.pth"
    torch.save({"w": torch.zeros(3)}, path)  # not the published file: sha256 prefix differs
    with pytest.raises(WeightsError, match="expected sha256 10086976"):
        store.locate("vggish-10086976.pth", tmp_path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"x": Evil()}, f)
    with pytest.raises(WeightsError, match="needs pickle code"):
        store.load_state(path)


def test_numpy_arrays_only_through_allow_list(tmp_path):
    path = tmp_path / "pca.pth"
    torch.save({"pca_means": np.zeros(128, np.float64)}, path)
    with pytest.raises(WeightsError):
        store.load_state(path)
    assert store.load_state(path, allow_numpy=True)["pca_means"].shape == (128,)


def test_garbage_weights_file_is_one_line(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"\x00junk" * 50)
    with pytest.raises(WeightsError) as err:
        store.load_state(path)
    assert "\n" not in str(err.value)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.atomic_write(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_download_failure_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="could not download i3d_rgb.pt"):
        store.download("i3d_rgb.pt", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_checks_hash_and_records_lock(tmp_path, monkeypatch):
    payload = b"fake weights"

    def fake(url, dst, hash_prefix=None, progress=True):
        with open(dst, "wb") as f:
            f.write(payload)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    with pytest.raises(WeightsError, match="fails its hash check"):
        store.download("i3d_rgb.pt", tmp_path, progress=False)  # git blob id differs
    assert not (tmp_path / "i3d_rgb.pt").exists()
    import hashlib
    blob = hashlib.sha1(b"blob %d\0" % len(payload) + payload).hexdigest()
    spec = store.registry()["i3d_rgb.pt"]
    monkeypatch.setitem(store.registry(), "i3d_rgb.pt",
                        type(spec)(**{**spec.__dict__, "git_blob_sha1": blob}))
    path = store.download("i3d_rgb.pt", tmp_path, progress=False)
    lock = json.loads((tmp_path / store.LOCK_NAME).read_text())
    assert lock["i3d_rgb.pt"]["origin"] == "registry" and path.read_bytes() == payload
