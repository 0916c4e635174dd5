"""Writers for detection results (json, jsonl, csv, srt, vtt), always atomic."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import TextIO

from weights.store import atomic_write_text

FORMATS = ("json", "jsonl", "csv", "srt", "vtt")


def format_from_path(path: str | None, default: str = "json") -> str:
    if not path or path == "-":
        return default
    ext = Path(path).suffix.lower().lstrip(".")
    return ext if ext in FORMATS else default


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _subtitle_cues(result: dict) -> list[tuple[float, float, str]]:
    # Subtitles appear in time order; the score stays visible so a viewer can judge.
    events = sorted(result["events"], key=lambda e: (e["start"], -e["score"]))
    return [(e["start"], e["end"], f"{e['label']} ({e['score']:.2f})") for e in events]


def render(results: list[dict], fmt: str) -> str:
    """Text of ``results`` (one dict per input) in ``fmt``."""
    if fmt == "json":
        body = results[0] if len(results) == 1 else results
        return json.dumps(body, indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in results)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["video", "label", "label_id", "start", "end", "score"])
        for r in results:
            for e in r["events"]:
                w.writerow([r["video"], e["label"], e["label_id"], f"{e['start']:.3f}",
                            f"{e['end']:.3f}", f"{e['score']:.6f}"])
        return buf.getvalue()
    if fmt in ("srt", "vtt"):
        sep = "," if fmt == "srt" else "."
        out = ["WEBVTT", ""] if fmt == "vtt" else []
        n = 0
        for r in results:
            for start, end, text in _subtitle_cues(r):
                n += 1
                if fmt == "srt":
                    out.append(str(n))
                out += [f"{_timestamp(start, sep)} --> {_timestamp(max(end, start + 0.001), sep)}", text, ""]
        return "\n".join(out) + ("\n" if out else "")
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


class ResultSink:
    """Collects results and writes them: streamed for JSON Lines, else at the end.

    Files are written atomically (temp + rename), so an interrupted run never
    leaves a half-written result over an earlier one.
    """

    def __init__(self, path: str | None, fmt: str, stream: TextIO | None = None):
        self.path = None if path in (None, "-") else Path(path)
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.results: list[dict] = []

    def add(self, result: dict) -> None:
        self.results.append(result)
        if self.fmt == "jsonl":
            if self.path is None:
                self.stream.write(json.dumps(result) + "\n")
                self.stream.flush()
            else:
                atomic_write_text(self.path, render(self.results, "jsonl"))

    def close(self) -> None:
        if self.fmt == "jsonl" or not self.results:
            return  # JSON Lines went out as each result arrived
        text = render(self.results, self.fmt)
        if self.path is None:
            self.stream.write(text)
            self.stream.flush()
        else:
            atomic_write_text(self.path, text)
