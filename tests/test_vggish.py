"""VGGish parity with the reference's torchvggish port (video_features, hop 0.32 s).

Fixtures: tests/fixtures/audio/vggish_unit.npz and tests/fixtures/pipeline/sample_a_vggish*.npy
(stand-in weights, salt 0); tolerances from the parity README.

Kinds (see tests/helpers.py): the layout and file-format checks are exact by
construction; the front end (FFT, log) and the network are float tolerance: the
log-mel to 1e-9 (float64), the embedding relative to its largest magnitude, the
8-bit PCA output up to the .5 rounding ties that a last-bit change can flip.
"""
import io
import pickle

import numpy as np
import pytest
import torch

from davel.errors import InputError, WeightsError
from extractors.audio import AudioTrack, decode_audio, silence
from extractors.vggish import (
    VGGish,
    embed_examples,
    frame_examples,
    load_pca,
    load_vggish,
    log_mel,
    num_examples,
    vggish_features,
)
from weights.standin import load_manifest, standin_state_dict

from helpers import report, ulps


@pytest.fixture(scope="module")
def unit(fixtures):
    return dict(np.load(fixtures / "audio" / "vggish_unit.npz"))


@pytest.fixture(scope="module")
def model():
    return load_vggish(standin_state_dict("vggish", salt=0))


@pytest.fixture(scope="module")
def pca():
    return load_pca(standin_state_dict("vggish_pca", salt=0))


@pytest.fixture(scope="module")
def sample_a(fixtures):
    return decode_audio(fixtures / "media" / "sample_a.mp4")


def _row_cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_front_end_matches_reference(unit):
    lm = log_mel(unit["wave16k"])
    assert lm.shape == unit["log_mel"].shape == (348, 64) and lm.dtype == np.float64
    assert np.abs(lm - unit["log_mel"]).max() <= 1e-9
    ex = frame_examples(lm)
    assert ex.shape == (8, 96, 64) and ex.dtype == np.float32
    assert np.abs(frame_examples(log_mel(unit["wave16k"])) - unit["examples"]).max() <= 1e-3


def test_example_count_rule():
    assert [num_examples(n) for n in (15599, 15600, 15600 + 5119, 15600 + 5120, 128545)] == [0, 1, 1, 2, 23]
    for n in (15599, 15600, 20720, 128545):
        assert len(frame_examples(log_mel(np.zeros(n)))) == num_examples(n)


def test_state_dict_is_the_original_layout():
    sd = VGGish().state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == load_manifest("vggish")


def test_model_matches_reference(unit, model, pca):
    raw = embed_examples(unit["examples"], model).numpy()
    ref = unit["embedding_raw"]
    report("vggish_model", "max_rel_embedding", np.abs(raw - ref).max() / np.abs(ref).max())
    assert np.abs(raw - ref).max() <= 1e-4 * np.abs(ref).max()
    q = pca(torch.from_numpy(raw)).numpy()
    diff = np.abs(q - unit["embedding"])
    assert diff.max() <= 1 and (diff > 0).sum() <= 4  # only .5 rounding ties may flip


def test_sample_a_whole_procedure(sample_a, model, pca, fixtures):
    raw = vggish_features(sample_a, model)
    ref = np.load(fixtures / "pipeline" / "sample_a_vggish_raw.npy")
    assert raw.shape == ref.shape == (23, 128) and raw.dtype == np.float32
    assert _row_cosine(raw, ref).min() >= 0.9999
    assert np.abs(raw - ref).max() <= 0.02 * np.abs(ref).max()

    quant = vggish_features(sample_a, model, pca=pca)
    ref_q = np.load(fixtures / "pipeline" / "sample_a_vggish.npy")
    assert quant.shape == (23, 128) and set(np.unique(quant)) <= set(range(256))
    assert _row_cosine(quant - 127.5, ref_q - 127.5).min() >= 0.9998
    assert np.abs(quant - ref_q).mean() <= 1.0


def test_too_short_audio_is_an_input_error(model):
    assert len(vggish_features(AudioTrack(np.zeros(15600), 16000), model)) == 1
    with pytest.raises(InputError, match="too short"):
        vggish_features(AudioTrack(np.zeros(15599), 16000), model)


def test_silence_gives_identical_rows(model):
    emb = vggish_features(silence(2.0), model)
    # identical inputs in one batch: a GEMM may still round rows at other offsets differently
    assert emb.shape == (num_examples(32000), 128)
    assert np.abs(emb - emb[:1]).max() <= ulps(emb)


# ---------------------------------------------------------------- loading


def _pca_arrays():
    sd = standin_state_dict("vggish_pca", salt=0)
    return {k: v.numpy().astype(np.float64) for k, v in sd.items()}


def test_pca_file_formats_all_load(tmp_path, pca):
    arrays = _pca_arrays()
    np.savez(tmp_path / "vggish_pca_params.npz", **arrays)  # Google's format
    torch.save(arrays, tmp_path / "np_arrays.pth")  # numpy arrays inside a .pth
    # The same pickled by numpy 1.x (as torchvggish's 2019 file was): old module path.
    buf = io.BytesIO()
    torch.save(arrays, buf, _use_new_zipfile_serialization=False)
    legacy = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert legacy != buf.getvalue()
    (tmp_path / "np1_arrays.pth").write_bytes(legacy)
    torch.save(standin_state_dict("vggish_pca", salt=0), tmp_path / "tensors.pth")
    x = torch.rand(5, 128)
    for name in ("vggish_pca_params.npz", "np_arrays.pth", "np1_arrays.pth", "tensors.pth"):
        loaded = load_pca(tmp_path / name)
        assert torch.equal(loaded(x), pca(x)), name


class _Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_pickle_code_and_wrong_layouts_are_refused(tmp_path, model):
    evil = tmp_path / "evil.pth"
    torch.save({"pca_eigen_vectors": _Payload(), "pca_means": np.zeros(128)}, evil)
    with pytest.raises(WeightsError, match="refused"):
        load_pca(evil)
    evil.write_bytes(pickle.dumps({"pca_means": _Payload()}, protocol=2))
    with pytest.raises(WeightsError):
        load_pca(evil)
    with pytest.raises(WeightsError, match="PCA"):
        load_pca({"pca_eigen_vectors": np.zeros((64, 128)), "pca_means": np.zeros(128)})
    with pytest.raises(WeightsError, match="PCA"):
        load_pca({"means": np.zeros(128)})
    sd = dict(model.state_dict())
    sd["features.0.weight"] = sd["features.0.weight"][:32]
    with pytest.raises(WeightsError, match=r"features\.0\.weight"):
        load_vggish(sd)
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match="layout"):
        load_vggish(sd)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsError):
        load_vggish(tmp_path / "junk.pth")
