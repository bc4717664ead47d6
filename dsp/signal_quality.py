"""Signal quality and heart rate from the heart-sound envelope.

The device must say "poor signal: record again" rather than guess, so quality is judged
with a few cheap, explainable measures (the literature's signal-quality indices):

* level (silence: stethoscope not on the chest, muted card),
* clipping (gain too high, the chest piece knocked),
* heart-band energy share (speech, rubbing and broadband noise put energy above 400 Hz),
* envelope periodicity (a heartbeat repeats every 0.33-1.7 s; noise and speech do not).

Each failed check is a named reason, which the model turns into the ``poor_signal`` verdict
and the web page into words.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Optional

import numpy as np

from .interruptions import DROPOUT_DB, NOISE_BURST_DB
from .filters import (ANALYSIS_RATE_HZ, HEART_BAND_HZ, Spectrum, _fast_size, bandpass_with_spectrum, lowpass,
                      resample, to_analysis_rate)

TOO_SHORT = "too_short"
SILENCE = "silence"
CLIPPING = "clipping"
NOISY = "noisy"
NO_HEARTBEAT = "no_heartbeat"
#: Every window held a stretch with the chest piece off the skin (:mod:`dsp.interruptions`); given by
#: the classifier, which cuts the windows, not by :func:`quality`.
LIFTED = "lifted"

#: What each reason means for the person holding the stethoscope.
REASON_ADVICE = {
    TOO_SHORT: "recording too short: hold the stethoscope still for the whole recording",
    SILENCE: "almost silent: put the stethoscope firmly on the chest and check the cable",
    CLIPPING: "too loud / distorted: press more gently, or lower the input gain",
    NOISY: "too much noise or talking: ask for quiet and keep the stethoscope still",
    NO_HEARTBEAT: "no regular heartbeat found: move the stethoscope and record again",
    LIFTED: "the stethoscope came off the skin part-way: hold it firmly on the chest for the whole recording",
}

#: Thresholds (chosen on PhysioNet training records and synthetic bad recordings; never on
#: the test split). Named so the model metadata can record which ones were in force.
MIN_QUALITY_SECONDS = 1.0               # uploads: other devices' clips hold a few cycles (Yaseen's
                                        # 1.2-4 s); the device asks for more (config audio.min_seconds)
SILENCE_RMS = 10 ** (-70 / 20)          # -70 dBFS
#: Above silence but below this a recording is still classified, yet the converter's rounding
#: noise fills the quiet between heart sounds and more healthy people are referred
#: (tools/eval_sample_resolution.py, the test split's 16-bit source sets: specificity 0.73 at
#: their own level, 0.71 at -40 dBFS RMS, 0.66 at -50, 0.62 at -60). The box tells the technician
#: to raise the capture gain; the verdict is unchanged.
QUIET_RMS_DBFS = -45.0
CLIP_FRACTION = 0.01                    # 1 % of samples at the peak
MIN_BAND_SHARE_DB = 6.0                 # heart band (25-400 Hz) vs 400-900 Hz, per Hz: speech < 3 dB,
                                        # good training-split recordings > 10.2 dB (99.5 %)
MIN_PERIODICITY = 0.25                  # envelope autocorrelation peak
# A knock outweighs many heartbeats in the autocorrelation, so a knocked recording often fails the
# rhythm check. Capping the envelope at its 95th percentile was measured (2026-12-01, validation,
# tools/eval_transients.py's artefacts) and not kept: "no regular heartbeat" after three knocks fell
# from 49 to 24 of 388, but the recordings it let through were mostly the ones the knocks had
# spoiled for the model (specificity of the verdicts given 0.91 -> 0.86). Refusing them is cheaper.
ENVELOPE_RATE_HZ = 100
ENVELOPE_EDGE_SAMPLES = 20               # 0.2 s left out at each end of the envelope
UPPER_BAND_HZ = 900.0                   # top of the "above the heart band" comparison band
BPM_RANGE = (35.0, 200.0)


@dataclass(frozen=True)
class QualityReport:
    """Outcome of :func:`quality`: ``ok`` is False when any reason is present."""

    reasons: tuple[str, ...]
    duration_s: float
    rms_dbfs: float
    clipped_fraction: float
    band_share_db: float
    periodicity: float
    heart_rate_bpm: Optional[float] = None
    thresholds: dict = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def advice(self) -> list[str]:
        return [REASON_ADVICE[r] for r in self.reasons]

    def to_dict(self) -> dict:
        # every field is a scalar or a tuple: no need for asdict's recursive deep copy
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "thresholds"}
        data["reasons"] = list(self.reasons)
        data["ok"] = self.ok
        return data


def envelope(analysis_samples: np.ndarray, rate: int = ANALYSIS_RATE_HZ) -> np.ndarray:
    """Amplitude envelope at :data:`ENVELOPE_RATE_HZ`, zero-mean unit-variance.

    The rectified signal is decimated first (the resampler's anti-alias filter keeps 0-45 Hz)
    and then smoothed by an 8 Hz zero-phase low-pass at the envelope rate: the same envelope
    as smoothing at the full rate first, away from the ends, for a twentieth of the work.
    """
    rectified = np.abs(np.asarray(analysis_samples, dtype=np.float32))
    # Mean removed first: the resampler pads with zeros, which would turn the positive mean
    # into a step at both ends.
    decimated = resample(rectified - rectified.mean(), rate, ENVELOPE_RATE_HZ)
    env = lowpass(decimated, ENVELOPE_RATE_HZ, 8.0, order=2).astype(np.float64)
    # The first and last 0.2 s are the filters' edge guesses (and, in use, the chest piece
    # being put on or lifted): left out, so one edge spike cannot decide the periodicity.
    edge = ENVELOPE_EDGE_SAMPLES if env.size > 4 * ENVELOPE_EDGE_SAMPLES else 0
    env = env[edge:env.size - edge]
    env -= env.mean()
    std = env.std()
    return env / std if std > 0 else env


def _autocorrelation(env: np.ndarray) -> np.ndarray:
    """Biased autocorrelation, normalised to 1 at lag 0, by FFT: zero-padded to at least
    ``2n - 1`` so no lag wraps, to a length numpy's FFT handles fast (a 20 s envelope's
    3,920 = 2^4 * 5 * 7^2 took 1.6x as long as 4,000)."""
    n = env.size
    size = _fast_size(2 * n - 1)
    spectrum = np.fft.rfft(env, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n]
    return acf / acf[0] if acf[0] > 0 else np.zeros(n)


def _beat_period(env: np.ndarray) -> tuple[float, Optional[float]]:
    """Return (periodicity, period in seconds or None) from the envelope autocorrelation.

    The highest peak in the plausible heart-rate range is the cardiac cycle: the S1-S2
    interval only lines up S1 with S2 (about half the energy), and the second cycle is
    damped by the biased estimator and beat-to-beat variation. A period counts only if two
    of them fit in the envelope, so a short clip's search stops at half its length (from
    3.5 s on, the whole 35-200 bpm range is searched).
    """
    if env.size < ENVELOPE_RATE_HZ:
        return 0.0, None
    acf = _autocorrelation(env)
    lo = int(ENVELOPE_RATE_HZ * 60.0 / BPM_RANGE[1])
    hi = min(int(ENVELOPE_RATE_HZ * 60.0 / BPM_RANGE[0]) + 1, acf.size - 2, env.size // 2)
    if hi <= lo + 2:
        return 0.0, None
    seg = acf[lo:hi + 1]
    peaks = np.flatnonzero((seg[1:-1] > seg[:-2]) & (seg[1:-1] >= seg[2:])) + 1
    if peaks.size == 0:
        return 0.0, None
    best = peaks[np.argmax(seg[peaks])]
    k = lo + best
    y0, y1, y2 = acf[k - 1], acf[k], acf[k + 1]
    denom = y0 - 2 * y1 + y2
    offset = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
    return float(max(0.0, y1)), (k + float(np.clip(offset, -0.5, 0.5))) / ENVELOPE_RATE_HZ


def heart_rate(samples: np.ndarray, rate: int) -> Optional[float]:
    """Beats per minute from the envelope's periodicity, or None when there is no beat."""
    periodicity, period = _beat_period(envelope(to_analysis_rate(samples, rate)))
    if period is None or periodicity < MIN_PERIODICITY:
        return None
    return 60.0 / period


def _band_share_db(spectrum: Spectrum) -> float:
    """Power per Hz in the heart band relative to 400-900 Hz, in dB.

    Read off the analysis-rate spectrum the band-pass filter computes anyway (at 2 kHz the
    resampler's anti-alias filter keeps the band up to ~900 Hz). On the 1,686 training-split
    recordings it is within 1.2 dB of a Hann-windowed Welch estimate wherever either is
    within 3 dB of the threshold, and no recording changes side.
    """
    heart = spectrum.band_power(*HEART_BAND_HZ) / (HEART_BAND_HZ[1] - HEART_BAND_HZ[0])
    above = spectrum.band_power(HEART_BAND_HZ[1], UPPER_BAND_HZ) / (UPPER_BAND_HZ - HEART_BAND_HZ[1])
    # per Hz, so that white noise scores 0 dB whatever the bands' widths
    return float(10 * np.log10((heart + 1e-20) / (above + 1e-20)))


def _level_stats(samples: np.ndarray) -> tuple[float, float, float]:
    """(RMS about the mean, peak magnitude, fraction of samples at >= 99.5 % of the peak).

    At 48 kHz these run over a million samples, so each pass counts: the RMS comes from the
    mean and the sum of squares (no centred copy) unless a DC offset dominates, and the
    samples at the rails are counted only in the rows of 4,096 whose own extreme reaches
    the level (a clean recording's peak lies in a row or two, a clipped one's everywhere).
    """
    if not samples.size:
        return 0.0, 0.0, 0.0
    rows, tail = _rows(samples)
    mean = _mean(samples)
    mean_square = float(np.dot(samples, samples)) / samples.size
    if mean * mean <= 0.5 * mean_square:
        # BLAS's float32 dot keeps many partial sums (typically ~1e-6 from the exact sum of
        # squares; the tests hold the RMS to 1e-4 of float64's), and the variance is at least
        # half of it, so subtracting cancels at most one bit
        rms = float(np.sqrt(max(mean_square - mean * mean, 0.0)))
    else:  # an offset 3 dB or more above the signal: subtracting would cancel, so centre
        centred = samples - np.float32(mean)
        rms = float(np.sqrt(np.dot(centred, centred) / samples.size))
    row_max, row_min = rows.max(axis=1), rows.min(axis=1)  # empty for under 4,096 samples
    top = float(max(row_max.max(initial=-np.inf), tail.max(initial=-np.inf)))
    bottom = float(min(row_min.min(initial=np.inf), tail.min(initial=np.inf)))
    peak = max(top, -bottom)
    if peak <= 0.05:
        return rms, peak, 0.0
    level = np.float32(0.995 * peak)
    at_rails = 0
    if top >= level:  # count only the side(s) that reach the level
        at_rails += int(np.count_nonzero(rows[row_max >= level] >= level)
                        + np.count_nonzero(tail >= level))
    if -bottom >= level:
        at_rails += int(np.count_nonzero(rows[row_min <= -level] <= -level)
                        + np.count_nonzero(tail <= -level))
    return rms, peak, at_rails / samples.size


_ROW = 4096


def _rows(samples: np.ndarray, columns: int = _ROW) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` as a ``(-1, columns)`` view and the remainder (a view too)."""
    body = samples.size - samples.size % columns
    return samples[:body].reshape(-1, columns), samples[body:]


def _mean(samples: np.ndarray, columns: int = _ROW) -> float:
    """Mean of a float32 array, exact enough to centre it, ~2x faster than ``ndarray.mean``.

    The rows of a ``(-1, columns)`` view times a vector of ones: one BLAS matrix-vector
    product (float32 sums of 4,096 samples each, added up in float64), where ``mean``'s
    pairwise summation is more careful than centring needs and slower.
    """
    rows, tail = _rows(samples, columns)
    total = (rows @ _ones(columns)).sum(dtype=np.float64)
    return float(total + tail.sum(dtype=np.float64)) / samples.size


@lru_cache(maxsize=4)
def _ones(size: int) -> np.ndarray:
    ones = np.ones(size, dtype=np.float32)
    ones.setflags(write=False)
    return ones


def quality(samples: np.ndarray, rate: int, *, resampled: Optional[np.ndarray] = None,
            analysis: Optional[np.ndarray] = None, spectrum: Optional[Spectrum] = None,
            min_seconds: float = MIN_QUALITY_SECONDS) -> QualityReport:
    """Judge whether a recording is good enough to classify; see the module docstring.

    ``resampled`` (the recording at :data:`ANALYSIS_RATE_HZ`), ``analysis`` and ``spectrum``
    (that band-passed, and its spectrum: :func:`dsp.bandpass_with_spectrum`) may be passed by
    a caller that has them already (the classifier does), so nothing is computed twice; the
    last two go together. ``min_seconds``: shorter is ``too_short`` (the device, which can
    simply record again, asks for more than an upload; never less than 1 s).
    """
    samples = np.asarray(samples, dtype=np.float32)
    duration = samples.size / float(rate) if rate > 0 else 0.0
    reasons: list[str] = []
    if duration < max(min_seconds, MIN_QUALITY_SECONDS):
        reasons.append(TOO_SHORT)
    rms, peak, clipped = _level_stats(samples)
    rms_dbfs = 20 * np.log10(rms) if rms > 0 else -200.0
    if rms < SILENCE_RMS:
        reasons.append(SILENCE)
        return QualityReport(tuple(reasons), duration, float(rms_dbfs), clipped, 0.0, 0.0, None,
                             _thresholds())
    if clipped > CLIP_FRACTION:
        reasons.append(CLIPPING)
    if analysis is None or spectrum is None:
        if resampled is None:
            resampled = resample(samples, rate, ANALYSIS_RATE_HZ)
        analysis, spectrum = bandpass_with_spectrum(resampled, ANALYSIS_RATE_HZ)
    share = _band_share_db(spectrum)
    if share < MIN_BAND_SHARE_DB:
        reasons.append(NOISY)
    periodicity, period = 0.0, None
    if samples.size >= rate:  # at least a second to look for a beat
        periodicity, period = _beat_period(envelope(analysis))
    if periodicity < MIN_PERIODICITY and TOO_SHORT not in reasons:
        reasons.append(NO_HEARTBEAT)
    bpm = 60.0 / period if period and periodicity >= MIN_PERIODICITY else None
    return QualityReport(tuple(reasons), duration, float(rms_dbfs), clipped, share, periodicity,
                         bpm, _thresholds())


def heard_quality(samples: np.ndarray, rate: int, resampled: np.ndarray, left_out: np.ndarray,
                  hop_length: int, *, whole: QualityReport) -> QualityReport:
    """:func:`quality` of the part of a recording its verdict hears: without the stretches
    :mod:`dsp.interruptions` left out of the windows (``left_out``: one flag per feature frame of
    ``hop_length`` samples at :data:`ANALYSIS_RATE_HZ`, frame ``f`` from sample ``f * hop_length``).

    Judged on the whole recording, 2 s of rubbing made most good recordings "too much noise",
    3 s of talking a third of them, and 2 s off the skin broke the heartbeat's rhythm in the
    envelope ("no regular heartbeat") and pulled the heart rate, although every window the
    verdict scores lies outside those stretches (``tools/eval_transients.py``). The kept pieces
    are joined end to end (at the original rate for the level and clipping, at the analysis rate
    for the band share and the heartbeat); a join costs the envelope one cycle's rhythm, not the
    recording's. ``resampled``: the recording at :data:`ANALYSIS_RATE_HZ`, before the band-pass;
    ``whole``: :func:`quality` of the whole recording, whose duration the report keeps (the
    caller judged it long enough and not silent before looking for stretches).
    """
    kept_analysis = np.repeat(~np.asarray(left_out, bool), hop_length)[: resampled.size]
    if kept_analysis.size < resampled.size:  # a frame per started hop, so never; but never index past it
        kept_analysis = np.concatenate((kept_analysis, np.ones(resampled.size - kept_analysis.size, bool)))
    # sample j at ``rate`` lies in analysis sample j * ANALYSIS_RATE_HZ // rate
    at_rate = (np.arange(np.asarray(samples).size, dtype=np.int64) * ANALYSIS_RATE_HZ) // rate
    kept = np.asarray(samples, np.float32)[kept_analysis[np.minimum(at_rate, resampled.size - 1)]]
    heard = quality(kept, rate, resampled=np.asarray(resampled, np.float32)[kept_analysis], min_seconds=0.0)
    return replace(heard, duration_s=whole.duration_s)


def _thresholds() -> dict:
    return {"silence_rms": SILENCE_RMS, "clip_fraction": CLIP_FRACTION,
            "min_band_share_db": MIN_BAND_SHARE_DB, "min_periodicity": MIN_PERIODICITY,
            "min_seconds": MIN_QUALITY_SECONDS, "dropout_db": DROPOUT_DB,
            "noise_burst_db": NOISE_BURST_DB}
