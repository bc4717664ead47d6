#!/usr/bin/env python3
"""Benchmark: classify a 20 s recording with the device path vs a research-prototype path.

Device path: ``model.Classifier`` (numpy features, int8 TFLite). Reference path, as the
original prototype would: librosa resampling and MFCC, scipy band-pass, then the float Keras
model. Each path runs in its own worker process, as each would in use (TensorFlow is never
loaded beside the device path: once a Keras ``predict`` has run in a process, our classify
there stays ~1.5 ms slower, 3.4 -> 5.0 ms when measured). The two workers take turns in
rounds, so both see the same machine, and the ratio of their best times is what counts on a
noisy machine. In each round our path runs for as long as the reference's calls took (at
least as many calls): a best time is the quietest moment seen, and on a shared machine
that depends on how long one looks, not on how many calls fit in it. Also prints p50/p95 latency, the peak RSS of a process that only classifies,
and the model size. Needs the test and train extras (librosa, tensorflow).
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
RATES = {"2 kHz source": 2000, "48 kHz USB card": 48000, "44.1 kHz phone": 44100}

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
    """The prototype's classify: librosa + scipy features, float Keras ``predict``."""
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


def benchmark_recording() -> Path:
    """The benchmark recording: a shipped abnormal example."""
    from model.classifier import ASSETS

    return sorted((ASSETS / "reference").glob("abnormal-*.wav"))[0]


def recording_inputs() -> dict[int, np.ndarray]:
    """The benchmark recording's first 20 s at each rate timed (only the workers need them)."""
    import dsp

    samples, rate = dsp.read_wav(benchmark_recording())
    samples = samples[: 20 * rate]
    return {r: dsp.resample(samples, rate, r) for r in RATES.values()}


def worker(path: str, threads: int) -> None:
    """Serve timing requests on stdin for one path: ``RATE COUNT SECONDS`` runs at least COUNT
    classifies and goes on until SECONDS have passed; answers a JSON list of their times."""
    from dsp.heap import reuse_freed_heap
    from model import Classifier
    from model.classifier import ASSETS

    # Both workers keep freed heap as every HeartPi process does at start: the reference's
    # temporaries are larger, so leaving it glibc's defaults would flatter our ratio.
    reuse_freed_heap()
    inputs = recording_inputs()
    if path == "ours":
        classify = Classifier.load(threads=threads).classify
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        classifier = Classifier.load(threads=threads)  # only for its feature parameters and threshold
        keras_model = tf.keras.models.load_model(ASSETS / "heartpi-cnn-float.keras", compile=False)
        classify = reference_path(keras_model, classifier.params, classifier.threshold)
    for rate, samples in inputs.items():  # warm-up: caches, lazy imports, graph tracing
        classify(samples, rate)
    print("ready", flush=True)
    for line in sys.stdin:
        rate, count, seconds = line.split()
        times: list[float] = []
        until = time.perf_counter() + float(seconds)
        while len(times) < int(count) or time.perf_counter() < until:
            start = time.perf_counter()
            classify(inputs[int(rate)], int(rate))
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)


class Worker:
    """One path's worker process, driven over pipes."""

    def __init__(self, path: str, threads: int):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", path, "--threads", str(threads)], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{path} worker did not start (exit {self.process.wait()})")

    def time(self, rate: int, count: int, seconds: float = 0.0) -> list[float]:
        self.process.stdin.write(f"{rate} {count} {seconds}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="threads for both paths' networks "
                        "(TFLite interpreter, TensorFlow intra-op); 2 is what the device uses")
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads)
        return 0
    from model.classifier import DEFAULT_MODEL

    recording = benchmark_recording()
    workers = {"ours": Worker("ours", args.threads), "reference": Worker("reference", args.threads)}
    print(f"classify one 20 s recording ({recording.name}), best of {args.rounds} rounds x {args.repeats}, "
          f"each path in its own process, {args.threads} network thread(s) on both")
    ok = True
    for label, rate in RATES.items():
        times: dict[str, list[float]] = {name: [] for name in workers}
        for _ in range(args.rounds):
            reference = workers["reference"].time(rate, args.repeats)
            times["reference"] += reference
            times["ours"] += workers["ours"].time(rate, args.repeats, sum(reference))
        ours, ref = np.array(times["ours"]), np.array(times["reference"])
        ratio = ref.min() / ours.min()
        ok &= ratio >= 20
        print(f"  {label:16}: ours best {1e3 * ours.min():5.1f} p50 {1e3 * np.median(ours):5.1f} "
              f"p95 {1e3 * np.percentile(ours, 95):5.1f} ms | reference best {1e3 * ref.min():6.1f} "
              f"p50 {1e3 * np.median(ref):6.1f} ms | speed-up {ratio:5.1f}x (target >= 20x; "
              f"{ours.size} vs {ref.size} calls in equal time)")
    for w in workers.values():
        w.close()
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
    from model import Classifier

    print(f"  model: {size} bytes ({size / 1024:.1f} KB, target <= 64 KB), runtime {Classifier.load().runtime}")
    print(json.dumps({"model_bytes": size, "rss_mb": round(rss_mb, 1)}))
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
