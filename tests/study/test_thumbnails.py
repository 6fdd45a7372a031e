import numpy as np

from steerlit.study.thumbnails import spectrogram_image


def test_spectrogram_image_shape_range_and_pitch():
    sample_rate = 16000
    t = np.arange(sample_rate) / sample_rate
    low = spectrogram_image(np.sin(2 * np.pi * 200 * t), sample_rate)
    high = spectrogram_image(np.sin(2 * np.pi * 4000 * t), sample_rate)
    assert low.shape == high.shape == (60, 160)
    assert low.min() >= 0.0 and low.max() <= 1.0
    assert low.mean(axis=1).argmax() < high.mean(axis=1).argmax()  # row 0 is the lowest frequency
    assert spectrogram_image(np.zeros(100), sample_rate).max() == 0.0  # silence stays dark
