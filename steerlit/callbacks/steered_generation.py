"""``SteeredGenerationCallback``: a thin Lightning adapter over :class:`steerlit.study.evaluation.Evaluation`.

At the end of every ``every_n_epochs``-th validation epoch (e.g. while a probe trains, steering with the probe's
current direction) and, with ``at_fit_end``, at the end of fitting, it runs the evaluation on rank 0: the grid
is generated, measured, written to the run folder (a stage's files under ``[<concept>/]epochs/<stage>/``, see
:mod:`steerlit.study.layout`) and logged to W&B (the given run, else the trainer's ``WandbLogger``).
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L

from steerlit.study.evaluation import Directions, Evaluation, GridPlan
from steerlit.study.layout import FINAL_STAGE, RunLayout
from steerlit.study.records import SummaryRow
from steerlit.study.run import ProbeSteering

DirectionsSource = Directions | Callable[[L.LightningModule | None], Directions]


class SteeredGenerationCallback(L.Callback):
    """Runs ``evaluation`` on ``plan`` with ``directions`` (a mapping, or a function of the trained module).

    ``concept``: the stage files go under that concept's folder (a grid steered while its probes train)."""

    def __init__(
        self,
        evaluation: Evaluation,
        plan: GridPlan,
        directions: DirectionsSource,
        layout: RunLayout,
        *,
        concept: str | None = None,
        every_n_epochs: int = 0,
        at_fit_end: bool = True,
        wandb_run=None,
    ):
        self.evaluation, self.plan, self.directions, self.layout = evaluation, plan, directions, layout
        self.concept, self.every_n_epochs, self.at_fit_end = concept, every_n_epochs, at_fit_end
        self.wandb_run = wandb_run
        self.last_summary: list[SummaryRow] = []

    @classmethod
    def for_probes(cls, steering: ProbeSteering) -> list[SteeredGenerationCallback]:
        """The callbacks :func:`steerlit.study.run.run_study` hands to a concept's probe Trainer."""
        callback = cls(
            steering.evaluation,
            steering.plan,
            steering.directions,
            steering.layout,
            concept=steering.concept,
            every_n_epochs=steering.every_n_epochs,
            at_fit_end=False,
            wandb_run=steering.wandb_run,
        )
        return [callback]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0 and not trainer.sanity_checking:
            self.evaluate(trainer, pl_module, stage=f"epoch{epoch:03d}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_fit_end:
            self.evaluate(trainer, pl_module, stage=FINAL_STAGE)

    def evaluate(
        self, trainer: L.Trainer | None, pl_module: L.LightningModule | None, stage: str = FINAL_STAGE
    ) -> list[SummaryRow]:
        """One evaluation (rank 0 only; other ranks return ``[]``); its summary is also ``last_summary``."""
        if trainer is not None and trainer.global_rank != 0:
            return []
        directions = self.directions(pl_module) if callable(self.directions) else self.directions
        summary = self.evaluation.run(
            self.plan,
            directions,
            self.layout.evaluation(stage, self.concept),
            stage=stage,
            wandb_run=self._wandb(trainer),
        )
        self.last_summary = summary
        return summary

    def _wandb(self, trainer: L.Trainer | None):
        if self.wandb_run is not None:
            return self.wandb_run
        logger = getattr(trainer, "logger", None)
        return getattr(logger, "experiment", None) if type(logger).__name__ == "WandbLogger" else None
