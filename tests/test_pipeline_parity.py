"""`davel extract` on the parity video against the original procedure's features.

The one test here that runs RAFT on a whole file (192 flow fields, ~10 min on 2
CPU cores, marked ``slow``); every other extraction test uses tiny inputs.

Kinds (see tests/helpers.py): float tolerance. RGB and VGGish rows are held to a
row cosine and a deviation relative to the largest magnitude. The flow stream goes
through 20 chaotic RAFT iterations per field, which move by tens of pixels between
CPU code paths (tests/test_raft.py), so its tolerance is loose; the bookkeeping
that pairs frames, fields and windows is checked exactly in tests/test_visual.py.
"""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from davel.cli import app
from extractors.visual import VisualFeatureExtractor

from helpers import report

runner = CliRunner()
pytestmark = pytest.mark.slow


def row_stats(ours, ref):
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    return float(cos.min()), float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def extracted(fixtures, standin_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_a_features")
    res = runner.invoke(app, ["extract", str(fixtures / "media" / "sample_a.mp4"), "-o", str(out),
                              "--weights-dir", str(standin_weights), "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    return out


def test_visual_streams_equal_the_reference(extracted, fixtures):
    for stream, (cos_min, rel_max) in {"rgb": (0.9999, 1e-3), "flow": (0.9995, 0.05)}.items():
        ours = np.load(extracted / f"sample_a_{stream}.npy")
        ref = np.load(fixtures / "pipeline" / f"sample_a_{stream}.npy")
        assert ours.dtype == np.float32 and ours.shape == ref.shape == (22, 1024)
        cos, rel = row_stats(ours, ref)
        report(f"pipeline[{stream}]", "min_row_cosine", cos)
        report(f"pipeline[{stream}]", "max_rel", rel)
        assert cos >= cos_min and rel <= rel_max


def test_raw_vggish_equals_the_reference(extracted, fixtures):
    ours = np.load(extracted / "sample_a_vggish.npy")
    ref = np.load(fixtures / "pipeline" / "sample_a_vggish_raw.npy")
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (23, 128)
    cos, rel = row_stats(ours + 1e-12, ref + 1e-12)
    report("pipeline[vggish]", "min_row_cosine", cos)
    report("pipeline[vggish]", "max_rel", rel)
    assert cos >= 0.9999 and rel <= 0.02
    meta = json.loads((extracted / "sample_a_davel.json").read_text())
    assert (meta["T"], meta["T_audio"]) == (22, 23)


def test_vggish_pca_option(extracted, fixtures, standin_weights, tmp_path, monkeypatch):
    # The visual stream is the one above (re-running RAFT would only repeat it).
    rgb, flow = (np.load(extracted / f"sample_a_{s}.npy") for s in ("rgb", "flow"))
    monkeypatch.setattr(VisualFeatureExtractor, "__call__", lambda self, frames, on_window=None: (rgb, flow))
    monkeypatch.setenv("DAVEL_BATCH_INLINE", "1")  # the patch lives in this process, not in a worker
    res = runner.invoke(app, ["extract", str(fixtures / "media" / "sample_a.mp4"), "-o", str(tmp_path),
                              "--weights-dir", str(standin_weights), "--vggish-pca", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ours = np.load(tmp_path / "sample_a_vggish.npy")
    ref = np.load(fixtures / "pipeline" / "sample_a_vggish.npy")
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).mean() <= 1.0
    c = lambda x: x - 127.5  # noqa: E731
    cos = ((c(ours) * c(ref)).sum(1) / np.linalg.norm(c(ours), axis=1) / np.linalg.norm(c(ref), axis=1)).min()
    assert cos >= 0.9998
