#!/usr/bin/env python3
"""How well does a model rank short clips, as other stethoscopes and phone apps export them?

Yaseen 2018's clips are 1.2-4.0 s, shorter than one 3 s window, so the device tiles each one
(:func:`dsp.features.cut_windows`) after normalising its MFCCs over the clip alone. This cuts
``--crops`` random stretches of 1.2-4.0 s from every recording of a PhysioNet split (seeded, so
every model meets the same clips) and scores them as the training pipeline scores Yaseen
(band-passed 2 kHz audio, windows, mean probability), beside the same recordings whole: AUC,
and Se / Sp / MAcc at the model's own threshold. The validation split is the one to choose by;
``--split test`` is for reporting after a choice. Then, on the recordings at least 20 s long, the
same for stretches of fixed lengths from 2 s to 20 s, so every length is judged on the same hearts:
where a verdict's sensitivity starts to fall is where ``model.verdict.SHORT_RECORDING_SECONDS``
puts the caution that goes with a normal from a shorter recording. Not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dsp  # noqa: E402
from model import Classifier  # noqa: E402
from model.metrics import screening_metrics  # noqa: E402
from model.train.augment import SHORT_CLIP_SECONDS, short_crop  # noqa: E402
from model.train.dataset import DEFAULT_DATA, load_audio, model_splits  # noqa: E402
from model.train.pipeline import record_scores  # noqa: E402

SEED = 20180  #: the crops' seed: fixed, so that models are compared on the same clips
LENGTHS_S = (2.0, 3.0, 4.5, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0)


def scores(classifier: Classifier, audios: list[np.ndarray]) -> np.ndarray:
    """Each analysis-rate recording's mean window probability (the device's aggregation)."""
    return record_scores([dsp.window_features(audio, classifier.params) for audio in audios],
                         classifier.score_windows)


def line(name: str, labels: np.ndarray, scores: np.ndarray, threshold: float) -> str:
    m = screening_metrics(labels, scores >= threshold, scores, bootstrap=0)
    return (f"  {name:28}: {labels.size:5d} clips, AUC {m.auc:.3f}, Se {m.sensitivity:.3f} "
            f"Sp {m.specificity:.3f} MAcc {m.macc:.3f} at threshold {threshold:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", choices=["validation", "test"], default="validation")
    parser.add_argument("--crops", type=int, default=3, help="short clips cut from each recording")
    parser.add_argument("--model", type=Path, help="a .tflite with its .json beside it (default: the "
                        "shipped model), e.g. a candidate in a training run's --out folder")
    args = parser.parse_args()
    classifier = Classifier.load(args.model)
    records = model_splits(classifier.metadata, args.data)[args.split]
    load_audio(records, args.data)
    rng = np.random.default_rng(SEED)
    labels = np.array([r.label for r in records])
    whole = scores(classifier, [r.audio for r in records])
    clips = scores(classifier, [short_crop(r.audio, rng) for r in records for _ in range(args.crops)])
    low, high = SHORT_CLIP_SECONDS
    print(f"{args.model or 'shipped model'} ({classifier.sha256[:8]}), {len(records)} {args.split} recordings")
    print(line("whole recordings", labels, whole, classifier.threshold))
    print(line(f"{args.crops} clips of {low:g}-{high:g} s each", np.repeat(labels, args.crops), clips,
               classifier.threshold))
    longest = max(LENGTHS_S)
    long_enough = [r for r in records if r.audio.size >= longest * dsp.ANALYSIS_RATE_HZ]
    print(f"the {len(long_enough)} recordings of at least {longest:g} s, {args.crops} stretches of each length:")
    for seconds in LENGTHS_S:
        rng = np.random.default_rng(SEED)
        stretches = scores(classifier, [short_crop(r.audio, rng, (seconds, seconds))
                                        for r in long_enough for _ in range(args.crops)])
        print(line(f"{seconds:g} s", np.repeat([r.label for r in long_enough], args.crops), stretches,
                   classifier.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
