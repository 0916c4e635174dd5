"""Class names (davel.labels): from an annotation file or a text file, and names for unknown ids."""
import pytest

from davel.errors import InputError
from davel.labels import label_name, read_labels


def test_labels_from_annotation_json_and_text(fixtures, tmp_path):
    names = read_labels(fixtures / "detector" / "map_gt.json")
    assert names[25] == "playing guitar" and names[7] == "car horn"
    txt = tmp_path / "names.txt"
    txt.write_text("a\nb\n\nc\n")
    assert read_labels(txt) == ["a", "b", "c"]
    assert label_name(None, 5) == "class_5" and label_name(["x"], 3) == "class_3"
    with pytest.raises(InputError):
        read_labels(tmp_path / "missing.txt")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError):
        read_labels(bad)
