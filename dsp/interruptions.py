"""Stretches of a recording that are not the heart, and the windows the model scores without them.

In the field a recording is rarely clean from end to end. A health worker lifts or slides the
chest piece for a second or two, or someone talks. The rest of the recording is still good, but
such a stretch is poison to the model: per-recording normalisation (CMVN) takes its statistics
from every frame, so a run of near-silent or noisy frames shifts and stretches them for the
whole recording, and the windows that hold the stretch look like nothing the network was
trained on. ``tools/eval_transients.py`` measured it (one moment of trouble put into each
validation recording, as stored): 2 s off the skin (a knock at each end) took specificity from
0.91 to 0.18, 3 s of talking to 0.58 and 2 s of rubbing to 0.69 (most rubbed recordings end as
poor signal; these are the rest).

So the device looks for two kinds of stretch, each from an energy averaged over
:data:`SMOOTH_S` (a second always holds a heartbeat's S1 and S2, so the average barely moves
between beats when all is well) against the recording's own median:

* **the chest piece off the skin**: the heart band's energy :data:`DROPOUT_DB` below it
  (an electronic chest piece in the air hears almost nothing);
* **a burst of noise** (talking, rubbing): the energy outside the heart band (above 400 Hz, and
  the rumble below 25 Hz) :data:`NOISE_BURST_DB` above it. Heart sounds and murmurs repeat every
  beat, so they raise the whole recording's median, not one stretch; each 16 ms block counts at
  most :data:`NOISE_BURST_CAP_DB` above the median block, so a knock's click is not a second of
  talking.

Each is flagged with :data:`MARGIN_S` either side (the knock of lifting and putting back, and
the stretch's own edges, which the average blurs), left out of the normalisation's statistics,
and only windows holding none of it are scored; the quality checks and the heart rate judge the
rest too (:func:`dsp.heard_quality`). Recordings under :data:`MIN_RECORDING_S` are
never searched. Chosen on the validation split (the test split only reports, in the model card):
specificity with those stretches 0.93 lifted, 0.90 talking, 0.93 rubbing (0.92 clean); poor
signal 57, 44 and 28 of 388, and heart rates more than 10 % off the clean recording's 2, 17 and 7,
against 175, 124 and 229, and 10, 69 and 89, scoring every window and judging the whole
recording (leaving the stretches out of the windows alone had left 66, 122 and 227 poor signal).
Of the clean recordings 4 of 388 verdicts changed (one between normal and abnormal), and a
knock's or three knocks' figures barely moved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional

import numpy as np

from .features import FeatureParams, cut_windows, recording_features
from .filters import ANALYSIS_RATE_HZ

#: The heart band's energy (averaged over :data:`SMOOTH_S`) this many dB below the recording's
#: median: the chest piece off the skin. 12 dB did as well on validation. A stretch only 20 dB below
#: the heart sounds' peak is not found, and harms less (validation specificity 0.86 against 0.91).
DROPOUT_DB = 15.0
#: The energy outside the heart band (averaged over :data:`SMOOTH_S`) this many dB above its
#: median: talking or rubbing. On validation 6 dB also masked parts of clean recordings (two more
#: verdicts changed, sensitivity fell 0.03); 10 dB left more talking in (specificity 0.85, not 0.95).
NOISE_BURST_DB = 8.0
#: One 16 ms block counts at most this far above the median block (a knock's click, a tap).
NOISE_BURST_CAP_DB = 20.0
SMOOTH_S = 1.0
#: Also left out either side of a stretch.
MARGIN_S = 0.5
#: Shorter recordings are never searched: a clip of a few beats (other devices export 1.2-4 s)
#: has too few seconds for a median, and a stretch in it would leave nothing to score. The device
#: itself records at least 5 s (``audio.min_seconds``).
MIN_RECORDING_S = 5.0


@lru_cache(maxsize=8)
def _window_bounds(n: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``n`` values, where its centred window of ``width`` starts and ends (clipped at
    the ends) and how many values it holds; cached, as a device's recordings share one length."""
    index = np.arange(n)
    low = np.clip(index - width // 2, 0, n)
    high = np.clip(index + width - width // 2, 0, n)
    count = (high - low).astype(np.float64)
    for array in (low, high, count):
        array.setflags(write=False)
    return low, high, count


def _moving_mean(values: np.ndarray, width: int) -> np.ndarray:
    """Mean over the ``width`` values centred on each (fewer at the ends)."""
    low, high, count = _window_bounds(values.size, width)
    total = np.empty(values.size + 1)
    total[0] = 0.0
    np.cumsum(values, out=total[1:])
    return (total[high] - total[low]) / count


def _blocks(samples: np.ndarray, hop_length: int) -> np.ndarray:
    """``(1 + len // hop_length, hop_length)`` float32 blocks, block ``f`` from sample ``f * hop_length``
    (as :func:`dsp.mfcc` numbers its frames), the last one zero-padded."""
    x = np.asarray(samples, dtype=np.float32)
    n = x.size // hop_length + 1
    padded = np.zeros(n * hop_length, np.float32)
    padded[: x.size] = x
    return padded.reshape(n, hop_length)


def _stretches(level: np.ndarray, flagged: np.ndarray, width: int, margin: int) -> np.ndarray:
    """``flagged`` (from a ``width``-block average) without its first and last half-average, where
    the average covers too little to hold a beat, widened by ``margin`` blocks either side."""
    flagged[: width // 2] = flagged[level.size - width // 2:] = False
    if not flagged.any():
        return flagged
    return _moving_mean(flagged.astype(np.float64), 2 * margin + 1) > 0


def _searched(size: int, rate: int) -> bool:
    return size >= MIN_RECORDING_S * rate


def dropout_frames(analysis_samples: np.ndarray, hop_length: int, rate: int = ANALYSIS_RATE_HZ, *,
                   dropout_db: float = DROPOUT_DB) -> np.ndarray:
    """One flag per feature frame (``1 + len // hop_length``, frame ``f`` at sample
    ``f * hop_length`` as :func:`dsp.mfcc` numbers them): True where the chest piece was off the
    skin. ``analysis_samples``: the band-passed recording; ``dropout_db``: how far below the
    median (``math.inf``: never). About 0.05 ms for 20 s."""
    blocks = _blocks(analysis_samples, hop_length)
    n = blocks.shape[0]
    if not _searched(np.asarray(analysis_samples).size, rate):
        return np.zeros(n, bool)
    energy = np.einsum("ij,ij->i", blocks, blocks).astype(np.float64)  # per block: 32 squares, float32 is ample
    width = max(1, int(round(SMOOTH_S * rate / hop_length)))
    level = _moving_mean(energy, width)
    return _stretches(level, level < np.median(level) * 10.0 ** (-dropout_db / 10.0), width,
                      int(round(MARGIN_S * rate / hop_length)))


def noise_burst_frames(samples: np.ndarray, analysis_samples: np.ndarray, hop_length: int,
                       rate: int = ANALYSIS_RATE_HZ, *, burst_db: float = NOISE_BURST_DB) -> np.ndarray:
    """One flag per feature frame (as :func:`dropout_frames`): True in a burst of noise (talking,
    rubbing). ``samples``: the recording at ``rate`` before the band-pass; ``analysis_samples``:
    after it, so their difference is what lies outside the heart band."""
    outside = np.asarray(samples, np.float32) - np.asarray(analysis_samples, np.float32)
    blocks = _blocks(outside, hop_length)
    n = blocks.shape[0]
    if not _searched(outside.size, rate):
        return np.zeros(n, bool)
    mean = blocks.mean(axis=1, dtype=np.float32)
    energy = (np.einsum("ij,ij->i", blocks, blocks) / hop_length - mean * mean).astype(np.float64)
    typical = np.median(energy)
    np.minimum(energy, typical * 10.0 ** (NOISE_BURST_CAP_DB / 10.0), out=energy)
    width = max(1, int(round(SMOOTH_S * rate / hop_length)))
    level = _moving_mean(energy, width)
    return _stretches(level, level > np.median(level) * 10.0 ** (burst_db / 10.0), width,
                      int(round(MARGIN_S * rate / hop_length)))


@dataclass(frozen=True)
class ScoredWindows:
    """The windows the model scores for one recording, and what was left out of them."""

    windows: np.ndarray   #: ``(n, n_mfcc, frames)``; n may be 0 when every window held a stretch
    lifted_s: float       #: seconds flagged by :func:`dropout_frames`
    noisy_s: float = 0.0  #: seconds flagged by :func:`noise_burst_frames` (and not by the other)
    #: one flag per feature frame, True where left out; None when nothing was
    left_out: Optional[np.ndarray] = field(default=None, compare=False, repr=False)

    @property
    def left_out_s(self) -> float:
        return self.lifted_s + self.noisy_s


def _left_out_frames(samples: Optional[np.ndarray], analysis_samples: np.ndarray, params: FeatureParams, *,
                     dropout_db: float = DROPOUT_DB, burst_db: float = NOISE_BURST_DB) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: off the skin, and (not that) a burst of noise; no burst without ``samples``."""
    lifted = dropout_frames(analysis_samples, params.hop_length, params.sr, dropout_db=dropout_db)
    if samples is None:
        return lifted, np.zeros_like(lifted)
    noisy = noise_burst_frames(samples, analysis_samples, params.hop_length, params.sr, burst_db=burst_db)
    return lifted, noisy & ~lifted


def scored_windows(analysis_samples: np.ndarray, params: FeatureParams, *, samples: Optional[np.ndarray] = None,
                   dropout_db: float = DROPOUT_DB, burst_db: float = NOISE_BURST_DB) -> ScoredWindows:
    """The device's windows of a band-passed recording: :func:`dsp.window_features` with the
    stretches that are not the heart left out of the normalisation and of every window.
    ``samples``: the recording at ``params.sr`` before the band-pass (without it, no burst of
    noise is looked for). The classifier (with its model's thresholds) and the training
    pipeline's evaluation both score these."""
    lifted, noisy = _left_out_frames(samples, analysis_samples, params, dropout_db=dropout_db, burst_db=burst_db)
    skip = lifted | noisy
    if not skip.any():
        return ScoredWindows(cut_windows(recording_features(analysis_samples, params),
                                         params.frames_per_window, params.frames_per_hop), 0.0)
    coeffs = recording_features(analysis_samples, params, skip=skip)
    frames = coeffs.shape[1]
    windows = cut_windows(coeffs, params.frames_per_window, params.frames_per_hop, skip=skip[:frames])
    seconds = params.hop_length / params.sr
    return ScoredWindows(windows, float(lifted[:frames].sum()) * seconds, float(noisy[:frames].sum()) * seconds,
                         left_out=skip)


def left_out_stretches(samples: np.ndarray, analysis_samples: np.ndarray,
                       params: Optional[FeatureParams] = None) -> list[tuple[float, float, str]]:
    """``(start_s, end_s, kind)`` of each stretch the device leaves out of a recording, ``kind``
    "lifted" or "noisy", with this software's thresholds: for the phonocardiogram, so staff see
    what the verdict did not hear. ``samples`` and ``analysis_samples``: the recording at
    ``params.sr`` before and after the band-pass (the picture has both already)."""
    params = params or FeatureParams()
    raw = np.asarray(samples)
    lifted, noisy = _left_out_frames(raw, analysis_samples, params)
    seconds = params.hop_length / params.sr
    end_s = raw.size / params.sr
    stretches = []
    for flags, kind in ((lifted, "lifted"), (noisy, "noisy")):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.astype(np.int8), [0]))))
        stretches += [(float(start * seconds), float(min(stop * seconds, end_s)), kind)
                      for start, stop in zip(edges[::2], edges[1::2])]
    return sorted(stretches)
