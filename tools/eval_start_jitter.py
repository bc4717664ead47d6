#!/usr/bin/env python3
"""How much does a verdict depend on where the recording happens to start?

The network pools three times by 2, so it sees a window differently when the sound moves by
one analysis frame (16 ms); a recording's start is arbitrary (when the button was pressed, a
codec's start-up delay), so that is pure noise in P(abnormal). For the shipped int8 model (or
``--model``) and each window hop, on the chosen split: the range of a recording's P(abnormal)
over the 8 starts 0..7 frames later (median, 90th percentile, largest; and the median in logits, which
does not depend on where a model's probabilities sit), how many verdicts change when it starts
one frame later (threshold chosen on validation at that hop, as the training pipeline does),
and the split's MAcc and AUC at that threshold. A hop that is odd in frames meets all 8
alignments of the pooling in consecutive windows; the recording's mean then averages them.
Not a test: it reads the validation split (and the test split with ``--split test``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Classifier  # noqa: E402
from model.metrics import best_threshold, screening_metrics  # noqa: E402
from model.train.dataset import DEFAULT_DATA, model_splits  # noqa: E402
from model.train.start_jitter import (STARTS, recording_coeffs, start_logit_ranges, start_ranges,  # noqa: E402
                                      start_scores, verdicts_changed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", choices=["validation", "test"], default="validation")
    parser.add_argument("--hops", default="94,47,31,23", help="window hops in frames (16 ms each)")
    parser.add_argument("--model", type=Path, help="a .tflite with its .json beside it (default: the "
                        "shipped model), e.g. a candidate in a training run's --out folder")
    args = parser.parse_args()
    classifier = Classifier.load(args.model)
    splits = model_splits(classifier.metadata, args.data)
    sets = {"validation": splits["validation"], args.split: splits[args.split]}
    coeffs = {name: recording_coeffs(classifier, records, args.data) for name, records in sets.items()}
    labels = {name: np.array([r.label for r in records], dtype=int) for name, records in sets.items()}
    print(f"{args.model or 'shipped model'}, window hop in metadata {classifier.params.frames_per_hop} frames; "
          f"{len(sets[args.split])} {args.split} recordings")
    for hop in (int(h) for h in args.hops.split(",")):
        scores = {name: np.array([start_scores(classifier, c, hop) for c in coeffs[name]]) for name in sets}
        threshold = best_threshold(labels["validation"], scores["validation"][:, 0])
        own = scores[args.split]
        spread = start_ranges(own)
        flips = verdicts_changed(own, threshold)
        m = screening_metrics(labels[args.split], own[:, 0] >= threshold, own[:, 0], bootstrap=0)
        hop_s = dataclasses.replace(classifier.params, window_hop_s=hop * classifier.params.hop_length
                                    / classifier.params.sr).window_hop_s
        print(f"  hop {hop:3d} frames ({hop_s:.3f} s): P range over {STARTS} starts median {np.median(spread):.3f} "
              f"p90 {np.percentile(spread, 90):.3f} max {spread.max():.3f} (logit median "
              f"{np.median(start_logit_ranges(own)):.3f}); {flips} verdicts change one frame "
              f"later; threshold {threshold:.3f}: MAcc {m.macc:.3f} AUC {m.auc:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
