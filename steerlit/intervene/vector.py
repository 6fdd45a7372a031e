"""A steering vector that works with plain Hugging Face ``generate``, in the style of ``steering-vectors``.

>>> vec = DirectionSet.load("runs/r/testbed_tempo/directions.safetensors").vector("diffmean", layer=2)
>>> with vec.apply(model, alpha=4, strategy="one_to_all"):  # model: a MusicgenForConditionalGeneration
...     audio = model.generate(**inputs, max_new_tokens=100)  # (B, 1, samples)

:meth:`SteeringVector.apply` builds one :class:`~steerlit.intervene.steer.Intervention` (the injection
strategy resolved by :func:`~steerlit.intervene.injection.inject`) and returns the
:class:`~steerlit.intervene.steer.Steering` context that registers the hooks on entry and always removes
them on exit, also when ``generate`` raises. The intervention is broadcast to every prompt of the batch
(and to both classifier-free-guidance halves unless ``half`` says otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from numbers import Real

import torch

from steerlit.intervene.injection import LAYER_STRATEGIES, Strategy, inject
from steerlit.intervene.operators import Operator
from steerlit.intervene.schedules import Schedule, ScheduleKind, make_schedule
from steerlit.intervene.steer import CfgHalf, Intervention, Steering, SteeringError
from steerlit.models.adapter import MusicGenAdapter
from steerlit.models.sites import SITE_KINDS, layer_site


def adapter_for(model) -> MusicGenAdapter:
    """A :class:`MusicGenAdapter` for ``model``: an adapter is returned as is; a plain transformers
    ``MusicgenForConditionalGeneration`` is wrapped (no processor: steering needs only the model)."""
    if isinstance(model, MusicGenAdapter):
        return model
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type != "musicgen" or not hasattr(model, "text_encoder"):
        found = type(model).__name__ + (f" (model_type {model_type!r})" if model_type else "")
        raise SteeringError(
            f"Steering needs a transformers MusicgenForConditionalGeneration or a steerlit MusicGenAdapter, "
            f"got {found}; pass the full text-to-music model (e.g. `load_model(...).model`)."
        )
    model_id = str(getattr(model, "name_or_path", "") or type(model).__name__)
    return MusicGenAdapter(model=model, processor=None, model_id=model_id)


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """One direction measured at one source site, ready to steer a MusicGen.

    ``vector`` (H,): the direction, float, finite (H = the decoder's hidden size); it goes to the model's
    device and dtype when applied. ``layer`` and ``kind``: its source site ``<kind>.<layer>`` (e.g.
    ``resid_post.2``). ``method``: how it was computed (``diffmean``, ``regression``, ...). ``metadata``: the
    direction file's metadata (model id, concept, ...). ``-vec``, ``vec * 2``, ``2 * vec`` and ``vec / 2``
    give new vectors with the same site, method and metadata.
    """

    vector: torch.Tensor
    layer: int
    kind: str = "resid_post"
    method: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vec = torch.as_tensor(self.vector).detach()
        if vec.dim() != 1 or vec.numel() == 0:
            raise SteeringError(
                f"A steering vector is one (H,) tensor, got shape {tuple(vec.shape)}; "
                "pick one site's direction (e.g. `DirectionSet.vector(method, layer)`)."
            )
        if not vec.is_floating_point():
            vec = vec.float()
        if self.kind not in SITE_KINDS:
            raise SteeringError(f"Unknown site kind {self.kind!r}; use one of {sorted(SITE_KINDS)}.")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise SteeringError(f"The source layer must be an integer >= 0, got {self.layer!r}.")
        if not torch.isfinite(vec).all():
            raise SteeringError(f"The steering vector for {self.site} contains NaN or inf; recompute it.")
        object.__setattr__(self, "vector", vec)
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def site(self) -> str:
        """The source site name, e.g. ``resid_post.2``."""
        return layer_site(self.kind, self.layer)

    @property
    def hidden_size(self) -> int:
        return int(self.vector.shape[0])

    def __repr__(self) -> str:
        concept = self.metadata.get("concept")
        about = f", concept={concept!r}" if concept else ""
        return (
            f"SteeringVector({self.method or 'vector'} at {self.site}, H={self.hidden_size}, "
            f"norm={float(self.vector.norm()):.4g}{about})"
        )

    def _scaled(self, factor) -> SteeringVector:
        if isinstance(factor, bool) or not isinstance(factor, Real) or not math.isfinite(factor):
            return NotImplemented
        return replace(self, vector=self.vector * float(factor))

    def __mul__(self, factor) -> SteeringVector:
        return self._scaled(factor)

    __rmul__ = __mul__

    def __truediv__(self, divisor) -> SteeringVector:
        if isinstance(divisor, Real) and not isinstance(divisor, bool) and divisor == 0:
            raise ZeroDivisionError("A steering vector cannot be divided by 0.")
        return self._scaled(1.0 / divisor) if isinstance(divisor, Real) else NotImplemented

    def __neg__(self) -> SteeringVector:
        return replace(self, vector=-self.vector)

    def intervention(
        self,
        num_layers: int,
        *,
        alpha: float = 1.0,
        strategy: Strategy = "one_to_all",
        operator: Operator = "add",
        schedule: ScheduleKind | Mapping | Schedule = "constant",
        half: CfgHalf = "both",
    ) -> Intervention:
        """The :class:`Intervention` this vector makes on a decoder with ``num_layers`` blocks.

        ``one_to_all``: the vector at every layer's site of its kind; ``one_to_one``: at its own site only.
        """
        if isinstance(alpha, bool) or not isinstance(alpha, Real) or not math.isfinite(alpha):
            raise SteeringError(f"Steering coefficient alpha={alpha!r} is not a finite number; use one.")
        if strategy not in LAYER_STRATEGIES:
            raise SteeringError(
                f"Unknown injection strategy {strategy!r}; use one of {LAYER_STRATEGIES} "
                "(top_heads needs per-head directions: injection.top_heads)."
            )
        if self.layer >= num_layers:
            raise SteeringError(
                f"This vector comes from {self.site}, but the model has {num_layers} layers "
                f"(0..{num_layers - 1}): use directions computed on this model."
            )
        try:
            schedule = make_schedule(schedule)
        except ValueError as err:
            raise SteeringError(str(err)) from None
        vectors = inject(strategy, {self.site: self.vector}, [self.layer], num_layers, self.kind)
        return Intervention(vectors, alpha=alpha, operator=operator, schedule=schedule, half=half)

    def apply(self, model, alpha: float = 1.0, **options) -> Steering:
        """Steer ``model`` (a ``MusicgenForConditionalGeneration`` or a :class:`MusicGenAdapter`) inside a
        ``with`` block: every decoder call adds ``alpha * vector`` (for ``operator="add"``) to the site
        tensor (B', T, H) of each target layer, B' = B prompts or 2B under guidance.

        ``options`` are :meth:`intervention`'s: ``strategy``: ``one_to_all`` (every layer) or ``one_to_one``
        (the source layer only); ``operator``: ``add | norm_add | ablate``; ``schedule``: over decoding positions
        (``constant``, ``{"kind": "exp_decay", ...}``); ``half``: the CFG halves steered (``both | cond |
        uncond``). Bad options, a wrong hidden size or a non-finite ``alpha`` raise :class:`SteeringError` here,
        before any hook. Returns the :class:`Steering` context; hooks are removed on exit, also on exceptions.
        """
        adapter = adapter_for(model)
        return Steering(adapter, [self.intervention(adapter.num_layers, alpha=alpha, **options)])
