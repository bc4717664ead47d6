#!/usr/bin/env python3
"""Does a verdict depend on the rate the sound card or phone recorded at?

Every test-split recording (PhysioNet, 2 kHz) is brought to each capture rate with our own
resampler (as if a card had recorded it there) and classified at that rate. Printed per
rate: how many verdicts differ from the 2 kHz ones and the largest change of P(abnormal);
then the same against the single-stage decimation (``resample_poly``'s own filter, the
arithmetic before the two-stage cascade for card rates), i.e. what the cascade changed.
Not a test: it reads the whole test split (~10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dsp  # noqa: E402
from dsp import filters  # noqa: E402
from model import Classifier  # noqa: E402
from model.train.dataset import DEFAULT_DATA, model_splits  # noqa: E402

RATES = (48000, 44100, 32000, 96000)


@contextmanager
def single_stage():
    """Decimate in one stage with resample_poly's own filter, as before the cascade."""
    saved = filters._cascade
    filters._cascade = lambda rate_in, rate_out: None
    try:
        yield
    finally:
        filters._cascade = saved


def compare(verdicts, against: list[tuple[str, float]]) -> tuple[int, float, float]:
    """(verdicts whose label differs, largest and median |change of P(abnormal)|) against
    ``(label, p_abnormal)`` pairs."""
    flips = sum(v.label != a[0] for v, a in zip(verdicts, against))
    deltas = [abs(v.p_abnormal - a[1]) for v, a in zip(verdicts, against)
              if v.p_abnormal is not None and a[1] is not None]
    return flips, max(deltas, default=0.0), float(np.median(deltas)) if deltas else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="first N test recordings only (0: all)")
    args = parser.parse_args()
    import soundfile

    classifier = Classifier.load()
    test = model_splits(classifier.metadata, args.data)["test"]
    if args.limit:
        test = test[: args.limit]
    base: list[tuple[str, float]] = []
    rows = {rate: {"cascade": [], "single": []} for rate in RATES}
    for record in test:
        samples, rate = soundfile.read(str(args.data / record.name), dtype="float32")
        reference = classifier.classify(samples, rate)
        base.append((reference.label, reference.p_abnormal))
        for capture in RATES:
            audio = dsp.resample(samples, rate, capture)
            rows[capture]["cascade"].append(classifier.classify(audio, capture))
            with single_stage():
                rows[capture]["single"].append(classifier.classify(audio, capture))
    print(f"{len(test)} test-split recordings, classified at 2 kHz and at each capture rate "
          f"(cascade plan: factor, first-stage taps)")
    for capture in RATES:
        cascade, single = rows[capture]["cascade"], rows[capture]["single"]
        plan = filters._cascade(capture, dsp.ANALYSIS_RATE_HZ)
        flips, worst, median = compare(cascade, base)
        s_flips, s_worst, s_median = compare(single, base)
        c_flips, c_worst, c_median = compare(cascade, [(v.label, v.p_abnormal) for v in single])
        print(f"  {capture:6d} Hz {plan}: vs 2 kHz {flips} verdicts differ, |dP| max {worst:.4f} "
              f"median {median:.5f} (single stage: {s_flips}, {s_worst:.4f}, {s_median:.5f}); "
              f"cascade vs single stage: {c_flips} differ, |dP| max {c_worst:.4f} median {c_median:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
