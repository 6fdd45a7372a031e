"""The shipped testbed folder: model (fp32 safetensors), ``MusicgenProcessor``, training config and card.

``assemble`` (the ``assemble`` stage of :mod:`steerlit.testbed.train`) builds the folder in a hidden
sibling that then replaces the old folder whole (:func:`replacing_folder`), so that a crash never leaves
a half-written model and no file of a previous model sits next to the new weights.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoTokenizer,
    EncodecFeatureExtractor,
    EncodecModel,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
)

from steerlit.files import fsync_dir
from steerlit.testbed.lm import set_generation_defaults
from steerlit.testbed.model_card import write_model_card
from steerlit.testbed.widen import with_tuned_decoder


@contextlib.contextmanager
def replacing_folder(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``out_dir`` (``.<name>.tmp``) to fill; when the block ends without
    an exception it replaces ``out_dir`` whole (the old folder, if any, is moved to ``.<name>.old`` and
    removed), else it is removed and ``out_dir`` is untouched."""
    out_dir = Path(out_dir)
    tmp, old = out_dir.with_name(f".{out_dir.name}.tmp"), out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out_dir.parent)


def assemble(
    lm_dir: str | Path,
    out_dir: str | Path,
    cfg: DictConfig,
    extra_files: dict[str, Path] | None = None,
    decoder_from: str | Path | None = None,
) -> Path:
    """Save model (fp32 safetensors) + ``MusicgenProcessor`` (tokenizer + feature extractor) + card.

    Atomic: everything is written to a hidden sibling folder that then replaces ``out_dir`` whole, so
    a crash never leaves a half-written model, and files of a previous model (its ``eval.json``,
    its ``directions/``) never sit next to the new weights. ``extra_files`` ({name: source}) are
    copied in before the card is written (e.g. the training stats it quotes). ``decoder_from``: an
    ``EncodecModel`` folder whose decoder replaces the model's codec decoder; its encoder and
    codebooks must equal the model's (they made the LM's training codes), or its widening
    (:func:`~steerlit.testbed.widen.with_tuned_decoder`), else ``ValueError``.
    """
    out_dir = Path(out_dir)
    with replacing_folder(out_dir) as tmp:
        for name, src in (extra_files or {}).items():
            shutil.copy(src, tmp / name)
        model = MusicgenForConditionalGeneration.from_pretrained(lm_dir)
        if decoder_from is not None:
            model.audio_encoder = with_tuned_decoder(
                model.audio_encoder, EncodecModel.from_pretrained(decoder_from)
            )
            model.config.audio_encoder = model.audio_encoder.config
        set_generation_defaults(model, cfg)
        tokenizer = AutoTokenizer.from_pretrained(lm_dir)
        fe = EncodecFeatureExtractor(
            feature_size=1, sampling_rate=model.config.audio_encoder.sampling_rate, padding_value=0.0
        )
        processor = MusicgenProcessor(feature_extractor=fe, tokenizer=tokenizer)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        OmegaConf.save(cfg, tmp / "training_config.yaml")
        write_model_card(tmp, cfg, model)
    return out_dir
