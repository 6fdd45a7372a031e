"""The public configurations of facebook/musicgen-small, -medium and -large, built offline.

No machine here can download the real checkpoints, so rehearsals and estimates use these configurations:
the exact ``config.json`` of the hub checkpoints (the MusicGen decoder, the 32 kHz EnCodec of
``facebook/encodec_32khz`` and the T5-base text encoder) as ``transformers`` config objects.
:func:`build_random_checkpoint` saves a model of that shape with random weights into a Hugging Face hub-cache
layout, so that ``load_model("facebook/musicgen-small", hf_cache_dir=cache)`` loads it by hub id, offline.

========  ========================  =====  ======  ==============================
size      decoder (layers x width)  heads  ffn     parameters (decoder / total)
========  ========================  =====  ======  ==============================
small     24 x 1024                 16     4096    419.6 M / 586.9 M
medium    48 x 1536                 24     6144    1837.6 M / 2005.3 M
large     48 x 2048                 32     8192    3255.4 M / 3423.5 M
========  ========================  =====  ======  ==============================

All three share 4 codebooks x 2048 entries, EnCodec at 32 kHz with 50 frames per second (hop 640) and a
T5-base encoder (768 wide, 12 layers, 12 heads, vocabulary 32128). The model cards call them 300M, 1.5B and
3.3B; the decoder counts above (embeddings and the four heads included) are what the checkpoints hold.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from steerlit.files import atomic_path, atomic_write_text
from steerlit.models.loading import resolve_dtype
from steerlit.models.tokenizer import build_t5_tokenizer

MusicgenSize = Literal["small", "medium", "large"]
MUSICGEN_SIZES: tuple[MusicgenSize, ...] = get_args(MusicgenSize)
NUM_CODEBOOKS = 4
CODEBOOK_SIZE = 2048
SAMPLING_RATE = 32000
FRAME_RATE = 50  # 32000 / (8 * 5 * 4 * 4)
PUBLISHED_PARAMETERS = {"small": 300e6, "medium": 1.5e9, "large": 3.3e9}  # the model cards' labels
PUBLIC_CONFIG = json.loads((Path(__file__).with_name("musicgen_public_config.json")).read_text())
CONFIG_DTYPE = "float32"  # what the public config.json files declare (weights may be stored in fp16)


@dataclass(frozen=True)
class DecoderShape:
    """The MusicGen decoder's sizes: ``layers`` blocks of width ``hidden``, ``heads`` heads, FFN ``ffn``."""

    layers: int
    hidden: int
    heads: int
    ffn: int


DECODER_SHAPES: dict[str, DecoderShape] = {
    "small": DecoderShape(layers=24, hidden=1024, heads=16, ffn=4096),
    "medium": DecoderShape(layers=48, hidden=1536, heads=24, ffn=6144),
    "large": DecoderShape(layers=48, hidden=2048, heads=32, ffn=8192),
}


@dataclass(frozen=True)
class ParameterCount:
    """Parameters of a MusicGen (buffers such as EnCodec's codebooks not included)."""

    total: int
    decoder: int
    text_encoder: int
    audio_encoder: int
    projection: int  # enc_to_dec_proj (T5 width -> decoder width)


def hub_id(size: str) -> str:
    """``facebook/musicgen-<size>``."""
    return f"facebook/musicgen-{check_size(size)}"


def check_size(size: str) -> MusicgenSize:
    if size not in MUSICGEN_SIZES:
        raise ValueError(f"Unknown MusicGen size {size!r}; use one of {MUSICGEN_SIZES}.")
    return size  # type: ignore[return-value]


def size_of(name: str) -> MusicgenSize | None:
    """The public size a model name refers to: ``small`` for ``small``, ``musicgen_small``, ``musicgen-small``
    or ``facebook/musicgen-small`` (and the same for medium and large); None for anything else."""
    tail = str(name).rstrip("/").rsplit("/", 1)[-1].lower().replace("_", "-")
    tail = tail.removeprefix("musicgen-")
    return tail if tail in MUSICGEN_SIZES else None  # type: ignore[return-value]


def public_config_fields(part: str) -> dict:
    """The shared ``config.json`` fields of one part (``text_encoder``, ``audio_encoder`` or ``decoder``), read
    from ``musicgen_public_config.json`` beside this module (a fresh dict on every call)."""
    return copy.deepcopy(PUBLIC_CONFIG[part])


def t5_base_config():
    """The ``t5-base`` configuration MusicGen's text encoder uses (``T5EncoderModel`` reads the encoder half)."""
    from transformers import T5Config

    return T5Config(**public_config_fields("text_encoder"))


def encodec_32khz_config():
    """``facebook/encodec_32khz``: mono 32 kHz, strides (8, 5, 4, 4) = hop 640 (50 Hz), 64 filters, one
    bandwidth of 2.2 kbps = 4 codebooks of 2048 entries, non-causal, no input normalisation, no conv shortcut
    (the other fields are EnCodec's defaults, as in that checkpoint)."""
    from transformers import EncodecConfig

    return EncodecConfig(**public_config_fields("audio_encoder"))


def decoder_config(size: str):
    """The MusicGen decoder of ``size``: 2048-entry codebooks (+1 for the pad/BOS id 2048), sinusoidal
    positions up to 2048 steps, GELU, pre-LayerNorm blocks with cross-attention to the text."""
    from transformers import MusicgenDecoderConfig

    shape = DECODER_SHAPES[check_size(size)]
    sizes = dict(num_hidden_layers=shape.layers, hidden_size=shape.hidden, num_attention_heads=shape.heads)
    return MusicgenDecoderConfig(**public_config_fields("decoder"), **sizes, ffn_dim=shape.ffn)


def musicgen_config(size: str):
    """The ``MusicgenConfig`` of ``facebook/musicgen-<size>`` (T5-base + EnCodec 32 kHz + the decoder)."""
    from transformers import MusicgenConfig

    return MusicgenConfig(
        text_encoder=t5_base_config().to_dict(),
        audio_encoder=encodec_32khz_config().to_dict(),
        decoder=decoder_config(size).to_dict(),
    )


def parameter_count(size_or_config) -> ParameterCount:
    """Parameters of the model of ``size`` (or of a ``MusicgenConfig``), counted on the meta device (no memory,
    about a second)."""
    from transformers import MusicgenForConditionalGeneration

    config = musicgen_config(size_or_config) if isinstance(size_or_config, str) else size_or_config
    with torch.device("meta"):
        model = MusicgenForConditionalGeneration(config)

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    return ParameterCount(
        total=count(model),
        decoder=count(model.decoder),
        text_encoder=count(model.text_encoder),
        audio_encoder=count(model.audio_encoder),
        projection=count(model.enc_to_dec_proj),
    )


def without_versions(data):
    """A config dict without its ``transformers_version`` and dtype entries (they do not change the model)."""
    if isinstance(data, Mapping):
        skip = ("transformers_version", "dtype", "torch_dtype")
        return {k: without_versions(v) for k, v in data.items() if k not in skip}
    return data


def snapshot_revision(config, *, seed: int, dtype: str) -> str:
    """A 40-hex revision that names (config, seed, storage dtype): a rebuild of the same model reuses it."""
    text = json.dumps(
        {"config": without_versions(config.to_dict()), "seed": seed, "dtype": dtype}, sort_keys=True
    )
    return hashlib.sha1(text.encode()).hexdigest()


def random_model(config, *, seed: int, dtype: torch.dtype):
    """A ``MusicgenForConditionalGeneration`` of ``config`` with HF's random init, built in ``dtype``
    (fp16 halves the peak memory), EnCodec codebooks filled with random entries (they are zero at init), and
    the public generation defaults (top-k 250 sampling, guidance 3, up to 1500 steps = 30 s)."""
    from transformers import MusicgenForConditionalGeneration

    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration._from_config(copy.deepcopy(config), dtype=dtype)
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
    model.eval()
    bos = int(config.decoder.bos_token_id)
    gen = model.generation_config
    gen.do_sample, gen.guidance_scale, gen.max_length, gen.top_k = True, 3.0, 1500, 250
    gen.decoder_start_token_id = gen.pad_token_id = gen.bos_token_id = bos
    return model


def offline_processor(sampling_rate: int = SAMPLING_RATE):
    """A ``MusicgenProcessor``: EnCodec's feature extractor (left padding, as musicgen's) and an offline T5
    tokenizer (a small Unigram vocabulary; its ids fit any T5 embedding of >= 256 entries)."""
    from transformers import EncodecFeatureExtractor, MusicgenProcessor

    feature_extractor = EncodecFeatureExtractor(
        feature_size=1, sampling_rate=sampling_rate, padding_value=0.0, padding_side="left"
    )
    return MusicgenProcessor(
        feature_extractor=feature_extractor, tokenizer=build_t5_tokenizer(vocab_size=256)
    )


def declare_public_dtype(folder: Path) -> None:
    """Make ``config.json`` declare float32 like the public checkpoints, whatever dtype the weights are stored
    in, so that a default load (``dtype=None``) gives the same dtype as the real model."""
    path = folder / "config.json"
    data = json.loads(path.read_text())
    for section in (data, *(data.get(k) or {} for k in ("text_encoder", "audio_encoder", "decoder"))):
        for key in ("dtype", "torch_dtype"):
            if key in section:
                section[key] = CONFIG_DTYPE
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def build_random_checkpoint(
    size: str,
    cache_dir: str | Path,
    *,
    dtype: str = "float16",
    seed: int = 0,
    config=None,
    overwrite: bool = False,
    device: str = "cpu",
) -> Path:
    """Save a random-weight ``facebook/musicgen-<size>`` into the hub cache ``cache_dir``; return the snapshot.

    The layout is the one ``hf download`` writes (``models--facebook--musicgen-<size>/{refs/main,
    snapshots/<rev>/}``), so ``load_model(hub_id(size), hf_cache_dir=cache_dir)`` finds it with no network.
    Weights are stored in ``dtype`` (float16: about 1.2 GB for small, 4 GB medium, 6.8 GB large; the peak
    memory while building is about the same). ``config`` replaces the public configuration (tests use a
    scaled-down one, stored under the same hub id). An existing complete snapshot of the same (config, seed,
    dtype) is reused unless ``overwrite``. ``device="cuda"`` runs the random init on a GPU (seconds instead of a
    minute or more on a few CPU cores; the weights differ from a CPU build with the same seed).
    """
    torch_dtype = resolve_dtype(dtype)
    config = musicgen_config(size) if config is None else config
    repo = Path(cache_dir) / f"models--{hub_id(size).replace('/', '--')}"
    revision = snapshot_revision(config, seed=seed, dtype=str(torch_dtype))
    snapshot = repo / "snapshots" / revision
    if (snapshot / "config.json").exists() and not overwrite:
        atomic_write_text(repo / "refs" / "main", revision)
        return snapshot
    if snapshot.exists():
        shutil.rmtree(snapshot)
    with torch.device(device):
        model = random_model(config, seed=seed, dtype=torch_dtype)
    with atomic_path(snapshot) as tmp:
        try:
            model.save_pretrained(tmp)
            offline_processor(int(config.audio_encoder.sampling_rate)).save_pretrained(tmp)
            declare_public_dtype(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    atomic_write_text(repo / "refs" / "main", revision)
    return snapshot


def checkpoint_bytes(snapshot: str | Path) -> int:
    """Bytes of the files in a snapshot folder."""
    return sum(p.stat().st_size for p in Path(snapshot).rglob("*") if p.is_file())


def decoder_shape_from_config(config: Mapping | object) -> DecoderShape:
    """The :class:`DecoderShape` of a ``MusicgenConfig`` or of its ``config.json`` as a dict."""
    dec = config["decoder"] if isinstance(config, Mapping) else config.decoder
    get = dec.get if isinstance(dec, Mapping) else (lambda k: getattr(dec, k))
    return DecoderShape(
        layers=int(get("num_hidden_layers")),
        hidden=int(get("hidden_size")),
        heads=int(get("num_attention_heads")),
        ffn=int(get("ffn_dim")),
    )
