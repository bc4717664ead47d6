"""How far a recording's P(abnormal) moves with where the recording happens to start.

The network pools three times by 2, so it can see a window differently when the sound moves by
one analysis frame (16 ms), and a recording's start is arbitrary (the press of the button, a
codec's start-up delay). Used by ``tools/eval_start_jitter.py`` and by the test that holds the
shipped model to it; needs no TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

import dsp
from dsp.features import cut_windows
from model.classifier import Classifier
from model.train.dataset import Record, load_audio

STARTS = 8  #: 2 ** (the network's stride-2 poolings)


def start_scores(classifier: Classifier, coeffs: np.ndarray, hop_frames: int) -> np.ndarray:
    """P(abnormal) of one recording's MFCCs started 0..STARTS-1 frames later, at this hop."""
    width = classifier.params.frames_per_window
    return np.array([float(np.mean(classifier.score_windows(cut_windows(coeffs[:, start:], width, hop_frames))))
                     for start in range(STARTS)])


def recording_coeffs(classifier: Classifier, records: Sequence[Record], data_dir: Path) -> list[np.ndarray]:
    """The model's normalised MFCCs of each recording, read from ``data_dir`` by the training's
    own loader (:func:`~model.train.dataset.load_audio`, which fills ``record.audio``)."""
    load_audio(records, data_dir)
    return [dsp.recording_features(record.audio, classifier.params) for record in records]


def start_ranges(scores: np.ndarray) -> np.ndarray:
    """Each recording's P(abnormal) range over the starts, from ``(recordings, STARTS)`` scores."""
    return scores.max(axis=1) - scores.min(axis=1)


def start_logit_ranges(scores: np.ndarray) -> np.ndarray:
    """The same ranges in logits (P clipped to 0.001 .. 0.999): a scale that does not depend on
    where a model's probabilities sit. The ensemble shipped since 2026-11-30 scores most
    recordings near 0 (threshold 0.076), so its P ranges look small whatever its steadiness."""
    p = np.clip(scores, 1e-3, 1 - 1e-3)
    return start_ranges(np.log(p / (1 - p)))


def verdicts_changed(scores: np.ndarray, threshold: float) -> int:
    """How many verdicts change when the recordings start one frame later."""
    return int(np.sum((scores[:, 0] >= threshold) != (scores[:, 1] >= threshold)))
