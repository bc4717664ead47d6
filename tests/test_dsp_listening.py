"""Listening copies (dsp.listening): the right band, a listening level, no clipping, no shift."""

from __future__ import annotations

import numpy as np
import pytest

import dsp
from dsp.listening import CEILING, MAX_GAIN_DB, TARGET_LEVEL, beat_level, loudness_normalise, soft_limit
from tests.signals import heart_sounds


def tone(freq: float, seconds: float, rate: int, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def amplitude_at(y: np.ndarray, freq: float, rate: int) -> float:
    """Amplitude of ``freq`` in ``y`` (middle half, away from the filter's ends)."""
    middle = y[y.size // 4: 3 * y.size // 4].astype(np.float64)
    t = np.arange(middle.size) / rate
    return 2 * abs(np.mean(middle * np.exp(-2j * np.pi * freq * t)))


@pytest.mark.parametrize("mode,kept,removed", [
    ("heart", [60, 300], [10, 900]),
    ("bell", [40, 120], [450, 900]),
    ("diaphragm", [200, 400], [30, 900]),
])
def test_each_mode_keeps_its_band_and_removes_the_rest(mode, kept, removed):
    rate = 48000
    mix = sum(tone(f, 4, rate, 0.01) for f in kept + removed)
    y = dsp.listening_copy(mix, rate, mode)
    band = dsp.LISTENING_MODES[mode]
    assert band.low_hz < min(kept) and max(kept) < band.high_hz
    levels = {f: amplitude_at(y, f, dsp.LISTEN_RATE_HZ) for f in kept + removed}
    loudest = max(levels[f] for f in kept)
    for f in kept:
        assert levels[f] > 0.5 * loudest, (mode, levels)  # within 6 dB of each other
    for f in removed:
        assert levels[f] < 0.03 * loudest, (mode, f, levels)  # at least 30 dB down


@pytest.mark.parametrize("rate", [2000, 4000, 8000, 44100, 48000])
def test_a_copy_lasts_as_long_as_the_recording_at_the_listening_rate(rate):
    y = dsp.listening_copy(heart_sounds(70, 6.5, rate, seed=1), rate)
    assert y.dtype == np.float32 and y.size == pytest.approx(6.5 * dsp.LISTEN_RATE_HZ, abs=2)


def test_a_faint_recording_is_brought_to_the_listening_level():
    faint = 0.02 * heart_sounds(70, 10, 4000, noise=0.002, seed=2) / 0.5  # peaks near -34 dBFS
    y = dsp.listening_copy(faint, 4000)
    assert beat_level(y, dsp.LISTEN_RATE_HZ) == pytest.approx(TARGET_LEVEL, rel=0.02)
    assert beat_level(y, dsp.LISTEN_RATE_HZ) > 20 * beat_level(faint, 4000)
    assert np.abs(y).max() < 1.0


def test_gain_is_capped_so_hiss_stays_hiss():
    hiss = (1e-5 * np.random.default_rng(3).standard_normal(4000 * 8)).astype(np.float32)
    y = dsp.listening_copy(hiss, 4000)
    band = dsp.resample(dsp.bandpass(dsp.resample(hiss, 4000, 2000), 2000), 2000, dsp.LISTEN_RATE_HZ)
    gain = beat_level(y, dsp.LISTEN_RATE_HZ) / beat_level(band, dsp.LISTEN_RATE_HZ)
    assert gain == pytest.approx(10 ** (MAX_GAIN_DB / 20), rel=1e-3)  # 40 dB up, not to the target
    assert beat_level(y, dsp.LISTEN_RATE_HZ) < 0.01  # nowhere near the listening level


def test_silence_stays_silent():
    y = dsp.listening_copy(np.zeros(4000 * 3, dtype=np.float32), 4000)
    assert np.all(y == 0) and np.isfinite(y).all()


def test_a_knock_is_limited_not_clipped_and_the_heart_keeps_its_level():
    rate = 4000
    x = heart_sounds(70, 10, rate, seed=4)
    knocked = x.copy()
    knocked[rate * 5: rate * 5 + 40] += 20 * np.hanning(40).astype(np.float32)  # a bump 26 dB louder
    y, y_knocked = dsp.listening_copy(x, rate), dsp.listening_copy(knocked, rate)
    assert np.abs(y_knocked).max() < 1.0
    away = slice(0, 4 * dsp.LISTEN_RATE_HZ)  # the heart sounds far from the knock
    assert beat_level(y_knocked[away], dsp.LISTEN_RATE_HZ) == pytest.approx(TARGET_LEVEL, rel=0.05)
    # and as loud as without the knock: one bump does not turn the whole recording down
    assert beat_level(y_knocked[away], dsp.LISTEN_RATE_HZ) == pytest.approx(beat_level(y[away], dsp.LISTEN_RATE_HZ),
                                                                             rel=0.05)
    assert np.abs(y_knocked).max() > 0.9  # the knock is still there, just limited


def test_heart_sounds_stay_where_the_pictures_show_them():
    """Zero phase: S1 peaks at the same moment in the copy as in the recording."""
    rate = 2000
    x = heart_sounds(60, 5, rate, noise=0.0, jitter=0.0)
    y = dsp.listening_copy(x, rate)
    first_beat = slice(0, int(0.3 * rate))
    peak_in = np.argmax(np.abs(x[first_beat])) / rate
    peak_out = np.argmax(np.abs(y[: int(0.3 * dsp.LISTEN_RATE_HZ)])) / dsp.LISTEN_RATE_HZ
    assert abs(peak_out - peak_in) < 0.01


def test_soft_limit_is_the_identity_below_the_knee_and_smooth_and_bounded_above():
    x = np.linspace(-3, 3, 60001, dtype=np.float32)
    y = soft_limit(x)
    below = np.abs(x) <= TARGET_LEVEL
    assert np.array_equal(y[below], x[below])
    assert np.all(np.abs(y) <= CEILING) and np.all(np.diff(y) >= 0)  # bounded, monotonic
    slope = np.diff(y) / np.diff(x)
    assert np.max(np.abs(np.diff(slope))) < 1e-2  # no corner at the knee
    assert loudness_normalise(np.zeros(0, dtype=np.float32), 8000).size == 0


def test_an_unknown_mode_is_named():
    with pytest.raises(dsp.ParameterError, match="unknown listening mode 'treble'.*heart, bell, diaphragm"):
        dsp.listening_copy(np.zeros(4000, dtype=np.float32), 2000, "treble")
