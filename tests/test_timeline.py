"""`davel plot`: the timeline figure's artists, atomic writes, one-line errors on bad input."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from davel.cli import app as davel_app
from davel.errors import DavelError, InputError
from davel.viewer import filter_events, load_results, plot_results, save_timeline, timeline_figure
from davel.viewer.style import clock

from media_files import write_video

runner = CliRunner()

EVENTS = [  # (label, label_id, start, end, score)
    ("dog barking", 78, 0.2, 1.3, 0.92),
    ("dog barking", 78, 1.2, 2.3, 0.81),
    ("dog barking", 78, 2.5, 3.0, 0.15),
    ("church bell", 12, 0.0, 0.5, 0.64),
    ("church bell", 12, 1.9, 3.6, 0.33),
    ("<img src=x onerror=alert(1)> $5", 3, 3.0, 3.9, 0.55),
]


def make_result(video: str = "/data/clip.mp4", duration: float = 4.0, events=EVENTS) -> dict:
    return {"video": video, "duration": duration, "model": "ccnet",
            "events": [{"label": name, "label_id": i, "start": s, "end": e, "score": sc}
                       for name, i, s, e, sc in events]}


ANNOTATIONS = {"database": {"clip": {"subset": "test", "duration": 4.0, "annotations": [
    {"segment": [0.3, 1.5], "label": "dog barking", "label_id": 78},
    {"segment": [1.0, 2.0], "label": "baby crying", "label_id": 40},  # a class never predicted
    {"segment": [2.2, 3.8], "label": "church bell", "label_id": 12},
]}}}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """4 s of 160x120 H.264 at 10 fps, no audio."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", 40, fps=10, audio=None,
                       size=(160, 120))


def cli() -> typer.Typer:
    return davel_app


def axes(fig, label: str):
    found = [a for a in fig.axes if a.get_label() == label]
    return found[0] if found else None


def bars_per_lane(ax) -> dict[str, int]:
    return {c.get_label(): len(c) for c in ax.containers}


def one_error_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert len(lines) == 1 and lines[0].startswith("davel: error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


# ------------------------------------------------------------------ the figure
@pytest.mark.parametrize("min_score, top_k, expected", [
    (None, None, {"<img src=x onerror=alert(1)> \\$5": 1, "church bell": 2, "dog barking": 3}),
    (0.5, None, {"<img src=x onerror=alert(1)> \\$5": 1, "church bell": 1, "dog barking": 2}),
    (0.3, 2, {"dog barking": 2}),
    (None, 4, {"<img src=x onerror=alert(1)> \\$5": 1, "church bell": 1, "dog barking": 2}),
])
def test_bars_per_lane_follow_min_score_and_top_k(min_score, top_k, expected):
    fig = timeline_figure(make_result(), min_score=min_score, top_k=top_k)
    ax = axes(fig, "events")
    assert bars_per_lane(ax) == expected
    assert ax.get_xlim() == (0.0, 4.0)
    assert axes(fig, "truth") is None and axes(fig, "thumbnails") is None
    # Opacity follows the score: the best event of a lane is the most opaque.
    dog = next(c for c in ax.containers if c.get_label() == "dog barking")
    alphas = [p.get_facecolor()[3] for p in dog]
    assert alphas == sorted(alphas, reverse=True) or len(alphas) < 2


def test_lanes_are_labelled_and_time_axis_is_m_ss():
    fig = timeline_figure(make_result(duration=150.0, events=[("a", 1, 10, 70, 0.9), ("b", 2, 65, 149, 0.5)]))
    ax = axes(fig, "events")
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "a"]  # first label on top
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "0:00" in ticks and "2:00" in ticks and all(":" in t for t in ticks)
    assert ax.get_xlim() == (0.0, 150.0)
    title = " ".join(t.get_text() for t in fig.texts)
    assert "clip.mp4" in title and "ccnet" in title and "2:30" in title


def test_clock():
    assert clock(0) == "0:00" and clock(75) == "1:15" and clock(3725) == "1:02:05"
    assert clock(1.5, 0.5) == "0:01.5" and clock(2.0, 0.5) == "0:02"


def test_ground_truth_lane_above_events():
    fig = timeline_figure(make_result(), annotations=ANNOTATIONS)
    truth, events = axes(fig, "truth"), axes(fig, "events")
    assert truth is not None
    assert bars_per_lane(truth) == {"ground truth": 3}
    assert truth.get_position().y0 > events.get_position().y1  # drawn above the predictions
    lanes = bars_per_lane(events)
    assert lanes["baby crying"] == 0  # a missed class still gets its (empty) lane
    assert lanes["dog barking"] == 3
    assert truth.get_xlim() == (0.0, 4.0)


def test_ground_truth_lane_for_unannotated_video():
    fig = timeline_figure(make_result(video="other.mp4"), annotations=ANNOTATIONS)
    truth = axes(fig, "truth")
    assert bars_per_lane(truth) == {"ground truth": 0}
    assert any("not in the annotations" in t.get_text() for t in truth.texts)


def test_thumbnails_from_the_video(clip):
    fig = timeline_figure(make_result(), video=clip, num_thumbnails=5)
    strip = axes(fig, "thumbnails")
    assert strip is not None and len(strip.images) == 5
    h, w = strip.images[0].get_array().shape[:2]
    assert h == 96 and w == 128  # 4:3 kept
    lefts = [im.get_extent()[0] for im in strip.images]
    assert lefts == sorted(lefts) and lefts[0] < 0.8 * 1 and lefts[-1] > 3.0  # even times along the axis
    assert strip.get_xlim() == (0.0, 4.0)
    # Different frames: the index pattern changes with time.
    a, b = strip.images[0].get_array(), strip.images[-1].get_array()
    assert abs(a.astype(int) - b.astype(int)).mean() > 1


def test_awkward_labels_render_literally():
    result = make_result(events=[("$x$ and $ cost", 1, 0, 1, 0.9), ("a_b^c \\n", 2, 1, 2, 0.5)])
    buf = io.BytesIO()
    timeline_figure(result).savefig(buf, format="png")  # mathtext would raise on unbalanced $
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accepts_to_dict_objects_lists_and_files(tmp_path):
    class Result:
        def to_dict(self):
            return make_result()

    assert load_results(Result())[0]["duration"] == 4.0
    assert len(load_results([make_result(), Result()])) == 2
    lines = tmp_path / "r.jsonl"
    lines.write_text(json.dumps(make_result("a.mp4")) + "\n\n" + json.dumps(make_result("b.mp4")) + "\n")
    assert [r["video"] for r in load_results(lines)] == ["a.mp4", "b.mp4"]
    listed = tmp_path / "r.json"
    listed.write_text(json.dumps([make_result("a.mp4"), make_result("b.mp4")]))
    assert len(load_results(listed)) == 2
    kept = filter_events(load_results(Result())[0]["events"], 0.3, 3)
    assert [e["start"] for e in kept] == sorted(e["start"] for e in kept)
    assert sorted(e["score"] for e in kept) == [0.64, 0.81, 0.92]


# ------------------------------------------------------------------ writing
def test_png_written_atomically(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((Path(src), Path(dst)))
        assert Path(src).stat().st_size > 0  # the whole figure is in the temp file first
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    out = tmp_path / "figs" / "t.png"
    assert save_timeline(make_result(), out) == out
    [(src, dst)] = renames
    assert dst == out and src.parent == out.parent and src.name.startswith(".t.png.")
    assert os.listdir(out.parent) == ["t.png"]  # no temp file left
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # shareable like any new file, not 0600
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] == 1000


def test_failed_plot_leaves_existing_output_untouched(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "t.png"
    out.write_bytes(b"previous figure")

    def broken(self, fname, **kwargs):
        fname.write(b"\x89PNG half a figure")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        save_timeline(make_result(), out)
    assert out.read_bytes() == b"previous figure"
    assert os.listdir(tmp_path) == ["t.png"]


@pytest.mark.parametrize("suffix", ["png", "svg", "pdf"])
def test_cli_plot_formats(tmp_path, clip, suffix):
    res_file = tmp_path / "r.json"
    res_file.write_text(json.dumps(make_result()))
    out = tmp_path / f"t.{suffix}"
    args = ["plot", str(res_file), "-o", str(out), "--min-score", "0.3"]
    if suffix == "png":
        ann = tmp_path / "gt.json"
        ann.write_text(json.dumps(ANNOTATIONS))
        args += ["--video", str(clip), "--annotations", str(ann), "--top-k", "4"]
    res = runner.invoke(cli(), args)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)
    head = out.read_bytes()[:8]
    assert head.startswith({"png": b"\x89PNG", "svg": b"<?xml", "pdf": b"%PDF"}[suffix])
    if suffix == "png":
        with Image.open(out) as im:
            assert im.size[1] > 400  # thumbnails and the truth lane make it taller


def test_cli_plot_json_lines_one_figure_per_video(tmp_path):
    res_file = tmp_path / "r.jsonl"
    res_file.write_text("".join(json.dumps(make_result(v)) + "\n" for v in
                                ("/x/a.mp4", "/y/b.webm", "/z/a.mp4")))
    res = runner.invoke(cli(), ["plot", str(res_file), "-o", str(tmp_path / "figs")])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path / "figs")) == ["a.png", "a_2.png", "b.png"]
    # Several videos and one file name: told to use a folder, nothing written.
    res = runner.invoke(cli(), ["plot", str(res_file), "-o", str(tmp_path / "one.png")])
    assert "give -o a folder" in one_error_line(res)
    assert not (tmp_path / "one.png").exists()


# ------------------------------------------------------------------ bad input
def _bad_inputs(tmp_path: Path, clip: Path) -> dict[str, tuple[list[str], str]]:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(make_result()))
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00\x81garbage")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "backwards.json").write_text(json.dumps(make_result(events=[("a", 1, 2.0, 1.0, 0.5)])))
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (tmp_path / "a_file").write_text("I am not a folder")
    return {
        "missing": ([str(tmp_path / "nope.json")], "nope.json"),
        "directory": ([str(tmp_path)], "cannot read"),
        "not json": ([str(tmp_path / "bad.json")], "neither JSON nor JSON Lines"),
        "binary": ([str(tmp_path / "binary.json")], "not a text file"),
        "not a result": ([str(tmp_path / "other.json")], "no \"events\" list"),
        "end before start": ([str(tmp_path / "backwards.json")], "before it starts"),
        "undecodable video": ([str(good), "--video", str(tmp_path / "broken.mp4")], "broken.mp4"),
        "missing video": ([str(good), "--video", str(tmp_path / "gone.mp4")], "gone.mp4"),
        "output folder is a file": ([str(good), "--video", str(clip)], "a_file"),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "not json", "binary", "not a result",
                                  "end before start", "undecodable video", "missing video",
                                  "output folder is a file"])
@pytest.mark.parametrize("command", ["plot", "view"])
def test_bad_input_one_line_error_no_output(tmp_path, clip, case, command):
    args, expected = _bad_inputs(tmp_path, clip)[case]
    if case == "output folder is a file":
        out = tmp_path / "a_file" / ("page.html" if command == "view" else "t.png")
    else:
        out = tmp_path / "out" / ("page.html" if command == "view" else "t.png")
    if command == "view" and "--video" not in args:
        args = args + ["--video", str(clip)]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    res = runner.invoke(cli(), [command, *args, "-o", str(out)])
    assert expected in one_error_line(res)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, no temp file


def test_library_errors_are_davel_errors(tmp_path):
    with pytest.raises(InputError):
        load_results(tmp_path / "missing.json")
    with pytest.raises(DavelError):
        save_timeline(make_result(), tmp_path / "t.jpg")
    with pytest.raises(InputError):
        plot_results(make_result(), tmp_path / "t.png", videos=[tmp_path / "none.mp4"])
    assert not (tmp_path / "t.png").exists()
