"""numba's cache for librosa: steerlit's own folder, one compiler at a time, damaged caches rebuilt.

Each scenario runs fresh interpreters (``python -c``), as DDP ranks, sweep agents and metric workers are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import steerlit
from steerlit.metrics.numba_cache import CACHE_ENV, LOCK_HELD_ENV, MARKER_FILE, default_numba_cache_dir

REPO = Path(steerlit.__file__).resolve().parents[1]
TEMPO = (
    "from steerlit.metrics.numba_cache import warmup_clip\n"
    "from steerlit.metrics.tempo import estimate_tempo\n"
    "print(estimate_tempo(*warmup_clip()).bpm)\n"
)
# The race of numba issue #10128, repeated: a fresh cache filled by PROCESSES at once, then loaded by them at once.
PROCESSES, ROUNDS = 4, 2


def env_with(cache: Path | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (CACHE_ENV, LOCK_HELD_ENV)}
    if cache is not None:
        env[CACHE_ENV] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_at_once(code: str, env: dict[str, str], n: int) -> list[tuple[int, str, str]]:
    """Start ``n`` interpreters at the same moment; ``(returncode, stdout, stderr)`` of each."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def test_steerlit_owns_the_cache_folder_unless_the_user_set_one(tmp_path):
    code = "import os, numba, steerlit.metrics\nprint(os.environ['NUMBA_CACHE_DIR'], numba.config.CACHE_DIR)"
    ((rc, out, err),) = run_at_once(code, env_with(None, STEERLIT_CACHE=str(tmp_path)), 1)
    expected = tmp_path / "numba" / default_numba_cache_dir().name
    assert rc == 0, err
    assert out.split() == [str(expected)] * 2  # numba imported first still follows
    ((rc, out, err),) = run_at_once(code, env_with(tmp_path / "mine"), 1)
    assert rc == 0 and out.split() == [str(tmp_path / "mine")] * 2, err


@pytest.fixture(scope="module")
def raced_cache(tmp_path_factory) -> tuple[Path, list[list[tuple[int, str, str]]]]:
    """One fresh cache folder that PROCESSES interpreters fill at once, ROUNDS times."""
    folder = tmp_path_factory.mktemp("numba") / "cache"
    rounds = [run_at_once(TEMPO, env_with(folder), PROCESSES) for _ in range(ROUNDS)]
    return folder, rounds


def test_many_processes_compiling_into_one_fresh_cache_never_crash(raced_cache):
    folder, rounds = raced_cache
    bpms = set()
    for runs in rounds:
        for rc, out, err in runs:
            assert rc == 0, f"exit {rc}:\n{err[-3000:]}"
            bpms.add(out.strip())
    assert len(bpms) == 1 and float(bpms.pop()) > 0
    assert (folder / MARKER_FILE).is_file()
    ((rc, out, err),) = run_at_once(TEMPO, env_with(folder), 1)  # a single process afterwards
    assert rc == 0 and out == rounds[0][0][1], err
    assert "damaged" not in "".join(e for runs in rounds for _, _, e in runs)


def swap_signatures(folder: Path) -> None:
    """Swap the beat tracker's float32 and float64 data files: an index and data from different compiles."""
    for data in sorted(folder.rglob("*beat_track_dp*.1.nbc")):
        other = data.with_name(data.name.replace(".1.nbc", ".2.nbc"))
        tmp = data.with_name("swap")
        data.rename(tmp)
        other.rename(data)
        tmp.rename(other)


def truncate_and_garble(folder: Path) -> None:
    """Cut every index file in half and fill the data files with garbage."""
    for path in folder.rglob("*.nbi"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for path in folder.rglob("*.nbc"):
        path.write_bytes(os.urandom(path.stat().st_size))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "how_it_died"), [(swap_signatures, "SIGSEGV"), (truncate_and_garble, "exit status 1")]
)
def test_a_damaged_cache_is_detected_and_rebuilt(raced_cache, tmp_path, damage, how_it_died):
    folder = tmp_path / "cache"
    shutil.copytree(raced_cache[0], folder)
    damage(folder)
    ((rc, out, err),) = run_at_once(TEMPO, env_with(folder), 1)
    assert rc == 0, err[-3000:]
    assert out == raced_cache[1][0][0][1]
    assert err.count("is damaged") == 1, err[-3000:]
    assert f"is damaged (a warm-up process died with {how_it_died}): wiping it and rebuilding it" in err
    ((rc, out, err),) = run_at_once(TEMPO, env_with(folder), 1)  # rebuilt and checked: loads quietly
    assert rc == 0 and "damaged" not in err and out == raced_cache[1][0][0][1]
