#!/usr/bin/env python3
"""Do a source set's normal and abnormal recordings differ in how they were recorded?

A heart-sound label should be heard in the heart, not in the recording chain. This measures,
for every PhysioNet source set, how well four properties of the raw recording that carry no
cardiac meaning separate its abnormal from its normal recordings (AUC, 0.5 = no difference):

* DC offset: the samples' mean over their standard deviation (an amplifier's or converter's bias);
* below 20 Hz: the share of power under the heart band (sensor drift, handling, a chain's high-pass);
* level: RMS in dBFS (the chain's gain; a body's build moves it too, so it is the weakest witness);
* bits used: log2 of how many distinct 16-bit sample values the recording holds (a converter's or
  an export's resolution: a coarse one, or a quiet signal on a fine one, leaves few values).

Beside them, the shipped model's AUC on that source set when it was trained on it (its test
recordings) and when it was not (leave-one-source-out), from the model's metadata. A source set
whose classes the chain alone tells apart, and which the model ranks far better heard than
unheard, is one whose in-distribution figures say little about a stethoscope never heard.
The device never sees these properties directly (it band-passes 25-400 Hz and normalises every
recording's MFCCs), so this shows where the data's labels and chains are entangled, not which
cue the network uses. So, for a source set whose classes the DC offset alone separates (AUC of
at least 0.9), the model's calls are also split by it (at the midpoint of the two classes' median
offsets): if the network heard only the chain, it would call the normal recordings on the
abnormal-like side abnormal as often as the abnormal ones. Those calls cover the whole source set,
training recordings included, so they show what the network keys on, not how well it does.
Not a test; its output goes into the model card (``python -m model.train.card --confounds FILE``).
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.signal import welch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from eval_sample_resolution import data_tool_parser  # noqa: E402
from model import Classifier  # noqa: E402
from model.metrics import auc  # noqa: E402
from model.train.dataset import PHYSIONET_SOURCES, read_labels, read_stored  # noqa: E402

PROPERTIES = ("DC offset", "below 20 Hz", "level", "bits used")
ENTANGLED_AUC = 0.9  #: a source set whose classes the DC offset separates this well gets its calls split by it


def chain_properties(path: Path) -> tuple[float, float, float, float]:
    """(DC offset in standard deviations, share of power below 20 Hz, RMS level in dBFS, bits used)."""
    x, rate = read_stored(path, dtype="float64")
    std = float(x.std()) or 1e-12
    freqs, power = welch(x - x.mean(), rate, nperseg=min(x.size, int(rate) // 2))
    below = float(power[freqs < 20.0].sum() / max(power.sum(), 1e-30))
    level = 10.0 * np.log10(float(np.mean(x ** 2)) + 1e-12)
    bits = float(np.log2(np.unique(np.round(x * 32768.0)).size))
    return float(x.mean()) / std, below, level, bits


def separation(labels: np.ndarray, values: np.ndarray) -> tuple[str, float]:
    """(AUC folded to >= 0.5 with + when abnormal recordings have the higher values, as printed;
    the folded AUC, 0 when one class is absent)."""
    area = auc(labels, values)
    if area is None:
        return "-", 0.0
    return f"{max(area, 1.0 - area):.3f} {'+' if area >= 0.5 else '-'}", max(area, 1.0 - area)


def calls_by_chain_side(classifier: Classifier, paths: list[Path], labels: np.ndarray, dc: np.ndarray) -> list[str]:
    """Lines: how often the model calls each class abnormal on each side of the DC offset midpoint."""
    cut = (np.median(dc[labels == 1]) + np.median(dc[labels == 0])) / 2
    high_side = "abnormal" if np.median(dc[labels == 1]) > cut else "normal"
    verdicts = []
    for path in paths:
        verdicts.append(classifier.classify(*read_stored(path)).label)
    verdicts = np.array(verdicts)
    lines = []
    for above in (True, False):
        side = (dc > cut) if above else (dc <= cut)
        like = high_side if above else ("normal" if high_side == "abnormal" else "abnormal")
        for label, name in ((0, "normal"), (1, "abnormal")):
            chosen = side & (labels == label)
            refer = int(np.sum(verdicts[chosen] == "abnormal"))
            poor = int(np.sum(verdicts[chosen] == "poor_signal"))
            article = "an" if like == "abnormal" else "a"
            lines.append(f"  {name} recordings with {article} {like}-like DC offset: {int(chosen.sum()):5d}, called "
                         f"abnormal {refer} ({100 * refer / max(chosen.sum(), 1):.0f} %), poor signal {poor}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = data_tool_parser(__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    classifier = Classifier.load(args.model)
    metrics = classifier.metadata.get("metrics", {})
    records = read_labels(args.data, "physionet2016")
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        values = np.array(list(pool.map(chain_properties, [args.data / r.name for r in records], chunksize=16)))
    labels = np.array([r.label for r in records])
    sources = np.array([r.source for r in records])
    print("Recording-chain properties with no cardiac meaning: how well each separates a source set's abnormal "
          "from its normal recordings (AUC, 0.5 = not at all; + abnormal higher, - lower), beside the model's "
          "AUC on that source set heard (test split) and unheard (leave-one-source-out).")
    print(f"{'source set':12} {'abnormal + normal':>17}  " + "  ".join(f"{p:>11}" for p in PROPERTIES)
          + f"  {'model heard':>11}  {'unheard':>7}")
    entangled = []  # source sets whose classes the DC offset (the first property) separates
    for source in PHYSIONET_SOURCES:
        mine = sources == source
        if not mine.any():
            continue
        heard = metrics.get("test_int8_per_source", {}).get(source, {}).get("auc")
        unheard = metrics.get("loso", {}).get("per_source", {}).get(source, {}).get("auc")
        counts = f"{int(labels[mine].sum())} + {int((~labels[mine].astype(bool)).sum())}"
        shown, folded = zip(*(separation(labels[mine], values[mine, i]) for i in range(len(PROPERTIES))))
        if folded[0] >= ENTANGLED_AUC:
            entangled.append((source, mine))
        print(f"{source:12} {counts:>17}  " + "  ".join(f"{text:>11}" for text in shown)
              + f"  {heard if heard is None else f'{heard:.3f}':>11}  {unheard if unheard is None else f'{unheard:.3f}':>7}")
    for source, mine in entangled:
        print(f"{source}: the model's calls split by the DC offset (all its recordings, training ones included):")
        paths = [args.data / r.name for r, m in zip(records, mine) if m]
        print("\n".join(calls_by_chain_side(classifier, paths, labels[mine], values[mine, 0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
