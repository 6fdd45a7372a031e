"""``steerlit`` command line: thin glue from arguments to the study's stages and typed settings.

Every subcommand takes OmegaConf dotlist overrides (``steer.alphas=[-2,0,2] steer.layers=[6]``) and
``experiment=NAME`` (a file in ``configs/experiment/``). Bad configs fail before any model loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import soundfile as sf

from steerlit.callbacks.steered_generation import SteeredGenerationCallback
from steerlit.config import ConfigError, check_layers, compose, to_yaml
from steerlit.directions.cache import CacheError
from steerlit.directions.fit import METHODS
from steerlit.directions.io import load_directions
from steerlit.engines.grid import GridRow, SteerTerm, row_steering
from steerlit.engines.select import generate
from steerlit.engines.settings import GenerationSettings
from steerlit.files import atomic_path
from steerlit.intervene.injection import STRATEGIES
from steerlit.models.loading import ModelLoadError, load_adapter, load_model
from steerlit.study import stages
from steerlit.study.estimate import estimate_for_study, format_estimate
from steerlit.study.evaluation import Evaluation
from steerlit.study.jobs import job_logger, log_extracted, log_fitted, log_generated, use_directions
from steerlit.study.launch import (
    RUN_DIR_ENV,
    global_rank,
    handle_stop_signals,
    restore_signal_handlers,
    resume_hint,
    stop_exit_code,
)
from steerlit.study.layout import RunLayout
from steerlit.study.patch_run import format_patch_outputs, run_patch_study
from steerlit.study.report import write_report
from steerlit.study.resteer import link_source_run, steer_target
from steerlit.study.run import run_study, start_run
from steerlit.study.settings import check_clip_length, load_run_config
from steerlit.study.tables import format_summary
from steerlit.sweeps.commands import run_sweep_cli

EPILOG = """examples:
  steerlit run                                   # the whole study on the default config
  steerlit run experiment=alpha_sweep_tempo steer.alphas=[-8,0,8]
  steerlit run model=musicgen_small               # MusicGen study: probe sets, paper grid, trainer=gpu, fp16
  steerlit run model=musicgen_small trainer=cpu model.hf_cache_dir=DIR   # weights: `hf download facebook/musicgen-small`
  steerlit config experiment=strategy_tempo      # print the resolved config
  steerlit extract run_name=myrun                # activations only; then: steerlit fit --run runs/myrun
  steerlit steer --run runs/myrun steer.alphas=[-4,0,4]
  steerlit steer --run runs/myrun --out runs/myrun-10s steer.seconds=10   # a new folder; myrun stays as it is
  steerlit generate "a lo-fi hip hop beat" --out beat.wav --directions runs/myrun/tempo/directions.safetensors \\
      --method diffmean --layer 2 --alpha 4
  steerlit sweep configs/sweep/alpha_layer_grid.yaml
  steerlit sites tiny
  steerlit patch experiment=patching_testbed     # patching maps, head-probe maps, gated vs constant steering
"""


def _compose(args):
    return compose(args.overrides, config_path=args.config)


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="config overrides key=value (dotlist), experiment=NAME")
    p.add_argument("--config", help="a YAML file merged after the defaults and the experiment")


def cmd_run(args) -> int:
    settings = _compose(args)
    if args.dry_run:  # before any model loads
        print(format_estimate(estimate_for_study(settings)))
        return 0
    run_study(settings, probe_callbacks=SteeredGenerationCallback.for_probes)
    return 0


def cmd_config(args) -> int:
    print(to_yaml(_compose(args)), end="")
    return 0


def cmd_extract(args) -> int:
    settings = _compose(args)
    stages.check_model_settings(settings)
    layout = start_run(settings)
    adapter = load_adapter(settings.model)
    with job_logger(settings, layout, "extract") as logger:
        stage = (settings.extract, settings.probe, settings.trainer)
        for concept in settings.probe.concepts:
            probe_set = stages.load_concept(concept, settings.probe)
            stages.extract(layout, probe_set, adapter, *stage, model=settings.model)
        log_extracted(logger, layout, _concept_names(settings.probe))
    print(layout.root)
    return 0


def _run_settings(args, root: Path | None = None):
    """Settings of an existing run folder, with new overrides on top, placed in ``root`` (default: the run
    folder itself), and the source run's layout."""
    run = Path(args.run)
    layout = RunLayout(run)
    if not layout.config.exists():
        raise SystemExit(
            f"error: {run} has no config.yaml; pass a folder made by `steerlit run` or `steerlit extract`."
        )
    load_run_config(layout.config)  # a truncated config.yaml: one message naming the file and the fix
    settings = compose(args.overrides, config_path=layout.config)
    root = root or run
    return dataclasses.replace(settings, output_dir=str(root.parent), run_name=root.name), layout


def _concept_names(probe) -> list[str]:
    return [stages.load_concept(c, probe).name for c in probe.concepts]


def cmd_fit(args) -> int:
    settings, layout = _run_settings(args)
    concepts = _concept_names(settings.probe)
    with job_logger(settings, layout, "fit") as logger:
        run = logger.experiment if logger is not None else None
        tracking = {"wandb_run": run, "logger": logger}  # the probes' training curves go to the fit run
        for name in concepts:
            print(stages.fit(layout, name, settings.fit, settings.trainer, seed=settings.seed, **tracking))
        log_fitted(logger, layout, concepts)
    return 0


def cmd_steer(args) -> int:
    source = Path(args.run)
    target = steer_target(source, args.out)
    settings, layout = _run_settings(args, target)
    concepts = _concept_names(settings.probe)
    if target.resolve() != source.resolve():
        layout = link_source_run(settings, layout, concepts)
    adapter = load_adapter(settings.model)
    check_layers(settings, adapter.num_layers)
    check_clip_length("steer.seconds", settings.steer.seconds, adapter.frame_rate)
    directions = stages.load_concept_directions(layout, concepts, adapter, settings.steer)
    evaluation = Evaluation(
        adapter, settings.metrics, logger=settings.logger, model=settings.model, trainer=settings.trainer
    )
    plan = stages.grid_plan(settings.steer, settings.probe, list(directions), adapter.num_layers)
    with evaluation, job_logger(settings, layout, "steer") as logger:
        run, inputs = (logger.experiment if logger is not None else None), use_directions(logger, concepts)
        summary = evaluation.run(plan, directions, layout.evaluation(), wandb_run=run, inputs=inputs)
    print(format_summary(summary), flush=True)
    print(layout.root)
    return 0


def generate_clip(adapter, prompt: str, generation: GenerationSettings, seed: int, steering=None):
    """One clip through the engines' one generate entry point (the engine is ``generation.engine``)."""
    return generate(adapter, [prompt], generation, seeds=[seed], steering=[steering] if steering else None)


def audio_format(path: Path) -> str:
    """The soundfile format an ``--out`` file is written in: its suffix, upper-case (no suffix: WAV)."""
    return (path.suffix[1:] or "wav").upper()


def check_generate_args(args) -> None:
    """Refuse, before any model loads, an empty prompt and an ``--out`` that is a folder, an existing file or
    not an audio format soundfile writes."""
    if not args.prompt.strip():
        raise ConfigError(
            'generate needs a prompt, e.g. steerlit generate "a lo-fi hip hop beat" --out beat.wav.'
        )
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name, e.g. --out {out / 'clip.wav'}.")
    if out.exists():
        raise ConfigError(
            f"--out {out} exists; remove it or choose another file (generate never overwrites)."
        )
    if audio_format(out) not in sf.available_formats():
        raise ConfigError(f"--out {out}: {out.suffix!r} is not an audio format; use .wav or .flac.")


def cmd_generate(args) -> int:
    check_generate_args(args)
    settings = _compose(args)
    generation = settings.steer.generation()
    if args.seconds is not None:
        generation = dataclasses.replace(generation, seconds=args.seconds)
    adapter = load_adapter(settings.model)
    check_clip_length(
        "--seconds" if args.seconds is not None else "steer.seconds", generation.seconds, adapter.frame_rate
    )
    steering = None
    if args.directions:
        steer = settings.steer
        layer = args.layer if args.layer is not None else adapter.num_layers // 2
        term = SteerTerm(
            "cli", args.method, layer, args.alpha, args.strategy, steer.operator, steer.schedule, steer.half
        )
        row = GridRow(args.prompt, args.seed, (term,))
        steering = row_steering(
            row,
            load_directions(args.directions, adapter, allow_other_model=steer.allow_other_model),
            adapter.num_layers,
        )
    out = generate_clip(adapter, args.prompt, generation, args.seed, steering)
    path = Path(args.out)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), out.audio[0].numpy(), out.sample_rate, format=audio_format(path))
    # One W&B run beside the clip (``<folder of --out>/wandb``), named after it, with the clip's settings.
    named = dataclasses.replace(settings.logger, name=settings.logger.name or path.stem)
    clip = {k: v for k, v in vars(args).items() if k not in ("fn", "overrides", "config", "command")}
    with job_logger(
        dataclasses.replace(settings, logger=named), RunLayout(path.parent), "generate", {"generate": clip}
    ) as logger:
        log_generated(logger, path, args.prompt)
    print(f"wrote {args.out} ({out.audio.shape[-1] / out.sample_rate:.2f} s at {out.sample_rate} Hz)")
    return 0


def cmd_sweep(args) -> int:
    return run_sweep_cli(args.sweep_file, args.overrides, workers=args.workers)


def cmd_report(args) -> int:
    print(f"wrote {write_report(Path(args.run), thumbnails=not args.no_thumbnails)}")
    return 0


def cmd_sites(args) -> int:
    adapter = load_model(args.model)
    for key, value in adapter.describe().items():
        print(f"{key}: {value}")
    for kind, doc in adapter.site_kinds.items():
        print(f"{kind}.0 .. {kind}.{adapter.num_layers - 1}: {doc}")
    return 0


def cmd_patch(args) -> int:
    settings = _compose(args)
    layout, summary = run_patch_study(settings)  # validates every patch.* setting before any work
    print(format_patch_outputs(summary, layout.root))
    print(layout.root)
    return 0


def add_patch_parser(sub) -> None:
    """The ``patch`` subcommand: the patching study of ``patch.*`` (configs/experiment/patching_*.yaml)."""
    p = sub.add_parser(
        "patch",
        help="activation-patching maps (layers x decoding steps), head-probe maps and probe-gated steering",
        description="Interchange activation patching of matched prompt pairs (source twin into target twin) "
        "at every patch.site_kinds site x patch.windows step window, per-head probe maps, and constant vs "
        "probe-gated steering, into a new run folder (CSV + PNG; W&B job type 'patch'). "
        "E.g. steerlit patch experiment=patching_testbed; steerlit patch experiment=patching_musicgen.",
    )
    _add_overrides(p)
    p.set_defaults(fn=cmd_patch)


def add_generate_parser(sub) -> None:
    """The ``generate`` subcommand's arguments (choices from the Literal types that own them)."""
    p = sub.add_parser("generate", help="steer one prompt into a wav file for quick listening")
    p.add_argument("prompt")
    p.add_argument("--out", required=True, help="output .wav path")
    p.add_argument("--directions", help="a directions.safetensors file (omit for an unsteered clip)")
    p.add_argument(
        "--method", default="diffmean", choices=METHODS, help=f"direction method: {', '.join(METHODS)}"
    )
    p.add_argument("--layer", type=int, help="source layer (default: the middle layer)")
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument(
        "--strategy",
        default="one_to_all",
        choices=STRATEGIES,
        help=f"injection strategy: {', '.join(STRATEGIES)} (default: one_to_all)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, help="clip length (default: steer.seconds)")
    _add_overrides(p)
    p.set_defaults(fn=cmd_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steerlit",
        description="Direction-based steering of text-to-music "
        "models: contrastive probe sets -> activations -> difference-of-means and "
        "probe directions -> steered generation -> tempo/brightness metrics -> W&B.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="the main job: extract, fit directions, steer the grid, measure, log")
    _add_overrides(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the grid rows, decode steps and estimated time, then exit",
    )
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("config", help="print the resolved config (after experiment and overrides)")
    _add_overrides(p)
    p.set_defaults(fn=cmd_config)
    p = sub.add_parser("extract", help="cache activations of the probe sets into a new run folder")
    _add_overrides(p)
    p.set_defaults(fn=cmd_extract)
    for name, fn, text in (
        ("fit", cmd_fit, "fit directions (diff-mean, probes, baselines) on a run's cache"),
        ("steer", cmd_steer, "run the steering grid with a run's directions"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--run", required=True, help="run folder (runs/<name>)")
        if name == "steer":
            p.add_argument(
                "--out",
                help="new run folder for this grid (it reads --run's directions; --run is never changed). "
                "Default: --run itself until it has tables, then a new sibling <run>-steer-<timestamp>",
            )
        _add_overrides(p)
        p.set_defaults(fn=fn)
    add_generate_parser(sub)
    add_patch_parser(sub)
    p = sub.add_parser("sweep", help="run a W&B sweep definition (online: agents per GPU; offline: locally)")
    p.add_argument("sweep_file")
    p.add_argument("--workers", type=int, help="parallel workers (default: one per visible device)")
    p.add_argument("overrides", nargs="*", help="config overrides applied to every point")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("sites", help="describe a model and list its sites")
    p.add_argument("model", nargs="?", default="testbed")
    p.set_defaults(fn=cmd_sites)
    p = sub.add_parser(
        "report", help="(re)write a run folder's report.html: tables, plots, prompt x alpha audio grids"
    )
    p.add_argument("run", help="run folder (runs/<name>)")
    p.add_argument("--no-thumbnails", action="store_true", help="leave out the spectrogram thumbnails")
    p.set_defaults(fn=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`generate "p" --out x.wav model=tiny`): collect the stray key=value items.
    stray = [e for e in extra if "=" not in e or e.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    previous_handlers = handle_stop_signals()
    try:
        return args.fn(args)
    except (ConfigError, ModelLoadError, ValueError, CacheError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        # Lightning turns the interrupt into SystemExit(1) after shutting its ranks down.
        code = stop_exit_code()
        if code is None:
            raise
        if global_rank() == 0:
            print(f"steerlit: {resume_hint(os.environ.get(RUN_DIR_ENV))}", file=sys.stderr, flush=True)
        return code
    finally:
        restore_signal_handlers(previous_handlers)


if __name__ == "__main__":
    sys.exit(main())
