"""Weights registry, cache location, hash checks and safe loading."""
import json
import os

import numpy as np
import pytest
import torch

from davel.errors import WeightsError
from weights import store
from weights.standin import load_manifest, standin_tensor

# Values the reference rule (/work/shared/parity/synth.py, which made the parity fixtures)
# gives for these keys, as float32 hex. Tensors under 16 elements go through torch's scalar
# normal sampler: exact by construction. From 16 elements on, torch samples with a vectorised
# kernel whose log/cos differ by an ulp between CPU code paths (measured: AVX2 vs
# ATEN_CPU_CAPABILITY=default), so those are float tolerance (2 ulps).
REFERENCE_RULE = {
    ("a.weight", (4,)): ["0x1.b28a08p-1", "0x1.18d7dcp+0", "0x1.126224p+0", "0x1.076e32p+0"],
    ("n.scale", (1, 3, 1)): ["0x1.2ee4b4p-1", "0x1.03cd02p-1", "0x1.9655c6p-2"],
    ("x.running_var", (3,)): ["0x1.4f886ap-1", "0x1.b1b3b2p-1", "0x1.6d628ap+0"],
    ("x.running_mean", (3,)): ["-0x1.1a78d6p-4", "-0x1.de3160p-4", "0x1.ff2576p-6"],
    ("s.scale", ()): ["0x1.d3344ap-1"],
}
REFERENCE_RULE_VECTORISED = {  # first 6 values of an 18-element tensor
    ("m.weight", (2, 3, 3)): ["0x1.5aa802p-2", "-0x1.04d8aap-3", "0x1.b3ee4ep-1", "-0x1.c93f0ep-3",
                              "-0x1.29e32ap-1", "-0x1.9f013ep-1"],
}


def test_standin_rule_matches_the_reference_rule():
    for (key, shape), values in REFERENCE_RULE.items():
        t = standin_tensor(key, shape)
        assert t.dtype == torch.float32 and tuple(t.shape) == shape
        assert t.flatten().tolist() == [float.fromhex(v) for v in values], key
    for (key, shape), values in REFERENCE_RULE_VECTORISED.items():
        ref = np.float32([float.fromhex(v) for v in values])
        got = standin_tensor(key, shape).flatten()[:6].numpy()
        assert np.all(np.abs(got - ref) <= 2 * np.spacing(np.abs(ref))), key
    assert standin_tensor("x.num_batches_tracked", []).dtype == torch.int64
    assert not torch.equal(standin_tensor("a.weight", [4], salt=7), standin_tensor("a.weight", [4]))


def test_every_registry_entry_has_a_manifest_and_source():
    for spec in store.registry().values():
        assert spec.licence
        if spec.made_from:  # converted here from a downloaded file: that one has the source
            assert store.spec(spec.made_from).urls and not spec.urls
            continue
        assert spec.urls
        # torchvision's own layout has no manifest; ONE-PEACE's stand-in shapes come from
        # the ports (extractors/onepeace_weights.py), at any depth
        if spec.layout not in ("torchvision_raft_large", "onepeace_video_k400", "one_peace_pretrained"):
            assert load_manifest(spec.layout)


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
