#!/usr/bin/env python3
"""Measure the poor-signal gate: bad recordings caught, clean recordings spared.

Bad set (made here, deterministic): silence (digital zero and a sound card's noise floor),
clipping (real training-split heart recordings driven into the rails), speech (espeak-ng,
several voices and speeds) and pure noise (white, pink, mains hum, stethoscope rubbing).
Clean set: the shipped model's *test split* recordings that PhysioNet labels good quality
(sqi = 1). Targets: >= 90 % of bad -> poor_signal, <= 5 % of clean -> poor_signal.

By class: every recording of the validation and test splits as stored (any quality), through
``classify`` at its own rate: how often an abnormal and a normal heart end as poor signal (why the
box refers a person after three poor signals in a row at one place, device/visits.py).

Short clips, as uploads from other devices arrive: the same bad recordings cut to 1.2-4 s,
and every Yaseen 2018 clip (8 kHz, 1.2-4 s, a stethoscope never trained on) through the
product's own ``classify`` at its own rate, with Se/Sp of the verdicts it gives.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dsp  # noqa: E402
from model import Classifier  # noqa: E402
from model.train.dataset import DEFAULT_DATA, YASEEN, model_splits, read_labels, read_stored  # noqa: E402

RATE = 8000
SECONDS = 20


def bad_recordings(train_records, rng):
    n = RATE * SECONDS
    t = np.arange(n) / RATE
    for i in range(10):
        yield "silence", np.zeros(n, np.float32) if i % 2 == 0 else \
            (10 ** (-(80 + 5 * i) / 20) * rng.standard_normal(n)).astype(np.float32)
    for record in train_records[:20]:
        audio = dsp.resample(record.audio, dsp.ANALYSIS_RATE_HZ, RATE)[:n]
        gain = 30 / (np.max(np.abs(audio)) + 1e-9)
        yield "clipping", np.clip(audio * gain * rng.uniform(0.5, 2), -1, 1).astype(np.float32)
    if shutil.which("espeak-ng"):
        texts = ["Please keep still while we listen to your heart, breathe slowly.",
                 "Is the baby feeding well? Any fever or cough this week?",
                 "Now hold the stethoscope on the left side of the chest, under the breast."]
        for i in range(12):
            wav = subprocess.run(["espeak-ng", "--stdout", "-s", str(120 + 15 * i), "-p", str(20 + 6 * i),
                                  "-v", ("en", "en-us", "fr", "sw")[i % 4], " ".join([texts[i % 3]] * 4)],
                                 check=True, capture_output=True).stdout
            samples, rate = dsp.read_wav(wav, min_seconds=1)
            yield "speech", dsp.resample(samples, rate, RATE)
    for i in range(8):
        yield "noise", (rng.uniform(0.01, 0.3) * rng.standard_normal(n)).astype(np.float32)
        spectrum = np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(np.arange(n // 2 + 1), 1))
        pink = np.fft.irfft(spectrum, n)
        yield "noise", (0.3 * pink / np.max(np.abs(pink))).astype(np.float32)
        hum = sum(np.sin(2 * np.pi * (50 + 10 * (i % 2)) * k * t) / k for k in (1, 2, 3))
        yield "noise", (0.2 * hum + 0.005 * rng.standard_normal(n)).astype(np.float32)
        bursts = np.zeros(n)
        for start in rng.integers(0, n - 4000, 25):
            bursts[start:start + rng.integers(800, 4000)] += rng.standard_normal(1) * 0.3
        rub = np.convolve(rng.standard_normal(n) * (bursts != 0), np.ones(8) / 8, "same")
        yield "noise", (0.5 * rub / (np.max(np.abs(rub)) + 1e-9)).astype(np.float32)


def short_clips(classifier, bad: list[tuple[str, np.ndarray]], data: Path) -> tuple[float, float]:
    """(bad short clips -> poor_signal, clean Yaseen clips -> poor_signal); prints both and the
    Yaseen verdicts' Se/Sp. ``bad``: the bad recordings, each cut to a random 1.2-4 s here."""
    import soundfile

    from model.metrics import screening_metrics

    rng = np.random.default_rng(8)
    caught = defaultdict(list)
    for category, samples in bad:
        clip = samples[: int(rng.uniform(1.2, 4.0) * RATE)]
        caught[category].append(classifier.classify(clip, RATE).label == "poor_signal")
    total = sum(len(v) for v in caught.values())
    bad_rate = sum(sum(v) for v in caught.values()) / total
    print(f"short clips (1.2-4 s) of the bad recordings -> poor_signal: {bad_rate:.1%} of {total} "
          f"(target >= 90%): " + ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in caught.items()))
    if not (data / YASEEN).exists():
        print("yaseen2018 not present: short clean clips not measured")
        return bad_rate, 0.0
    records = read_labels(data, YASEEN)
    labels, called, reasons = [], [], Counter()
    for record in records:
        samples, rate = soundfile.read(str(data / record.name), dtype="float32")
        verdict = classifier.classify(samples, rate)
        if verdict.label == "poor_signal":
            reasons.update(verdict.quality_reasons)
            continue
        labels.append(record.label)
        called.append(verdict.label == "abnormal")
    clean_rate = 1 - len(labels) / len(records)
    print(f"clean short clips (yaseen2018, 1.2-4 s) -> poor_signal: {clean_rate:.1%} of {len(records)} "
          f"(target <= 5%); reasons {dict(reasons)}")
    m = screening_metrics(np.array(labels), np.array(called))
    print(f"  verdicts on the other {len(labels)} clips: Se {m.sensitivity:.3f}, Sp {m.specificity:.3f}, "
          f"MAcc {m.macc:.3f}")
    return bad_rate, clean_rate


def poor_by_class(classifier, splits: dict, data: Path) -> None:
    """Prints, for the validation and test splits, the share of abnormal and of normal recordings
    (as stored, any quality) that end as poor signal, and the reasons given in each class."""
    for part in ("validation", "test"):
        poor: dict[int, list[bool]] = {0: [], 1: []}
        reasons: dict[int, Counter] = {0: Counter(), 1: Counter()}
        for record in splits[part]:
            verdict = classifier.classify(*read_stored(data / record.name))
            poor[record.label].append(verdict.label == "poor_signal")
            if verdict.label == "poor_signal":
                reasons[record.label].update(verdict.quality_reasons)
        print(f"{part} split, every recording as stored -> poor_signal: abnormal {np.mean(poor[1]):.1%} of "
              f"{len(poor[1])} {dict(reasons[1])}, normal {np.mean(poor[0]):.1%} of {len(poor[0])} "
              f"{dict(reasons[0])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    from model.train.dataset import load_audio

    classifier = Classifier.load()
    splits = model_splits(classifier.metadata, args.data)
    clean = [r for r in splits["test"] if r.sqi == 1]
    load_audio(splits["train"][:40] + clean, args.data)
    bad = list(bad_recordings(splits["train"][:40], np.random.default_rng(7)))
    caught = defaultdict(list)
    reasons = Counter()
    for category, samples in bad:
        verdict = classifier.classify(samples, RATE)
        caught[category].append(verdict.label == "poor_signal")
        reasons.update(verdict.quality_reasons)
    total_bad = sum(len(v) for v in caught.values())
    bad_rate = sum(sum(v) for v in caught.values()) / total_bad
    print(f"bad recordings -> poor_signal: {bad_rate:.1%} of {total_bad} (target >= 90%)")
    for category, hits in caught.items():
        print(f"  {category:9}: {sum(hits)}/{len(hits)}")
    print(f"  reasons given: {dict(reasons)}")
    flagged = Counter()
    n_flagged = 0
    for record in clean:
        verdict = classifier.classify(record.audio, dsp.ANALYSIS_RATE_HZ)
        if verdict.label == "poor_signal":
            n_flagged += 1
            flagged.update(verdict.quality_reasons)
    clean_rate = n_flagged / len(clean)
    print(f"clean test-split recordings (sqi 1) -> poor_signal: {clean_rate:.1%} of {len(clean)} "
          f"(target <= 5%); reasons {dict(flagged)}")
    poor_by_class(classifier, splits, args.data)
    short_bad, short_clean = short_clips(classifier, bad, args.data)
    ok = bad_rate >= 0.9 and clean_rate <= 0.05 and short_bad >= 0.9 and short_clean <= 0.05
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
