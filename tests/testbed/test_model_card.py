"""The model card: the shipped one is exactly what the card writer makes of its folder, and the measured
limitations are stated from an evaluation's numbers."""

import shutil

from steerlit.models.loading import CHECKPOINTS_DIR
from steerlit.testbed.model_card import limitations, main


def test_rewriting_the_shipped_card_gives_it_back_byte_for_byte(tmp_path):
    folder = shutil.copytree(CHECKPOINTS_DIR / "testbed", tmp_path / "testbed")
    main([str(folder)])  # over the copied card: the folder size it quotes counts the card, as when shipped
    assert (folder / "README.md").read_bytes() == (CHECKPOINTS_DIR / "testbed" / "README.md").read_bytes()


def test_model_card_explains_a_short_codec_centroid_with_the_tone_round_trip():
    rt = {"tempo_within_4pct": 0.97, "centroid_within_10pct": 0.62, "centroid_rel_error_median": -0.01}
    tones = {"freqs_hz": [65.0, 2000.0], "steady": [0.02, 0.22], "decaying_notes": [0.5, 0.77]}
    (line,) = limitations({"codec_round_trip": {**rt, "tone_rms_ratio": tones}})
    assert "centroid within 10% on only 62%" in line
    assert "2%-22% of a steady sine's RMS at 65-2000 Hz" in line and "50%-77%" in line
    bands = {"band_edges_hz": [0.0, 400.0, 1600.0, 8000.0], "band_level_change_db": [-1.0, -9.3, 0.5]}
    (banded,) = limitations({"codec_round_trip": {**rt, **bands}})
    assert "loses the most at 400-1600 Hz (-9.3 dB" in banded
    stems = {"stems": {"drums": [0.0, 14.0, 1.0], "pitched": [40.0, -16.2, -9.0]}}
    (stemmed,) = limitations({"codec_round_trip": {**rt, **bands, **stems}})
    assert "the pitched part alone comes back at -16.2 dB and the drums alone at +14.0 dB" in stemmed
    (plain,) = limitations({"codec_round_trip": rt})
    assert "steady" not in plain
    assert limitations({"codec_round_trip": {**rt, "centroid_within_10pct": 0.95}}) == [
        "- All evaluation targets met."
    ]


def test_model_card_states_the_codec_sound_when_the_round_trip_targets_are_met():
    rt = {"tempo_within_4pct": 1.0, "centroid_within_10pct": 0.925, "centroid_rel_error_median": -0.03}
    stems = {
        "band_edges_hz": [0.0, 400.0, 800.0, 8000.0],
        "drums": [0.0, 0.9, -1.0],
        "pitched": [13.6, -12.6, -3.0],
    }
    tones = {"freqs_hz": [65.0, 2000.0], "steady": [0.01, 0.14], "decaying_notes": [0.6, 0.76]}
    (line,) = limitations({"codec_round_trip": {**rt, "stems": stems, "tone_rms_ratio": tones}})
    assert "targets are met (tempo 100%, centroid 92%)" in line
    assert "pitched part alone at -12.6 dB at 400-800 Hz" in line and "1%-14% of its RMS" in line
