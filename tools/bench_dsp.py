#!/usr/bin/env python3
"""Benchmark: our MFCC against librosa's in the same run, and the cost of ``import dsp``.

Ratios, not absolute times, because the machines this runs on are shared and noisy.
Run: ``.venv/bin/python tools/bench_dsp.py`` (needs the test extra for librosa).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_of_rounds(funcs, repeats: int, rounds: int = 3) -> list[float]:
    """Best time of each function over ``rounds`` alternating blocks of ``repeats`` calls.

    Each block runs one function back to back (as ``timeit`` does, so neither pays for the
    other's cache footprint); alternating the blocks spreads background load over both.
    """
    best = [float("inf")] * len(funcs)
    for _ in range(rounds):
        for i, func in enumerate(funcs):
            func()  # warm-up: caches, lazy imports, numba compilation on librosa's side
            for _ in range(repeats):
                start = time.perf_counter()
                func()
                best[i] = min(best[i], time.perf_counter() - start)
    return best


def import_time(repeats: int = 5) -> float:
    code = "import time; t=time.perf_counter(); import dsp; print(time.perf_counter()-t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout) for _ in range(repeats)]
    return min(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    import librosa

    import dsp

    rng = np.random.default_rng(0)
    print(f"MFCC of a {args.seconds:.0f} s recording, best of {args.repeats} (n_mfcc=20, n_fft=2048, hop 512, 128 mels)")
    ok = True
    for rate, target in ((2000, 3.0), (44100, 1.2)):
        y = (0.1 * rng.standard_normal(int(rate * args.seconds))).astype(np.float32)
        diff = float(np.max(np.abs(dsp.mfcc(y, sr=rate) - librosa.feature.mfcc(y=y, sr=rate))))
        ours, ref = best_of_rounds([lambda: dsp.mfcc(y, sr=rate),
                                         lambda: librosa.feature.mfcc(y=y, sr=rate)], args.repeats)
        ratio = ref / ours
        ok &= ratio >= target
        print(f"  {rate:>6} Hz: ours {1e3 * ours:7.2f} ms, librosa {1e3 * ref:7.2f} ms, "
              f"speed-up {ratio:4.1f}x (target >= {target}x), max |diff| {diff:.2e}")
    seconds = import_time()
    ok &= seconds <= 0.2
    print(f"  import dsp: {1e3 * seconds:.0f} ms (target <= 200 ms)")
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
