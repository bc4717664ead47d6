"""Our numpy resampling and zero-phase Butterworth filters equal scipy.signal's (the reference),
and the device's analysis path never imports scipy (scipy.signal and scipy.fft cost a Pi ~80 MB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dsp
from dsp import filters

signal = pytest.importorskip("scipy.signal")
ROOT = Path(__file__).resolve().parents[1]


def reference_resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """scipy's resample_poly, in the same stages as ours: card rates first decimated by an
    integer factor with our first-stage filter (``window=`` takes the FIR itself)."""
    n_out = -(-x.size * rate_out // rate_in)
    plan = filters._cascade(rate_in, rate_out)
    if plan:
        factor, taps = plan
        x = signal.resample_poly(x, 1, factor, window=filters._prefilter(factor, taps))
        rate_out *= factor
    g = np.gcd(rate_in, rate_out)
    return signal.resample_poly(x, rate_out // g, rate_in // g).astype(np.float32)[:n_out]


@pytest.mark.parametrize("rate_in,rate_out", [(48000, 2000), (44100, 2000), (2000, 100), (8000, 2000),
                                              (2000, 48000), (22050, 2000), (2000, 8000), (4000, 2000),
                                              (11025, 2000), (2000, 44100), (96000, 2000), (3000, 2000),
                                              (6000, 2000), (44056, 2000), (32000, 2000), (16000, 2000)])
@pytest.mark.parametrize("length", [1, 7, 100, 30011])
def test_resample_equals_resample_poly(rate_in, rate_out, length):
    x = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    ref = reference_resample(x, rate_in, rate_out)
    ours = dsp.resample(x, rate_in, rate_out)
    assert ours.shape == ref.shape == (-(-length * rate_out // rate_in),) and ours.dtype == np.float32
    assert np.max(np.abs(ours - ref)) <= 2e-6


def test_card_rates_are_decimated_in_two_stages_and_the_analysis_rates_in_one():
    """The cascade is for sound-card and phone rates only: the training data's 2-8 kHz, the
    envelope's 2 kHz -> 100 Hz and rates without a cheap plan keep resample_poly's single stage."""
    for rate in (22050, 24000, 32000, 44100, 48000, 88200, 96000):
        assert filters._cascade(rate, 2000) is not None, rate
    for rate_in, rate_out in ((2000, 100), (4000, 2000), (8000, 2000), (16000, 2000), (44056, 2000),
                              (47999, 2000), (2000, 48000)):
        assert filters._cascade(rate_in, rate_out) is None, (rate_in, rate_out)


@pytest.mark.parametrize("rate", [48000, 44100, 32000, 96000])
def test_two_stage_decimation_keeps_the_band_and_rejects_aliases_like_one_stage(rate):
    """Against the single stage it replaces (resample_poly's own filter): the same gain up to
    900 Hz within 0.1 dB, and anything that would fold into 0-1 kHz at least 55 dB down."""
    seconds = 4
    t = np.arange(rate * seconds) / rate

    def gain(frequency: float) -> float:
        tone = np.sin(2 * np.pi * frequency * t).astype(np.float32)
        out = dsp.resample(tone, rate, 2000)[2000:-2000].astype(np.float64)  # away from the ends
        return float(np.sqrt(2 * np.mean(out ** 2)))

    for frequency in (30.0, 100.0, 400.0, 700.0, 900.0):
        g = np.gcd(rate, 2000)
        single = signal.resample_poly(np.sin(2 * np.pi * frequency * t), 2000 // g, rate // g)[2000:-2000]
        expected = np.sqrt(2 * np.mean(single ** 2))
        assert abs(20 * np.log10(gain(frequency) / expected)) < 0.1, frequency
    factor, _taps = filters._cascade(rate, 2000)
    middle = rate / factor
    for frequency in (2000 - 300.0, 2000 + 700.0, middle - 600.0, middle + 300.0, 2 * middle - 500.0):
        if frequency < rate / 2:
            assert 20 * np.log10(gain(frequency) + 1e-12) < -55, frequency


@pytest.mark.parametrize("order,low,high,btype", [(4, 25.0, 400.0, "bandpass"), (2, 0.0, 8.0, "lowpass"),
                                                  (3, 0.0, 300.0, "lowpass"), (2, 10.0, 0.0, "highpass"),
                                                  (4, 150.0, 0.0, "highpass"), (2, 60.0, 700.0, "bandpass")])
@pytest.mark.parametrize("length", [2, 5, 40, 1000, 40000])
def test_zero_phase_filters_equal_sosfiltfilt(order, low, high, btype, length):
    rate = 2000
    x = (np.random.default_rng(length).standard_normal(length) + 0.3).astype(np.float32)
    edges = [low, high] if btype == "bandpass" else (high if btype == "lowpass" else low)
    sos = signal.butter(order, edges, btype=btype, fs=rate, output="sos")
    pad = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
    ref = signal.sosfiltfilt(sos, x.astype(np.float64), padlen=min(pad, length - 1))
    if btype == "bandpass":
        ours = dsp.bandpass(x, rate, low_hz=low, high_hz=high, order=order)
    elif btype == "lowpass":
        ours = filters.lowpass(x, rate, high, order=order)
    else:
        ours = filters.highpass(x, rate, low, order=order)
    assert np.max(np.abs(ours - ref)) <= 1e-6 * max(1.0, np.max(np.abs(ref)))


def test_classifying_never_imports_scipy():
    code = ("import sys, dsp\nfrom model import Classifier\nfrom model.classifier import ASSETS\n"
            "c = Classifier.load()\nfor p in sorted((ASSETS / 'reference').glob('*.wav')):\n"
            "    s, r = dsp.read_wav(p)\n    c.classify(dsp.resample(s, r, 48000), 48000)\n"
            "print(any(m.split('.')[0] == 'scipy' for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"
