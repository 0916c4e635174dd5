"""The annotation reader (davel.annotations): class names, one-line errors for bad entries."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from davel.annotations import read_annotations
from davel.cli import app
from davel.errors import InputError

runner = CliRunner()


def _write_ann(tmp_path, db):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"database": db}))
    return p


@pytest.mark.parametrize("entry,message", [
    ({"subset": "train", "annotations": [{"segment": [3.0, 3.0], "label": "a", "label_id": 0}]},
     "end 3 s is not after start 3 s"),
    ({"subset": "training", "annotations": [{"segment": [1.0, 3.0], "label": "a", "label_id": 0}]},
     "unknown subset 'training'"),
    ({"subset": "test", "annotations": [{"segment": [1.0, 3.0], "label": "a", "label_id": -1}]},
     "label_id must be a non-negative integer"),
    ({"subset": "test", "annotations": [{"segment": [1.0], "label": "a", "label_id": 0}]},
     'needs "segment": [start, end]'),
])
def test_bad_annotations_raise_one_line(tmp_path, entry, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        read_annotations(_write_ann(tmp_path, {"vid7": entry}))
    assert "vid7" in str(err.value) and "\n" not in str(err.value)


def test_bad_annotation_cli_error(tmp_path, tiny_data):
    ann = _write_ann(tmp_path, {"v": {"subset": "train", "annotations": [
        {"segment": [4.0, 2.0], "label": "a", "label_id": 0}]}})
    res = runner.invoke(app, ["train", "--annotations", str(ann), "--features", str(tiny_data[1]),
                              "-o", str(tmp_path / "run")])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("davel: error:") and "not after start" in lines[0]


def test_annotations_class_names(tiny_data):
    ann = read_annotations(tiny_data[0])
    assert list(ann.class_names) == ["class0", "class1"] and ann.num_classes == 2
    assert {v.subset for v in ann.videos} == {"train", "validation", "test"}
