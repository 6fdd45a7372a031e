"""Direction files: one safetensors file per run.

Tensor names are ``<method>/<site>`` (e.g. ``diffmean/resid_post.12``), each (H,) float32.
Metadata (strings, as safetensors requires): ``model_id``, ``weights_fingerprint``
(:func:`~steerlit.models.fingerprint.weights_fingerprint` of the model the directions were fitted on; may be
empty), ``hidden_size``, ``methods`` (JSON list), ``concept``, ``position`` (reduction used when caching),
``n_per_class`` (JSON {label: n}), ``norms`` (JSON {name: float}), ``steerlit_version``, and any extra keys
given (fitted files add ``activation_norms``, JSON {site: mean ‖h‖}: :attr:`DirectionSet.activation_norms`).

Directions belong to the model they were fitted on: :func:`load_directions` with a model refuses a file made
on another one (another ``model_id``, or another weights fingerprint when the file and the model both have
one) unless ``allow_other_model=True``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

import steerlit
from steerlit.files import atomic_save_safetensors
from steerlit.intervene.vector import SteeringVector
from steerlit.models.fingerprint import weights_fingerprint
from steerlit.models.sites import layer_site, width_mismatch


class DirectionFileError(ValueError):
    """A direction file that is malformed or does not fit the model it is used with."""


@dataclass
class DirectionSet:
    """Directions keyed by ``(method, site)`` with the file's metadata."""

    vectors: dict[tuple[str, str], torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return sorted({m for m, _ in self.vectors})

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def activation_norms(self) -> dict[str, float]:
        """``{site: mean ‖h‖ of the activations the directions were fitted on}`` ({} for files without it)."""
        return {k: float(v) for k, v in json.loads(self.metadata.get("activation_norms") or "{}").items()}

    def sites(self, method: str) -> list[str]:
        return [s for m, s in self.vectors if m == method]

    def for_method(self, method: str) -> dict[str, torch.Tensor]:
        """``{site: vector}`` of one method."""
        if method not in self.methods:
            raise DirectionFileError(f"No directions for method {method!r}; this file has {self.methods}.")
        return {s: v for (m, s), v in self.vectors.items() if m == method}

    def get(self, method: str, site: str) -> torch.Tensor:
        vectors = self.for_method(method)
        if site not in vectors:
            raise DirectionFileError(f"No {method!r} direction for site {site!r}; it has {sorted(vectors)}.")
        return vectors[site]

    def validate(self, adapter, *, allow_other_model: bool = False, where: str = "these directions") -> None:
        """Check the model they were fitted on (unless ``allow_other_model``), each vector's width against its
        site (:func:`~steerlit.models.sites.site_width`: head_dim for ``attn_head.L.H``, the hidden size
        otherwise), site names and finiteness against a loaded model; ``where`` names the file in messages."""
        for (method, site), vec in self.vectors.items():
            mismatch = width_mismatch(adapter.decoder_layers, adapter.parse_site(site), vec.shape)
            if mismatch:
                raise DirectionFileError(
                    f"Direction {method}/{site} has size {tuple(vec.shape)} but site {site} of model "
                    f"{adapter.model_id} has {mismatch}; these directions were computed on another model "
                    f"({self.metadata.get('model_id', 'unknown')}) or for another site."
                )
        check_finite(self.vectors)
        if not allow_other_model:  # after the checks no override can pass
            check_same_model(self.metadata, adapter, where)

    @classmethod
    def load(cls, path: str | Path, adapter=None, *, allow_other_model: bool = False) -> DirectionSet:
        """Read a direction file: the same as :func:`load_directions`."""
        return load_directions(path, adapter, allow_other_model=allow_other_model)

    def vector(self, method: str, layer: int, kind: str = "resid_post") -> SteeringVector:
        """The (H,) ``method`` direction of site ``<kind>.<layer>`` as a :class:`SteeringVector`
        (with this file's metadata), ready for ``with vec.apply(model, alpha=...): model.generate(...)``."""
        return SteeringVector(
            self.get(method, layer_site(kind, layer)),
            layer=layer,
            kind=kind,
            method=method,
            metadata=dict(self.metadata),
        )


def other_model_reason(metadata: Mapping[str, str], adapter) -> str | None:
    """Why directions with ``metadata`` were fitted on another model than ``adapter`` (None: the same one, or
    unknown). The weights fingerprints decide when both are known (a model moved to another folder keeps its
    fingerprint; a retrained one under the same name does not); otherwise the model ids are compared."""
    theirs_fp = metadata.get("weights_fingerprint", "")
    if theirs_fp:
        ours_fp = weights_fingerprint(adapter)
        if theirs_fp == ours_fp:
            return None
        return (
            f"weights fingerprint {theirs_fp} (model {metadata.get('model_id', '?')!r}), but the loaded model "
            f"{adapter.model_id!r} has {ours_fp}"
        )
    theirs = metadata.get("model_id", "")
    if theirs and theirs != str(adapter.model_id):
        return f"model {theirs!r}, but the loaded model is {adapter.model_id!r}"
    return None


def check_same_model(metadata: Mapping[str, str], adapter, where: str = "these directions") -> None:
    """Raise :class:`DirectionFileError` if ``metadata`` says the directions come from another model."""
    reason = other_model_reason(metadata, adapter)
    if reason is not None:
        raise DirectionFileError(
            f"{where} were fitted on {reason}. Directions belong to the model they were fitted on: fit them on "
            "this model (`steerlit fit`), or pass allow_other_model=True (study setting "
            "steer.allow_other_model=true) to use them anyway."
        )


def check_finite(vectors: Mapping[tuple[str, str], torch.Tensor]) -> None:
    bad = [f"{m}/{s}" for (m, s), v in vectors.items() if not torch.isfinite(v).all()]
    if bad:
        raise DirectionFileError(f"Directions {bad[:5]} contain NaN or inf; recompute them.")


def save_directions(
    path: str | Path,
    vectors: Mapping[tuple[str, str], torch.Tensor],
    *,
    model_id: str,
    weights_fingerprint: str = "",
    concept: str = "",
    position: str = "",
    n_per_class: Mapping[str, int] | None = None,
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write directions atomically (:func:`steerlit.files.atomic_save_safetensors`); ``weights_fingerprint``:
    the fingerprint of the model they were fitted on ("" when unknown)."""
    if not vectors:
        raise DirectionFileError("No directions to save.")
    check_finite(vectors)
    sizes = {int(v.shape[-1]) for v in vectors.values()}
    if len(sizes) != 1 or any(v.dim() != 1 for v in vectors.values()):
        raise DirectionFileError(f"Directions must all be 1-D of one size, got sizes {sorted(sizes)}.")
    tensors = {f"{m}/{s}": v.detach().float().cpu().contiguous() for (m, s), v in vectors.items()}
    meta = {
        "model_id": str(model_id),
        "weights_fingerprint": str(weights_fingerprint),
        "hidden_size": str(sizes.pop()),
        "methods": json.dumps(sorted({m for m, _ in vectors})),
        "concept": concept,
        "position": position,
        "n_per_class": json.dumps(dict(n_per_class or {})),
        "norms": json.dumps({k: round(float(v.norm()), 6) for k, v in tensors.items()}),
        "steerlit_version": steerlit.__version__,
    }
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()})
    return atomic_save_safetensors(path, tensors, meta)


def load_directions(path: str | Path, adapter=None, *, allow_other_model: bool = False) -> DirectionSet:
    """Read a direction file (safetensors only, no pickle); validate against ``adapter`` if given (a file fitted
    on another model is refused unless ``allow_other_model``: see :func:`check_same_model`)."""
    path = Path(path)
    if not path.exists():
        raise DirectionFileError(f"Direction file {path} does not exist; run `steerlit fit` to create it.")
    vectors = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                if "/" not in name:
                    raise DirectionFileError(f"Tensor {name!r} in {path} is not named '<method>/<site>'.")
                method, site = name.split("/", 1)
                vectors[(method, site)] = f.get_tensor(name).float()
    except DirectionFileError:
        raise
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise DirectionFileError(f"{path} is not a readable safetensors direction file: {err}") from err
    if not vectors:
        raise DirectionFileError(f"{path} holds no directions.")
    ds = DirectionSet(vectors, metadata)
    check_finite(vectors)
    if adapter is not None:
        ds.validate(adapter, allow_other_model=allow_other_model, where=f"The directions in {path}")
    return ds
