"""numba's on-disk cache for the librosa functions the metrics use, safe when many processes share it.

Why: librosa compiles its numba functions (the beat tracker's gufuncs, local-max stencils, ...) with
``cache=True``, eagerly when ``librosa.beat`` / ``librosa.util`` are imported, into ``NUMBA_CACHE_DIR``, or
into librosa's own ``__pycache__`` when that is unset. Two processes compiling at once can leave an index
and data files written by different processes (numba issue #10128), and every process that loads them
afterwards segfaults. DDP ranks, sweep agents, metric workers and CI on a fresh clone all compile at once.

What this module does:

1. **Its own folder.** On import (``import steerlit.metrics`` imports it before anything touches librosa),
   :func:`configure_numba_cache` sets ``NUMBA_CACHE_DIR`` when the user has not, to
   ``$STEERLIT_CACHE/numba/numba-<version>-py<XY>`` (``STEERLIT_CACHE`` defaults to ``~/.cache/steerlit``), in
   ``os.environ`` so that DDP ranks, pool workers and subprocesses inherit it. numba fixes a function's cache
   folder when librosa defines it, so import ``steerlit.metrics`` before librosa (or set ``NUMBA_CACHE_DIR``).
2. **One writer at a time.** The first time a process needs librosa (:func:`import_librosa`), it takes a file
   lock (fcntl) in that folder and runs every metric once on a short synthetic clip, so that every numba
   function the metrics use is compiled or loaded then; later calls take no lock and compile nothing. A
   complete, checked cache is loaded under a shared lock (many processes at once); anything that may compile
   holds the exclusive lock. One shared folder and a lock rather than a folder per process: one process
   compiles (18-50 s) and the others load its result (~2 s), where per-process folders would make every rank,
   worker and rerun compile anew.
3. **Damage is detected and rebuilt.** A marker file records, after a successful warm-up, the cache's files
   (name, size, mtime) and librosa's source files (numba's own staleness key). When the folder holds cache
   files that the marker does not describe, the lock holder first warms up in a short child process; if that
   child dies (SIGSEGV or an error), the folder is wiped and rebuilt, with one warning in the log.

:func:`warm_metrics` does 2 and 3 in the calling process: call it once before DDP ranks or metric workers start.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from steerlit.files import atomic_write_json

log = logging.getLogger(__name__)

CACHE_ENV = "NUMBA_CACHE_DIR"
STEERLIT_CACHE_ENV = "STEERLIT_CACHE"
LOCK_FILE = ".steerlit-compile.lock"
MARKER_FILE = ".steerlit-checked.json"
# Set by a lock holder for its check child, which must not wait for the lock its parent holds.
LOCK_HELD_ENV = "STEERLIT_NUMBA_LOCK_HELD"
CHECK_TIMEOUT_S = 1800.0
_CHECK_CODE = "import steerlit.metrics.numba_cache as cache; cache.ensure_numba_ready()"
_REPO_ROOT = Path(__file__).resolve().parents[2]

_WARMUPS: list[Callable[[], object]] = []
_THREAD_LOCK = threading.RLock()


class _ProcessState:
    ready_dir: str | None = None  # the cache folder this process has warmed up from
    warming: bool = False  # inside a warm-up: metric calls must not warm again


_STATE = _ProcessState()


def steerlit_cache_root() -> Path:
    """``$STEERLIT_CACHE`` or ``~/.cache/steerlit``: the root of ``steerlit.models.loading.cache_dir`` too."""
    return Path(os.environ.get(STEERLIT_CACHE_ENV, Path.home() / ".cache" / "steerlit"))


def default_numba_cache_dir() -> Path:
    """steerlit's numba cache folder for the installed numba and this Python."""
    try:
        version = importlib.metadata.version("numba")
    except importlib.metadata.PackageNotFoundError:
        version = "none"
    return steerlit_cache_root() / "numba" / f"numba-{version}-py{sys.version_info[0]}{sys.version_info[1]}"


def configure_numba_cache(path: str | os.PathLike | None = None) -> Path:
    """Point numba's cache at ``path``, else at the user's ``NUMBA_CACHE_DIR``, else at steerlit's folder.

    Sets ``os.environ["NUMBA_CACHE_DIR"]`` (inherited by every process started afterwards) and, when numba is
    already imported, reloads its configuration. Functions librosa has already defined keep their folder: a
    warning says so when librosa's numba modules came first with no ``NUMBA_CACHE_DIR`` set. Returns the folder.
    """
    user_set = bool(os.environ.get(CACHE_ENV))
    if path is None:
        path = os.environ.get(CACHE_ENV) or default_numba_cache_dir()
    folder = Path(path).expanduser()
    os.environ[CACHE_ENV] = str(folder)
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None:
        numba_config.reload_config()
    if not user_set and "librosa.util.utils" in sys.modules:
        log.warning(
            "librosa was imported before steerlit.metrics with no NUMBA_CACHE_DIR set, so its numba functions "
            "use librosa's __pycache__, which concurrent processes can corrupt (numba issue #10128): import "
            "steerlit.metrics first or set NUMBA_CACHE_DIR"
        )
    return folder


def numba_cache_dir() -> Path:
    """The numba cache folder in use (configuring it first if nothing has)."""
    current = os.environ.get(CACHE_ENV)
    return Path(current) if current else configure_numba_cache()


def register_warmup(warmup: Callable[[], object]) -> Callable[[], object]:
    """Add a no-argument function that exercises a metric's numba paths (run by every warm-up)."""
    _WARMUPS.append(warmup)
    return warmup


def warmup_clip() -> tuple[np.ndarray, int]:
    """A short deterministic clip for warm-ups: 3 s of noise clicks at 120 BPM, float32 ``(66150,)`` at 22050 Hz."""
    sr = 22050
    rng = np.random.default_rng(0)
    audio = np.zeros(3 * sr, np.float32)
    burst = (rng.standard_normal(1000) * np.exp(-np.arange(1000) / 200.0)).astype(np.float32)
    for start in range(0, audio.size - burst.size, sr // 2):
        audio[start : start + burst.size] += 0.5 * burst
    return audio, sr


def import_librosa() -> ModuleType:
    """librosa, once this process's numba functions are compiled or loaded under the cache lock."""
    ensure_numba_ready()
    import librosa  # deferred: librosa (heavy, and its numba functions must be set up first)

    return librosa


def ensure_numba_ready() -> None:
    """Warm this process's numba functions once (under the cache lock); then a no-op."""
    folder = numba_cache_dir()
    if _STATE.ready_dir == str(folder):
        return
    with _THREAD_LOCK:
        if _STATE.ready_dir == str(folder) or _STATE.warming:
            return
        _prepare(folder, recheck=False)


def warm_metrics(*, recheck: bool = False) -> Path:
    """Compile (or load) every numba function steerlit's metrics use, in this process, under the cache lock.

    Call it once in the main process before DDP ranks, sweep agents or metric workers (``ClipMeasurer``) start,
    so that they all load one finished, checked cache instead of compiling at once. A cache whose files changed
    since its last check (or any cache, with ``recheck=True``) is first warmed up in a short child process; if
    that child dies, the folder is wiped and rebuilt. Returns the cache folder.
    """
    folder = numba_cache_dir()
    with _THREAD_LOCK:
        _prepare(folder, recheck=recheck)
    return folder


def _prepare(folder: Path, *, recheck: bool) -> None:
    """Warm this process from ``folder``: load a checked cache under a shared lock, else work under the exclusive one."""
    in_check_child = os.environ.get(LOCK_HELD_ENV) == str(folder)
    if not (recheck or in_check_child):
        with _cache_lock(folder, exclusive=False):
            if _marker_matches(folder):
                if _STATE.ready_dir != str(folder):
                    _warm_here(folder)
                if _marker_matches(folder):
                    return
                log.warning(
                    "numba compiled new code into %s under a shared lock; it is checked again", folder
                )
    with _cache_lock(folder, exclusive=True):
        if not in_check_child and (recheck or not _marker_matches(folder)) and _has_cache_files(folder):
            _check_in_child(folder)
        if _STATE.ready_dir != str(folder):
            _warm_here(folder)
        if not in_check_child:
            _write_marker(folder)


@contextlib.contextmanager
def _cache_lock(folder: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold ``folder``'s lock file (a no-op in a check child: its parent holds the lock)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.environ.get(LOCK_HELD_ENV) == str(folder):
        yield
        return
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with open(folder / LOCK_FILE, "a+b") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that compiles numba functions into %s", folder)
            fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _warm_here(folder: Path) -> None:
    """Import librosa's numba modules and run every registered warm-up in this process."""
    _STATE.warming = True
    try:
        import librosa.beat  # noqa: F401  # deferred: librosa (its import compiles or loads numba functions)

        for warmup in _WARMUPS:
            warmup()
    finally:
        _STATE.warming = False
    _STATE.ready_dir = str(folder)


def _file_stats(root: Path, pattern: str, skip: tuple[str, ...] = ()) -> dict[str, list[int]]:
    out = {}
    for path in sorted(root.rglob(pattern)):
        if path.is_file() and path.name not in skip and ".tmp." not in path.name:
            st = path.stat()
            out[str(path.relative_to(root))] = [st.st_size, st.st_mtime_ns]
    return out


def _cache_state(folder: Path) -> dict:
    """What a check vouches for: the cache files, librosa's sources (numba's staleness key), the warm-ups run
    and the versions."""
    spec = importlib.util.find_spec("librosa")
    sources = {}
    for location in (spec.submodule_search_locations or []) if spec else []:
        sources.update(_file_stats(Path(location), "*.py"))
    return {
        "python": sys.version,
        "numba": default_numba_cache_dir().name,
        "warmups": sorted(f"{w.__module__}.{w.__qualname__}" for w in _WARMUPS),
        "librosa_sources": sources,
        "cache_files": _file_stats(folder, "*", skip=(LOCK_FILE, MARKER_FILE)),
    }


def _has_cache_files(folder: Path) -> bool:
    return bool(_file_stats(folder, "*", skip=(LOCK_FILE, MARKER_FILE)))


def _marker_matches(folder: Path) -> bool:
    try:
        recorded = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return recorded == _cache_state(folder)


def _write_marker(folder: Path) -> None:
    atomic_write_json(folder / MARKER_FILE, _cache_state(folder), indent=None)


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return f"no result after {CHECK_TIMEOUT_S:.0f} s"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _warm_in_child(folder: Path) -> tuple[int | None, str]:
    """Warm up in a fresh interpreter using ``folder``: ``(returncode or None on time-out, output tail)``."""
    env = dict(os.environ)
    env.update({CACHE_ENV: str(folder), LOCK_HELD_ENV: str(folder), "PYTHONFAULTHANDLER": "1"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHECK_CODE],
            env=env,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        return None, str(exc.stderr or "")[-2000:]
    return done.returncode, (done.stdout + done.stderr)[-2000:]


def _wipe(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _check_in_child(folder: Path) -> None:
    """With the exclusive lock held: warm up in a child; a cache that kills it is wiped and rebuilt."""
    returncode, _ = _warm_in_child(folder)
    if returncode == 0:
        return
    log.warning(
        "numba cache %s is damaged (a warm-up process died with %s): wiping it and rebuilding it",
        folder,
        _describe_exit(returncode),
    )
    _wipe(folder)
    returncode, tail = _warm_in_child(folder)
    if returncode != 0:
        raise RuntimeError(
            f"warming up the metrics' numba functions failed ({_describe_exit(returncode)}) even in the freshly "
            f"wiped cache folder {folder}. Check that `python -c 'import librosa.beat'` works, or set "
            f"NUMBA_CACHE_DIR to another writable folder. Last output of the warm-up process:\n{tail}"
        )


configure_numba_cache()
