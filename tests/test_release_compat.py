"""Files written by davel 0.2.0 keep loading and give what 0.2.0 gave.

Fixtures: tests/fixtures/release-0.2.0 (made by its make_fixtures.py at commit
18348d0; see its docstring for what each file is). ``expected.json`` records
what 0.2.0 made of them. Float tolerance (see tests/helpers.py): detections are
compared with the detector parity tolerances, since the fixtures were made on
another CPU; the mAP of a result file is exact (float64 sums over the same numbers).
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from davel.cli import app
from davel.evaluation import evaluate_map, load_predictions
from davel.inference import load_detector
from davel.viewer.results import load_results
from extractors import feature_files
from extractors.extract import ExtractionSettings
from weights import store

from helpers import assert_same_events, events_as_arrays

HERE = Path(__file__).parent / "fixtures" / "release-0.2.0"
EXPECTED = json.loads((HERE / "expected.json").read_text())
FEATS = HERE / "data" / "feats"
ANN = HERE / "data" / "ann.json"
CHECKPOINTS = {"trained": "run/last.pth.gz", "imported": "models/tiny-unav.pth.gz"}
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The gunzipped checkpoints, under their 0.2.0 names (the names go into the results)."""
    out = {}
    for key, rel in CHECKPOINTS.items():
        dst = tmp_path_factory.mktemp(key) / Path(rel).stem
        with gzip.open(HERE / rel, "rb") as f, open(dst, "wb") as g:
            shutil.copyfileobj(f, g)
        assert store.sha256_of(dst) == EXPECTED["checkpoints"][key]["sha256"]  # the 0.2.0 bytes
        out[key] = dst
    return out


def _read_results(name: str) -> list[dict]:
    text = (HERE / "results" / name).read_text()
    return [json.loads(x) for x in text.splitlines() if x.strip()] if name.endswith(".jsonl") else [json.loads(text)]


@pytest.mark.parametrize("key", list(CHECKPOINTS))
def test_checkpoints_load_as_in_0_2_0(checkpoints, key):
    want = EXPECTED["checkpoints"][key]
    det = load_detector(checkpoints[key], "cpu")
    assert (det.name, det.sha256, det.kind) == (want["name"], want["sha256"], want["kind"])
    assert det.labels == want["labels"] and det.timebase.as_dict() == want["timebase"]
    assert (None if det.feature_norm is None else list(det.feature_norm.dims)) == want["feature_norm_dims"]
    assert dataclasses.asdict(det.extraction_settings) == want["extraction_settings"]
    assert list(det.model.input_dims) == want["input_dims"] and det.model.max_seq_len == want["max_seq_len"]
    clip = feature_files.read(HERE / "extracted" / "clip")
    assert det.settings_mismatch(clip.meta) == want["settings_mismatch_extracted_clip"]
    own = feature_files.read(FEATS / "test_0")
    assert det.settings_mismatch(own.meta) == want["settings_mismatch_own_features"]


@pytest.mark.parametrize("key", list(CHECKPOINTS))
def test_detect_gives_the_0_2_0_results(checkpoints, key):
    det = load_detector(checkpoints[key], "cpu")
    for name in (f"{key}_test_0.json", f"{key}_test.jsonl"):
        for old in _read_results(name):
            new = det.detect_features(feature_files.read(FEATS / old["video"]), name=old["video"]).to_dict()
            assert {k: v for k, v in new.items() if k != "events"} == {k: v for k, v in old.items() if k != "events"}
            assert_same_events(new["events"], events_as_arrays(old["events"]), time_tol=1e-3, score_tol=1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED["eval"]))
def test_eval_and_the_viewer_read_0_2_0_result_files(name):
    path = HERE / "results" / name
    metrics = evaluate_map(ANN, path, subset="test")
    want = EXPECTED["eval"][name]
    assert metrics["mAP"] == want["mAP"] and metrics["average_mAP"] == want["average_mAP"]
    assert {str(k): v for k, v in metrics["ap_per_class"].items()} == want["ap_per_class"]
    res = runner.invoke(app, ["eval", "--annotations", str(ANN), "--predictions", str(path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["average_mAP"] == want["average_mAP"]
    old = _read_results(name)
    assert len(load_predictions(path)) == sum(len(r["events"]) for r in old)
    shown = load_results(path)
    assert [r["video"] for r in shown] == [r["video"] for r in old]
    for r, o in zip(shown, old):
        assert r["duration"] == o["duration"] and r["model"] == o["model"]
        assert r["events"] == o["events"]


def test_eval_with_the_0_2_0_checkpoint(checkpoints):
    res = runner.invoke(app, ["eval", "--annotations", str(ANN), "--checkpoint", str(checkpoints["trained"]),
                              "--features", str(FEATS), "--split", "test", "--json", "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    got, want = json.loads(res.stdout), EXPECTED["eval_checkpoint_trained"]
    assert got["mAP"] == pytest.approx(want["mAP"], abs=1e-6)


def test_the_0_2_0_sidecar_and_features_read(tmp_path):
    want = EXPECTED["extracted_clip"]
    feats = feature_files.read(HERE / "extracted" / "clip")
    on_disk = json.loads((HERE / "extracted" / "clip_davel.json").read_text())
    assert dict(feats.meta) == on_disk
    assert dataclasses.asdict(ExtractionSettings.from_record(feats.meta["settings"])) == want["settings"]
    assert feature_files.is_complete(HERE / "extracted", "clip", on_disk["settings_key"]) == want["is_complete"]
    assert [list(s) for s in feature_files.read_shapes(HERE / "extracted" / "clip")] == want["shapes"]
    # written back (e.g. by the feature cache), the sidecar is the same document
    feature_files.write(tmp_path, "clip", feats)
    assert json.loads((tmp_path / "clip_davel.json").read_text()) == on_disk


def test_reimporting_a_0_2_0_checkpoint_keeps_its_davel_entry(checkpoints, tmp_path):
    from davel.models import import_checkpoint

    for key, path in checkpoints.items():
        old = torch.load(path, map_location="cpu", weights_only=True)["davel"]
        stored = import_checkpoint(path, f"again-{key}")
        new = torch.load(stored, map_location="cpu", weights_only=True)["davel"]
        assert set(new) == set(old) | {"origin", "source_sha256"}
        assert new["source_sha256"] == EXPECTED["checkpoints"][key]["sha256"]
        assert new["origin"] == old.get("origin", str(path.resolve()))
        for k, v in old.items():
            if k in ("source_sha256", "origin"):
                continue
            if k == "feature_norm":
                assert all(torch.equal(v[s], new[k][s]) for s in v) and set(v) == set(new[k])
            else:
                assert new[k] == v, k


def test_a_0_2_0_run_resumes(checkpoints, tmp_path, one_thread):
    from davel.train import TrainConfig, train

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoints["trained"], run / "last.pth")
    shutil.copy(HERE / "run" / "log.jsonl", run / "log.jsonl")
    result = train(TrainConfig.from_dict(EXPECTED["train_config"]), ANN, FEATS, run, device="cpu")
    assert result.epochs_done == 2 and len(result.history) == 1
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    want = EXPECTED["continued_log"]
    assert log[0] == want[0]  # carried over from the 0.2.0 checkpoint's history
    got, exp = log[1], want[1]
    assert {k: got[k] for k in ("epoch", "epochs", "steps", "best")} == \
        {k: exp[k] for k in ("epoch", "epochs", "steps", "best")}
    assert got["lr"] == pytest.approx(exp["lr"], rel=1e-9)
    for k in ("loss", "cls_loss", "reg_loss", "lcc_loss", "sigma", "tau"):
        assert got[k] == pytest.approx(exp[k], rel=1e-4, abs=1e-6), k
    state = torch.load(run / "last.pth", map_location="cpu", weights_only=True)["davel"]
    assert state["epoch"] == 2 and len(state["history"]) == 2
    old = torch.load(checkpoints["trained"], map_location="cpu", weights_only=True)["davel"]
    assert state.keys() == old.keys()  # the trainer writes the entries 0.2.0 wrote
    assert {k: state[k] for k in ("labels", "timebase", "config", "model_config", "extractor")} == \
        {k: old[k] for k in ("labels", "timebase", "config", "model_config", "extractor")}
