"""The work a batch does for one input, as picklable objects every engine shares.

A task is built in the driver from the command's options; the heavy state (the
extractor's networks, the detector) is made on first use in the process that
runs the task, and never pickled. ``process(item)`` does the whole job for one
input and returns its :class:`~davel.batch.records.Record`; a bad input gives a
failed record with a one-line reason, never an exception.

Outputs are written through ``weights.atomic`` (temporary file, fsync, rename)
and a video's sidecar last, so an output that exists is complete: resuming a
batch is skipping the inputs whose outputs exist.
"""
from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from davel.batch.records import DONE, FAILED, SKIPPED, Record, captured_warnings
from davel.errors import InputError, OutputError, WeightsError, one_line

Progress = Callable[[int], None] | None


@dataclass(frozen=True)
class Item:
    """One input of a batch: a video file, or (``kind="features"``) the ``DIR/STEM``
    prefix of pre-extracted features."""

    path: str
    kind: str = "video"

    @property
    def stem(self) -> str:
        """The name of its outputs (unique within an output folder)."""
        p = Path(self.path)
        return p.name if self.kind == "features" else p.stem


def check_video(path: str | Path) -> None:
    """Cheap checks before any model is loaded: the path is a readable regular file
    (a FIFO or device would block the decoder)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        if missing and p.is_symlink():
            raise InputError(f"{path}: broken symbolic link (its target {os.readlink(p)} does not exist)") from exc
        reason = "no such file (or a dangling link)" if missing else (exc.strerror or str(exc))
        raise InputError(f"{path}: {reason}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, not a video file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: not a regular file (a pipe, socket or device cannot be decoded safely)")
    if not os.access(p, os.R_OK):
        raise InputError(f"{path}: not readable (permission denied)")
    if st.st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")


def check_features(path: str | Path) -> None:
    """Cheap check of a ``DIR/STEM`` features input: its arrays are there."""
    from extractors import feature_files

    prefix = Path(path)
    if not feature_files.has_features(prefix.parent, prefix.name):
        wanted = feature_files.paths(prefix.parent, prefix.name)
        missing = [wanted[s].name for s in feature_files.STREAMS if not wanted[s].is_file()]
        raise InputError(f"{path}: missing feature file {missing[0] if missing else wanted['rgb'].name}")


class Task:
    """What every task has: ``check`` (cheap, before models), ``is_done`` (its outputs
    exist), ``run`` (the work; raises for a bad input) and ``process`` (all of it,
    timed, warnings collected, as a record)."""

    verb = "done"

    def check(self, item: Item) -> None:
        if item.kind == "video":
            check_video(item.path)

    def is_done(self, item: Item) -> bool:
        return False

    def prepare(self) -> None:
        """Load the heavy state now (a worker does this before its first input, so the
        per-video time limit does not count the model loading)."""

    def outputs(self, item: Item) -> list[Path]:
        """The files ``run`` writes for ``item`` (their temporary files are swept after a
        worker is killed mid-write)."""
        return []

    def total_steps(self, item: Item) -> int | None:
        """Progress steps ``run`` will report for ``item``, for a progress bar (None: unknown)."""
        return None

    def run(self, item: Item, on_progress: Progress = None) -> Record:
        raise NotImplementedError

    def process(self, item: Item, on_progress: Progress = None, skip_done: bool = True) -> Record:
        """The whole job for one input, as a record (never raises for a bad input)."""
        start = time.monotonic()
        with captured_warnings() as warned:
            try:
                self.check(item)
                if skip_done and self.is_done(item):
                    record = Record(item.path, SKIPPED)
                else:
                    record = self.run(item, on_progress)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad input must not stop the batch
                record = Record(item.path, FAILED, reason=one_line(exc))
        record.seconds = time.monotonic() - start
        record.warnings = list(warned)
        return record

    def __getstate__(self) -> dict[str, Any]:
        # heavy state is rebuilt where the task runs
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class ExtractTask(Task):
    """``davel extract``: a video -> the arrays of its feature set (``<out>/<stem>_{rgb,flow,vggish}.npy``
    or ``<out>/<stem>_one_peace_{video_finetune,audio}.npy``) + sidecar."""

    verb = "extracted"

    def __init__(self, out_dir: str | Path, settings: Any = None, weights_dir: str | Path | None = None,
                 device: str = "auto", overwrite: bool = False, feature_set: str = "i3d-vggish") -> None:
        from extractors.feature_sets import feature_set as get_set

        self.out_dir = str(out_dir)
        self.feature_set = get_set(feature_set).name
        self.settings = settings or get_set(feature_set).settings()
        self.weights_dir = None if weights_dir is None else str(weights_dir)
        self.device = device
        self.overwrite = overwrite
        self.settings_key = self.extractor.settings_key  # weights located (and hashed) once, here

    @property
    def extractor(self):
        if getattr(self, "_extractor", None) is None:
            from extractors.feature_sets import feature_set

            # a batch runs many videos in a process of its own: keep its memory at what it holds
            self._extractor = feature_set(self.feature_set).extractor(self.weights_dir, self.device, self.settings,
                                                                      tune_allocator=True)
        return self._extractor

    def prepare(self) -> None:
        self.extractor.load_networks()
        if self.extractor.settings_key != self.settings_key:
            # another machine of a cluster, with other weights: its outputs would be refused
            # (or, worse, mixed with the others) by every later resume check
            raise WeightsError(f"the weights here ({self.weights_dir or 'the cache'}) are not those the batch was "
                               f"started with (its settings key {self.settings_key[:12]}, here "
                               f"{self.extractor.settings_key[:12]}): put the same weights on every node")

    @property
    def out_url(self) -> str | None:
        """``out_dir`` when it is an fsspec URL (``s3://...``: outputs written as objects by
        :mod:`weights.storage`), else None (a folder: today's temporary-file + rename path)."""
        from weights.storage import is_url

        return self.out_dir if is_url(self.out_dir) else None

    def outputs(self, item: Item) -> list[Path]:
        """The output files (for a URL ``out_dir``: their URLs, as strings)."""
        from extractors import feature_files

        if self.out_url is not None:
            return list(feature_files.paths(self.out_url, item.stem, self.feature_set).values())
        return list(feature_files.paths(Path(self.out_dir), item.stem, self.feature_set).values())

    def is_done(self, item: Item) -> bool:
        from extractors import feature_files

        if self.out_url is not None:
            # resume by listing: one listing of the prefix per process (the task's
            # underscored state is not pickled), kept for the batch; an input's own
            # objects change only when this process works on it
            if self.overwrite:
                return False
            if getattr(self, "_listing", None) is None:
                from weights import storage

                self._listing = storage.names(self.out_url)
            return feature_files.is_complete(self.out_url, item.stem, self.settings_key, self.feature_set,
                                             listing=self._listing)
        return not self.overwrite and feature_files.is_complete(Path(self.out_dir), item.stem, self.settings_key,
                                                                self.feature_set)

    def total_steps(self, item: Item) -> int | None:
        """Feature rows the video will give, for a progress bar (None: unknown)."""
        from extractors import decode
        from extractors.feature_sets import feature_set

        fs = feature_set(self.feature_set)
        try:
            frames = decode.num_frames_estimate(decode.probe(item.path), fs.timebase.fps)
        except Exception:  # noqa: BLE001 - the run itself reports a bad file
            return None
        return max(1, fs.num_rows(frames)) if frames is not None else None

    def run(self, item: Item, on_progress: Progress = None) -> Record:
        from extractors import feature_files

        feats = self.extractor.extract(item.path, on_window=on_progress)
        if self.out_url is not None:
            self._write_url(item, feats)
            return Record(item.path, DONE, T=int(len(feats.rgb)), T_a=int(len(feats.vggish)))
        try:
            feature_files.write(Path(self.out_dir), item.stem, feats)
        except OSError as exc:
            # arrays already renamed into place without their sidecar would only look like a result
            for path in self.outputs(item):
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            raise OutputError(f"{self.out_dir}: cannot write the features of {item.path}: "
                              f"{exc.strerror or exc}") from exc
        return Record(item.path, DONE, T=int(len(feats.rgb)), T_a=int(len(feats.vggish)))

    def _write_url(self, item: Item, feats: Any) -> None:
        """The objects of ``item`` at the URL ``out_dir``, the sidecar last; on a failure the
        objects already written are deleted (arrays without their sidecar would only look
        like a result) and OutputError (one line) is raised."""
        from extractors import feature_files
        from weights import storage

        try:
            feature_files.write(self.out_url, item.stem, feats)
        except Exception as exc:  # noqa: BLE001 - any backend's error (OSError, a client's own): one line
            for url in self.outputs(item):
                try:
                    storage.remove(url)
                except Exception:  # noqa: BLE001 - best effort: the write already failed
                    pass
            if isinstance(exc, OutputError):
                raise
            text = str(exc).strip()
            reason = ((exc.strerror if isinstance(exc, OSError) else None)
                      or (text.splitlines()[0][:200] if text else type(exc).__name__))
            raise OutputError(f"{self.out_url}: cannot write the features of {item.path}: {reason}") from exc
        if getattr(self, "_listing", None) is not None:
            self._listing.update(url.rsplit("/", 1)[-1] for url in self.outputs(item))


class DetectTask(Task):
    """``davel detect``: a video (or features) -> its events. With ``out_dir`` each
    input's events go to ``<out_dir>/<stem>.<fmt>`` (skipped when it exists); without,
    the record carries them (``record.result``) for the driver to write."""

    verb = "detected"

    def __init__(self, model: str, *, labels: list[str] | None = None, weights_dir: str | Path | None = None,
                 device: str = "auto", top_k: int | None = None, min_score: float = 0.0,
                 duration: float | None = None, out_dir: str | Path | None = None, fmt: str = "json",
                 expect_dims: tuple[int, int] | None = None, overwrite: bool = False) -> None:
        self.model = str(model)
        self.labels = labels
        self.weights_dir = None if weights_dir is None else str(weights_dir)
        self.device = device
        self.top_k = top_k
        self.min_score = min_score
        self.duration = duration
        self.out_dir = None if out_dir is None else str(out_dir)
        self.fmt = fmt
        self.expect_dims = expect_dims
        self.overwrite = overwrite

    @property
    def detector(self):
        if getattr(self, "_detector", None) is None:
            from davel.inference import load_detector

            self._detector = load_detector(self.model, self.device, self.labels, self.weights_dir,
                                           expect_dims=self.expect_dims)
        return self._detector

    def check(self, item: Item) -> None:
        if item.kind == "features":
            check_features(item.path)
        else:
            super().check(item)

    def prepare(self) -> None:
        _ = self.detector

    def outputs(self, item: Item) -> list[Path]:
        out = self.output_path(item)
        return [] if out is None else [out]

    def output_path(self, item: Item) -> Path | None:
        return None if self.out_dir is None else Path(self.out_dir) / f"{item.stem}.{self.fmt}"

    def is_done(self, item: Item) -> bool:
        out = self.output_path(item)
        return out is not None and not self.overwrite and out.is_file()

    def run(self, item: Item, on_progress: Progress = None) -> Record:
        from extractors import feature_files

        det = self.detector
        if item.kind == "features":
            feats = feature_files.read(item.path)
            result = det.detect_features(feats, name=Path(item.path).name, duration=self.duration,
                                         top_k=self.top_k, min_score=self.min_score)
        else:
            result = det.detect(item.path, top_k=self.top_k, min_score=self.min_score, on_window=on_progress)
        doc = result.to_dict()
        out = self.output_path(item)
        if out is not None:
            from davel import outputs
            from weights.atomic import atomic_write_text

            try:
                atomic_write_text(out, outputs.render([doc], self.fmt))
            except OSError as exc:
                raise OutputError(f"{out}: cannot write: {exc.strerror or exc}") from exc
        return Record(item.path, DONE, T=result.num_steps, T_a=result.num_steps, result=doc)
