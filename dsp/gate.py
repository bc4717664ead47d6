"""The device's quality gate on one recording, without the model: what the verdict will hear.

One function for the classifier and the training pipeline's leave-one-source-out figures "with
the box's quality gate", so the two cannot judge a recording differently. The order matters:
the whole recording is judged first (silence and too short end it: there is nothing to look
for), then the stretches that are not the heart are found and left out of the windows
(:mod:`dsp.interruptions`), and what is left is judged again (:func:`dsp.heard_quality`), so a
burst of talking neither spoils the windows nor makes the whole recording "too much noise".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .features import FeatureParams
from .filters import ANALYSIS_RATE_HZ, bandpass_with_spectrum, resample
from .interruptions import DROPOUT_DB, NOISE_BURST_DB, ScoredWindows, scored_windows
from .signal_quality import (LIFTED, MIN_QUALITY_SECONDS, NOISY, SILENCE, TOO_SHORT, QualityReport,
                             heard_quality, quality)

#: With one of these the recording is not looked into further: no windows are cut.
UNSCORED_REASONS = (SILENCE, TOO_SHORT)


@dataclass(frozen=True)
class Judgement:
    """What the gate found. ``report``: the quality of the part the verdict hears (of the whole
    recording when nothing was left out); ``reasons``: why it is poor signal (empty: it is not,
    as far as the recording goes: the model's own uncertainty comes on top); ``scored``: the
    windows for the model, None when the recording was not looked into."""

    report: QualityReport
    reasons: tuple[str, ...]
    scored: Optional[ScoredWindows]
    #: the windows are worth scoring: there are some, and at least ``min_seconds`` were heard
    scorable: bool


def judge(samples: np.ndarray, rate: int, params: FeatureParams, *, dropout_db: float = DROPOUT_DB,
          burst_db: float = NOISE_BURST_DB, min_seconds: float = MIN_QUALITY_SECONDS) -> Judgement:
    """Judge a recording at its own ``rate`` as the device does, and cut the windows its verdict
    scores. ``dropout_db``/``burst_db``: the model's thresholds for stretches off the skin and
    bursts of noise (``math.inf``: none looked for, as a model made before them was evaluated);
    ``min_seconds``: shorter, or less than this left after the stretches, is poor signal."""
    resampled = resample(samples, rate, ANALYSIS_RATE_HZ)
    analysis, spectrum = bandpass_with_spectrum(resampled, ANALYSIS_RATE_HZ)
    report = quality(samples, rate, analysis=analysis, spectrum=spectrum, min_seconds=min_seconds)
    if any(r in report.reasons for r in UNSCORED_REASONS):  # too short includes anything under 1 s
        return Judgement(report, report.reasons, None, False)
    scored = scored_windows(analysis, params, samples=resampled, dropout_db=dropout_db, burst_db=burst_db)
    if scored.left_out is not None:  # judged, like the windows, without what was left out
        report = heard_quality(samples, rate, resampled, scored.left_out, params.hop_length, whole=report)
    reasons = report.reasons
    scorable = len(scored.windows) > 0 and report.duration_s - scored.left_out_s >= min_seconds
    if not scorable:  # every window held a stretch that is not the heart, or too little is left to judge
        why = NOISY if scored.noisy_s > scored.lifted_s else LIFTED
        reasons += (why,) if why not in reasons else ()
    return Judgement(report, reasons, scored, scorable)
