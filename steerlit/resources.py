"""Where steerlit finds its shipped files: ``configs/``, ``probes/`` and ``checkpoints/``.

The search path, first match wins (one folder per kind)::

    $STEERLIT_HOME/<kind>             a folder of your own (copy the shipped ones and edit them)
    <source checkout>/<kind>          running from a clone of the repository (editable installs too)
    <site-packages>/steerlit/_resources/<kind>
                                      a wheel or ``pip install .``: the build copies the three folders there

Finer overrides stay where they were: ``$STEERLIT_PROBES_DIR`` (probe sets) and ``$STEERLIT_CHECKPOINTS``
(shipped models). This module imports nothing of steerlit, so every layer may use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

ENV_HOME = "STEERLIT_HOME"
PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent  # the repository root when running from a checkout
INSTALLED_DIR = PACKAGE_DIR / "_resources"  # what the wheel build copies (setup.py: BuildPyWithResources)
ResourceKind = Literal["configs", "probes", "checkpoints"]
KINDS: tuple[str, ...] = get_args(ResourceKind)


def is_source_checkout(root: Path = SOURCE_ROOT) -> bool:
    """True when steerlit runs from a clone (its root has ``pyproject.toml`` next to the package)."""
    return (root / "pyproject.toml").is_file() and (root / "steerlit" / "__init__.py").is_file()


def search_path(kind: ResourceKind) -> list[Path]:
    """The folders searched for ``kind``, in order (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown resource kind {kind!r}; use one of {KINDS}.")
    paths = []
    home = os.environ.get(ENV_HOME)
    if home:
        paths.append(Path(home).expanduser() / kind)
    if is_source_checkout():
        paths.append(SOURCE_ROOT / kind)
    paths.append(INSTALLED_DIR / kind)
    return paths


def resource_dir(kind: ResourceKind) -> Path:
    """The first existing folder on :func:`search_path`; the last candidate when none exists (its absence then
    shows in the caller's error, which names the path)."""
    paths = search_path(kind)
    return next((p for p in paths if p.is_dir()), paths[-1])


__all__ = ["ENV_HOME", "KINDS", "ResourceKind", "is_source_checkout", "resource_dir", "search_path"]
