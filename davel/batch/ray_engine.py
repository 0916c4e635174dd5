"""The Ray engine (``--ray ADDRESS``): a batch over every CPU and GPU of a Ray cluster.

Ray Data runs the inputs one per block: a light CPU stage probes each video
(a file the decoder refuses fails there, with no GPU time spent), then a pool
of actors (``num_gpus`` = 1/K each, K = ``--actors-per-gpu``; CPU-only
clusters get CPU actors) does the work. Each actor runs the same
:class:`~davel.batch.engines.WatchedRunner` as the one-process engine, so each
video is processed by :meth:`Task.process` in a worker process the actor
watches: ``--timeout``, a crashing decoder (``worker died (signal N)``) and the
records are exactly those of a run without ``--ray``. The driver gets one row
per video (the pickled record) and feeds the runner's ``finish``.

Resume is the output files: the driver skips inputs whose outputs exist, the
actor checks again just before the work (a task Ray runs twice costs nothing).
Ray's own fault tolerance stays at its defaults (actors restarted, tasks
retried: a lost node's videos are redone elsewhere); a video during which the
*actor* dies twice (an OOM kill of the actor, a lost node twice) is reported
failed by an attempt counter, an actor on the driver's node, so that it can
neither loop nor stop the batch. ``max_errored_blocks`` is left at 0 (it lost
good videos in the measurements of ../shared/SCALE.md).

Ray is imported only here, only with ``--ray``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from davel.batch.engines import (
    INLINE_ENV,
    BatchError,
    Engine,
    Finish,
    InlineRunner,
    WatchedRunner,
    is_done,
    log_warnings,
    progress_bar,
)
from davel.batch.records import FAILED, SKIPPED, Record
from davel.batch.tasks import Item, Task
from davel.errors import one_line

log = logging.getLogger(__name__)

MAX_DEATHS = 2  # actor deaths during one video before it is reported failed
PROBE_CPUS = 0.25  # what the probe stage asks for; the actors always leave it room
MAX_CPUS_PER_ACTOR = 4.0
INSTALL_HINT = "--ray needs Ray: pip install 'davel[ray]'"
_ADDRESS = re.compile(r"(?:ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}")


def ray_missing() -> str | None:
    """One line when Ray (with Ray Data) is not installed, else None."""
    try:
        found = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else INSTALL_HINT


def check_address(address: str) -> str:
    """``local``, ``auto`` or ``HOST:PORT`` (ValueError with the usage line otherwise)."""
    if address in ("local", "auto") or _ADDRESS.fullmatch(address):
        return address
    raise ValueError(f"--ray {address}: expected local, auto or HOST:PORT")


def plan_actors(cpus: float, gpus: float, actors_per_gpu: int = 1,
                cpus_per_actor: float | None = None) -> tuple[int, float, float]:
    """``(actors, cpus each, gpus each)`` for a cluster of ``cpus`` and ``gpus``.

    The actors together always leave the probe stage a CPU share: actors that
    take every CPU starve it and the whole run hangs without a word (SCALE.md).
    """
    free = cpus - PROBE_CPUS
    if gpus >= 1:
        actors = int(gpus) * actors_per_gpu
        each_gpu = 1.0 / actors_per_gpu
    else:
        actors = max(1, math.ceil((cpus - 1) / MAX_CPUS_PER_ACTOR)) if cpus_per_actor is None \
            else max(1, int(free // cpus_per_actor))
        each_gpu = 0.0
    each_cpu = cpus_per_actor
    if each_cpu is None:
        each_cpu = min(MAX_CPUS_PER_ACTOR, max(cpus - 1, cpus / 2) / actors)
    if actors * each_cpu > free + 1e-9:
        raise BatchError(f"{actors} Ray worker(s) of {each_cpu:g} CPUs each do not fit the cluster's {cpus:g} CPUs "
                         f"(with {PROBE_CPUS:g} left for probing videos): lower --cpus-per-actor")
    return actors, each_cpu, each_gpu


class _Attempts:
    """Counts, per input, the actors that started it (lives on the driver's node)."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}

    def begin(self, key: str) -> int:
        self.started[key] = self.started.get(key, 0) + 1
        return self.started[key]


def _record_row(record: Record) -> dict[str, Any]:
    return {"record": np.array([pickle.dumps(record)], dtype=object)}


class _Probe:
    """The CPU stage: the cheap checks and a probe of the container, on the node."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        item = Item(row["path"], row["kind"])
        failed = b""
        start = time.monotonic()
        try:
            self.task.check(item)
            if item.kind == "video":
                from extractors import decode

                decode.probe(item.path)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the input's failure
            failed = pickle.dumps(Record(item.path, FAILED, reason=one_line(exc), seconds=time.monotonic() - start))
        return {"path": row["path"], "kind": row["kind"], "failed": failed}


class _Worker:
    """One actor of the pool: a watched worker process with the task's models loaded."""

    def __init__(self, task: Task, timeout: float | None, attempts: Any, inline: bool, threads: int) -> None:
        # the worker process inherits these: torch in it uses the CPUs the actor holds
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(threads)
        self.task, self.attempts = task, attempts
        self.runner = InlineRunner(task, quiet=True) if inline else WatchedRunner(task, True, timeout, show_bars=False)
        if isinstance(self.runner, WatchedRunner):
            self.runner._start(None)  # load the models now: their time is not a video's
        else:
            task.prepare()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import ray

        path, kind, failed = str(batch["path"][0]), str(batch["kind"][0]), batch["failed"][0]
        if failed:
            return _record_row(pickle.loads(failed))
        item = Item(path, kind)
        try:
            attempt = ray.get(self.attempts.begin.remote(item.path))
        except Exception:  # noqa: BLE001 - no counter (its node went): the video is still worth doing
            attempt = 1
        if attempt > MAX_DEATHS:
            return _record_row(Record(item.path, FAILED,
                                      reason=f"{item.path}: worker process died {attempt - 1} times on this video"))
        if is_done(self.task, item):
            return _record_row(Record(item.path, SKIPPED))
        return _record_row(self.runner.process(item, None))

    def __del__(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()


class RayEngine(Engine):
    """Inputs spread over a Ray cluster (see the module's docstring)."""

    def __init__(self, address: str, *, timeout: float | None = None,
                 quiet: bool = False, actors_per_gpu: int = 1, cpus_per_actor: float | None = None) -> None:
        self.address = check_address(address)
        self.timeout, self.quiet = timeout, quiet
        self.actors_per_gpu, self.cpus_per_actor = actors_per_gpu, cpus_per_actor
        self.started = False
        self.interrupted = False
        self.starting = False
        self.reaper: subprocess.Popen | None = None
        self.attempts = None

    def run(self, task: Task, items: Sequence[Item], finish: Finish) -> None:
        todo = []
        for item in items:
            if is_done(task, item):  # resume: the outputs are the checkpoint
                finish(Record(item.path, SKIPPED))
            else:
                todo.append(item)
        if not todo:
            return
        try:
            ray = self._connect()
            self._run(ray, task, todo, finish)
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        except BatchError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine itself: exit 2, outputs stay valid
            raise BatchError(f"the Ray engine failed: {one_line(exc)} (what was written stays valid: "
                             f"run the command again to go on)") from exc

    def _connect(self) -> Any:
        if not os.environ.get("DAVEL_DEBUG"):
            # Ray's C++ side logs its own notices (network probes, restart policy) on stderr
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        try:
            import ray
        except ImportError as exc:
            raise BatchError(INSTALL_HINT) from exc
        _quiet_ray_loggers()
        if not ray.is_initialized():
            # the address is always explicit: a bare init() attaches to whatever a stale
            # /tmp/ray file names, and hangs when that cluster is gone
            kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": bool(os.environ.get("DAVEL_DEBUG")),
                                      "logging_level": logging.ERROR, "configure_logging": True}
            if self.address == "local":
                kwargs.update(num_cpus=_visible_cpus(), include_dashboard=False)
            # a Ctrl-C while Ray starts leaves a half-started instance: close() kills it
            self.starting = self.address == "local"
            try:
                with _quiet_stderr():
                    ray.init(**kwargs)
                self.started = True
                if self.address == "local":
                    self.reaper = _start_reaper()
            except Exception as exc:  # noqa: BLE001 - one line, exit 2
                raise BatchError(f"--ray {self.address}: cannot connect to a Ray cluster: {one_line(exc)}") from exc
        return ray

    def _run(self, ray: Any, task: Task, todo: list[Item], finish: Finish) -> None:
        from ray.data import ActorPoolStrategy, DataContext

        _quiet_ray_loggers()  # Ray Data sets its own levels when imported
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        # the per-video stall timer is --timeout, in the actor; one long video on a CPU
        # would trip Ray Data's 30-minute no-progress guard
        ctx.execution_no_progress_timeout_s = -1
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        actors, each_cpu, each_gpu = plan_actors(cpus, gpus, self.actors_per_gpu, self.cpus_per_actor)
        actors = min(actors, len(todo))
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's node: a counter on a worker node would go with that node
        # (and every other worker's next question to it would fail the batch)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.attempts = ray.remote(num_cpus=0, scheduling_strategy=here)(_Attempts).remote()
        inline = bool(os.environ.get(INLINE_ENV)) or all(item.kind == "features" for item in todo)
        rows = [{"path": item.path, "kind": item.kind} for item in todo]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map(_Probe(task), num_cpus=PROBE_CPUS)
        ds = ds.map_batches(_Worker, batch_size=1, compute=ActorPoolStrategy(size=actors),
                            num_cpus=each_cpu, num_gpus=each_gpu or None,
                            fn_constructor_kwargs={"task": task, "timeout": self.timeout, "attempts": self.attempts,
                                                   "inline": inline, "threads": max(1, math.floor(each_cpu))})
        wanted = {item.path for item in todo}
        with progress_bar(len(todo), "videos", self.quiet, unit="video") as bar:
            for row in ds.iter_rows():
                record: Record = pickle.loads(row["record"])
                if record.path not in wanted:
                    continue  # a second answer for an input already finished
                wanted.discard(record.path)
                log_warnings(record.warnings)
                finish(record)
                bar.update(1)
        for path in sorted(wanted):  # never expected; costs nothing to check
            finish(Record(path, FAILED, reason=f"{path}: lost by the Ray engine (no result came back)"))

    def close(self) -> None:
        try:
            import ray
        except ImportError:
            return
        if self.interrupted and (self.started or self.starting) and self.address == "local":
            # Ctrl-C: the Ray instance this command started is all below this process
            # (GCS, raylet, agents, workers and their watched processes): stop it now,
            # not after Ray's graceful shutdown has waited on actors still starting
            _kill_descendants(os.getpid())  # the reaper too
            _shutdown_within(ray, 0.3)
            if self.reaper is not None:
                self.reaper.wait()
            self.started, self.attempts, self.reaper = False, None, None
            return
        if self.attempts is not None:
            try:
                ray.kill(self.attempts)
            except Exception:  # noqa: BLE001 - the cluster may be gone already
                pass
            self.attempts = None
        if self.started:
            ray.shutdown()  # a local cluster stops with it; a remote one stays, as it should
            self.started = False
        if self.reaper is not None:
            self.reaper.kill()
            self.reaper.wait()
            self.reaper = None


def _kill_descendants(root: int) -> None:
    """SIGKILL every live descendant of ``root`` (read from /proc; Linux)."""
    from davel.batch.reaper import descendants

    for pid in descendants(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _start_reaper() -> subprocess.Popen | None:
    """A watcher that kills this command's Ray processes if the driver is killed
    (:mod:`davel.batch.reaper`)."""
    if not Path("/proc").is_dir():
        return None
    return subprocess.Popen([sys.executable, "-m", "davel.batch.reaper", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _shutdown_within(ray: Any, seconds: float) -> None:
    """``ray.shutdown()`` given ``seconds`` (its processes are gone: it only tidies up)."""
    import threading

    done = threading.Thread(target=ray.shutdown, daemon=True)
    done.start()
    done.join(seconds)


def _quiet_ray_loggers() -> None:
    level = logging.DEBUG if os.environ.get("DAVEL_DEBUG") else logging.ERROR
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Ray's C++ start-up notices (an address probe, its log level) go to a file, not the
    user's terminal; ``DAVEL_DEBUG=1`` shows them."""
    if os.environ.get("DAVEL_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _visible_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
