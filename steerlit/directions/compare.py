"""Per-layer comparison of direction methods.

For each (method, site): held-out accuracy and AUROC of the direction used as a 1-D classifier
(projection ``x · v``, threshold and polarity fit on the training split), cosine similarity with the
diff-mean direction of the same site, Cohen's d of the held-out projections (positive minus negative,
pooled std) and the vector norm. Written as CSV and as a PNG (metric vs layer, one line per method) to
``<run>/plots/``; :func:`log_comparison` sends both to a W&B run.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torchmetrics.functional.classification import binary_auroc

from steerlit.files import atomic_save_figure, atomic_write_csv

COLUMNS = ("method", "site", "layer", "acc", "auroc", "cos_diffmean", "cohens_d", "norm", "threshold")
PLOT_METRICS = ("acc", "auroc", "cos_diffmean", "cohens_d")
CSV_NAME, PNG_NAME = "direction_comparison.csv", "direction_comparison.png"


def fit_threshold(proj: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(threshold, polarity ±1) maximising training accuracy of ``polarity * (proj - t) > 0``.

    proj (N,), y (N,) in {0, 1}. Candidates are midpoints between sorted projections (and the ends).
    """
    p, order = torch.sort(proj.double())
    ys = y[order].double()
    cand = torch.cat([p[:1] - 1, (p[1:] + p[:-1]) / 2, p[-1:] + 1])
    # predicted positive = above threshold: correct = positives above + negatives below
    pos_above = ys.sum() - torch.cat([torch.zeros(1, dtype=torch.float64), ys.cumsum(0)])
    neg_below = torch.cat([torch.zeros(1, dtype=torch.float64), (1 - ys).cumsum(0)])
    acc_up = pos_above + neg_below
    acc_down = len(ys) - acc_up
    i_up, i_down = int(acc_up.argmax()), int(acc_down.argmax())
    if acc_up[i_up] >= acc_down[i_down]:
        return float(cand[i_up]), 1.0
    return float(cand[i_down]), -1.0


def cohens_d(proj: torch.Tensor, y: torch.Tensor) -> float:
    """(mean_pos - mean_neg) / pooled std of projections proj (N,)."""
    a, b = proj[y == 1].double(), proj[y == 0].double()
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = (((len(a) - 1) * a.var() + (len(b) - 1) * b.var()) / (len(a) + len(b) - 2)).sqrt()
    return float((a.mean() - b.mean()) / pooled.clamp_min(1e-12))


def layer_of(site: str) -> int:
    """True layer index of a site name such as ``resid_post.12``."""
    return int(site.rsplit(".", 1)[-1])


def evaluate_direction(
    v: torch.Tensor, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, float]:
    """1-D classifier metrics of direction v (H,); ``train``/``test`` are (x (N, H), y (N,))."""
    v = v.double()
    t, pol = fit_threshold(train[0].double() @ v, train[1])
    proj = test[0].double() @ v
    y = test[1].long()
    pred = (pol * (proj - t) > 0).long()
    both = bool((y == 1).any() and (y == 0).any())
    return {
        "acc": float((pred == y).double().mean()),
        "auroc": float(binary_auroc((pol * proj).float(), y)) if both else float("nan"),
        "cohens_d": cohens_d(proj, y),
        "threshold": t,
    }


def compare_directions(
    directions: Mapping[tuple[str, str], torch.Tensor],
    train: tuple[Mapping[str, torch.Tensor], torch.Tensor],
    test: tuple[Mapping[str, torch.Tensor], torch.Tensor],
    reference: str | Mapping[str, torch.Tensor] = "diffmean",
) -> list[dict]:
    """One row per (method, site) with :data:`COLUMNS`.

    ``train``/``test``: ({site: (N, H)}, labels (N,)). ``reference``: the method cosines are taken
    against, or ``{site: (H,)}`` reference vectors (NaN where missing).
    """
    rows = []
    for (method, site), v in directions.items():
        m = evaluate_direction(v, (train[0][site], train[1]), (test[0][site], test[1]))
        ref = directions.get((reference, site)) if isinstance(reference, str) else reference.get(site)
        cos = (
            float(torch.nn.functional.cosine_similarity(v.double(), ref.double(), dim=0))
            if ref is not None
            else float("nan")
        )
        rows.append(
            {
                "method": method,
                "site": site,
                "layer": layer_of(site),
                **m,
                "cos_diffmean": cos,
                "norm": float(v.norm()),
            }
        )
    rows.sort(key=lambda r: (r["method"], r["site"].rsplit(".", 1)[0], r["layer"]))
    return rows


def write_csv(rows: Sequence[Mapping], path: str | Path) -> Path:
    """The comparison table (:data:`COLUMNS`) as CSV, atomically; NaN is an empty cell."""
    return atomic_write_csv(path, [{k: r[k] for k in COLUMNS} for r in rows], COLUMNS)


def read_csv(path: str | Path) -> list[dict]:
    """What :func:`write_csv` wrote, with numbers parsed (an empty cell is NaN)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in COLUMNS:
            if k not in ("method", "site"):
                r[k] = int(r[k]) if k == "layer" else float(r[k] or "nan")
    return rows


def plot_comparison(rows: Sequence[Mapping], path: str | Path, title: str = "") -> Path:
    """PNG with one panel per metric (:data:`PLOT_METRICS`) vs layer, one line per method."""
    import matplotlib  # deferred: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    methods = sorted({r["method"] for r in rows})
    fig, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(4.2 * len(PLOT_METRICS), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], PLOT_METRICS):
        for method in methods:
            pts = sorted((r["layer"], r[metric]) for r in rows if r["method"] == method)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=method)
        ax.set_xlabel("layer")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    atomic_save_figure(fig, path)
    return path


def save_comparison(rows: Sequence[Mapping], plots_dir: str | Path, title: str = "") -> tuple[Path, Path]:
    """Write ``direction_comparison.csv`` and ``.png`` into ``plots_dir``; returns both paths."""
    plots_dir = Path(plots_dir)
    return write_csv(rows, plots_dir / CSV_NAME), plot_comparison(rows, plots_dir / PNG_NAME, title)


def log_comparison(
    rows: Sequence[Mapping],
    png: str | Path | None,
    wandb_run,
    key: str | None = None,
    *,
    concept: str | None = None,
) -> None:
    """Log the table (``wandb.Table``) and the plot (``wandb.Image``) to ``wandb_run``; no-op if None.

    Keys: ``directions/<concept>/comparison/{table,plot}``, so each concept has its own panel. ``concept``
    defaults to the concept folder of ``png`` (``<run>/<concept>/plots/direction_comparison.png``); ``key``
    replaces the whole prefix."""
    if wandb_run is None:
        return
    import wandb  # deferred: wandb

    if key is None:
        if concept is None and png is not None and Path(png).parent.name == "plots":
            concept = Path(png).resolve().parent.parent.name
        key = f"directions/{concept}/comparison" if concept else "directions/comparison"
    table = wandb.Table(columns=list(COLUMNS), data=[[r[k] for k in COLUMNS] for r in rows])
    payload = {f"{key}/table": table}
    if png is not None and Path(png).exists():
        payload[f"{key}/plot"] = wandb.Image(str(png))
    wandb_run.log(payload)
