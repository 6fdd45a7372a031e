"""Re-steering a finished run without losing a result: ``steerlit steer --run R [--out NEW]`` writes its grid
into a folder of its own that points back to R's directions (``source.json``); R's tables are never overwritten."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from steerlit.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from steerlit.study.layout import RunLayout
from steerlit.study.settings import ConfigError, StudySettings, to_yaml

SOURCE_FILE = "source.json"  # a re-steered run folder: its source run and directions hashes


def finished_tables(root: Path) -> list[str]:
    """The names of the finished grid's tables in ``root`` (:attr:`RunLayout.tables`: never overwritten)."""
    return [path.name for path in RunLayout(Path(root)).tables if path.exists()]


def steer_target(source: Path, out: str | None) -> Path:
    """Where ``steer --run source`` writes: ``--out`` (a folder without finished tables); else the run itself
    while it has no finished tables (extract → fit → steer, or resuming an interrupted grid); else a new sibling
    ``<run>-steer-<timestamp>``, so that re-steering never overwrites a result."""
    if out is not None:
        target = Path(out)
        if finished_tables(target):
            raise ConfigError(
                f"--out {target} already holds a finished grid ({', '.join(finished_tables(target))}); "
                "pass a new folder to --out."
            )
        return target
    if not finished_tables(source):
        return source
    target = source.parent / f"{source.name}-steer-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"{source} already has its tables; writing this grid to {target} (choose the folder with --out)")
    return target


def link_source_run(settings: StudySettings, source: RunLayout, concepts: list[str]) -> RunLayout:
    """Make the new run folder of a re-steer: ``config.yaml`` (the new settings, headed by the source run),
    each concept's directions copied from the source, and ``source.json`` (the source run and the sha256 of
    every directions file), so the folder can be steered again on its own."""
    target = RunLayout.create(settings.output_dir, settings.run_name)
    origin = str(source.root.resolve())
    atomic_write_text(
        target.config, f"# re-steered from source_run: {origin} (see source.json)\n" + to_yaml(settings)
    )
    files = {}
    for concept in concepts:
        data = source.directions(concept).read_bytes()
        atomic_write_bytes(target.directions(concept), data)
        files[concept] = {
            "path": str(source.directions(concept).resolve()),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    atomic_write_json(target.root / SOURCE_FILE, {"source_run": origin, "directions": files})
    return target
