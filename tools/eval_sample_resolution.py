#!/usr/bin/env python3
"""Does a coarser converter, or a quiet signal on a fine one, change the verdict?

Stethoscopes, sound cards and phone apps store heart sounds with different resolutions, and one
source set the model trains on (training-e) stored its normal recordings with about 8 bits of grain
and its abnormal ones with about 13 (``tools/eval_source_confounds.py``, "bits used"). A network could
learn grain as a cue, and a box whose capture gain is set low stores the chest's sound in few
steps of its 16-bit converter. This measures whether the model's verdicts move when the same
recordings are stored more coarsely. Every recording of a PhysioNet split is read as stored (16
bits) and then (1) brought to an RMS level in dBFS and rounded to 16-bit steps, as a 16-bit card
with a lower gain would store it, and (2) rounded to ``2 ** (bits - 1)`` steps between silence and
its own peak (a converter of that many bits, the signal just reaching full scale;
:func:`model.train.augment.round_to_grain`, as ``--grain`` rounds training audio). Each version is
classified by the device's own path (``Classifier.classify``: the quality gate included). Per
version: the share refused as poor signal and, among the rest, AUC and Se / Sp / MAcc at the
model's threshold, and the specificity on the source sets other than training-e (whose normal
recordings are coarse already). The validation split is the one to choose by; ``--split test``
is for reporting after a choice. Not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import Classifier  # noqa: E402
from model.metrics import screening_metrics  # noqa: E402
from model.train.augment import at_level, round_to_grain  # noqa: E402
from model.train.dataset import DEFAULT_DATA, model_splits, read_stored  # noqa: E402

LEVELS_DBFS = (-40, -50, -60, -65)  #: RMS levels on a 16-bit converter (the silence line is -70)
BITS = (10, 8, 6)  #: grains relative to each recording's own peak
COARSE_ALREADY = "training-e"  #: its normal recordings are stored with about 8 bits of grain


def verdicts(classifier: Classifier, recordings: list[np.ndarray], rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(P(abnormal) or NaN for poor signal, poor-signal flags) of each recording at ``rate``."""
    p, poor = [], []
    for samples in recordings:
        verdict = classifier.classify(samples, rate)
        poor.append(verdict.label == "poor_signal")
        p.append(np.nan if verdict.p_abnormal is None else verdict.p_abnormal)
    return np.array(p), np.array(poor)


def line(name: str, labels: np.ndarray, others: np.ndarray, p: np.ndarray, poor: np.ndarray,
         threshold: float) -> str:
    """One version's figures; ``others`` marks the recordings not from :data:`COARSE_ALREADY`."""
    kept = ~poor & ~np.isnan(p)
    m = screening_metrics(labels[kept], p[kept] >= threshold, p[kept], bootstrap=0)
    rest = kept & others
    other = screening_metrics(labels[rest], p[rest] >= threshold, bootstrap=0)
    return (f"  {name:20}: poor signal {100 * poor.mean():4.1f} %; of the {int(kept.sum())} classified: "
            f"AUC {m.auc:.3f}, Se {m.sensitivity:.3f} Sp {m.specificity:.3f} MAcc {m.macc:.3f}; "
            f"Sp without {COARSE_ALREADY} {other.specificity:.3f}")


def data_tool_parser(description: str) -> argparse.ArgumentParser:
    """The command line every evaluation tool on ``../shared/data`` takes: ``--data``, ``--model``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, help="a .tflite with its .json beside it (default: the shipped model)")
    return parser


def chain_tool_parser(description: str) -> argparse.ArgumentParser:
    """The command line every recording-chain tool takes: :func:`data_tool_parser`'s and ``--split``."""
    parser = data_tool_parser(description)
    parser.add_argument("--split", choices=["validation", "test"], default="validation")
    return parser


def split_as_stored(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """What :func:`chain_tool_parser`'s options name, read: (the classifier, the split's labels, its
    recordings as stored, their one rate, which recordings are not from :data:`COARSE_ALREADY`).
    Prints the header line."""
    classifier = Classifier.load(args.model)
    records = model_splits(classifier.metadata, args.data)[args.split]
    labels = np.array([r.label for r in records])
    stored, rates = [], set()
    for record in records:
        samples, rate = read_stored(args.data / record.name)
        stored.append(samples)
        rates.add(rate)
    if len(rates) != 1:
        parser.error(f"the split's recordings have several rates ({sorted(rates)}); this tool expects one")
    others = np.array([r.source != COARSE_ALREADY for r in records])
    print(f"{args.model or 'shipped model'} ({classifier.sha256[:8]}), {len(records)} {args.split} recordings "
          f"({int(labels.sum())} abnormal; {int((~labels.astype(bool) & others).sum())} normal ones not from "
          f"{COARSE_ALREADY}), threshold {classifier.threshold:.3f}:")
    return classifier, labels, stored, rates.pop(), others


def main(argv: list[str] | None = None) -> int:
    parser = chain_tool_parser(__doc__)
    classifier, labels, stored, rate, others = split_as_stored(parser.parse_args(argv), parser)
    versions = [("as stored (16 bit)", stored)]
    versions += [(f"RMS {dbfs} dBFS, 16 bit", [at_level(x, dbfs) for x in stored]) for dbfs in LEVELS_DBFS]
    versions += [(f"{bits} bits at the peak", [round_to_grain(x, bits) for x in stored]) for bits in BITS]
    for name, recordings in versions:
        print(line(name, labels, others, *verdicts(classifier, recordings, rate), classifier.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
