"""Measure clips in spawned worker processes, so that measuring overlaps generating and a native crash in a
metric (a segfault in a numba function, say) cannot take a run down.

:class:`ClipMeasurer` sends each clip to a ``ProcessPoolExecutor`` (spawn context; each worker is initialised
with this process's numba cache folder and ``faulthandler``). ``submit`` returns at once; ``result`` /
``results`` collect. When a worker dies, every clip that was in flight in that pool is retried once, alone, in
a fresh process with a fresh numba cache folder (a damaged cache is the usual cause); a clip whose retry dies
too gets ``nan`` for every value and a ``metric_error`` field with the reason, logged as a warning. The pool is
then restarted for the other clips. An ordinary Python exception raised by the metric is not a crash: it is
raised again by ``result`` / ``results`` (a bug or bad input must stay loud).

Call :func:`~steerlit.metrics.numba_cache.warm_metrics` once before creating the measurer, so that its workers
load a checked numba cache instead of compiling it. ``workers=0`` measures synchronously in this process (tests
and debugging; a native crash then ends the process).

Spawned workers import the main module again. A script that calls steerlit at its top level, without an
``if __name__ == "__main__":`` guard, would re-run its work in every worker: steerlit's entry points call
:func:`exit_if_reimported_by_a_worker`, which ends such a worker at once with :data:`BOOTSTRAP_EXIT`, and the
measurer then measures in this process for the rest of the run (one warning names the guard and
``metrics.workers=0``) instead of giving every clip ``nan``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import faulthandler
import functools
import logging
import multiprocessing
import multiprocessing.context
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from steerlit.metrics.attributes import ATTRIBUTE_NAMES, compute_attributes
from steerlit.metrics.audio_input import check_sample_rate, to_numpy
from steerlit.metrics.numba_cache import configure_numba_cache, numba_cache_dir, steerlit_cache_root
from steerlit.metrics.settings import MetricsSettings

log = logging.getLogger(__name__)

MeasureFn = Callable[[np.ndarray, int], Mapping[str, Any]]
ERROR_FIELD = "metric_error"
BOOTSTRAP_EXIT = 87  # the exit status of a worker that was re-running the main script while it started
UNGUARDED = {"warned": False}  # this process's workers re-ran its script: measure here from now on


WORKER_NAME = "steerlit-metric-worker"  # the name prefix of the measurer's processes


class MetricWorkerProcess(multiprocessing.context.SpawnProcess):
    """A spawned process named :data:`WORKER_NAME`-<n>: spawn sets the name before it imports the main module
    again, so a worker knows what it is while it starts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = f"{WORKER_NAME}-{self.name}"


class MetricWorkerContext(multiprocessing.context.SpawnContext):
    Process = MetricWorkerProcess


def reimported_by_a_worker() -> bool:
    """Whether this process is a metric worker still importing its parent's main module (multiprocessing's own
    bootstrap flag, the one behind its "start a new process before ... bootstrapping" error). Other spawned
    processes (DDP ranks, a user's own pools) are left to multiprocessing's error."""
    process = multiprocessing.current_process()
    return bool(getattr(process, "_inheriting", False)) and process.name.startswith(WORKER_NAME)


def exit_if_reimported_by_a_worker() -> None:
    """End this process quietly with :data:`BOOTSTRAP_EXIT` when it is a spawned worker re-running the main
    script's top level (a script without an ``if __name__ == "__main__":`` guard): its work is the parent's."""
    if reimported_by_a_worker():
        raise SystemExit(BOOTSTRAP_EXIT)


def warn_unguarded_script() -> None:
    """Log, once per process, that the workers re-ran the main script and clips are measured in this process."""
    if UNGUARDED["warned"]:
        return
    UNGUARDED["warned"] = True
    script = getattr(sys.modules.get("__main__"), "__file__", None) or "the main module"
    log.warning(
        "The metric workers could not start: spawned workers import the main module again, and %s calls "
        'steerlit at its top level, outside an `if __name__ == "__main__":` guard. Measuring the clips in this '
        "process instead (no crash isolation, no overlap with generating). Put the script's work under the "
        "guard, or set metrics.workers=0 to measure in this process without this warning.",
        script,
    )


def attribute_measure(settings: MetricsSettings) -> MeasureFn:
    """:func:`~steerlit.metrics.attributes.compute_attributes` with ``settings.tempo``, as a picklable callable."""
    return functools.partial(compute_attributes, tempo_kwargs=dataclasses.asdict(settings.tempo))


def init_worker(cache_dir: str) -> None:
    """Worker initialiser: native crashes print a traceback, numba caches into ``cache_dir``."""
    faulthandler.enable()
    configure_numba_cache(cache_dir)


def measure_in_worker(measure: MeasureFn, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
    return dict(measure(audio, sample_rate))


def shut_down_broken_codes(pool: cf.ProcessPoolExecutor) -> list[int]:
    """Shut a pool down whose worker died; the exit codes of its workers, read after the shutdown joined them."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # private; None after shutdown
    pool.shutdown(wait=True, cancel_futures=True)
    return [p.exitcode for p in processes if p.exitcode is not None]


def shut_down_broken(pool: cf.ProcessPoolExecutor) -> str:
    """Shut a pool down whose worker died; how its workers ended (e.g. ``SIGSEGV``), best effort."""
    return death_reason(shut_down_broken_codes(pool))


def death_reason(codes: Sequence[int]) -> str:
    """How workers with exit ``codes`` ended; the ones the pool itself stopped (SIGTERM) are left out unless
    nothing else is known."""
    crashed = [c for c in codes if c != -signal.SIGTERM] or list(codes)
    names = []
    for code in crashed:
        try:
            names.append(signal.Signals(-code).name if code < 0 else f"exit status {code}")
        except ValueError:
            names.append(f"signal {-code}")
    return f"metric worker died ({', '.join(sorted(set(names))) or 'unknown cause'})"


@dataclasses.dataclass(frozen=True)
class MeasurerSpec:
    """What a :class:`ClipMeasurer` is built from, for another process to build it (a DDP rank): this pickles
    (``measure`` must be a module-level callable or a ``functools.partial`` of one), a measurer does not."""

    measure: MeasureFn
    workers: int = 1
    value_names: tuple[str, ...] = ATTRIBUTE_NAMES

    def open(self) -> ClipMeasurer:
        return ClipMeasurer(workers=self.workers, measure=self.measure, value_names=self.value_names)


@dataclasses.dataclass
class _Clip:
    audio: np.ndarray
    sample_rate: int
    future: cf.Future | None = None


class ClipMeasurer:
    """Measure clips in worker processes; a clip whose worker crashes twice gets ``nan`` values and a reason.

    Args:
        settings: metric settings; the default ``measure`` is ``compute_attributes`` with ``settings.tempo``.
        workers: worker processes (0: measure synchronously in this process, for tests and debugging).
        measure: a picklable module-level callable ``(audio, sample_rate) -> {name: value}`` instead.
        value_names: the value names a crashed clip gets ``nan`` for (default: the attribute names).
        max_pending: ``submit`` waits while this many clips are still being measured (bounds memory).

    Use it from one thread, as a context manager (the pool is always shut down)::

        with ClipMeasurer(settings.metrics, workers=2) as measurer:
            for key, audio in clips:
                measurer.submit(key, audio, sample_rate)
            values = measurer.results()  # {key: {name: value}}, in submission order
    """

    def __init__(
        self,
        settings: MetricsSettings | None = None,
        *,
        workers: int = 1,
        measure: MeasureFn | None = None,
        value_names: Sequence[str] = ATTRIBUTE_NAMES,
        max_pending: int = 256,
    ):
        if workers < 0 or max_pending < 1:
            raise ValueError(f"need workers >= 0 and max_pending >= 1, got {workers} and {max_pending}")
        exit_if_reimported_by_a_worker()
        self.measure = measure or attribute_measure(settings or MetricsSettings())
        self.workers = 0 if UNGUARDED["warned"] else int(workers)
        self.value_names = tuple(value_names)
        self.max_pending = int(max_pending)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._clips: dict[Hashable, _Clip] = {}  # submitted, not yet measured
        self._done: dict[Hashable, dict[str, Any]] = {}  # measured, not yet collected
        self._order: dict[Hashable, None] = {}  # keys not yet collected, in submission order
        self._retry_dirs: list[Path] = []
        self._closed = False

    def __enter__(self) -> ClipMeasurer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)

    def submit(self, key: Hashable, audio: Any, sample_rate: int) -> None:
        """Queue one clip (numpy or torch, any form the metrics take) for measuring; returns at once."""
        if self._closed:
            raise RuntimeError("this ClipMeasurer is closed: submit clips inside its `with` block")
        if key in self._clips or key in self._done:
            raise ValueError(f"clip {key!r} was already submitted and not collected yet: use unique keys")
        check_sample_rate(sample_rate)
        clip = _Clip(to_numpy(audio), sample_rate)
        self._order[key] = None
        if self.workers == 0:
            self._done[key] = measure_in_worker(self.measure, clip.audio, clip.sample_rate)
            return
        self._wait_for_room()
        self._clips[key] = clip
        self._start(clip)

    def result(self, key: Hashable) -> dict[str, Any]:
        """The values of one submitted clip (waits for it); collected, so a second call raises ``KeyError``.

        Raises what the metric raised for this clip, if it raised (a native crash is not raised: see above).
        """
        if key not in self._done and key not in self._clips:
            raise KeyError(f"clip {key!r} was not submitted, or was collected already")
        while key not in self._done:
            self._settle(key)
        del self._order[key]
        return self._done.pop(key)

    def results(self) -> dict[Hashable, dict[str, Any]]:
        """The values of every clip not collected yet, in submission order (waits for all of them)."""
        return {key: self.result(key) for key in list(self._order)}

    @property
    def pending(self) -> int:
        """Clips submitted and not collected yet."""
        return len(self._order)

    def close(self, *, cancel: bool = False) -> None:
        """Shut the pool down (waiting for running clips; ``cancel`` drops queued ones) and remove retry caches."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None
        for folder in self._retry_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        self._retry_dirs.clear()
        self._closed = True

    def _new_pool(self, workers: int, cache_dir: Path) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=MetricWorkerContext(),
            initializer=init_worker,
            initargs=(str(cache_dir),),
        )

    def _start(self, clip: _Clip) -> None:
        if self._pool is None:
            self._pool = self._new_pool(self.workers, numba_cache_dir())
        try:
            clip.future = self._pool.submit(measure_in_worker, self.measure, clip.audio, clip.sample_rate)
        except BrokenProcessPool:
            clip.future = None
            self._recover()

    def _wait_for_room(self) -> None:
        self._harvest()
        while True:
            running = [c.future for c in self._clips.values() if c.future is not None and not c.future.done()]
            if len(running) < self.max_pending:
                return
            cf.wait(running, return_when=cf.FIRST_COMPLETED)
            self._harvest()

    def _harvest(self) -> None:
        """Store the values of finished clips; recover if a worker died (metric exceptions wait for ``result``)."""
        broken = False
        for key, clip in list(self._clips.items()):
            if clip.future is None or _died(clip.future):
                broken = True
            elif clip.future.done() and clip.future.exception() is None:
                self._done[key] = self._clips.pop(key).future.result()
        if broken:
            self._recover()

    def _settle(self, key: Hashable) -> None:
        """Wait for one clip; store its values, recover the pool if a worker died, or raise the metric's error."""
        future = self._clips[key].future
        if future is None or _died(future, wait=True):
            self._recover()
            return
        values = future.result()  # raises the metric's own exception, if any
        del self._clips[key]
        self._done[key] = values

    def _recover(self) -> None:
        """A worker died: retry every clip that was in flight, each alone, then start a new pool."""
        pool, self._pool = self._pool, None
        # A broken pool has failed all its futures once it is shut down.
        codes = shut_down_broken_codes(pool) if pool is not None else []
        self._harvest_finished()
        if BOOTSTRAP_EXIT in codes:
            self._measure_here()
            return
        reason = death_reason(codes) if pool is not None else "metric worker died"
        lost = [k for k, c in self._clips.items() if c.future is None or _died(c.future)]
        log.warning(
            "%s while measuring %d clip(s) %s; each is retried once, alone, in a fresh process with a fresh "
            "numba cache",
            reason,
            len(lost),
            lost[:8],
        )
        self._retry_alone(lost, reason)

    def _measure_here(self) -> None:
        """The workers re-ran an unguarded main script: measure the clips in flight, and all later ones, here."""
        warn_unguarded_script()
        self.workers = 0
        for key, clip in list(self._clips.items()):
            del self._clips[key]
            self._done[key] = measure_in_worker(self.measure, clip.audio, clip.sample_rate)

    def _harvest_finished(self) -> None:
        for key, clip in list(self._clips.items()):
            if clip.future is not None and clip.future.done() and clip.future.exception() is None:
                self._done[key] = self._clips.pop(key).future.result()

    def _retry_alone(self, keys: list[Hashable], first_reason: str) -> None:
        """Measure each clip in a one-worker pool with a fresh numba cache; a second crash gives ``nan`` values."""
        root = steerlit_cache_root() / "numba"
        root.mkdir(parents=True, exist_ok=True)
        cache = Path(tempfile.mkdtemp(prefix="retry-", dir=root))
        self._retry_dirs.append(cache)
        pool: cf.ProcessPoolExecutor | None = None
        try:
            for key in keys:
                clip = self._clips[key]
                pool = pool or self._new_pool(1, cache)
                clip.future = pool.submit(measure_in_worker, self.measure, clip.audio, clip.sample_rate)
                if not _died(clip.future, wait=True):
                    if clip.future.exception() is None:
                        self._done[key] = self._clips.pop(key).future.result()
                    continue  # the metric's own exception is raised by result(key)
                reason = f"{first_reason}; retried alone with a fresh numba cache: {shut_down_broken(pool)}"
                pool = None
                log.warning("clip %r could not be measured (%s): its values are nan", key, reason)
                del self._clips[key]
                self._done[key] = {**dict.fromkeys(self.value_names, float("nan")), ERROR_FIELD: reason}
        finally:
            if pool is not None:
                pool.shutdown(wait=True)


def _died(future: cf.Future, *, wait: bool = False) -> bool:
    """Whether ``future`` failed because its worker process died (``wait``: block until it is done)."""
    if not (wait or future.done()):
        return False
    return isinstance(future.exception(), BrokenProcessPool)
