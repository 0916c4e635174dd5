"""Writers for detection results (json, jsonl, csv, srt, vtt), always atomic, and the reader
of JSON / JSON Lines files that evaluation and the viewer share."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from davel.errors import InputError
from weights.atomic import atomic_write_text, commit_file, temp_path_for

FORMATS = ("json", "jsonl", "csv", "srt", "vtt")


def read_json_documents(path: str | os.PathLike, error: type[Exception] = InputError) -> list[Any]:
    """The JSON document in ``path`` (a one-item list), or every line of a JSON Lines file."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{p}: not a text file (expected JSON or JSON Lines)") from exc
    except OSError as exc:
        raise error(f"cannot read {p}: {exc.strerror or exc}") from exc
    if not text.strip():
        raise error(f"{p}: empty file (expected JSON or JSON Lines)")
    try:
        return [json.loads(text)]
    except json.JSONDecodeError as first:
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError:
                # Report the whole-document error when line 1 already fails: that is the
                # common case (a file that is not JSON at all), and its position is exact.
                where = first if n == 1 else f"line {n} is not JSON"
                raise error(f"{p}: neither JSON nor JSON Lines ({where})") from first
        return docs


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
    """Collects results and writes them: JSON Lines line by line, the other formats at the end.

    Use it as a context manager. Files are written through a temporary file
    beside the output and renamed into place when the sink closes, also after
    an interruption (Ctrl-C) so finished results are kept; a run that produced
    no result leaves an earlier output untouched. JSON Lines is appended and
    flushed per result, so a thousand videos cost a thousand lines, not a
    thousand rewrites.
    """

    def __init__(self, path: str | None, fmt: str, stream: TextIO | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.path = None if path in (None, "-") else Path(path)
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.results: list[dict] = []
        self.count = 0
        self._tmp: Path | None = None
        self._file = None

    def __enter__(self) -> ResultSink:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def add(self, result: Any) -> None:
        """Add one result (a dict, or anything with ``to_dict()``)."""
        if hasattr(result, "to_dict"):
            result = result.to_dict()
        self.count += 1
        if self.fmt != "jsonl":
            self.results.append(result)
            return
        line = json.dumps(result) + "\n"
        if self.path is None:
            self.stream.write(line)
            self.stream.flush()
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = temp_path_for(self.path)
            self._file = open(self._tmp, "x", encoding="utf8")
        self._file.write(line)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            commit_file(self._tmp, self.path)
            return
        if self.fmt == "jsonl" or not self.results:
            return
        text = render(self.results, self.fmt)
        self.results = []
        if self.path is None:
            self.stream.write(text)
            self.stream.flush()
        else:
            atomic_write_text(self.path, text)
