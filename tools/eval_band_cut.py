#!/usr/bin/env python3
"""Does a stethoscope or phone that cuts the low band change the verdict?

Phones and some electronic stethoscopes cut or tilt the 20-150 Hz band where the first and
second heart sounds sit (``../shared/research/domain-shift.md``), and one source set the model
never trains on in its leave-one-source-out fold, training-f, is recorded that way: its power at
20-50 Hz sits about 20 dB below the other source sets', as a second-order high-pass near 150 Hz
would leave it, and held out it loses nearly all its specificity. This measures whether a low-band
cut alone moves the model's verdicts: every recording of a PhysioNet split is read as stored and
then high-passed at each cut-off (40 dB per decade below it, the slope of a second-order
high-pass and of training-f's low band; zero phase), and classified by the device's own path
(``Classifier.classify``: the quality gate included). Per version, as
``tools/eval_sample_resolution.py`` reports: the share refused as poor signal and, among the rest,
AUC and Se / Sp / MAcc at the model's threshold, and the specificity on the source sets other than
training-e. The validation split is the one to choose by;
``--split test`` is for reporting after a choice.

``--spectra`` instead describes every PhysioNet source set and class as recorded (recordings
PhysioNet marked poor quality left out): the power in bands from 20 to 800 Hz relative to each
recording's own mean over that range (Welch, averaged in dB), and the contrast of its beats over
its floor (95th over 30th percentile of 20 ms RMS in the heart band, 25-400 Hz). Not a test.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.signal import welch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from dsp.filters import ANALYSIS_RATE_HZ, bandpass, highpass, to_analysis_rate  # noqa: E402
from eval_sample_resolution import chain_tool_parser, line, split_as_stored, verdicts  # noqa: E402
from model.train.dataset import read_labels, read_stored  # noqa: E402

CUTOFFS_HZ = (100.0, 150.0, 200.0, 250.0)  #: high-pass corners
#: A first-order Butterworth run forwards and backwards (:func:`dsp.filters.highpass` is zero
#: phase): 40 dB per decade, the magnitude of a second-order high-pass.
ORDER = 1


def band_cut(samples: np.ndarray, rate: int, cutoff_hz: float) -> np.ndarray:
    """``samples`` high-passed at ``cutoff_hz``, 40 dB per decade, zero phase, in float32."""
    return highpass(samples.astype(np.float64), rate, cutoff_hz, order=ORDER).astype(np.float32)


BAND_EDGES_HZ = (20, 50, 100, 150, 200, 300, 400, 600, 800)  #: the --spectra table's bands


def band_levels(samples: np.ndarray, rate: int, edges: Sequence[float] = BAND_EDGES_HZ) -> np.ndarray:
    """Power in each band between ``edges`` (Hz) in dB relative to the recording's own mean from
    the first edge to the last (mean of the Welch spectrum's dB values in the band)."""
    freqs, power = welch(samples - samples.mean(), rate, nperseg=min(samples.size, 1024))
    inside = (freqs >= edges[0]) & (freqs <= edges[-1])
    db = 10 * np.log10(power[inside] + 1e-20)
    db -= db.mean()
    return np.array([db[(freqs[inside] >= lo) & (freqs[inside] < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])


def beat_contrast(samples: np.ndarray, rate: int) -> float:
    """The beats over the floor in dB: 95th over 30th percentile of 20 ms RMS in the heart band."""
    heart = bandpass(to_analysis_rate(samples, rate).astype(np.float64), ANALYSIS_RATE_HZ)
    frame = ANALYSIS_RATE_HZ // 50  # 20 ms
    frames = heart[: heart.size // frame * frame].reshape(-1, frame)
    rms = np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-12
    return float(20 * np.log10(np.percentile(rms, 95) / np.percentile(rms, 30)))


def spectra(data: Path) -> int:
    """The --spectra table."""
    bands, contrast = defaultdict(list), defaultdict(list)
    for record in read_labels(data, "physionet2016"):
        if record.sqi == 0:
            continue
        samples, rate = read_stored(data / record.name, dtype="float64")
        key = (record.source, "abnormal" if record.label else "normal")
        bands[key].append(band_levels(samples, rate))
        contrast[key].append(beat_contrast(samples, rate))
    heads = " ".join(f"{lo}-{hi}".rjust(8) for lo, hi in zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:]))
    print(f"dB relative to each recording's mean over 20-800 Hz, per band (Hz); beats over floor (dB, median)\n"
          f"{'source set':12} {'class':8} {'n':>5} {heads} {'contrast':>9}")
    for (source, label) in sorted(bands):
        levels = np.mean(bands[source, label], axis=0)
        print(f"{source:12} {label:8} {len(bands[source, label]):5d} " + " ".join(f"{v:8.1f}" for v in levels)
              + f" {np.median(contrast[source, label]):9.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = chain_tool_parser(__doc__)
    parser.add_argument("--spectra", action="store_true", help="describe the source sets as recorded instead")
    args = parser.parse_args(argv)
    if args.spectra:
        return spectra(args.data)
    classifier, labels, stored, rate, others = split_as_stored(args, parser)
    versions = [("as stored", stored)]
    versions += [(f"cut below {cutoff:.0f} Hz", [band_cut(x, rate, cutoff) for x in stored]) for cutoff in CUTOFFS_HZ]
    for name, recordings in versions:
        print(line(name, labels, others, *verdicts(classifier, recordings, rate), classifier.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
