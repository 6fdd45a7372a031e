"""Content keys of grid rows: what a stored result was generated from, so a rerun never serves a stale one.

:attr:`GridRow.key <steerlit.engines.grid.GridRow.key>` names a row of the grid (prompt, seed, steering
terms). The row's *content key* (:func:`row_content_key`), the ``key`` of its record, its WAV file name and
what a :class:`~steerlit.engines.results.ResultStore` resumes by, also covers

* the exact vectors it is steered with (:func:`steering_digest`: the per-site tensors of every term after
  orthogonalisation and injection, as :func:`~steerlit.engines.grid.row_steering` builds them), so refitted
  directions regenerate the rows that use them and nothing else; a reference row (no terms) has none;
* the generation (:func:`generation_digest`): model id, dtype and weights fingerprint
  (:func:`~steerlit.models.fingerprint.weights_fingerprint`), decoding steps, guidance, temperature, top-k and
  engine. The batch size (it changes no codes) and the grid's seed axis (each row's own seed is in the row
  key) are left out.

Every key is the same in every process and on every machine for the same model files, directions and settings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from steerlit.engines.grid import KEY_LENGTH, GridRow, canonical_json, row_steering
from steerlit.engines.settings import GenerationSettings
from steerlit.files import tensors_sha256
from steerlit.intervene.steer import Intervention
from steerlit.models.fingerprint import weights_fingerprint

NO_STEERING = ""  # the steering digest of a reference row


def short_sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:KEY_LENGTH]


def generation_digest(adapter, generation: GenerationSettings) -> str:
    """Short hash of what, besides a row's fields and vectors, determines its codes and audio."""
    g = generation.generation()
    fields = {
        "model_id": str(adapter.model_id),
        "dtype": str(adapter.dtype).removeprefix("torch."),
        "weights_fingerprint": weights_fingerprint(adapter),
        "max_new_tokens": adapter.seconds_to_steps(g.seconds),
        "guidance_scale": float(g.guidance_scale),
        "temperature": float(g.temperature),
        "top_k": g.top_k,
        "engine": g.engine,
    }
    return short_sha1(canonical_json(fields))


def steering_digest(interventions: Sequence[Intervention]) -> str:
    """Short sha256 of the vectors of a row's interventions (``{site: (H,)}`` each, in term order);
    :data:`NO_STEERING` for none. Alphas, operators, schedules and halves are in the row key."""
    if not interventions:
        return NO_STEERING
    named = {f"{i}/{site}": v for i, iv in enumerate(interventions) for site, v in iv.vectors.items()}
    return tensors_sha256(named)[:KEY_LENGTH]


def row_content_key(row: GridRow, vectors_digest: str, generation: str) -> str:
    """The content key of ``row`` steered with vectors of digest ``vectors_digest`` under generation digest
    ``generation`` (16 hex digits of a sha1, like :attr:`GridRow.key`)."""
    return short_sha1(canonical_json({"row": row.key, "vectors": vectors_digest, "generation": generation}))


def vectors_signature(row: GridRow, orthogonalize: bool) -> tuple:
    """What a row's vectors depend on besides the directions and the model's depth: each term's concept,
    method, source site and injection strategy, and whether they are orthogonalised (two terms or more)."""
    terms = tuple((t.concept, t.method, t.site_kind, t.layer, t.strategy) for t in row.terms)
    return terms, bool(orthogonalize and len(terms) > 1)


def content_keys(
    adapter,
    rows: Sequence[GridRow],
    directions,
    generation: GenerationSettings,
    *,
    orthogonalize: bool = False,
) -> dict[str, str]:
    """``{row.key: content key}`` for ``rows`` steered with ``directions`` (``{concept: DirectionSet}``, one
    DirectionSet, or None when every row is a reference). Rows that differ only in α share one vector digest."""
    gen = generation_digest(adapter, generation)
    digests: dict[tuple, str] = {}
    out: dict[str, str] = {}
    for row in rows:
        if row.key in out:  # (a row's key is computed once)
            continue
        signature = vectors_signature(row, orthogonalize)
        if signature not in digests:
            steering = row_steering(row, directions, adapter.num_layers, orthogonalize) if row.terms else []
            digests[signature] = steering_digest(steering)
        out[row.key] = row_content_key(row, digests[signature], gen)
    return out
