"""Heart rate and signal quality on synthetic and real recordings."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import dsp
from dsp import signal_quality as q
from tests.signals import SHARED_DATA, heart_sounds, pink_noise


@pytest.mark.parametrize("bpm", [40, 48, 55, 62, 70, 80, 90, 100, 115, 130, 150, 165, 180])
@pytest.mark.parametrize("rate", [2000, 44100])
def test_heart_rate_of_synthetic_trains_within_5_bpm(bpm, rate):
    samples = heart_sounds(bpm, 20.0, 2000, seed=bpm)
    if rate != 2000:
        samples = dsp.resample(samples, 2000, rate)
    measured = dsp.heart_rate(samples, rate)
    assert measured is not None and abs(measured - bpm) <= 5, measured




def test_heart_rate_of_real_recordings_counted_by_hand():
    import soundfile

    counted = _counted_rates()
    if not counted:
        pytest.skip("../shared/data not present")
    for name, bpm in counted.items():
        samples, rate = soundfile.read(SHARED_DATA / "physionet2016" / name, dtype="float32")
        measured = dsp.heart_rate(samples[: 10 * rate], rate)
        assert measured is not None and abs(measured - bpm) <= 5, (name, measured, bpm)


def _counted_rates() -> dict:
    from tests.counted_rates import COUNTED_BPM

    return {k: v for k, v in COUNTED_BPM.items() if (SHARED_DATA / "physionet2016" / k).exists()}


def test_clean_heart_sounds_pass_quality():
    report = dsp.quality(heart_sounds(72, 20.0, 4000), 4000)
    assert report.ok, report
    assert report.heart_rate_bpm and abs(report.heart_rate_bpm - 72) < 5


@pytest.mark.parametrize("where", ["start", "end"])
def test_a_knock_at_either_end_does_not_hide_the_heartbeat(where):
    """Lifting the chest piece at the end (or knocking it on) makes a loud transient at
    the edge of the recording; it must not decide the envelope's periodicity."""
    samples = heart_sounds(75, 8.0, 2000, seed=3)
    knock = np.zeros_like(samples)
    span = slice(0, 400) if where == "start" else slice(-400, None)  # 0.2 s, 15x the heart sounds
    knock[span] = 15 * np.max(np.abs(samples)) * np.hanning(400) * np.sin(np.arange(400) / 3.0)
    report = dsp.quality(np.clip(samples + knock, -1, 1), 2000)
    assert q.NO_HEARTBEAT not in report.reasons, report
    assert report.heart_rate_bpm and abs(report.heart_rate_bpm - 75) <= 5, report


def test_envelope_smoothing_after_decimation_matches_smoothing_before():
    """The envelope is decimated first and smoothed at 100 Hz (20x less work); away from
    the ends it is the envelope of smoothing at the full rate and then decimating."""
    analysis = dsp.bandpass(heart_sounds(70, 20.0, 2000, seed=5), 2000)
    rectified = np.abs(analysis).astype(np.float64)
    reference = dsp.resample(dsp.filters.lowpass(rectified - rectified.mean(), 2000, 8.0, order=2), 2000,
                             q.ENVELOPE_RATE_HZ).astype(np.float64)
    edge = q.ENVELOPE_EDGE_SAMPLES
    reference = reference[edge:-edge]
    reference = (reference - reference.mean()) / reference.std()
    ours = q.envelope(analysis)
    assert ours.shape == reference.shape
    assert np.max(np.abs(ours - reference)[20:-20]) < 0.02


def test_murmur_does_not_make_quality_fail():
    report = dsp.quality(heart_sounds(80, 20.0, 2000, murmur=0.3), 2000)
    assert report.ok, report


def test_silence_is_reported():
    report = dsp.quality(np.zeros(20 * 8000, np.float32), 8000)
    assert report.reasons == (q.SILENCE,)
    quiet = (1e-5 * np.random.default_rng(0).standard_normal(20 * 8000)).astype(np.float32)
    assert q.SILENCE in dsp.quality(quiet, 8000).reasons


def test_clipping_is_reported():
    clipped = np.clip(heart_sounds(70, 20.0, 4000) * 20, -1.0, 1.0)
    assert q.CLIPPING in dsp.quality(clipped, 4000).reasons


@pytest.mark.parametrize("rate", [2000, 8000, 44100])
def test_white_noise_is_poor(rate):
    noise = (0.1 * np.random.default_rng(rate).standard_normal(20 * rate)).astype(np.float32)
    report = dsp.quality(noise, rate)
    assert not report.ok and (q.NO_HEARTBEAT in report.reasons or q.NOISY in report.reasons)


def test_pink_noise_and_hum_are_poor():
    rate = 8000
    assert not dsp.quality(pink_noise(20 * rate, seed=3), rate).ok
    t = np.arange(20 * rate) / rate
    hum = (0.2 * np.sin(2 * np.pi * 50 * t) + 0.05 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    assert q.NO_HEARTBEAT in dsp.quality(hum, rate).reasons


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_speech_is_poor(tmp_path):
    path = tmp_path / "speech.wav"
    text = ("Please breathe normally and keep still while we listen to your heart. " * 4)
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    samples, rate = dsp.read_wav(path)
    report = dsp.quality(samples, rate)
    assert not report.ok, report


def test_too_short_is_reported():
    report = dsp.quality(heart_sounds(70, 0.8, 2000), 2000)
    assert q.TOO_SHORT in report.reasons
    assert q.TOO_SHORT in dsp.quality(heart_sounds(70, 4.0, 2000), 2000, min_seconds=5.0).reasons


@pytest.mark.parametrize("bpm,seconds", [(60, 2.6), (75, 2.2), (100, 1.8), (130, 1.5)])
def test_short_clip_with_two_beats_passes_and_gives_its_rate(bpm, seconds):
    """A clip of a few cycles (another device's export) is judged, not refused: the period
    search stops at half the envelope (0.2 s left out at each end), so two beats must fit."""
    report = dsp.quality(heart_sounds(bpm, seconds, 8000, seed=bpm), 8000)
    assert report.ok, report
    assert report.heart_rate_bpm == pytest.approx(bpm, abs=5)


def test_short_clip_with_less_than_two_beats_has_no_heartbeat():
    report = dsp.quality(heart_sounds(40, 2.0, 8000, seed=1), 8000)
    assert q.NO_HEARTBEAT in report.reasons


def test_every_reason_has_advice():
    for reason in (q.TOO_SHORT, q.SILENCE, q.CLIPPING, q.NOISY, q.NO_HEARTBEAT):
        assert reason in dsp.REASON_ADVICE


def _welch_band_share(samples: np.ndarray, rate: int) -> float:
    import scipy.signal

    freqs, power = scipy.signal.welch(samples.astype(np.float64), fs=rate, window="hann", nperseg=256,
                                      noverlap=128, detrend="constant")
    heart = power[(freqs >= 25) & (freqs < 400)].sum() / 375.0
    above = power[(freqs >= 400) & (freqs < 900)].sum() / 500.0
    return float(10 * np.log10(heart / above))


@pytest.mark.parametrize("noise", [0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.5])
def test_band_share_agrees_with_scipy_welch_where_it_decides(noise):
    """The band comparison reads the band-pass filter's own spectrum; where the verdict is
    decided it agrees with scipy's Welch estimate, and white noise scores 0 dB."""
    rate = dsp.ANALYSIS_RATE_HZ
    rng = np.random.default_rng(11)
    samples = (heart_sounds(70, 20.0, rate, seed=2) + noise * rng.standard_normal(20 * rate)).astype(np.float32)
    _, spectrum = dsp.bandpass_with_spectrum(samples, rate)
    ours, welch = q._band_share_db(spectrum), _welch_band_share(samples, rate)
    if welch < 20:
        assert ours == pytest.approx(welch, abs=0.5)
    else:  # a clean recording: both far above the threshold
        assert ours > q.MIN_BAND_SHARE_DB + 10
    white = rng.standard_normal(20 * rate).astype(np.float32)
    assert q._band_share_db(dsp.bandpass_with_spectrum(white, rate)[1]) == pytest.approx(0.0, abs=0.2)


def test_band_spectrum_is_the_inputs_and_the_filter_output_unchanged():
    rate = dsp.ANALYSIS_RATE_HZ
    samples = pink_noise(10 * rate, seed=6)
    filtered, spectrum = dsp.bandpass_with_spectrum(samples, rate)
    np.testing.assert_array_equal(filtered, dsp.bandpass(samples, rate))
    # away from 0 Hz the spectrum is the input's, zero-padded (its ends odd-extended)
    reference = np.fft.rfft(samples.astype(np.float64), spectrum.size)
    band = slice(int(100 * spectrum.size / rate), int(900 * spectrum.size / rate))
    assert spectrum.band_power(100, 900) == pytest.approx(float(np.sum(np.abs(reference[band]) ** 2)), rel=0.02)


@pytest.mark.parametrize("offset,spread,size", [(0.3, 0.003, 48000 * 20), (0.002, 0.003, 48000 * 20),
                                                (0.0, 0.07, 48000 * 20 + 123), (0.01, 0.003, 4000)])
def test_level_statistics_match_float64_with_a_dc_offset(offset, spread, size):
    """RMS about the mean stays right when a card adds a DC offset, up to 40 dB above the
    signal (centred then), or a small one (from the sum of squares then)."""
    rng = np.random.default_rng(5)
    samples = (offset + spread * rng.standard_normal(size)).astype(np.float32)
    rms, peak, clipped = q._level_stats(samples)
    reference = samples.astype(np.float64)
    assert rms == pytest.approx(reference.std(), rel=1e-4)
    assert peak == pytest.approx(np.abs(reference).max())
    assert clipped < q.CLIP_FRACTION


@pytest.mark.parametrize("rails", ["top", "bottom", "both", "neither"])
def test_fraction_at_the_rails_counts_either_side(rails):
    """A card with an offset clips on one rail only; the fraction must count that rail's
    samples, whichever it is, and both rails' when both clip."""
    sine = 0.9 * np.sin(np.arange(48000 * 2) * 0.01)
    offset = {"top": 0.3, "bottom": -0.3, "both": 0.0, "neither": 0.0}[rails]
    gain = 1.4 if rails == "both" else 1.0
    samples = np.clip(offset + gain * sine, -1.0, 1.0).astype(np.float32)
    _, peak, clipped = q._level_stats(samples)
    reference = samples.astype(np.float64)
    expected = np.mean(np.abs(reference) >= 0.995 * np.abs(reference).max())
    assert peak == pytest.approx(np.abs(reference).max())
    assert clipped == pytest.approx(expected)
    if rails != "neither":  # (a bare sine spends ~3 % of its time within 0.5 % of its peak)
        assert clipped > 0.15


@pytest.mark.parametrize("n", [100, 101, 1960, 1961, 3001])
def test_autocorrelation_equals_the_direct_sum_at_every_lag(n):
    """The FFT length is only padded to a fast size: no lag may wrap around."""
    from dsp.signal_quality import _autocorrelation

    env = np.random.default_rng(n).standard_normal(n)
    direct = np.correlate(env, env, mode="full")[n - 1:]
    np.testing.assert_allclose(_autocorrelation(env), direct / direct[0], atol=1e-12)
