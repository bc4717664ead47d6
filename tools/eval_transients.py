#!/usr/bin/env python3
"""Does a moment of trouble inside a good recording change its verdict?

In the field a recording is rarely clean from end to end: the chest piece is knocked, slides on
the skin, is lifted for a second, or someone speaks. This inserts one such moment into each
recording of a split (PhysioNet at 2 kHz as stored, not band-passed: its own hiss and rumble are
part of what the device hears; one artefact per run, at a random place, seeded per recording)
and classifies it by the device's path:

* ``knock``: the chest piece knocked once (a 30 Hz thud decaying over ~0.1 s with a click),
  three times the recording's heart-sound peak (then clipped to full scale);
* ``knocks``: three knocks at random places;
* ``rub``: 2 s of the chest piece sliding (friction noise, 150-800 Hz, in strokes), RMS half
  the heart-sound peak;
* ``speech``: 3 s of talking (espeak-ng, muffled to 600 Hz as through a chest piece), RMS half
  the heart-sound peak;
* ``lifted``: the chest piece off the skin for 2 s (the room's faint noise), a knock at each end.

Printed per artefact: how many verdicts differ from the clean recording's, how many became poor
signal, the median change of P(abnormal) among those still scored, Se / Sp / MAcc of the scored
verdicts (the clean recordings' first), and how many heart rates moved more than 10 % from the
clean recording's (of those found in both); each twice: as the device classifies (a stretch with
the chest piece off the skin and bursts of noise left out of the windows, the quality checks and
the heart rate: :mod:`dsp.interruptions`, :func:`dsp.heard_quality`) and scoring every window and
judging the whole recording, as before those rules. Choose anything on ``--split validation``; the
test split is for the report. Not a test: about 2 minutes for the test split on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dsp  # noqa: E402
from model import Classifier  # noqa: E402
from model.metrics import screening_metrics  # noqa: E402
from model.train.dataset import DEFAULT_DATA, model_splits, read_stored  # noqa: E402

RATE = dsp.ANALYSIS_RATE_HZ


def heart_peak(samples: np.ndarray) -> float:
    """The recording's heart-sound level: the 99.5th percentile of |x| (its loudest S1s)."""
    return float(np.percentile(np.abs(samples), 99.5)) or 1e-3


def knock(rng: np.random.Generator, level: float) -> np.ndarray:
    t = np.arange(int(0.25 * RATE)) / RATE
    thud = np.sin(2 * np.pi * rng.uniform(20, 40) * t) * np.exp(-t / rng.uniform(0.04, 0.1))
    thud[: int(0.005 * RATE)] += rng.standard_normal(int(0.005 * RATE))
    return 3 * level * thud / np.max(np.abs(thud))


def friction(rng: np.random.Generator, seconds: float, level: float) -> np.ndarray:
    n = int(seconds * RATE)
    noise = dsp.bandpass(rng.standard_normal(n).astype(np.float32), RATE, low_hz=150.0, high_hz=800.0)
    strokes = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(2, 5) * np.arange(n) / RATE))
    rub = noise * strokes
    return 0.5 * level * rub / (np.sqrt(np.mean(rub ** 2)) + 1e-12)


def speech_clips() -> list[np.ndarray]:
    if not shutil.which("espeak-ng"):
        return []
    texts = ["Is the baby feeding well? Any fever or cough this week?",
             "Please keep still, breathe slowly, we are nearly done.",
             "Hold it a little lower, under the breast, on the left side."]
    clips = []
    for i, text in enumerate(texts * 2):
        wav = subprocess.run(["espeak-ng", "--stdout", "-s", str(140 + 20 * i), "-v", ("en", "fr", "sw")[i % 3], text],
                             check=True, capture_output=True).stdout
        samples, rate = dsp.read_wav(wav, min_seconds=0.5)
        muffled = dsp.filters.lowpass(dsp.resample(samples, rate, RATE), RATE, 600.0)
        clips.append(muffled / (np.sqrt(np.mean(muffled ** 2)) + 1e-12))
    return clips


def with_artefact(samples: np.ndarray, kind: str, rng: np.random.Generator, speech: list[np.ndarray]) -> np.ndarray:
    out = samples.astype(np.float64).copy()
    level = heart_peak(samples)

    def add(piece: np.ndarray, at: int) -> None:
        end = min(out.size, at + piece.size)
        out[at:end] += piece[: end - at]

    def place(seconds: float) -> int:
        return int(rng.uniform(0, max(out.size / RATE - seconds, 0.0)) * RATE)

    if kind == "knock":
        add(knock(rng, level), place(0.25))
    elif kind == "knocks":
        for at in sorted(rng.choice(max(out.size - RATE // 4, 1), 3, replace=False)):
            add(knock(rng, level), int(at))
    elif kind == "rub":
        add(friction(rng, 2.0, level), place(2.0))
    elif kind == "speech":
        clip = speech[int(rng.integers(len(speech)))]
        at = place(3.0)
        add(0.5 * level * clip[: 3 * RATE], at)
    elif kind == "lifted":
        at, n = place(2.0), 2 * RATE
        end = min(out.size, at + n)
        out[at:end] = 0.002 * level * rng.standard_normal(end - at)
        add(knock(rng, level), max(at - RATE // 8, 0))
        add(knock(rng, level), end)
    else:
        raise ValueError(kind)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


KINDS = ("knock", "knocks", "rub", "speech", "lifted")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--limit", type=int, default=0, help="about N recordings, spread over the split (0: all)")
    args = parser.parse_args()
    classifier = Classifier.load()
    every_window = Classifier.load()
    every_window.dropout_db = every_window.noise_burst_db = math.inf  # the device before dsp.interruptions
    records = model_splits(classifier.metadata, args.data)[args.split]
    if args.limit:
        records = records[:: -(-len(records) // args.limit)]
    stored = [dsp.resample(*read_stored(args.data / r.name), RATE) for r in records]  # as stored: not band-passed
    speech = speech_clips()
    kinds = [k for k in KINDS if k != "speech" or speech]
    labels = np.array([r.label for r in records])

    def figures(verdicts) -> str:
        got = [i for i, v in enumerate(verdicts) if v.label != "poor_signal"]
        m = screening_metrics(labels[got], np.array([verdicts[i].label == "abnormal" for i in got]), bootstrap=0)
        return f"Se {m.sensitivity:.3f} Sp {m.specificity:.3f} MAcc {m.macc:.3f}"

    def changes(verdicts, clean) -> str:
        flips = sum(v.label != c.label for v, c in zip(verdicts, clean))
        to_poor = sum(v.label == "poor_signal" and c.label != "poor_signal" for v, c in zip(verdicts, clean))
        swapped = sum({v.label, c.label} == {"normal", "abnormal"} for v, c in zip(verdicts, clean))
        deltas = [abs(v.p_abnormal - c.p_abnormal) for v, c in zip(verdicts, clean)
                  if v.p_abnormal is not None and c.p_abnormal is not None and v.label != "poor_signal"]
        rates = [abs(v.heart_rate_bpm / c.heart_rate_bpm - 1) for v, c in zip(verdicts, clean)
                 if v.heart_rate_bpm and c.heart_rate_bpm]
        return (f"{flips:3d} differ ({swapped:3d} normal<->abnormal, {to_poor:3d} to poor signal), |dP| median "
                f"{np.median(deltas) if deltas else float('nan'):.4f}; {figures(verdicts)}; heart rate >10% off "
                f"{sum(r > 0.1 for r in rates)} of {len(rates)}")

    ways = {"device": classifier, "every window": every_window}
    clean = {way: [c.classify(audio, RATE) for audio in stored] for way, c in ways.items()}
    print(f"{len(records)} {args.split}-split recordings, clean:")
    for way in ways:
        poor = sum(v.label == "poor_signal" for v in clean[way])
        print(f"  {way:12} {poor} poor signal; {figures(clean[way])}")
    print(f"  the device's verdicts against every window's: {changes(clean['device'], clean['every window'])}")
    device = clean["device"]
    share = max((v.lifted_s + v.noisy_s) / v.duration_s for v in device)
    print(f"  the device left a stretch out of {sum(v.lifted_s + v.noisy_s > 0 for v in device)} clean recordings "
          f"({sum(v.lifted_s > 0 for v in device)} off the skin, {sum(v.noisy_s > 0 for v in device)} noise; at most "
          f"{share:.0%} of one)")
    for kind in kinds:
        print(f"{kind}:")
        for way, c in ways.items():
            verdicts = [c.classify(with_artefact(audio, kind, np.random.default_rng([i, KINDS.index(kind)]), speech),
                                   RATE) for i, audio in enumerate(stored)]
            print(f"  {way:12} {changes(verdicts, clean[way])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
