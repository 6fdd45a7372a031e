"""Spectrogram thumbnails of a run's clips for ``report.html``: ``report_assets/<key>_<stamp>.png``, where
``stamp`` hashes the wav's size and mtime, so a rerun draws only the clips that changed."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from steerlit.files import atomic_path

ASSETS_DIR = "report_assets"
THUMBNAIL_SIZE = (160, 60)  # (width, height) in pixels
PROGRESS_MIN_CLIPS = 32  # a thumbnail progress bar from this many clips to draw


class ThumbnailError(ValueError):
    """A clip that cannot be drawn (an unreadable wav)."""


def thumbnail_path(run_dir: Path, key: str, wav: Path) -> Path:
    stat = wav.stat()
    stamp = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return run_dir / ASSETS_DIR / f"{key}_{stamp}.png"


def write_thumbnails(run_dir: Path, wavs: Mapping[str, Path]) -> dict[str, Path]:
    """key -> spectrogram PNG under ``report_assets/``; only clips without a current PNG are drawn, and PNGs
    of clips that changed or left the run are removed."""
    targets = {key: thumbnail_path(run_dir, key, wav) for key, wav in wavs.items()}
    todo = [key for key, png in targets.items() if not png.is_file()]
    for key in tqdm(todo, desc="report thumbnails", unit="clip", disable=len(todo) < PROGRESS_MIN_CLIPS):
        draw_thumbnail(wavs[key], targets[key])
    current = set(targets.values())
    for stale in [png for png in (run_dir / ASSETS_DIR).glob("*.png") if png not in current]:
        stale.unlink()
    return targets


def draw_thumbnail(wav: Path, png: Path) -> Path:
    import matplotlib.image  # deferred: matplotlib (only when thumbnails are drawn)

    try:
        samples, sample_rate = sf.read(wav, dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        raise ThumbnailError(
            f"{wav} is not a readable audio file ({err}); rerun the study, or make the report with "
            "thumbnails=False (`steerlit report RUN --no-thumbnails`)."
        ) from err
    image = spectrogram_image(samples.mean(axis=1), sample_rate)
    with atomic_path(png) as tmp:
        matplotlib.image.imsave(tmp, image, cmap="magma", origin="lower", vmin=0.0, vmax=1.0, format="png")
    return png


def spectrogram_image(samples: np.ndarray, sample_rate: int, size=THUMBNAIL_SIZE) -> np.ndarray:
    """Log-power spectrogram on a log-frequency axis (30 Hz to Nyquist), 80 dB range, as an image in [0, 1].

    samples: (n,) mono audio. Returns (height, width); row 0 is the lowest frequency.
    """
    width, height = size
    n_fft = 1024
    x = np.pad(np.asarray(samples, dtype=np.float64), (0, max(0, n_fft - len(samples))))
    hop = max(1, (len(x) - n_fft) // max(1, width - 1))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]  # (n_frames, n_fft)
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2  # (n_frames, n_fft // 2 + 1)
    db = 10.0 * np.log10(power + 1e-12)
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    target_hz = np.geomspace(30.0, sample_rate / 2, height)
    image = np.stack([np.interp(target_hz, bin_hz, frame) for frame in db], axis=1)  # (height, n_frames)
    image = image[:, np.linspace(0, image.shape[1] - 1, width).round().astype(int)]  # (height, width)
    floor = max(float(image.max()) - 80.0, -100.0)  # silence stays dark
    return np.clip((image - floor) / 80.0, 0.0, 1.0)
