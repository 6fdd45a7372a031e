"""The weight files of a local model folder, checked before transformers reads them: one clear message for a
truncated or damaged safetensors file, and for a folder that holds only pickled (``.bin``) weights, which are
never loaded (unpickling can run code)."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open


class WeightFileError(ValueError):
    """A model folder whose weight files cannot be used."""


def check_weight_files(folder: Path | None, model_id: str) -> None:
    """Raise :class:`WeightFileError` if ``folder`` (None: nothing to check) holds a safetensors file whose
    header is unreadable (truncated, damaged), or pickled weights and no safetensors."""
    if folder is None or not Path(folder).is_dir():
        return
    folder = Path(folder)
    tensors = sorted(folder.glob("*.safetensors"))
    pickled = sorted(p.name for p in folder.glob("*.bin"))
    if not tensors and pickled:
        raise WeightFileError(
            f"{folder} ({model_id!r}) holds only pickled weights {pickled}, which steerlit never loads "
            "(unpickling can run code): save the model with save_pretrained(..., safe_serialization=True) or "
            "convert the file to safetensors, then point model.name at that folder."
        )
    for path in tensors:
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except (SafetensorError, OSError) as err:
            raise WeightFileError(
                f"{path} is truncated or damaged ({str(err).splitlines()[0]}): copy or download "
                f"{model_id!r} again."
            ) from None
