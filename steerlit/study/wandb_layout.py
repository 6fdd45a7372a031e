"""The W&B layout of an evaluation, built for comparing clips across α.

For every (concept, method, layer, strategy) group of a grid, under ``steer/<stage>/<concept>/<method>/L<layer>/
<strategy>/``:

* ``pivot``: a ``wandb.Table`` with one row per prompt and seed and one audio column per α (``α=-1``, ``α=0``,
  ...), each beside the clip's measured attribute (``bpm α=-1``, ...): listen across α along a row. The α = 0
  column holds the unsteered reference of the same prompt and seed when the group has no α = 0 row of its own;
* ``audio``: the same clips as a media panel, with readable captions (``<concept>_<method>_L<layer>_<strategy>_
  a<alpha>_p<prompt>_s<seed> · bpm=121.3 · "<prompt>"``).

The first ``logger.audio_prompts_per_group`` prompts of each group get audio, each at every α and seed, so every
group (every concept, every method, probes included) is heard over its whole α range.

The joined per-layer comparison goes under ``steer/<stage>/<concept>/layer_comparison/{table,plot}``
(:func:`layer_comparison_layout`). Also here: the run folder's artifacts (:func:`log_run_artifacts`: each concept's activation index, directions
and probe weights, with their lineage extract → fit → steer) and the listening report (:func:`log_report`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

from steerlit.study.layout import EvaluationPaths, RunLayout
from steerlit.study.records import GridResult
from steerlit.study.report import REPORT_NAME, alpha_label, clip_name
from steerlit.study.settings import LoggerSettings

Group = tuple[str, str, str, str]  # (concept, method, layer, strategy), as strings


def group_of(result: GridResult) -> Group:
    return (str(result.concept), str(result.method), str(result.layer), str(result.strategy))


def group_key(stage: str, group: Group) -> str:
    """``steer/<stage>/<concept>/<method>/L<layer>/<strategy>``."""
    concept, method, layer, strategy = group
    return f"steer/{stage}/{concept}/{method}/L{layer}/{strategy}"


def is_reference(result: GridResult) -> bool:
    return result.concept is None


def measured(result: GridResult, attribute: str | None) -> float | None:
    value = result.measures.get(attribute) if attribute else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def caption(result: GridResult, attribute: str | None) -> str:
    """``<readable clip name> · <attribute>=<value> · "<prompt>"``."""
    value = measured(result, attribute)
    shown = f" · {attribute}={value:.1f}" if value is not None else ""
    return f'{clip_name(result.to_row())}{shown} · "{result.prompt}"'


def steered_groups(results: Sequence[GridResult]) -> dict[Group, list[GridResult]]:
    """The steered clips by group (single-term rows), in the order of the grid."""
    groups: dict[Group, list[GridResult]] = defaultdict(list)
    for r in results:
        if not is_reference(r) and r.n_terms == 1:
            groups[group_of(r)].append(r)
    return dict(groups)


def pivot_cells(
    group: Sequence[GridResult], references: Sequence[GridResult], n_prompts: int
) -> tuple[list[float], dict[tuple[int, int], dict[float, GridResult]]]:
    """(the α values, ``{(prompt_index, seed): {α: clip}}``) for the group's first ``n_prompts`` prompts; the
    α = 0 cell falls back to the prompt's reference clip."""
    prompts = sorted({r.prompt_index for r in group})[: max(n_prompts, 0)]
    cells: dict[tuple[int, int], dict[float, GridResult]] = defaultdict(dict)
    for r in group:
        if r.prompt_index in prompts:
            cells[(r.prompt_index, r.seed)][float(r.alpha)] = r
    for ref in references:
        if (ref.prompt_index, ref.seed) in cells:
            cells[(ref.prompt_index, ref.seed)].setdefault(0.0, ref)
    alphas = sorted({a for row in cells.values() for a in row})
    return alphas, dict(sorted(cells.items()))


def group_media(
    group: Sequence[GridResult],
    references: Sequence[GridResult],
    attribute: str | None,
    paths: EvaluationPaths,
    n_prompts: int,
):
    """(the pivot ``wandb.Table``, the list of its ``wandb.Audio`` clips) of one group."""
    import wandb  # deferred: wandb

    alphas, cells = pivot_cells(group, references, n_prompts)
    columns = ["prompt", "prompt_index", "seed"]
    for a in alphas:
        columns += [f"α={alpha_label(a)}", f"{attribute or 'value'} α={alpha_label(a)}"]
    table, clips = wandb.Table(columns=columns), []
    for (prompt_index, seed), row in cells.items():
        prompt = next(iter(row.values())).prompt
        data: list = [prompt, prompt_index, seed]
        for a in alphas:
            clip = row.get(a)
            audio = None
            if clip is not None:
                audio = wandb.Audio(str(paths.wav(clip.key)), caption=caption(clip, attribute))
                clips.append(audio)
            data += [audio, measured(clip, attribute) if clip is not None else None]
        table.add_data(*data)
    return table, clips


def audio_layout(
    stage: str,
    results: Sequence[GridResult],
    paths: EvaluationPaths,
    settings: LoggerSettings,
    attributes: Mapping[str, str],
) -> dict:
    """``{<group key>/pivot: Table, <group key>/audio: [Audio]}`` for every group (empty without audio)."""
    if not settings.log_audio or settings.audio_prompts_per_group <= 0:
        return {}
    references = [r for r in results if is_reference(r)]
    data = {}
    for group, rows in steered_groups(results).items():
        table, clips = group_media(
            rows, references, attributes.get(group[0]), paths, settings.audio_prompts_per_group
        )
        data[f"{group_key(stage, group)}/pivot"] = table
        data[f"{group_key(stage, group)}/audio"] = clips
    return data


def layer_comparison_layout(stage: str, rows: Sequence[Mapping], layout: RunLayout) -> dict:
    """``{steer/<stage>/<concept>/layer_comparison/table: Table, .../plot: Image}`` per concept of the joined
    per-layer table (:mod:`steerlit.study.layer_comparison`)."""
    import wandb  # deferred: wandb

    data = {}
    for concept in sorted({r["concept"] for r in rows}):
        mine = [r for r in rows if r["concept"] == concept]
        columns = list(mine[0])
        key = f"steer/{stage}/{concept}/layer_comparison"
        data[f"{key}/table"] = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in mine])
        plot = layout.layer_comparison_plot(concept)
        if plot.is_file():
            data[f"{key}/plot"] = wandb.Image(str(plot))
    return data


def artifact_name(concept: str, kind: str) -> str:
    """A valid W&B artifact name, e.g. ``testbed_tempo-directions``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in concept)
    return f"{safe}-{kind}"


# A concept's artifacts, in the order they are made.
ArtifactKind = Literal["activations", "directions", "probes"]
ARTIFACT_KINDS: tuple[ArtifactKind, ...] = get_args(ArtifactKind)


def log_run_artifacts(
    run, layout: RunLayout, concepts: Sequence[str], kinds: Sequence[ArtifactKind] = ARTIFACT_KINDS
) -> list[str]:
    """Log each concept's ``activations`` (the cache index), ``directions`` (file + comparison table) and
    ``probes`` (probe weights), those of ``kinds``, as W&B Artifacts; returns their names.

    Lineage extract → fit → steer: each artifact's metadata names its inputs (``inputs``), and with a server
    the consumers ``use_artifact`` their inputs (offline runs cannot: wandb refuses ``use_artifact`` offline)."""
    import wandb  # deferred: wandb

    names = []
    for concept in concepts:
        acts, directions = artifact_name(concept, "activations"), artifact_name(concept, "directions")
        files = {
            acts: ("activations", [layout.activations(concept) / "index.json"], []),
            directions: (
                "directions",
                [layout.directions(concept), layout.concept_plots(concept) / "direction_comparison.csv"],
                [acts],
            ),
            artifact_name(concept, "probes"): (
                "probes",
                sorted(layout.probes(concept).glob("*.safetensors")),
                [acts],
            ),
        }
        for name, (kind, paths, inputs) in files.items():
            existing = [p for p in paths if p.is_file()]
            if kind not in kinds or not existing:
                continue
            artifact = wandb.Artifact(
                name, type=kind, metadata={"concept": concept, "stage": kind, "inputs": inputs}
            )
            for p in existing:
                artifact.add_file(str(p))
            run.log_artifact(artifact)
            names.append(name)
    return names


def use_artifacts(run, names: Sequence[str]) -> None:
    """Mark ``names`` (``name`` or ``name:alias``) as inputs of ``run`` (with a server; a no-op offline)."""
    if getattr(run, "offline", False) or getattr(getattr(run, "settings", None), "mode", "") == "offline":
        return
    for name in names:
        run.use_artifact(name if ":" in name else f"{name}:latest")


def log_report(run, root: Path, inputs: Sequence[str] = ()) -> None:
    """Log ``root/report.html`` as ``report`` (``wandb.Html``; its relative audio paths do not resolve inside
    W&B, so the page's players are silent there) and as a ``report`` artifact with the clips and thumbnails it
    links to, which plays when downloaded (``wandb artifact get``)."""
    import wandb  # deferred: wandb

    report = Path(root) / REPORT_NAME
    run.log({"report": wandb.Html(report.read_text(encoding="utf-8"), inject=False)})
    artifact = wandb.Artifact(
        artifact_name(Path(root).name, "report"), type="report", metadata={"inputs": list(inputs)}
    )
    artifact.add_file(str(report))
    for folder in ("samples", "report_assets", "plots"):
        if (Path(root) / folder).is_dir():
            artifact.add_dir(str(Path(root) / folder), name=folder)
    layout = RunLayout(Path(root))
    for path in (*layout.tables, layout.layer_comparison_csv, layout.config):
        if path.is_file():
            artifact.add_file(str(path))
    run.log_artifact(artifact)
