"""What a batch checks before any model is loaded: which inputs are this machine's
(``--shard``), which are readable (:func:`precheck`), and that the output folder
takes files (:func:`check_output_dir`). None of it imports torch."""
from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from davel.batch.records import FAILED, Record
from davel.batch.tasks import Item, check_features, check_video
from davel.errors import DavelError, OutputError, one_line
from weights.atomic import temp_path_for
from weights.storage import check_writable, is_url


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1 <= K <= N) -> ``(K, N)``."""
    k, sep, n = text.partition("/")
    try:
        kk, nn = int(k), int(n)
    except ValueError:
        kk = nn = 0
    if not sep or nn < 1 or not 1 <= kk <= nn:
        raise ValueError(f"--shard {text}: expected K/N with 1 <= K <= N (e.g. 2/4)")
    return kk, nn


def in_shard(item: Item, shard: tuple[int, int] | None) -> bool:
    """Shards split by a hash of the output stem, so the split does not depend on the
    order (or the rest) of each machine's input list."""
    if shard is None:
        return True
    k, n = shard
    return zlib.crc32(item.stem.encode("utf8")) % n == k - 1


def check_input(item: Item) -> None:
    """The cheap checks, before any model is loaded (no torch import)."""
    if item.kind == "video":
        check_video(item.path)
        return
    check_features(item.path)


def precheck(items: Iterable[Item], check: Callable[[Item], None] = check_input) -> tuple[list[Item], list[Record]]:
    """Split ``items`` into those that pass ``check`` and failed records for the others."""
    good: list[Item] = []
    failed: list[Record] = []
    for item in items:
        try:
            check(item)
        except DavelError as exc:
            failed.append(Record(item.path, FAILED, reason=one_line(exc)))
        else:
            good.append(item)
    return good, failed


def check_output_dir(path: str | os.PathLike) -> Path | str:
    """The output folder exists (made if needed) and takes new files; else OutputError,
    before any work (it would fail every input the same way).

    An fsspec URL (``s3://bucket/prefix``...) is returned as is, after the prefix was
    made where the filesystem needs it and took a probe object (:func:`weights.storage.check_writable`;
    an unknown protocol, or a missing package such as s3fs, is one line too)."""
    if is_url(path):
        return check_writable(path)
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder (the outputs go into a folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder: {exc.strerror or exc}") from exc
    probe = temp_path_for(folder / ".davel-write-check")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write in the output folder: {exc.strerror or exc}") from exc
    return folder
