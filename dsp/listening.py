"""Listening copies of a recording: one band of the heart's sounds, loud enough to hear.

Why: a chest recording played as captured is hard to listen to. Its level is often 30 dB or
more below full scale, rumble (handling, breathing) and hiss (the sound card) surround the heart's
20-500 Hz, and a laptop's or phone's speaker plays little below ~150 Hz. Digital stethoscopes
answer this with filter modes a clinician already knows (bell for low sounds, diaphragm for high
ones) and gain; a listening copy does the same for the web page:

* the band of the chosen mode, zero-phase (S1 and S2 stay where the pictures show them);
* a gain that brings the heartbeats' peaks to -6 dBFS (the median of each 2 s stretch's peak: every
  stretch holds a beat, and a knock or two on the chest piece cannot move a median), at most +40 dB,
  so a silent or noise-only recording is not blown up into a roar;
* a soft limiter above that, so a knock on the chest piece cannot clip;
* 8 kHz 16-bit mono: every browser plays it, and 20 s is 320 KB over the clinic Wi-Fi instead of
  the 1.9 MB of a 48 kHz capture.

The copy is for listening only: the verdict, the pictures and the exports use the recording itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ParameterError
from .filters import ANALYSIS_RATE_HZ, HEART_BAND_HZ, bandpass, resample

#: What browsers play everywhere (some refuse WAV below 8 kHz).
LISTEN_RATE_HZ = 8000
#: Where a typical heartbeat's peak ends up: -6 dBFS, with louder beats going into the limiter.
TARGET_LEVEL = 0.5
#: The limiter's ceiling: float32's tanh reaches 1.0 exactly, so aim just below full scale.
CEILING = 0.99
#: The most gain a copy gets (dB): enough for a faint but real recording, not for a silent one.
MAX_GAIN_DB = 40.0
#: The stretch whose peak is one vote on the level: long enough to hold a beat at 30 bpm.
LEVEL_STRETCH_S = 2.0


@dataclass(frozen=True)
class ListeningMode:
    """One filter setting, named as on a digital stethoscope."""

    name: str
    label: str
    low_hz: float
    high_hz: float
    hint: str


LISTENING_MODES: dict[str, ListeningMode] = {mode.name: mode for mode in (
    ListeningMode("heart", "Heart sounds", *HEART_BAND_HZ,
                  "the band HeartPi analyses: S1, S2 and most murmurs"),
    ListeningMode("bell", "Low (bell)", 20.0, 200.0,
                  "S3, S4 and low rumbles such as mitral stenosis"),
    ListeningMode("diaphragm", "High (diaphragm)", 100.0, 500.0,
                  "split S2, clicks and high-pitched murmurs such as aortic regurgitation"),
)}


def listening_copy(samples: np.ndarray, rate: int, mode: str = "heart") -> np.ndarray:
    """The recording filtered to ``mode``'s band and brought to a listening level, at
    :data:`LISTEN_RATE_HZ`; ``ParameterError`` for an unknown mode."""
    try:
        band = LISTENING_MODES[mode]
    except KeyError:
        raise ParameterError(f"unknown listening mode {mode!r}; known: {', '.join(LISTENING_MODES)}") from None
    analysis = resample(np.asarray(samples, dtype=np.float32), rate, ANALYSIS_RATE_HZ)
    filtered = bandpass(analysis, ANALYSIS_RATE_HZ, low_hz=band.low_hz, high_hz=band.high_hz)
    return loudness_normalise(resample(filtered, ANALYSIS_RATE_HZ, LISTEN_RATE_HZ), LISTEN_RATE_HZ)


def beat_level(x: np.ndarray, rate: int) -> float:
    """The median of the peaks of each :data:`LEVEL_STRETCH_S` stretch (the whole of a shorter
    recording): the heartbeats' level, which a few knocks cannot move."""
    stretch = int(LEVEL_STRETCH_S * rate)
    count = max(1, x.size // stretch)
    if count == 1:
        return float(np.max(np.abs(x)))
    return float(np.median(np.abs(x[: count * stretch]).reshape(count, stretch).max(axis=1)))


def loudness_normalise(x: np.ndarray, rate: int) -> np.ndarray:
    """Gain that brings :func:`beat_level` to :data:`TARGET_LEVEL` (at most :data:`MAX_GAIN_DB`),
    then a soft limiter that keeps every sample inside (-1, 1) and leaves everything below the
    target untouched."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    level = beat_level(x, rate)
    gain = TARGET_LEVEL / level if level > 0 else 1.0
    gain = min(gain, 10 ** (MAX_GAIN_DB / 20))
    return soft_limit(x * np.float32(gain))


def soft_limit(x: np.ndarray, knee: float = TARGET_LEVEL) -> np.ndarray:
    """Identity up to ``knee``; above it ``knee + h * tanh(excess / h)`` with ``h`` the room up
    to :data:`CEILING`: slope 1 at the knee (no audible corner), never beyond the ceiling (no
    clipping)."""
    magnitude = np.abs(x)
    over = magnitude > knee
    if not over.any():
        return x
    headroom = CEILING - knee
    limited = knee + headroom * np.tanh((magnitude[over] - knee) / headroom)
    out = x.copy()
    out[over] = np.copysign(limited, x[over]).astype(x.dtype)
    return out
