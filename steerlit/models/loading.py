"""One entry point that loads any HF MusicGen checkpoint: hub id, local folder or a short name.

Short names: ``testbed`` (the shipped trained model in ``checkpoints/testbed``), ``tiny``
(a tiny random model built offline and cached; plumbing only). Anything else is a local folder
or a hub id such as ``facebook/musicgen-small``. Hub ids are looked up in the local HF cache only,
unless ``allow_download=True``: offline machines get one clear error at once, never a retry loop.

Every model loaded here is remembered with the folder it came from, so that
:func:`~steerlit.models.fingerprint.weights_fingerprint` can identify it by its files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

import torch
from huggingface_hub import constants, try_to_load_from_cache

from steerlit.files import atomic_directory
from steerlit.models.adapter import MusicGenAdapter
from steerlit.models.fingerprint import WEIGHT_FILES, cache_dir, remember_files
from steerlit.models.settings import ModelSettings
from steerlit.models.tiny import build_tiny_musicgen
from steerlit.models.weight_files import check_weight_files
from steerlit.resources import resource_dir

CHECKPOINTS_DIR = Path(os.environ.get("STEERLIT_CHECKPOINTS") or resource_dir("checkpoints"))
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class ModelLoadError(ValueError):
    """A model that cannot be loaded: missing files, unsupported variant, bad option."""


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"Unknown dtype {dtype!r}; use one of {sorted(DTYPES)}.")
    return DTYPES[dtype]


def build_cached_tiny() -> Path:
    """The ``tiny`` model: built once into the steerlit cache (an atomic folder; a lost race is harmless, the
    builds are identical)."""
    path = cache_dir() / "tiny-musicgen-seed0"
    if not (path / "config.json").exists():
        with atomic_directory(path) as tmp, quiet_hf_load():  # no "Writing model shards" bar
            build_tiny_musicgen(tmp, seed=0)
    return path


def download_hint(model_id: str) -> str:
    """How to fetch ``model_id`` on a machine with network (the current huggingface_hub CLI and Python API)."""
    return (
        f'`hf download {model_id}` (in Python: `huggingface_hub.snapshot_download("{model_id}")`) and copy that '
        f"Hugging Face cache here (or point model.hf_cache_dir at it); or `hf download {model_id} --local-dir DIR` "
        "and pass model=DIR"
    )


def resolve_model_path(name: str) -> tuple[Path | None, str]:
    """Map a short name or folder to a local path; (None, name) for a hub id."""
    if name == "tiny":
        return build_cached_tiny(), "tiny"
    shipped = CHECKPOINTS_DIR / name
    if "/" not in name and (shipped / "config.json").exists():
        return shipped, name
    if "/" not in name and not Path(name).exists():
        available = sorted(p.name for p in CHECKPOINTS_DIR.glob("*") if (p / "config.json").exists())
        raise ModelLoadError(
            f"Unknown model {name!r}: not a folder, not a hub id, not a shipped model. "
            f"Shipped models: {available + ['tiny']}; or pass a folder or an id like 'facebook/musicgen-small'."
        )
    path = Path(name).expanduser()
    if path.exists():
        return path, str(path)
    return None, name


def check_local_folder(path: Path) -> None:
    """Raise one error naming what a MusicGen folder lacks."""
    if not path.is_dir():
        raise ModelLoadError(f"Model path {path} is not a folder.")
    missing = [] if (path / "config.json").exists() else ["config.json"]
    if not any((path / f).exists() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[:1] + WEIGHT_FILES[2:3]))
    if not any((path / f).exists() for f in ("tokenizer.json", "spiece.model", "tokenizer_config.json")):
        missing.append("tokenizer files (tokenizer.json / spiece.model)")
    if missing:
        raise ModelLoadError(
            f"Model folder {path} is missing {', '.join(missing)}. A MusicGen folder is what "
            "`model.save_pretrained(dir)` and `processor.save_pretrained(dir)` write, e.g. "
            "`hf download facebook/musicgen-small --local-dir DIR` on a machine with network."
        )


def _refuse_variants(config) -> None:
    model_type = getattr(config, "model_type", "")
    if model_type == "musicgen_melody":
        raise ModelLoadError(
            "MusicGen-Melody is not supported: its decoder sees a prepended chroma/text prefix instead of "
            "cross-attention, so sites and positions differ. Use facebook/musicgen-small|medium|large or a "
            "fine-tune of them."
        )
    if model_type != "musicgen":
        raise ModelLoadError(f"Not a MusicGen checkpoint (model_type={model_type!r}); expected 'musicgen'.")


TOKEN_ID_WARNING = re.compile(
    r"Model config: \w+_token_id must be `None` or an integer within the vocabulary "
    r"\(between 0 and (?P<last>\d+)\), got (?P<got>\d+)"
)
CONFIG_LOGGERS = ("transformers.configuration_utils", "transformers.models.musicgen.configuration_musicgen")


class MusicgenTokenIdFilter(logging.Filter):
    """Drops transformers' "pad/bos/decoder_start_token_id must be within the vocabulary ... got <vocab_size>"
    warning. MusicGen's special ids equal the codebook size by design (facebook/musicgen-small has pad = bos =
    decoder_start = 2048 = vocab_size; its embeddings have vocab_size + 1 rows): the composite config's generic
    check counts that as out of range. Any other out-of-range id still warns."""

    def filter(self, record: logging.LogRecord) -> bool:
        match = TOKEN_ID_WARNING.match(str(record.getMessage()))
        return not (match and int(match["got"]) == int(match["last"]) + 1)


def install_token_id_filter() -> None:
    """Install :class:`MusicgenTokenIdFilter` on transformers' config loggers (once)."""
    for name in CONFIG_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, MusicgenTokenIdFilter) for f in log.filters):
            log.addFilter(MusicgenTokenIdFilter())


@contextlib.contextmanager
def quiet_hf_load():
    """Model loads without transformers' "Loading weights" progress bars or the MusicGen token-id warning."""
    from transformers.utils import logging as hf_logging  # deferred: transformers

    install_token_id_filter()
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


install_token_id_filter()  # also for configs read before a load (e.g. the decoder depth, from config.json)


def load_model(
    name_or_path: str = "testbed",
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    allow_download: bool = False,
    attn_implementation: str | None = None,
    hf_cache_dir: str | None = None,
) -> MusicGenAdapter:
    """Load a MusicGen and return a :class:`MusicGenAdapter` in eval mode.

    ``dtype`` applies to the whole model (e.g. ``float16`` on GPU); ``attn_implementation``
    (``eager``/``sdpa``) is applied to the text encoder and decoder only (EnCodec has none).
    ``hf_cache_dir``: the Hugging Face hub cache to read hub ids from (default: HF's own, ``HF_HUB_CACHE``).
    """
    torch_dtype = resolve_dtype(dtype)
    path, model_id = resolve_model_path(str(name_or_path))
    local_only = not allow_download
    hub_cache = hf_cache_dir or constants.HF_HUB_CACHE
    source = str(path) if path is not None else model_id
    if path is not None:
        check_local_folder(path)
    with quiet_hf_load():
        return load_checked(
            source, path, model_id, local_only, hub_cache, device, torch_dtype, attn_implementation
        )


def load_checked(source, path, model_id, local_only, hub_cache, device, torch_dtype, attn_implementation):
    """:func:`load_model` once the source is resolved (``path``: the local folder, None for a hub id): config
    check, weights, processor, and the files the weights fingerprint is computed from."""
    from transformers import (  # deferred: transformers
        AutoConfig,
        AutoProcessor,
        MusicgenForConditionalGeneration,
    )

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only, cache_dir=hub_cache)
    except OSError as err:
        raise ModelLoadError(
            f"Weights for {model_id!r} are not on this machine (looked in the local Hugging Face cache "
            f"{hub_cache}) and downloads are off. On a machine with network run {download_hint(model_id)}; "
            "or set model.allow_download=true where the hub is reachable."
        ) from err
    _refuse_variants(config)
    check_weight_files(path if path is not None else hub_snapshot(model_id, hub_cache), model_id)
    kwargs = {"local_files_only": local_only, "cache_dir": hub_cache}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = {
            "text_encoder": attn_implementation,
            "decoder": attn_implementation,
            "audio_encoder": None,
        }
    try:
        model = MusicgenForConditionalGeneration.from_pretrained(source, **kwargs)
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only, cache_dir=hub_cache)
    except OSError as err:
        raise ModelLoadError(
            f"Could not load {model_id!r} offline: {err}. On a machine with network run {download_hint(model_id)}."
        ) from err
    model.to(device).eval()
    folder = path if path is not None else hub_snapshot(model_id, hub_cache)
    if folder is not None:
        remember_files(model, folder)
    return MusicGenAdapter(model=model, processor=processor, model_id=model_id)


def load_adapter(settings: ModelSettings, device: str | torch.device | None = None) -> MusicGenAdapter:
    """Load the model that ``settings`` describe (every field is honoured: name, dtype, attention implementation,
    hub cache, downloads); ``device`` overrides ``settings.device`` (a DDP rank's own device)."""
    return load_model(
        settings.name,
        device=device if device is not None else settings.device,
        dtype=settings.dtype,
        allow_download=settings.allow_download,
        attn_implementation=settings.attn_implementation,
        hf_cache_dir=settings.hf_cache_dir,
    )


def hub_snapshot(model_id: str, hub_cache: str) -> Path | None:
    """The snapshot folder a hub id was loaded from (None if the cache does not list it)."""
    found = try_to_load_from_cache(model_id, "config.json", cache_dir=hub_cache)
    return Path(found).parent if isinstance(found, str) else None
