"""The keys a testbed training config may hold (``configs/testbed/*.yaml`` plus command-line overrides).

``python -m steerlit.testbed.train`` merges plain OmegaConf dotlists, which accept any key: a typo such as
``codec.w_centroidd=2`` or Hydra's ``+codec.w_centroid=2`` would otherwise be ignored silently and train
something else than asked. :func:`check_config` rejects such keys before any work starts.
"""

from __future__ import annotations

import difflib

from omegaconf import DictConfig, OmegaConf

# The codec's sizes: the keys of ``codec.TESTBED_CODEC_SIZES``, which ``codec.make_encodec_config`` takes (a codec
# section must set them all).
CODEC_SIZE_KEYS = ("num_filters", "hidden_size", "codebook_size", "num_codebooks", "num_lstm_layers")
# Optional keyword arguments of the stage modules that a config may set (their defaults hold otherwise);
# the stages pass exactly these through :func:`given_options`.
CODEC_MODULE_OPTIONS = (
    "dead_threshold", "quantize_after", "stft_eps", "w_commit", "w_l1", "w_stft", "stft_fft_sizes",
    "w_envelope", "w_centroid", "w_mel", "w_l1_low", "l1_low_cutoff_hz", "decoder_only",
)  # fmt: skip
ADVERSARIAL_OPTIONS = (
    "w_adv",
    "w_feat",
    "disc_lr",
    "disc_channels",
    "disc_fft_sizes",
)  # w_adv > 0: codec_gan
LM_MODULE_OPTIONS = ("prefix_frames", "prefix_weight", "input_dropout", "freeze_text_encoder")
LM_TRAINING_KEYS = ("lr", "warmup_steps", "max_steps", "cond_dropout")  # an lm section must set them
_CODEC = {
    *CODEC_SIZE_KEYS, "batch_size", "crop_s", "lr", "grad_clip", "max_steps", "max_time_min", "log_audio_every",
    "checkpoint_every", "init_from", "widen", "stem_prob", *CODEC_MODULE_OPTIONS, *ADVERSARIAL_OPTIONS,
}  # fmt: skip
KNOWN_KEYS: dict[str, set[str] | None] = {
    "seed": None, "run_dir": None, "out_dir": None, "cache_dir": None, "logger": None, "threads": None,
    "data": {"train_clips", "base_seed", "heldout_base_seed", "clip_s"},
    "codec": _CODEC,
    "codec_decoder": _CODEC,
    "lm": {
        "text_d_model", "text_layers", "text_heads", "text_d_ff", "text_vocab_size", "word_tokenizer",
        "text_pretrain_steps", "text_pretrain_lr", "hidden_size", "num_layers", "num_heads", "ffn_dim", "dropout",
        "batch_size", *LM_TRAINING_KEYS, "max_time_min", "checkpoint_every", "log_audio_every", "init_from",
        "init_skip", "grad_clip", *LM_MODULE_OPTIONS,
    },
    "generation": {"guidance_scale", "top_k", "max_length"},
    "eval": {"n_clips", "n_prompts", "seeds"},
}  # fmt: skip


def given_options(section: DictConfig, *keys: str) -> dict:
    """The optional keyword arguments among ``keys`` that the config ``section`` sets (the module's
    defaults hold for the others), as plain Python values."""
    return {
        k: OmegaConf.to_object(section[k]) if OmegaConf.is_config(section[k]) else section[k]
        for k in keys
        if k in section
    }


def _unknown(name: str, known) -> str:
    close = difflib.get_close_matches(name.split(".")[-1].lstrip("+"), sorted(known), n=1)
    return f"{name}" + (f" (did you mean {close[0]!r}?)" if close else "")


def check_config(cfg: DictConfig) -> None:
    """Raise ``ValueError`` naming every unknown key of a testbed training config (and the fix)."""
    bad = []
    for key, value in cfg.items():
        if key not in KNOWN_KEYS:
            bad.append(_unknown(str(key), KNOWN_KEYS))
        elif KNOWN_KEYS[key] is not None:
            if not OmegaConf.is_dict(value):
                bad.append(f"{key} (must be a section)")
                continue
            bad += [_unknown(f"{key}.{k}", KNOWN_KEYS[key]) for k in value if k not in KNOWN_KEYS[key]]
    if bad:
        raise ValueError(
            f"unknown testbed config key(s): {', '.join(bad)}. Fix the spelling in the YAML or the override; "
            "overrides are plain OmegaConf dotlists such as `codec.w_centroid=2.0` (no Hydra `+`). "
            "Known keys: steerlit/testbed/train_config.py"
        )
