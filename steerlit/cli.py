"""``steerlit`` command line.

Every subcommand takes OmegaConf dotlist overrides (``steer.alphas=[-2,0,2] steer.layers=[6]``) and
``experiment=NAME`` (a file in ``configs/experiment/``). Bad configs fail before any model loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EPILOG = """examples:
  steerlit run                                   # the whole study on the default config
  steerlit run experiment=alpha_sweep_tempo steer.alphas=[-8,0,8]
  steerlit run model=facebook/musicgen-small trainer=gpu   # needs the weights locally
  steerlit config experiment=strategy_tempo      # print the resolved config
  steerlit extract run_name=myrun                # activations only; then: steerlit fit --run runs/myrun
  steerlit steer --run runs/myrun steer.alphas=[-4,0,4]
  steerlit generate "a lo-fi hip hop beat" --out beat.wav --directions runs/myrun/tempo/directions.safetensors \\
      --method diffmean --layer 2 --alpha 4
  steerlit sweep configs/sweep/alpha_layer_grid.yaml
  steerlit sites tiny
"""


def _compose(args):
    from steerlit.config import compose

    return compose(args.overrides, config_path=args.config)


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="config overrides key=value (dotlist), experiment=NAME")
    p.add_argument("--config", help="a YAML file merged after the defaults and the experiment")


def cmd_run(args) -> int:
    from steerlit.study.run import run_main

    run_main(_compose(args))
    return 0


def cmd_config(args) -> int:
    from steerlit.config import to_yaml

    print(to_yaml(_compose(args)), end="")
    return 0


def cmd_extract(args) -> int:
    from steerlit.config import check_layers
    from steerlit.study.run import limited_probe_set, load_adapter, model_num_layers, prepare_run

    cfg = _compose(args)
    check_layers(cfg, model_num_layers(cfg))
    run = prepare_run(cfg)
    adapter = load_adapter(cfg)
    from steerlit.study.run import extract_activations_only

    for concept in cfg.probe.concepts:
        name = limited_probe_set(concept, None, cfg.probe.form).name
        extract_activations_only(cfg, adapter, concept, run.root / name)
    print(run.root)
    return 0


def _run_cfg(args):
    """Config of an existing run folder, with new overrides on top."""
    from omegaconf import OmegaConf

    from steerlit.config import compose

    run = Path(args.run)
    if not (run / "config.yaml").exists():
        raise SystemExit(
            f"error: {run} has no config.yaml; pass a folder made by `steerlit run` or `steerlit extract`."
        )
    cfg = compose(args.overrides, config_path=run / "config.yaml")
    OmegaConf.update(cfg, "output_dir", str(run.parent))
    OmegaConf.update(cfg, "run_name", run.name)
    return cfg, run


def cmd_fit(args) -> int:
    from steerlit.study.run import fit_concept, limited_probe_set

    cfg, run = _run_cfg(args)
    for concept in cfg.probe.concepts:
        print(fit_concept(cfg, run / limited_probe_set(concept, None, cfg.probe.form).name))
    return 0


def cmd_steer(args) -> int:
    from steerlit.callbacks.steered_generation import print_summary
    from steerlit.config import check_layers
    from steerlit.directions.io import load_directions
    from steerlit.study.run import limited_probe_set, load_adapter, make_callback

    cfg, run = _run_cfg(args)
    adapter = load_adapter(cfg)
    check_layers(cfg, adapter.num_layers)
    directions = {}
    for concept in cfg.probe.concepts:
        name = limited_probe_set(concept, None, cfg.probe.form).name
        directions[name] = load_directions(run / name / "directions.safetensors", adapter)
    print_summary(make_callback(cfg, adapter, directions, run, list(directions)).evaluate(stage="final"))
    return 0


def cmd_generate(args) -> int:
    import soundfile as sf

    from steerlit.engines.hf import generate
    from steerlit.study.run import load_adapter

    cfg = _compose(args)
    adapter = load_adapter(cfg)
    steering = None
    if args.directions:
        from steerlit.directions.io import load_directions
        from steerlit.intervene.injection import inject
        from steerlit.intervene.steer import Intervention

        ds = load_directions(args.directions, adapter)
        layer = args.layer if args.layer is not None else adapter.num_layers // 2
        vectors = inject(args.strategy, ds.for_method(args.method), [layer], adapter.num_layers)
        steering = [
            Intervention(
                vectors,
                args.alpha,
                operator=cfg.steer.operator,
                schedule=cfg.steer.schedule,
                half=cfg.steer.half,
            )
        ]
    out = generate(
        adapter,
        [args.prompt],
        max_new_tokens=adapter.seconds_to_steps(args.seconds or cfg.steer.seconds),
        guidance_scale=cfg.steer.guidance_scale,
        seeds=[args.seed],
        temperature=cfg.steer.temperature,
        top_k=cfg.steer.top_k,
        steering=steering,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sf.write(args.out, out.audio[0].numpy(), out.sample_rate)
    print(f"wrote {args.out} ({out.audio.shape[-1] / out.sample_rate:.2f} s at {out.sample_rate} Hz)")
    return 0


def cmd_sweep(args) -> int:
    from steerlit.sweeps.local import run_sweep_cli

    return run_sweep_cli(args.sweep_file, args.overrides, workers=args.workers)


def cmd_sites(args) -> int:
    from steerlit.models.loading import load_model

    adapter = load_model(args.model)
    for key, value in adapter.describe().items():
        print(f"{key}: {value}")
    for kind, doc in adapter.site_kinds.items():
        print(f"{kind}.0 .. {kind}.{adapter.num_layers - 1}: {doc}")
    return 0


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
        _add_overrides(p)
        p.set_defaults(fn=fn)
    p = sub.add_parser("generate", help="steer one prompt into a wav file for quick listening")
    p.add_argument("prompt")
    p.add_argument("--out", required=True, help="output .wav path")
    p.add_argument("--directions", help="a directions.safetensors file (omit for an unsteered clip)")
    p.add_argument("--method", default="diffmean")
    p.add_argument("--layer", type=int, help="source layer (default: the middle layer)")
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--strategy", default="one_to_all", choices=["one_to_all", "one_to_one"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float)
    _add_overrides(p)
    p.set_defaults(fn=cmd_generate)
    p = sub.add_parser("sweep", help="run a W&B sweep definition (online: agents per GPU; offline: locally)")
    p.add_argument("sweep_file")
    p.add_argument("--workers", type=int, help="parallel workers (default: one per visible device)")
    p.add_argument("overrides", nargs="*", help="config overrides applied to every point")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("sites", help="describe a model and list its sites")
    p.add_argument("model", nargs="?", default="testbed")
    p.set_defaults(fn=cmd_sites)
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
    from steerlit.config import ConfigError
    from steerlit.models.loading import ModelLoadError

    try:
        return args.fn(args)
    except (ConfigError, ModelLoadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
