"""Recording-chain augmentation: make one stethoscope sound like many.

Each call simulates a different front end (frequency response, band limits, gain, noise,
clock) so the CNN cannot learn "which device" instead of "which heart". These are the
levers the domain-shift research ranks first; their effect is measured with
leave-one-source-out in :mod:`model.train.pipeline`.
"""

from __future__ import annotations

import numpy as np

import dsp
from dsp.filters import highpass, lowpass

RATE = dsp.ANALYSIS_RATE_HZ


def random_eq(samples: np.ndarray, rng: np.random.Generator, max_db: float = 6.0) -> np.ndarray:
    """Multiply the spectrum by a smooth random curve within +-max_db (a random EQ)."""
    spectrum = np.fft.rfft(samples)
    n_knots = 8
    knots = rng.uniform(-max_db, max_db, n_knots)
    curve_db = np.interp(np.linspace(0, n_knots - 1, spectrum.size), np.arange(n_knots), knots)
    return np.fft.irfft(spectrum * 10 ** (curve_db / 20), samples.size).astype(np.float32)


def random_resonance(samples: np.ndarray, rng: np.random.Generator, max_db: float = 12.0) -> np.ndarray:
    """Convolve with the direct sound plus one decaying resonance (40-500 Hz, 2-25 ms).

    A chest piece, its tubing or a phone's body rings at its own frequency: a peak (or, with
    the opposite sign, a notch) far narrower than :func:`random_eq`'s smooth curve. The
    resonance is scaled so that its own peak gain is up to ``max_db``.
    """
    t = np.arange(int(0.15 * RATE)) / RATE
    ring = np.exp(-t / rng.uniform(0.002, 0.025)) * np.sin(2 * np.pi * rng.uniform(40.0, 500.0) * t)
    ring *= 10 ** (rng.uniform(-6.0, max_db) / 20) / np.abs(np.fft.rfft(ring, 4096)).max()
    response = ring * rng.choice([-1.0, 1.0])
    response[0] += 1.0
    size = samples.size + response.size - 1
    n_fft = 1 << int(np.ceil(np.log2(size)))
    out = np.fft.irfft(np.fft.rfft(samples, n_fft) * np.fft.rfft(response, n_fft), n_fft)[:samples.size]
    return out.astype(np.float32)


def random_grain(samples: np.ndarray, rng: np.random.Generator, bits: tuple[float, float] = (6.0, 12.0)
                 ) -> np.ndarray:
    """Round to ``2 ** (b - 1)`` steps between silence and the peak, ``b`` uniform in ``bits``.

    A coarse converter or export, or a quiet signal on a fine one (a capture gain set low): the
    rounding noise fills the quiet between heart sounds. Training-e stored its normal recordings
    with about 8 bits of grain and its abnormal ones with 13, and the shipped model refers more
    healthy people the coarser a recording is stored (tools/eval_sample_resolution.py); rounding
    both classes of every source alike takes the grain away as a cue.
    """
    return round_to_grain(samples, rng.uniform(*bits))


def round_to_grain(samples: np.ndarray, bits: float) -> np.ndarray:
    """``samples`` rounded to ``2 ** (bits - 1)`` steps between silence and their own peak (a
    converter of that many bits, the signal just reaching full scale), in their own dtype."""
    peak = float(np.abs(samples).max())
    if peak == 0.0:
        return samples
    step = peak / 2 ** (bits - 1)
    return (np.round(samples / step) * step).astype(samples.dtype)


def at_level(samples: np.ndarray, dbfs: float) -> np.ndarray:
    """``samples`` scaled to an RMS of ``dbfs`` and rounded to 16-bit steps: a 16-bit converter
    whose capture gain put the sound there (silence stays silence)."""
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    if rms == 0.0:
        return samples
    scaled = samples.astype(np.float64) * (10 ** (dbfs / 20) / rms)
    return (np.round(scaled * 32768.0) / 32768.0).astype(np.float32)


def augment(samples: np.ndarray, rng: np.random.Generator, *, resonance: bool = False,
            grain: bool = False) -> np.ndarray:
    """One random recording chain applied to analysis-rate audio (``resonance``: half the
    chains also get :func:`random_resonance`; ``grain``: half end with :func:`random_grain`,
    drawn after everything else, so chains without it stay what they were)."""
    y = samples.astype(np.float64)
    if rng.random() < 0.5:  # clock / speed mismatch, +-8 %
        factor = rng.uniform(0.92, 1.08)
        up = int(round(factor * 100))
        y = dsp.resample(y, 100, up).astype(np.float64)
    if resonance and rng.random() < 0.5:
        y = random_resonance(y, rng).astype(np.float64)
    if rng.random() < 0.8:
        y = random_eq(y, rng)
    if rng.random() < 0.5:
        y = highpass(y, RATE, rng.uniform(10.0, 150.0), order=2)
    if rng.random() < 0.5:
        y = lowpass(y, RATE, rng.uniform(150.0, 800.0), order=2)
    rms = np.sqrt(np.mean(y ** 2)) + 1e-9
    if rng.random() < 0.6:  # additive white/pink noise at 10-40 dB SNR
        noise = rng.standard_normal(y.size)
        if rng.random() < 0.5:
            spec = np.fft.rfft(noise) / np.sqrt(np.maximum(np.arange(noise.size // 2 + 1), 1))
            noise = np.fft.irfft(spec, noise.size)
        noise *= rms / (np.sqrt(np.mean(noise ** 2)) + 1e-12) * 10 ** (-rng.uniform(10, 40) / 20)
        y = y + noise
    y *= 10 ** (rng.uniform(-20, 6) / 20)  # gain
    if grain and rng.random() < 0.5:
        y = random_grain(y, rng)
    return y.astype(np.float32)


#: Lengths of the short clips other stethoscopes and phone apps export (Yaseen 2018's are
#: 1.2-4.0 s): the device tiles a clip shorter than one window to fill it.
SHORT_CLIP_SECONDS = (1.2, 4.0)


def short_crop(samples: np.ndarray, rng: np.random.Generator,
               seconds: tuple[float, float] = SHORT_CLIP_SECONDS) -> np.ndarray:
    """A random stretch of ``seconds`` (uniform between the two) of analysis-rate audio, as
    another device would have exported it; the whole recording when it is no longer."""
    length = int(round(rng.uniform(*seconds) * RATE))
    if samples.size <= length:
        return samples
    start = int(rng.integers(0, samples.size - length + 1))
    return samples[start:start + length]
