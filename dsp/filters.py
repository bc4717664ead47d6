"""Resampling and band-pass filtering.

scipy is imported inside the functions so that ``import dsp`` stays cheap on a Raspberry Pi
(the daemon imports it at start-up, the web page on every worker).
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

from .errors import ParameterError

#: Every source is resampled to this rate before analysis. PhysioNet records at 2 kHz and
#: heart sounds live below ~800 Hz, so nothing useful is lost and every device looks alike.
ANALYSIS_RATE_HZ = 2000
#: Heart-sound band used for quality, heart rate and the model's features (S1/S2 and most
#: murmurs; the challenge's reference entry uses the same band).
HEART_BAND_HZ = (25.0, 400.0)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``rate_in`` to ``rate_out``; float32 out."""
    if rate_in <= 0 or rate_out <= 0:
        raise ParameterError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    samples = np.asarray(samples, dtype=np.float32)
    if rate_in == rate_out:
        return samples.copy()
    from scipy.signal import resample_poly

    divisor = gcd(int(rate_in), int(rate_out))
    up, down = int(rate_out) // divisor, int(rate_in) // divisor
    out = resample_poly(samples, up, down, window=_polyphase_fir(up, down))
    return out.astype(np.float32, copy=False)


@lru_cache(maxsize=16)
def _polyphase_fir(up: int, down: int) -> np.ndarray:
    """The anti-alias filter ``resample_poly`` would design on every call (its default Kaiser
    window, beta 5, 10 zero crossings per side), designed once per rate pair."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    taps = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    taps.setflags(write=False)
    return taps


@lru_cache(maxsize=32)
def _butter_sos(order: int, low: float, high: float, rate: int, btype: str) -> tuple[np.ndarray, np.ndarray]:
    """Second-order sections and their step-response initial state, designed once per filter."""
    from scipy.signal import butter, sosfilt_zi

    if btype == "bandpass":
        sos = butter(order, [low, high], btype="bandpass", fs=rate, output="sos")
    else:
        sos = butter(order, high if btype == "lowpass" else low, btype=btype, fs=rate, output="sos")
    return sos, sosfilt_zi(sos)


def bandpass(samples: np.ndarray, rate: int, *, low_hz: float = HEART_BAND_HZ[0],
             high_hz: float = HEART_BAND_HZ[1], order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass (second-order sections, forward-backward).

    Zero phase keeps S1/S2 where they are in time, which the envelope-based heart rate and
    the windowing rely on.
    """
    if not 0 < low_hz < high_hz < rate / 2:
        raise ParameterError(f"band {low_hz}-{high_hz} Hz impossible at {rate} Hz")
    return _sosfiltfilt(_butter_sos(order, float(low_hz), float(high_hz), int(rate), "bandpass"),
                        samples)


def lowpass(samples: np.ndarray, rate: float, cutoff_hz: float, *, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth low-pass."""
    if not 0 < cutoff_hz < rate / 2:
        raise ParameterError(f"cut-off {cutoff_hz} Hz impossible at {rate} Hz")
    return _sosfiltfilt(_butter_sos(order, 0.0, float(cutoff_hz), float(rate), "lowpass"), samples)


def highpass(samples: np.ndarray, rate: float, cutoff_hz: float, *, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth high-pass."""
    if not 0 < cutoff_hz < rate / 2:
        raise ParameterError(f"cut-off {cutoff_hz} Hz impossible at {rate} Hz")
    return _sosfiltfilt(_butter_sos(order, float(cutoff_hz), 0.0, float(rate), "highpass"), samples)


def _sosfiltfilt(design: tuple[np.ndarray, np.ndarray], samples: np.ndarray) -> np.ndarray:
    """scipy's ``sosfiltfilt`` (odd extension, steady-state start, forward and backward),
    with the initial state taken from the cached design instead of solved on every call."""
    from scipy.signal import sosfilt

    sos, zi = design
    x = np.asarray(samples, dtype=np.float64)
    default_pad = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
    padlen = min(default_pad, max(0, x.size - 1))
    if padlen:
        x = np.concatenate([2 * x[0] - x[padlen:0:-1], x, 2 * x[-1] - x[-2:-padlen - 2:-1]])
    y, _ = sosfilt(sos, x, zi=zi * x[0])
    y = y[::-1]
    y, _ = sosfilt(sos, y, zi=zi * y[0])
    y = y[::-1]
    return (y[padlen:-padlen] if padlen else y).astype(np.float32)


def to_analysis_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample to :data:`ANALYSIS_RATE_HZ` and band-pass to the heart band.

    This is the single front end shared by quality, heart rate, training and inference.
    """
    return bandpass(resample(samples, rate, ANALYSIS_RATE_HZ), ANALYSIS_RATE_HZ)
