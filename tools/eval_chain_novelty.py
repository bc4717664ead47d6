#!/usr/bin/env python3
"""Could the box say "this stethoscope is unlike the ones I learned from", and would that say
where the model fails?

A stethoscope, its microphone and converter leave their mark on a recording's long-term spectrum
(PhysioNet's source sets can be told apart from a few spectral features). A device could compare
each recording's spectral *shape* with the training recordings' and add a caution to a verdict
from an unfamiliar one. That caution is only worth showing if unfamiliar recordings are the ones
the model gets wrong. This measures both, with no choice made from it:

1. The shape: power in 16 bands spaced evenly in log frequency from 20 to 800 Hz, in dB relative
   to the recording's own mean over that range (level plays no part), after the device's own front
   end (:func:`dsp.filters.to_analysis_rate`: 2 kHz, band-passed 25-400 Hz), as the model hears it.
2. Novelty: the Mahalanobis distance to the training recordings' shapes (covariance shrunk 10 %
   towards its mean variance); a recording is *unfamiliar* beyond the 95th percentile of the
   validation recordings' distances (so about 5 % of familiar recordings are flagged).
3. Fitted on the shipped model's training split: the share flagged among the test split's
   recordings of each source set and among the Yaseen recordings (another device, never trained
   on), and the shipped model's figures on the flagged and the other test recordings.
4. Leave one source set out: fitted on the other five source sets' training recordings (limit
   from their validation recordings), the share of the left-out set flagged, beside the model's
   own leave-one-source-out specificity and AUC for that set (its metadata), and their rank
   correlation over the six sets.

Not a test; ``--data`` and ``--model`` as the other recording-chain tools.
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from dsp.filters import ANALYSIS_RATE_HZ, to_analysis_rate  # noqa: E402
from eval_band_cut import band_levels  # noqa: E402
from eval_sample_resolution import data_tool_parser  # noqa: E402
from model import Classifier  # noqa: E402
from model.metrics import screening_metrics  # noqa: E402
from model.train.dataset import PHYSIONET_SOURCES, YASEEN, model_splits, read_labels, read_stored  # noqa: E402

SHAPE_EDGES_HZ = tuple(float(f) for f in np.geomspace(20.0, 800.0, 17))  #: 16 bands, 20-800 Hz
FLAG_PERCENTILE = 95.0  #: of the familiar (validation) recordings' distances
SHRINK = 0.1  #: of the covariance towards its mean variance (16 bands, some sets of 30 recordings)


def chain_shape(samples: np.ndarray, rate: int) -> np.ndarray:
    """A recording's spectral shape (:data:`SHAPE_EDGES_HZ`' bands, dB about its own mean) after the
    device's front end."""
    return band_levels(to_analysis_rate(samples, rate).astype(np.float64), ANALYSIS_RATE_HZ, SHAPE_EDGES_HZ)


class Novelty:
    """Distance of spectral shapes from a set of familiar ones, and the limit beyond which a shape
    counts as unfamiliar (``FLAG_PERCENTILE`` of ``limit_from``'s distances)."""

    def __init__(self, familiar: np.ndarray, limit_from: np.ndarray) -> None:
        self.mean = familiar.mean(axis=0)
        cov = np.cov(familiar, rowvar=False)
        cov = (1 - SHRINK) * cov + SHRINK * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
        self.precision = np.linalg.inv(cov)
        self.limit = float(np.percentile(self.distance(limit_from), FLAG_PERCENTILE))

    def distance(self, shapes: np.ndarray) -> np.ndarray:
        centred = np.atleast_2d(shapes) - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", centred, self.precision, centred))

    def flagged(self, shapes: np.ndarray) -> np.ndarray:
        return self.distance(shapes) > self.limit


def _shape_of(path: Path) -> np.ndarray:
    return chain_shape(*read_stored(path, dtype="float64"))


def _figures(name: str, labels: np.ndarray, p: np.ndarray, poor: np.ndarray, threshold: float) -> str:
    kept = ~poor & ~np.isnan(p)
    m = screening_metrics(labels[kept], p[kept] >= threshold, p[kept], bootstrap=0)
    return (f"  {name:24} {int(kept.sum()):4d} classified ({int(labels[kept].sum())} abnormal), poor signal "
            f"{100 * poor.mean():4.1f} %: AUC {m.auc:.3f}, Se {m.sensitivity:.3f}, Sp {m.specificity:.3f}, "
            f"MAcc {m.macc:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = data_tool_parser(__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    classifier = Classifier.load(args.model)
    splits = model_splits(classifier.metadata, args.data)
    external = read_labels(args.data, YASEEN) if (args.data / YASEEN / "labels.csv").exists() else []
    records = [r for part in ("train", "validation", "test") for r in splits[part]] + external
    with ProcessPoolExecutor(args.workers) as pool:
        shapes = dict(zip((r.name for r in records),
                          pool.map(_shape_of, [args.data / r.name for r in records], chunksize=32)))

    def stack(part) -> np.ndarray:
        return np.array([shapes[r.name] for r in part])

    novelty = Novelty(stack(splits["train"]), stack(splits["validation"]))
    test = splits["test"]
    flags = novelty.flagged(stack(test))
    print(f"{args.model or 'shipped model'} ({classifier.sha256[:8]}); spectral shape in {len(SHAPE_EDGES_HZ) - 1} "
          f"bands, 20-800 Hz; unfamiliar beyond the validation recordings' {FLAG_PERCENTILE:.0f}th percentile\n"
          f"fitted on its {len(splits['train'])} training recordings: flagged unfamiliar")
    for source in sorted({r.source for r in test}):
        mask = np.array([r.source == source for r in test])
        print(f"  test {source:12} {100 * flags[mask].mean():5.1f} % of {int(mask.sum())}")
    if external:
        print(f"  {YASEEN:17} {100 * novelty.flagged(stack(external)).mean():5.1f} % of {len(external)} "
              f"(another device, never trained on)")
    labels = np.array([r.label for r in test])
    verdicts = [classifier.classify(*read_stored(args.data / r.name)) for r in test]
    poor = np.array([v.label == "poor_signal" for v in verdicts])
    p = np.array([np.nan if v.p_abnormal is None else v.p_abnormal for v in verdicts])
    print(f"the shipped model on the test split, threshold {classifier.threshold:.3f}:")
    for name, mask in (("flagged unfamiliar", flags), ("the others", ~flags)):
        print(_figures(name, labels[mask], p[mask], poor[mask], classifier.threshold))

    loso = classifier.metadata.get("metrics", {}).get("loso", {}).get("per_source", {})
    print("leave one source set out: fitted on the other five sets' training recordings; the model's own "
          "held-out figures from its metadata")
    shares, specificities = [], []
    for source in PHYSIONET_SOURCES:
        others = {part: [r for r in splits[part] if r.source != source] for part in ("train", "validation", "test")}
        held = [r for part in ("train", "validation", "test") for r in splits[part] if r.source == source]
        if not held:
            continue
        fold = Novelty(stack(others["train"]), stack(others["validation"]))
        share = float(fold.flagged(stack(held)).mean())
        known = float(fold.flagged(stack(others["test"])).mean())
        figures = loso.get(source, {})
        line = f"  {source:12} held out: {100 * share:5.1f} % of {len(held):4d} flagged; the other sets' test " \
               f"recordings {100 * known:4.1f} %"
        if figures:
            line += f"; model held out: Sp {figures['specificity']:.3f}, AUC {figures['auc']:.3f}"
            shares.append(share)
            specificities.append(figures["specificity"])
        print(line)
    if len(shares) >= 3:
        rho = spearmanr(shares, specificities)[0]
        print(f"rank correlation of the share flagged with the held-out specificity over {len(shares)} sets: "
              f"{rho:+.2f} (strongly negative if unfamiliar meant wrong)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
