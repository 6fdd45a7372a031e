"""Compute the testbed's reference directions and ship them next to the model.

``python -m steerlit.testbed.ship_directions`` caches activations of the testbed probe sets
(``probes/testbed_tempo.yaml``, ``probes/testbed_timbre.yaml``), fits every direction method and
copies each concept's ``directions.safetensors`` to ``checkpoints/testbed/directions/<concept>.safetensors``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from steerlit.config import compose
from steerlit.models.loading import load_adapter
from steerlit.study.layout import RunLayout
from steerlit.study.stages import extract, fit, load_concept


def ship(
    model: str = "testbed", out_dir: Path | None = None, work_dir: Path = Path("runs/testbed-directions")
) -> list[Path]:
    cfg = compose(
        [
            f"model={model}",
            "probe=testbed",
            "logger=none",
            f"output_dir={work_dir.parent}",
            f"run_name={work_dir.name}",
            "trainer.enable_progress_bar=false",
        ]
    )
    adapter = load_adapter(cfg.model)
    layout = RunLayout(work_dir)
    out_dir = out_dir or Path(adapter.model.name_or_path) / "directions"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for concept in cfg.probe.concepts:
        probe_set = load_concept(concept, cfg.probe)
        extract(layout, probe_set, adapter, cfg.extract, cfg.probe, cfg.trainer)
        path = fit(layout, probe_set.name, cfg.fit, cfg.trainer, seed=cfg.seed)
        written.append(Path(shutil.copyfile(path, out_dir / f"{probe_set.name}.safetensors")))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="testbed")
    parser.add_argument("--out", type=Path, help="output folder (default: <model folder>/directions)")
    args = parser.parse_args(argv)
    for path in ship(args.model, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
