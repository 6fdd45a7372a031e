"""The model card's evaluation table: the headline numbers of ``eval.json`` (every number stays in that file)."""

from __future__ import annotations


def evaluation_section(ev: dict) -> list[str]:
    """The evaluation's headline numbers as a table; every number is in ``eval.json`` beside the card."""
    lines = ["## Evaluation"]
    if not ev:
        return [*lines, "Not run yet: `python -m steerlit.testbed.evaluate --model checkpoints/testbed`."]
    lines += [
        "`python -m steerlit.testbed.evaluate --model checkpoints/testbed` (every number in `eval.json`):",
        "",
        "| measurement | value |",
        "|---|---|",
    ]
    return [*lines, *(f"| {name} | {value} |" for name, value in evaluation_rows(ev))]


def evaluation_rows(ev: dict) -> list[tuple[str, str]]:
    rows = []
    codec = ev.get("codec_round_trip") or {}
    if codec:
        rows += [
            (
                f"codec round trip: tempo within 4 % ({codec['clips']} held-out clips)",
                f"{codec['tempo_within_4pct']:.1%}",
            ),
            ("codec round trip: centroid within 10 %", f"{codec['centroid_within_10pct']:.1%}"),
        ]
    for source, label in (
        ("prompt_following", "generated from probe prompts"),
        ("reference_real_clips", "real clips"),
    ):
        part = ev.get(source) or {}
        tempo, centroid = part.get("tempo") or {}, part.get("centroid") or {}
        if tempo:
            rows += [
                (f"{label}: fast/slow octave-aware accuracy", f"{tempo['accuracy_octave_aware']:.1%}"),
                (f"{label}: fast/slow AUROC", f"{tempo['auroc_fast_gt_slow']:.2f}"),
                (
                    f"{label}: median BPM fast / slow",
                    f"{tempo['median_bpm_fast']:.0f} / {tempo['median_bpm_slow']:.0f}",
                ),
            ]
        if centroid:
            rows.append((f"{label}: bright/dark centroid AUROC", f"{centroid['auroc_bright_gt_dark']:.2f}"))
    timing = ev.get("generation_time") or {}
    if timing:
        rows.append(
            (
                f"{timing['seconds_audio']:g} s of audio, {timing['threads']} CPU thread(s)",
                f"{timing['wall_s']:.2f} s",
            )
        )
    return rows
