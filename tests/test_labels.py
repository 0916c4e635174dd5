"""Class names (davel.labels): from an annotation file or a text file, names for unknown ids,
and the UnAV-100 names a 100-class checkpoint without names of its own gets."""
import pytest

from davel.errors import InputError
from davel.labels import default_labels, label_name, read_labels, unav100_labels


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


def test_the_unav100_names_ship_with_davel_in_label_id_order():
    names = unav100_labels()
    assert len(names) == 100 and len(set(names)) == 100
    # label_id of the official annotations (ttgeng233/UnAV data/unav100_annotations.json),
    # which the official loader trains with: not the sorted order of the names
    assert (names[0], names[36], names[37], names[78], names[99]) == (
        "man speaking", "skateboarding", "playing base guitar", "playing accordion", "hair dryer drying")
    assert names != sorted(names)
    assert default_labels(100) == names and default_labels(4) is None and default_labels(101) is None


@pytest.fixture(scope="module")
def checkpoint_100(tmp_path_factory):
    """A tiny 100-class UnAV checkpoint in the official layout: no names of its own."""
    import torch

    from davel.detectors.unav import UnAVDetector

    torch.manual_seed(0)
    m = UnAVDetector(embd_dim=32, head_dim=32, num_classes=100, dependency_dim=16)
    path = tmp_path_factory.mktemp("ckpt100") / "unav_100.pth"
    torch.save({"state_dict_ema": {f"module.{k}": v for k, v in m.state_dict().items()}}, path)
    return path


def test_a_100_class_checkpoint_without_names_gets_the_unav100_names(checkpoint_100, tmp_path):
    import torch

    from davel.inference import load_detector

    assert load_detector(checkpoint_100, "cpu").labels == unav100_labels()
    # --labels (labels=) overrides them, and so do the checkpoint's own names
    assert load_detector(checkpoint_100, "cpu", labels=["x"] * 100).labels == ["x"] * 100
    ckpt = torch.load(checkpoint_100, weights_only=True)
    ckpt["davel"] = {"labels": [f"mine {i}" for i in range(100)]}
    own = tmp_path / "own.pth"
    torch.save(ckpt, own)
    assert load_detector(own, "cpu").labels == [f"mine {i}" for i in range(100)]
