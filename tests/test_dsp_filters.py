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


@pytest.mark.parametrize("rate_in,rate_out", [(48000, 2000), (44100, 2000), (2000, 100), (8000, 2000),
                                              (2000, 48000), (22050, 2000), (2000, 8000), (4000, 2000),
                                              (11025, 2000), (2000, 44100), (96000, 2000), (3000, 2000),
                                              (6000, 2000), (44056, 2000)])
@pytest.mark.parametrize("length", [1, 7, 100, 30011])
def test_resample_equals_resample_poly(rate_in, rate_out, length):
    x = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    g = np.gcd(rate_in, rate_out)
    ref = signal.resample_poly(x, rate_out // g, rate_in // g).astype(np.float32)
    ours = dsp.resample(x, rate_in, rate_out)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.max(np.abs(ours - ref)) <= 2e-6


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
