#!/usr/bin/env python3
"""Benchmark: classify a 20 s recording with the device path vs a research-prototype path.

Device path: ``model.Classifier`` (numpy/scipy features, int8 TFLite). Reference path, as the
original prototype would: librosa resampling and MFCC, then the float Keras model. Both run
in this process, interleaved in rounds, and the ratio is what counts on a noisy machine.
Also prints p50/p95 latency, the peak RSS of a process that only classifies, and the model
size. Needs the test and train extras (librosa, tensorflow).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A fresh process that only classifies, as `heartpi classify` and the web page's uploads are:
# peak RSS (VmHWM: since exec; ru_maxrss would also count the forked parent's pages), then
# minor page faults and best time per classify of the 2 kHz recording, with the heap tuned as
# every HeartPi process does ("tuned") or left to glibc's defaults ("default"), interleaved
# so both see the same machine.
FRESH_SCRIPT = """
import resource, sys, time
from dsp.heap import reuse_freed_heap
if sys.argv[2] == "tuned":
    reuse_freed_heap()
from model import Classifier
import dsp
c = Classifier.load()
v = c.classify_file(sys.argv[1])
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
samples, rate = dsp.read_wav(sys.argv[1])
samples = samples[: 20 * rate]
for _ in range(5):
    c.classify(samples, rate)
before, best = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, 1e9
for _ in range(50):
    start = time.perf_counter()
    c.classify(samples, rate)
    best = min(best, time.perf_counter() - start)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50
print(hwm, faults, best)
"""


def fresh_process(recording: Path, heap: str) -> tuple[float, float, float]:
    """(peak RSS in MB, minor page faults per classify, best classify in ms) of a fresh process."""
    result = subprocess.run([sys.executable, "-c", FRESH_SCRIPT, str(recording), heap], capture_output=True,
                            text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    hwm, faults, best = result.stdout.strip().splitlines()[-1].split()
    return int(hwm) / 1024, float(faults), 1e3 * float(best)


def reference_path(keras_model, params, threshold):
    import librosa
    import scipy.signal

    sos = scipy.signal.butter(4, [25, 400], btype="bandpass", fs=params.sr, output="sos")

    def classify(samples: np.ndarray, rate: int) -> str:
        y = librosa.resample(samples, orig_sr=rate, target_sr=params.sr)
        y = scipy.signal.sosfiltfilt(sos, y).astype(np.float32)
        m = librosa.feature.mfcc(y=y, sr=params.sr, n_mfcc=params.n_mfcc, n_fft=params.n_fft,
                                 hop_length=params.hop_length, n_mels=params.n_mels,
                                 fmin=params.fmin, fmax=params.fmax)
        m = (m - m.mean(axis=1, keepdims=True)) / (m.std(axis=1, keepdims=True) + 1e-3)
        width, step = params.frames_per_window, params.frames_per_hop
        windows = np.stack([m[:, s:s + width] for s in range(0, m.shape[1] - width + 1, step)])
        p = float(np.mean(keras_model.predict(windows[..., None], verbose=0)))
        return "abnormal" if p >= threshold else "normal"

    return classify


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="threads for both paths' networks "
                        "(TFLite interpreter, TensorFlow intra-op); 2 is what the device uses")
    args = parser.parse_args()
    import tensorflow as tf

    import dsp
    from dsp.heap import reuse_freed_heap
    from model import Classifier
    from model.classifier import ASSETS, DEFAULT_MODEL

    reuse_freed_heap()  # as every HeartPi process does at start (one process: both paths get it)

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    recording = sorted((ASSETS / "reference").glob("abnormal-*.wav"))[0]
    samples, rate = dsp.read_wav(recording)
    samples = samples[: 20 * rate]
    rate_48k = 48000
    samples_48k = dsp.resample(samples, rate, rate_48k)
    classifier = Classifier.load(threads=args.threads)
    keras_model = tf.keras.models.load_model(ASSETS / "heartpi-cnn-float.keras", compile=False)
    reference = reference_path(keras_model, classifier.params, classifier.threshold)

    print(f"classify one 20 s recording ({recording.name}), best of {args.rounds} rounds x {args.repeats}, "
          f"{args.threads} network thread(s) on both paths")
    ok = True
    for label, y, r in (("2 kHz source", samples, rate), ("48 kHz USB card", samples_48k, rate_48k)):
        ours_fn = lambda: classifier.classify(y, r)  # noqa: E731
        ref_fn = lambda: reference(y, r)  # noqa: E731
        ours_fn(), ref_fn()
        ours_times, ref_times = [], []
        for _ in range(args.rounds):
            for fn, times in ((ours_fn, ours_times), (ref_fn, ref_times)):
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - start)
        ratio = min(ref_times) / min(ours_times)
        ok &= ratio >= 20
        print(f"  {label:16}: ours best {1e3 * min(ours_times):5.1f} p50 {1e3 * np.median(ours_times):5.1f} "
              f"p95 {1e3 * np.percentile(ours_times, 95):5.1f} ms | reference best {1e3 * min(ref_times):6.1f} "
              f"p50 {1e3 * np.median(ref_times):6.1f} ms | speed-up {ratio:5.1f}x (target >= 20x)")
    fresh: dict[str, list] = {"tuned": [], "default": []}
    for _ in range(3):
        for heap in fresh:
            fresh[heap].append(fresh_process(recording, heap))
    rss_mb = max(run[0] for run in fresh["tuned"])
    size = DEFAULT_MODEL.stat().st_size
    ok &= size <= 64 * 1024
    print(f"  peak RSS of a classify-only process: {rss_mb:.0f} MB")
    for heap, runs in fresh.items():
        print(f"  fresh classify-only process, 2 kHz, heap {heap:7}: {np.median([r[1] for r in runs]):5.0f} "
              f"page faults per classify, best {min(r[2] for r in runs):4.1f} ms")
    print(f"  model: {size} bytes ({size / 1024:.1f} KB, target <= 64 KB), runtime {classifier.runtime}")
    print(json.dumps({"model_bytes": size, "rss_mb": round(rss_mb, 1)}))
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
