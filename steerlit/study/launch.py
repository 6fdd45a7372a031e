"""How a run's processes agree on one run folder, keep other runs out of it, and stop cleanly.

* **Ranks.** Lightning's ``ddp`` launcher starts the extra ranks by running the same command line again (with
  ``LOCAL_RANK``/``WORLD_SIZE`` set); torchrun and SLURM start every rank at once (``RANK``, ``SLURM_PROCID``).
  :func:`global_rank` reads the rank any of them gives; only rank 0 writes ``config.yaml``, tables and W&B.
* **One folder.** :func:`resolve_run_root` names the folder once: the launching process exports it in
  ``STEERLIT_RUN_DIR``, which re-run ranks inherit; ranks started together by torchrun or SLURM derive the same
  default name from the job id (``TORCHELASTIC_RUN_ID``, ``SLURM_JOB_ID``) or need ``run_name=``.
* **One run per folder.** :class:`RunLock` holds ``<run>/.lock`` (``fcntl``) for the run's lifetime.
* **Clean stops.** :func:`handle_stop_signals` turns SIGTERM and SIGINT into :class:`StopRequested` (every write
  is atomic, so any point is a safe point to stop and resume from); :func:`stop_exit_code` gives 143 / 130.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

from steerlit.study.settings import ConfigError

RUN_DIR_ENV = "STEERLIT_RUN_DIR"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
LOCK_FILE = ".lock"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def global_rank() -> int:
    """This process's rank from the launcher's variables (0 when none is set)."""
    for name in RANK_VARIABLES:
        if os.environ.get(name, "").strip().isdigit():
            return int(os.environ[name])
    return 0


def launched_together() -> bool:
    """True when an external launcher (torchrun, SLURM) started several ranks at once."""
    world = os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or "1"
    external = "TORCHELASTIC_RUN_ID" in os.environ or "SLURM_PROCID" in os.environ
    return external and world.isdigit() and int(world) > 1


def job_id() -> str | None:
    """The id every rank of an externally launched job shares (None: torchrun without ``--rdzv-id``)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        return run_id
    return os.environ.get("SLURM_JOB_ID") or None


def default_run_name(experiment: str | None) -> str:
    """``<experiment or 'run'>-<timestamp>``, or ``-job<id>`` for ranks started together."""
    prefix = experiment or "run"
    if not launched_together():
        return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    shared = job_id()
    if shared is None:
        raise ConfigError(
            "Several ranks were started together (torchrun) without a shared job id, so they cannot agree on "
            "a run folder: pass run_name=NAME (or torchrun --rdzv-id ID)."
        )
    return f"{prefix}-job{shared}"


def resolve_run_root(output_dir: str | Path, run_name: str | None, experiment: str | None = None) -> Path:
    """The run folder every rank of this run uses (not created): ``$STEERLIT_RUN_DIR`` when a launching process
    set it, else ``output_dir/run_name`` (default name: :func:`default_run_name`). Exports it for re-run ranks.

    Raises :class:`ConfigError` when ``run_name`` leaves ``output_dir`` (``../x``, an absolute path)."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and global_rank() > 0:
        return Path(inherited)
    name = run_name or default_run_name(experiment)
    base = Path(output_dir).resolve()
    root = (base / name).resolve()
    if root == base or base not in root.parents:
        raise ConfigError(
            f"run_name={name!r} points outside output_dir={str(output_dir)!r}; use a plain folder name "
            "(set output_dir= to write elsewhere)."
        )
    os.environ[RUN_DIR_ENV] = str(root)
    return root


class RunLock:
    """An exclusive ``fcntl`` lock on ``<root>/.lock``, held until :meth:`release` (or the process ends)."""

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self._fd, 64).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            raise ConfigError(
                f"{root} is in use by another run (pid {holder}); wait for it to finish, or pick another "
                "run_name=."
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class StopRequested(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived; a KeyboardInterrupt, so Lightning shuts its loops and ranks down too."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


RECEIVED: list[int] = []  # the stop signals this process received, in order


def stop_on_signal(signum: int, _frame) -> None:
    """The SIGTERM/SIGINT handler: remember the signal, raise :class:`StopRequested` once."""
    first = not RECEIVED
    RECEIVED.append(signum)
    if first:
        raise StopRequested(signum)


def handle_stop_signals() -> dict[int, object]:
    """Install :func:`stop_on_signal` for SIGTERM and SIGINT (Lightning's signal connector calls it too); returns
    the handlers it replaced, for :func:`restore_signal_handlers`."""
    return {signum: signal.signal(signum, stop_on_signal) for signum in STOP_SIGNALS}


def restore_signal_handlers(previous: dict[int, object]) -> None:
    """Put back the handlers :func:`handle_stop_signals` replaced (an in-process caller keeps its own)."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def stop_exit_code() -> int | None:
    """``128 + signal`` (143 for SIGTERM, 130 for SIGINT) after a stop signal, else None."""
    return 128 + RECEIVED[0] if RECEIVED else None


def resume_hint(root: str | Path | None) -> str:
    """The one line that says how to resume a stopped run."""
    if root is None:
        return "stopped before the run folder was created; nothing to resume."
    root = Path(root)
    return (
        f"stopped; resume with: steerlit run run_name={root.name} output_dir={root.parent} (same overrides)"
    )
