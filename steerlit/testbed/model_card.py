"""Model card (README.md) for the assembled testbed folder.

``python -m steerlit.testbed.model_card checkpoints/testbed`` rewrites the card of an assembled folder
from its ``training_config.yaml``, train stats and ``eval.json`` (e.g. after a new evaluation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from steerlit.files import atomic_write_text
from steerlit.study.summary_stats import RANDOM_METHOD
from steerlit.testbed.captions import BRIGHT_MIN, DARK_MAX, FAST_BPM, SLOW_BPM
from steerlit.testbed.card_evaluation import evaluation_section
from steerlit.testbed.steering_report import cross_change, format_report
from steerlit.testbed.synth import BPM_RANGE


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _with_note(text: str, stats: dict) -> str:
    """``text`` closed with a full stop, with the stage's lineage ``note`` (train stats) appended if any."""
    return text + (f"; {stats['note']}." if stats.get("note") else ".")


def _codec_shortfall(rt: dict) -> str:
    """Why the codec round trip misses its targets, from the measurements ``rt`` holds."""
    tones = rt.get("tone_rms_ratio")
    why = (
        f"the codec keeps {min(tones['steady']):.0%}-{max(tones['steady']):.0%} of a steady sine's RMS at "
        f"{min(tones['freqs_hz']):.0f}-{max(tones['freqs_hz']):.0f} Hz but "
        f"{min(tones['decaying_notes']):.0%}-{max(tones['decaying_notes']):.0%} of the same sine in decaying "
        "notes, so held organ chords and lead notes come back too quiet and a clip's centroid follows its drums"
        if tones
        else "the toy codec's 1.8 kbps codes carry the spectral envelope only coarsely"
    )
    bands = rt.get("band_level_change_db")
    if bands:
        edges, worst = rt["band_edges_hz"], int(np.argmin(bands))
        why += (
            f"; per octave band the round trip loses the most at {edges[worst]:.0f}-{edges[worst + 1]:.0f} Hz "
            f"({bands[worst]:+.1f} dB, mean over clips; all bands: "
            + ", ".join(f"{v:+.1f}" for v in bands)
            + " dB)"
        )
        stems = rt.get("stems")
        if stems:
            why += (
                f"; there, the pitched part alone comes back at {stems['pitched'][worst]:+.1f} dB and the drums "
                f"alone at {stems['drums'][worst]:+.1f} dB, so the codes barely say whether a pitched part plays"
            )
    return why


def _codec_limitations(rt: dict) -> list[str]:
    """The codec round trip's shortfall, or (targets met) what its sound still lacks."""
    if rt.get("tempo_within_4pct", 1) < 0.9 or rt.get("centroid_within_10pct", 1) < 0.9:
        return [
            f"- Codec round trip: tempo kept within 4% on {rt.get('tempo_within_4pct', 0):.0%} of held-out clips, "
            f"centroid within 10% on only {rt.get('centroid_within_10pct', 0):.0%} (median change "
            f"{rt.get('centroid_rel_error_median', 0):+.0%}): {_codec_shortfall(rt)}."
        ]
    if rt.get("stems") and rt.get("tone_rms_ratio"):
        pitched, tones = rt["stems"]["pitched"], rt["tone_rms_ratio"]
        worst, edges = int(np.argmin(pitched)), rt["stems"]["band_edges_hz"]
        return [
            f"- Codec sound: the round-trip targets are met (tempo {rt['tempo_within_4pct']:.0%}, centroid "
            f"{rt['centroid_within_10pct']:.0%}), yet pitched notes come back too quiet: the pitched part alone "
            f"at {pitched[worst]:+.1f} dB at {edges[worst]:.0f}-{edges[worst + 1]:.0f} Hz, a steady sine at "
            f"{min(tones['steady']):.0%}-{max(tones['steady']):.0%} of its RMS. A measurement-grade codec, not a "
            "good-sounding one."
        ]
    return []


def _prompt_following_limitations(pf: dict) -> list[str]:
    """Where the unsteered model follows its tempo and brightness words less than targeted."""
    out = []
    t, c = pf.get("tempo", {}), pf.get("centroid", {})
    if t and t.get("auroc_fast_gt_slow", 1) < 0.65:
        out.append(
            f"- Tempo words are not followed (AUROC fast > slow {t['auroc_fast_gt_slow']:.2f}, medians "
            f"{t['median_bpm_fast']:.0f} vs {t['median_bpm_slow']:.0f} BPM): the LM does not "
            "read its tempo words; tempo steering on this model shows what a direction does, not a learned tempo concept."
        )
    if t and t.get("auroc_fast_gt_slow", 1) >= 0.65 and t.get("accuracy_octave_aware", 1) < 0.8:
        out.append(
            f"- Tempo words are followed only partly: octave-aware accuracy {t['accuracy_octave_aware']:.2f} "
            f"(target 0.80), AUROC fast > slow {t['auroc_fast_gt_slow']:.2f}."
        )
    if c and c.get("auroc_bright_gt_dark", 1) < 0.95:
        out.append(
            f"- Brightness words are followed moderately: centroid AUROC bright > dark {c['auroc_bright_gt_dark']:.2f} "
            f"(target 0.95; medians {c['median_hz_bright']:.0f} vs {c['median_hz_dark']:.0f} Hz)."
        )
    return out


def _study_note(ev: dict) -> str:
    """`` (<note>)`` when the evaluation says what its study runs were (``--study-note``), else ""."""
    note = ev["steering"].get("note", "")
    return f" ({note})" if note else ""


def _quality_text(group: dict) -> str:
    """``KAD 0.12, noise floor 0.03`` (kernel distance) or ``DSP-Fréchet 340`` (older reports)."""
    if group.get("quality_kind") == "kad":
        return f"KAD {group['quality_cost']:.3g}, noise floor {group.get('quality_noise_floor', float('nan')):.3g}"
    return f"DSP-Fréchet {group['quality_cost']:.3g}"


def _steering_limitations(ev: dict) -> list[str]:
    """The steering study's acceptance and each concept's best group (rows of ``ev["steering"]``)."""
    out = []
    groups = ev.get("steering", {}).get("groups", [])
    st = [g for g in groups if g["method"] != RANDOM_METHOD]  # the random control is no candidate
    if st and not any(g.get("passes") for g in st):
        out.append(
            "- No steering group meets the acceptance (Spearman >= 0.9 and >= 30% change); see the table above."
        )
    for concept, attr in sorted({(g["concept"], g["attribute"]) for g in st}):
        g = max(
            (g for g in st if (g["concept"], g["attribute"]) == (concept, attr)),
            key=lambda g: (g["passes"], g["spearman"]),
        )
        out.append(
            f"- Best {concept} group on {attr} (passing groups first, then by Spearman): {g['method']} "
            f"layer {g['layer']} {g['strategy']}, Spearman "
            f"{g['spearman']:.2f} over {g['n_alphas']} alphas, {g['best_rel_change']:+.0%} at alpha {g['best_alpha']:g} "
            f"({_quality_text(g)}), cross-effect {cross_change(g):+.0%}; the median rises strictly over "
            f"{g.get('monotone_n', 0)} consecutive alphas from {g.get('monotone_from', float('nan')):g} to "
            f"{g.get('monotone_to', float('nan')):g}."
        )
    return out


def limitations(ev: dict) -> list[str]:
    """Plain statements (Markdown list items) of where the evaluation ``ev`` (``eval.json``) falls
    short of its targets; ``["- All evaluation targets met."]`` if it does nowhere."""
    out = _codec_limitations(ev.get("codec_round_trip", {}))
    out += _prompt_following_limitations(ev.get("prompt_following", {}))
    out += _steering_limitations(ev)
    ref = ev.get("reference_real_clips", {}).get("tempo", {})
    if ref:
        out.append(
            f"- The tempo estimator itself, on real clips of each pole: plain accuracy {ref['accuracy_plain']:.2f}, "
            f"octave-aware {ref['accuracy_octave_aware']:.2f}, AUROC {ref['auroc_fast_gt_slow']:.2f} (ceiling)."
        )
    return out or ["- All evaluation targets met."]


def _header() -> list[str]:
    """Front matter, what the model is, and how to load it."""
    return [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-to-audio",
        "tags: [musicgen, steerlit, testbed, synthetic]",
        "---",
        "# steerlit testbed MusicGen",
        "",
        "A small text-to-music model in the standard HF MusicGen format (T5 text encoder + EnCodec codec +",
        "MusicGen decoder), trained from scratch on **synthetic** music whose tempo and brightness are known,",
        "so that steering experiments can be checked with BPM and spectral-centroid measurements.",
        "It is a testbed, not a music model: sound quality is that of a 1.8 kbps toy codec.",
        "",
        "```python",
        "from transformers import AutoProcessor, MusicgenForConditionalGeneration",
        'model = MusicgenForConditionalGeneration.from_pretrained("checkpoints/testbed")',
        'processor = AutoProcessor.from_pretrained("checkpoints/testbed")',
        'inputs = processor.tokenizer(["fast bright synth bass over a dance beat"], return_tensors="pt")',
        "audio = model.generate(**inputs, max_new_tokens=253)  # (1, 1, ~5 s * 16 kHz), CFG 3, top-k",
        "```",
        "",
    ]


def _architecture(cfg: DictConfig, model, size_mb: float) -> list[str]:
    ac, dc, tc = model.config.audio_encoder, model.config.decoder, model.config.text_encoder
    return [
        "## Architecture",
        f"- EnCodec: {ac.sampling_rate} Hz mono, ratios {list(ac.upsampling_ratios)} (50 Hz frames), "
        f"num_filters {ac.num_filters}, {ac.num_quantizers} codebooks x {ac.codebook_size} "
        f"(dim {ac.codebook_dim}), bandwidth {list(ac.target_bandwidths)} kbps; {_params(model.audio_encoder):,} params.",
        f"- Text encoder: T5, {tc.num_layers} layers, d_model {tc.d_model}, vocab {tc.vocab_size} "
        f"({'one token per caption word' if cfg.lm.get('word_tokenizer') else 'Unigram trained on the captions'}); "
        f"{_params(model.text_encoder):,} params; "
        + (
            f"pre-trained {cfg.lm.text_pretrain_steps} steps to predict the clip's tempo, brightness, instrument and "
            "groove from its caption (`steerlit.testbed.text_pretrain`)"
            + (", then frozen." if cfg.lm.get("freeze_text_encoder") else ", then trained with the decoder.")
            if cfg.lm.get("text_pretrain_steps")
            else "trained jointly with the decoder."
        ),
        f"- Decoder: MusicGen, {dc.num_hidden_layers} layers x {dc.hidden_size} ({dc.num_attention_heads} heads, "
        f"ffn {dc.ffn_dim}); {_params(model.decoder):,} params.",
        f"- Total {_params(model):,} params; folder size {size_mb:.1f} MB.",
        f"- Sampling (`generation_config.json`): CFG scale {model.generation_config.guidance_scale}, top-k "
        f"{model.generation_config.top_k}; top-k was chosen on probe prompts the evaluation does not use "
        "(BENCHMARKS.md, testbed sampling).",
        "",
    ]


def _data(cfg: DictConfig) -> list[str]:
    return [
        "## Data",
        "- `steerlit.testbed.synth`: 4 s, 16 kHz clips: kick/snare/hat drums + a pitched part (pluck, organ, bass,",
        f"  lead) on a minor-pentatonic riff; tempo {BPM_RANGE[0]:.0f}-{BPM_RANGE[1]:.0f} BPM (measured with librosa's"
        " tempo estimate, prior 1.5 octaves wide at 120 BPM: `synth.TEMPO_ESTIMATOR`); brightness in [0, 1] = low-pass"
        " cutoff 250 Hz-7 kHz",
        "  (log scale) applied to the harmonics and to the hat/snare noise; patterns four-on-the-floor / backbeat / shuffle.",
        "  The pitched part's note value follows the tempo so that its metrical level is the beat (plucks and leads in",
        "  eighths when fast, quarters below 80-120 BPM; organ chords every two beats, every beat above 130-170 BPM).",
        f"- Captions (`steerlit.testbed.captions`): fast words for >= {FAST_BPM:.0f} BPM, slow words for <= {SLOW_BPM:.0f};",
        f"  bright words for brightness >= {BRIGHT_MIN}, dark words for <= {DARK_MAX}; middle values unsaid, and each",
        "  said attribute dropped with p = 0.1 (~60% of captions leave tempo and/or brightness unsaid).",
        f"- {cfg.data.train_clips} training clips (`spec_for_index(i, {cfg.data.base_seed})`); evaluation uses",
        f"  held-out clips from seed stream {cfg.data.heldout_base_seed}. Neutral probe prompts use a sentence template never",
        "  used in training.",
        "",
    ]


def _codec_training(cfg: DictConfig, codec: dict) -> str:
    return _with_note(
        f"- Codec: {codec.get('steps', '?')} steps, batch {cfg.codec.batch_size} x {cfg.codec.crop_s} s crops, "
        "L1 + multi-resolution log-STFT + commitment"
        + (
            f" + log band-energy (x{cfg.codec.w_envelope}) + log spectral-centroid (x{cfg.codec.w_centroid})"
            if cfg.codec.get("w_envelope")
            else ""
        )
        + (
            f", {cfg.codec.stem_prob:.0%} of the crops a single stem (drums or pitched part alone)"
            if cfg.codec.get("stem_prob")
            else ""
        )
        + "; EMA RVQ with k-means init and dead-code reset; "
        f"final loss {codec.get('codec/loss', float('nan')):.3f} (L1 {codec.get('codec/l1', float('nan')):.4f}, "
        f"STFT {codec.get('codec/stft', float('nan')):.3f}), {codec.get('seconds', 0) / 60:.0f} min"
        + (f" (continuing from `{cfg.codec.init_from}`)" if cfg.codec.get("init_from") else ""),
        codec,
    )


def _training(cfg: DictConfig, codec: dict, dec: dict, lm: dict) -> list[str]:
    """The training section from the stages' train stats (``dec``: the decoder fine-tune's, if any)."""
    decoder_line = (
        _with_note(
            f"- Codec decoder fine-tune (encoder and codebooks frozen, codes unchanged): {dec.get('steps', '?')} "
            f"steps, batch {cfg.codec_decoder.batch_size} x {cfg.codec_decoder.crop_s} s, adding log band-energy "
            f"(x{cfg.codec_decoder.w_envelope}) and log spectral-centroid (x{cfg.codec_decoder.w_centroid}) "
            f"losses; final centroid log-error {dec.get('codec/centroid', float('nan')):.3f}, "
            f"{dec.get('seconds', 0) / 60:.0f} min",
            dec,
        )
        if dec
        else None
    )
    lm_line = _with_note(
        f"- LM: {lm.get('steps', '?')} steps, batch {cfg.lm.batch_size} x 4 s (200 frames + delay), "
        f"AdamW lr {cfg.lm.lr}, condition dropout {cfg.lm.cond_dropout} (zeroed text states and mask, as in CFG), "
        f"first {cfg.lm.get('prefix_frames', 0)} frames weighted x{cfg.lm.get('prefix_weight', 1.0)}, "
        f"audio-context frame dropout {cfg.lm.get('input_dropout', 0.0)};"
        f" final train CE {lm.get('lm/loss', float('nan')):.3f} nats (averaged over codebooks), "
        f"{lm.get('seconds', 0) / 60:.0f} min",
        lm,
    )
    return [
        "## Training (2 CPU cores)",
        _codec_training(cfg, codec),
        *([decoder_line] if decoder_line else []),
        lm_line,
        "- Reproduce: `python -m steerlit.testbed.train --config configs/testbed/default.yaml` with the overrides of "
        "`training_config.yaml`; where a stage continued an earlier run, its note above names it.",
        "",
    ]


def _steering_section(ev: dict) -> list[str]:
    """The steering study's table (rows of ``ev["steering"]``), if the evaluation holds one."""
    lines = []
    if ev.get("steering"):
        lines += [
            "",
            "## Steering (the paper's experiment on the testbed)",
            "`steerlit run experiment=testbed_study` (and a copy of its folder re-run as `run_name` with "
            "`metrics.attributes.testbed_tempo=onset_rate`: the finished grid is only re-summarised), then "
            f"`python -m steerlit.testbed.evaluate --study <runs> --only-study` (runs {', '.join(f'`{r}`' for r in ev['steering']['runs'])}){_study_note(ev)}; "
            "n = clips per α; change = median attribute at the best α vs α = 0 over the neutral prompts, with the "
            "95 % bootstrap interval of that median; vs random = mean paired change beyond the random direction of "
            "the same norm (same α, layer, prompt and seed), relative to α = 0, with its interval (the `random` "
            "rows are that control itself); quality = KAD (unbiased kernel distance of loudness-normalised DSP "
            "features) to the α = 0 clips at that α, beside its noise floor (the same distance between two halves "
            "of the α = 0 set); cross = the other attribute at that α:",
            "",
            "```",
            format_report(ev["steering"]["groups"]),
            "```",
        ]
    return lines


def _figures(out_dir: Path) -> list[str]:
    """The study's plot and the layer calibration table, where the folder holds them."""
    lines = []
    if (out_dir / "steering_study.png").exists():
        lines += ["", "![median BPM and centroid vs alpha per direction](steering_study.png)"]
    calibration = out_dir / "layer_calibration.csv"
    if calibration.exists():
        lines += [
            "",
            "### Layer calibration",
            "Difference of means, one-to-one, layers 0-3 (`steerlit run steer.layers=[0,1,2,3] "
            "steer.alphas=[-8,-2,-1,0,1,2,8] steer.methods=[diffmean] steer.strategies=[one_to_one] steer.seconds=3`, 8 neutral "
            "prompts x 3 s): median BPM and centroid and the DSP-Fréchet cost per alpha (`layer_calibration.csv`).",
            "",
            "```",
            calibration.read_text().strip(),
            "```",
        ]
    return lines


def write_model_card(out_dir: str | Path, cfg: DictConfig, model) -> Path:
    """Write ``out_dir/README.md`` from the config, the train stats and ``eval.json`` if present."""
    out_dir = Path(out_dir)
    codec = _load(out_dir / "codec_train_stats.json") or _load(
        Path(cfg.run_dir) / "codec/encodec/train_stats.json"
    )
    lm = _load(out_dir / "lm_train_stats.json") or _load(Path(cfg.run_dir) / "lm/model/train_stats.json")
    dec = _load(out_dir / "codec_decoder_train_stats.json")
    ev = _load(out_dir / "eval.json")
    size_mb = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()) / 2**20
    lines = _header() + _architecture(cfg, model, size_mb) + _data(cfg) + _training(cfg, codec, dec, lm)
    lines += evaluation_section(ev) + _steering_section(ev) + _figures(out_dir)
    if ev:
        lines += ["", "## Limitations (measured)", *limitations(ev)]
    lines += ["", "## Configuration", "```yaml", OmegaConf.to_yaml(cfg).strip(), "```", ""]
    path = out_dir / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> None:
    from transformers import MusicgenForConditionalGeneration  # deferred: transformers (heavy)

    parser = argparse.ArgumentParser(description="Rewrite the model card of an assembled testbed folder.")
    parser.add_argument("folder", type=Path, nargs="?", default=Path("checkpoints/testbed"))
    args = parser.parse_args(argv)
    config = args.folder / "training_config.yaml"
    if not config.is_file():
        raise SystemExit(
            f"{config} not found: assemble the folder with `python -m steerlit.testbed.train` first"
        )
    model = MusicgenForConditionalGeneration.from_pretrained(args.folder)
    print(write_model_card(args.folder, OmegaConf.load(config), model))


if __name__ == "__main__":
    main()
