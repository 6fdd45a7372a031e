"""Linear probes on cached activations, all layers at once, trained with ``Trainer.fit``.

:class:`LinearProbeModule` holds one linear probe per site, vectorised: weights (L, H), biases (L,).
``kind="logistic"``: BCE on labels {0, 1}; ``kind="regression"``: MSE on targets {-1, +1} (Panda et al.
found regression directions steer better). With ``standardize=True`` inputs are z-scored with train
statistics (mean, std (L, H)) and the direction is mapped back to activation space as ``w / std``.

The direction is that activation-space weight, signed so that the positive pole projects higher
(mean projection of positives > negatives on train), scaled to ``unit`` norm or to the diff-mean norm
(``diffmean``). Per-layer validation accuracy and AUROC (torchmetrics) are logged every epoch as
``val/acc/<site>`` and ``val/auroc/<site>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from steerlit.directions.cache import labels_of, load_activation_cache
from steerlit.files import atomic_save_safetensors
from steerlit.runtime import TrainerSettings, quiet_lightning

if TYPE_CHECKING:  # settings.py imports this module's ProbeScale choices
    from steerlit.directions.settings import ProbeTrainSettings

ProbeKind = Literal["logistic", "regression"]
KINDS: tuple[ProbeKind, ...] = get_args(ProbeKind)
ProbeScale = Literal["unit", "diffmean"]  # unit norm, or the diff-mean norm of the same site
SCALES: tuple[ProbeScale, ...] = get_args(ProbeScale)
QUIET_CPU = TrainerSettings(accelerator="cpu", enable_progress_bar=False)


def stack_sites(acts: Mapping[str, torch.Tensor], sites: Sequence[str]) -> torch.Tensor:
    """``{site: (N, H)}`` -> (N, L, H) float32 in ``sites`` order."""
    return torch.stack([acts[s].float() for s in sites], dim=1)


class ProbeDataModule(L.LightningDataModule):
    """Cached activations as (x (B, L, H), y (B,)) batches, one split per loader.

    Build from a run folder (``ProbeDataModule(run_dir)``) or from tensors
    (:meth:`from_tensors`). ``batch_size=None`` gives full-batch training.
    """

    def __init__(
        self,
        run_dir: str | Path | None = None,
        *,
        sites: Sequence[str] | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        train_split: str | Sequence[str] = "train",
    ):
        super().__init__()
        self.run_dir, self.batch_size, self.seed = run_dir, batch_size, seed
        self.train_splits = [train_split] if isinstance(train_split, str) else list(train_split)
        self._sites = list(sites) if sites is not None else None
        self.data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_tensors(
        cls, acts: Mapping[str, torch.Tensor], labels: torch.Tensor, splits: Sequence[str], **kw
    ) -> ProbeDataModule:
        """``acts`` {site: (N, H)}, ``labels`` (N,), ``splits`` N split names."""
        dm = cls(sites=list(acts), **kw)
        dm._fill(acts, labels, list(splits))
        return dm

    def _fill(self, acts, labels, splits) -> None:
        self._sites = list(self._sites or acts)
        x, y = stack_sites(acts, self._sites), labels.long()
        names = set(splits)
        for name in names:
            mask = torch.tensor([s == name for s in splits])
            self.data[name] = (x[mask], y[mask])
        train = [self.data[s] for s in self.train_splits if s in self.data]
        if not train:
            raise ValueError(f"No examples in the training split(s) {self.train_splits}.")
        self.data["_train"] = (torch.cat([t[0] for t in train]), torch.cat([t[1] for t in train]))

    @property
    def sites(self) -> list[str]:
        self.setup()
        return self._sites

    def setup(self, stage: str | None = None) -> None:
        if not self.data:
            acts, meta = load_activation_cache(self.run_dir, sites=self._sites)
            self._fill(acts, labels_of(meta), [m["split"] for m in meta])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (N, L, H), y (N,)) of a split; ``"_train"`` = the training split(s)."""
        self.setup()
        return self.data[name]

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        x, y = self.split(name)
        gen = torch.Generator().manual_seed(self.seed)
        bs = self.batch_size or max(len(y), 1)
        return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=shuffle, generator=gen)

    def train_dataloader(self) -> DataLoader:
        return self._loader("_train", shuffle=self.batch_size is not None)

    def has(self, name: str) -> bool:
        self.setup()
        return name in self.data and len(self.data[name][1]) > 0

    def val_dataloader(self):
        return self._loader("val", False) if self.has("val") else []

    def test_dataloader(self):
        return self._loader("test", False) if self.has("test") else []


class LinearProbeModule(L.LightningModule):
    """One linear probe per site: logits (B, L) = ((x - mean) / std) · w_l + b_l for x (B, L, H).

    ``mean``/``std`` (L, H): standardisation statistics (None: identity). ``pos_mean``/``neg_mean``
    (L, H): train class means, used to fix the direction's sign and for ``scale="diffmean"``.
    """

    def __init__(
        self,
        sites: Sequence[str],
        hidden_size: int,
        *,
        kind: str = "logistic",
        lr: float = 1e-2,
        weight_decay: float = 1e-3,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        pos_mean: torch.Tensor | None = None,
        neg_mean: torch.Tensor | None = None,
        log_prefix: str = "",
    ):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"Unknown probe kind {kind!r}; use one of {KINDS}.")
        # logger=False: the probe's settings go to the logger namespaced under its prefix (see hparams_for_logger)
        self.save_hyperparameters(ignore=["mean", "std", "pos_mean", "neg_mean"], logger=False)
        self.sites, self.kind, self.lr, self.weight_decay = list(sites), kind, lr, weight_decay
        n, h = len(self.sites), hidden_size
        self.weight = nn.Parameter(torch.zeros(n, h))
        self.bias = nn.Parameter(torch.zeros(n))
        self.register_buffer("mean", torch.zeros(n, h) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(n, h) if std is None else std.float().clone())
        self.register_buffer("pos_mean", torch.zeros(n, h) if pos_mean is None else pos_mean.float().clone())
        self.register_buffer("neg_mean", torch.zeros(n, h) if neg_mean is None else neg_mean.float().clone())
        self.val_acc = nn.ModuleList(BinaryAccuracy() for _ in self.sites)
        self.val_auroc = nn.ModuleList(BinaryAUROC() for _ in self.sites)
        self.test_acc = nn.ModuleList(BinaryAccuracy() for _ in self.sites)
        self.test_auroc = nn.ModuleList(BinaryAUROC() for _ in self.sites)
        self.last_val: dict[str, float] = {}
        self.log_prefix = (
            log_prefix  # e.g. "probe/tempo/logistic/" to keep several probes apart in one logger
        )

    def hparams_for_logger(self) -> dict[str, dict]:
        """The probe's settings under its log prefix, e.g. ``{"probe/tempo/logistic": {"kind": ..., "lr": ...}}``
        (so a run's config has no top-level ``kind``)."""
        settings = {k: v for k, v in self.hparams.items() if k not in ("sites", "log_prefix")}
        return {(self.log_prefix.rstrip("/") or "probe"): {**settings, "n_sites": len(self.sites)}}

    @classmethod
    def for_data(cls, dm: ProbeDataModule, *, standardize: bool = True, **kw) -> LinearProbeModule:
        """A probe sized for ``dm`` with standardisation and class means from its training split."""
        x, y = dm.split("_train")
        mean = x.mean(0) if standardize else None
        std = x.std(0, unbiased=False).clamp_min(1e-6) if standardize else None
        return cls(
            dm.sites,
            x.shape[-1],
            mean=mean,
            std=std,
            pos_mean=x[y == 1].mean(0),
            neg_mean=x[y == 0].mean(0),
            **kw,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, H) -> logits (B, L)."""
        return (((x - self.mean) / self.std) * self.weight).sum(-1) + self.bias

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over layers of each layer's mean loss, so every probe sees the same weight decay."""
        y = y.float()[:, None].expand_as(logits)
        if self.kind == "logistic":
            per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        else:
            per = (logits - (2 * y - 1)) ** 2
        return per.mean(0).sum()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self(x), y)
        self.log(f"{self.log_prefix}train/loss", loss / len(self.sites), prog_bar=True, batch_size=len(y))
        return loss

    def _eval_step(self, batch, stage: str, accs, aurocs) -> None:
        x, y = batch
        logits = self(x)
        self.log(
            f"{self.log_prefix}{stage}/loss",
            self.loss(logits, y) / len(self.sites),
            batch_size=len(y),
            sync_dist=True,
        )
        probs = torch.sigmoid(logits)  # for regression: monotone in the score, threshold 0.5 <-> 0
        for i in range(len(self.sites)):
            accs[i].update(probs[:, i], y)
            aurocs[i].update(probs[:, i], y)

    def _eval_epoch_end(self, stage: str, accs, aurocs) -> dict[str, float]:
        out = {}
        for i, site in enumerate(self.sites):
            out[f"{stage}/acc/{site}"] = accs[i].compute()
            out[f"{stage}/auroc/{site}"] = aurocs[i].compute()
            accs[i].reset()
            aurocs[i].reset()
        out[f"{stage}/acc/mean"] = torch.stack([v for k, v in out.items() if "/acc/" in k]).mean()
        self.log_dict({f"{self.log_prefix}{k}": v for k, v in out.items()})
        return {k: float(v) for k, v in out.items()}

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_acc, self.val_auroc)

    def on_validation_epoch_end(self) -> None:
        self.last_val = self._eval_epoch_end("val", self.val_acc, self.val_auroc)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test", self.test_acc, self.test_auroc)

    def on_test_epoch_end(self) -> None:
        self.last_test = self._eval_epoch_end("test", self.test_acc, self.test_auroc)

    def configure_optimizers(self):
        return torch.optim.Adam(
            [
                {"params": [self.weight], "weight_decay": self.weight_decay},
                {"params": [self.bias], "weight_decay": 0.0},
            ],
            lr=self.lr,
        )

    # ------------------------------------------------------------------ directions
    @torch.no_grad()
    def activation_weights(self) -> torch.Tensor:
        """(L, H) weights in activation space (``w / std``), sign fixed so positives project higher."""
        w = (self.weight / self.std).float()
        gap = ((self.pos_mean - self.neg_mean) * w).sum(-1)
        return w * torch.where(gap < 0, -1.0, 1.0)[:, None]

    @torch.no_grad()
    def directions(self, scale: str = "unit") -> dict[str, torch.Tensor]:
        """``{site: (H,)}``: ``unit`` norm, or ``diffmean`` = the norm of mean_pos - mean_neg."""
        if scale not in SCALES:
            raise ValueError(f"Unknown scale {scale!r}; use one of {SCALES}.")
        w = self.activation_weights()
        w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if scale == "diffmean":
            w = w * (self.pos_mean - self.neg_mean).norm(dim=-1, keepdim=True)
        return {s: w[i].cpu().clone() for i, s in enumerate(self.sites)}

    def save(self, path: str | Path, extra: Mapping[str, object] | None = None) -> Path:
        """Probe weights (safetensors): ``weight`` (L, H), ``bias`` (L,), ``mean``/``std``/class means."""
        tensors = {
            k: getattr(self, k).detach().cpu().float().contiguous() for k in ("weight", "bias", "mean", "std")
        }
        tensors.update({k: getattr(self, k).detach().cpu().contiguous() for k in ("pos_mean", "neg_mean")})
        meta = {
            "sites": json.dumps(self.sites),
            "kind": self.kind,
            "lr": str(self.lr),
            "weight_decay": str(self.weight_decay),
            "val": json.dumps(self.last_val),
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()},
        }
        return atomic_save_safetensors(path, tensors, meta)


def train_probe(
    data: ProbeDataModule | str | Path,
    settings: ProbeTrainSettings,
    trainer: TrainerSettings = QUIET_CPU,
    *,
    kind: ProbeKind = "logistic",
    seed: int = 0,
    callbacks: Sequence = (),
    logger=None,
    save_to: str | Path | None = None,
    test: bool = True,
    log_prefix: str = "",
) -> LinearProbeModule:
    """Fit a probe of every site (``Trainer.fit`` on one device), test it, optionally save it; returns the module.

    ``data``: a :class:`ProbeDataModule` or a run folder with an activation cache (then batched with
    ``settings.batch_size``). ``settings``: optimisation (lr, weight decay, epochs, standardisation, validation
    interval); ``trainer``: accelerator and progress bar. Extra ``callbacks`` (e.g. a steering callback) and a
    Lightning ``logger`` (default none) go to the ``Trainer``.
    """
    dm = (
        data
        if isinstance(data, ProbeDataModule)
        else ProbeDataModule(data, batch_size=settings.batch_size, seed=seed)
    )
    L.seed_everything(seed, workers=True, verbose=False)
    module = LinearProbeModule.for_data(
        dm,
        standardize=settings.standardize,
        kind=kind,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        log_prefix=log_prefix,
    )
    quiet_lightning()
    fitter = L.Trainer(
        accelerator=trainer.accelerator,
        devices=1,
        max_epochs=settings.max_epochs,
        check_val_every_n_epoch=settings.val_every_n_epochs,
        limit_val_batches=None if dm.has("val") else 0,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        logger=logger if logger is not None else False,
        enable_checkpointing=False,
        enable_progress_bar=trainer.enable_progress_bar,
        enable_model_summary=False,
    )
    if logger is not None:
        logger.log_hyperparams(module.hparams_for_logger())
    fitter.fit(module, datamodule=dm)
    if test and dm.has("test"):
        fitter.test(module, datamodule=dm, verbose=False)
    if save_to is not None:
        module.save(
            save_to, {"standardize": settings.standardize, "max_epochs": settings.max_epochs, "seed": seed}
        )
    return module
