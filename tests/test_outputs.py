"""Result writers (davel.outputs): formats, streaming, atomic files."""
import csv
import io
import json

import pytest

from davel.outputs import FORMATS, ResultSink, format_from_path, render

RESULT = {"video": "a.mp4", "duration": 10.0, "model": "unav",
          "checkpoint": {"name": "x.pth", "sha256": "0" * 64},
          "events": [{"label": "dog barking", "label_id": 3, "start": 1.25, "end": 4.5, "score": 0.9},
                     {"label": "car horn", "label_id": 7, "start": 0.0, "end": 2.0, "score": 0.4}]}


def test_json_single_and_jsonl_many():
    assert json.loads(render([RESULT], "json"))["video"] == "a.mp4"
    lines = render([RESULT, {**RESULT, "video": "b.mp4"}], "jsonl").splitlines()
    assert [json.loads(line)["video"] for line in lines] == ["a.mp4", "b.mp4"]


def test_csv_rows():
    rows = list(csv.DictReader(io.StringIO(render([RESULT], "csv"))))
    assert rows[0]["label"] == "dog barking" and float(rows[0]["start"]) == 1.25 and len(rows) == 2


def test_srt_and_vtt_cues_in_time_order():
    srt = render([RESULT], "srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,000\ncar horn (0.40)\n")
    assert "00:00:01,250 --> 00:00:04,500\ndog barking (0.90)" in srt
    vtt = render([RESULT], "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\ncar horn (0.40)")


def test_format_from_extension():
    assert format_from_path("x.srt") == "srt" and format_from_path("-") == "json"
    assert format_from_path("events.out", "jsonl") == "jsonl"
    assert set(FORMATS) == {"json", "jsonl", "csv", "srt", "vtt"}


def test_sink_streams_jsonl_and_writes_files_atomically(tmp_path):
    out = io.StringIO()
    sink = ResultSink(None, "jsonl", stream=out)
    sink.add(RESULT)
    assert json.loads(out.getvalue())["video"] == "a.mp4"  # streamed before close
    path = tmp_path / "r.json"
    path.write_text("earlier")
    sink = ResultSink(str(path), "json")
    sink.add(RESULT)
    assert path.read_text() == "earlier"  # nothing written until the end
    sink.close()
    assert json.loads(path.read_text())["events"][0]["label"] == "dog barking"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_json_lines_stream_to_the_file_once_each(tmp_path, monkeypatch):
    import davel.outputs as outputs_module

    monkeypatch.setattr(outputs_module, "atomic_write_text",
                        lambda *a: pytest.fail("JSON Lines must not rewrite the whole file"))
    path = tmp_path / "events.jsonl"
    path.write_text("earlier\n")
    with ResultSink(str(path), "jsonl") as sink:
        for k in range(3):
            sink.add({**RESULT, "video": f"v{k}.mp4"})
            part = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
            assert len(part) == 1 and len(part[0].read_text().splitlines()) == k + 1  # flushed
        assert path.read_text() == "earlier\n"  # replaced only when the run ends
    assert [json.loads(x)["video"] for x in path.read_text().splitlines()] == ["v0.mp4", "v1.mp4", "v2.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl"]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_results_finished_before_ctrl_c_are_kept(tmp_path, fmt):
    path = tmp_path / f"events.{fmt}"
    with pytest.raises(KeyboardInterrupt):
        with ResultSink(str(path), fmt) as sink:
            sink.add(RESULT)
            raise KeyboardInterrupt
    assert "dog barking" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_no_result_leaves_an_earlier_file_alone(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("earlier\n")
    with ResultSink(str(path), "jsonl"):
        pass
    assert path.read_text() == "earlier\n"
