"""glibc heap settings: analysis temporaries stay in the heap instead of being faulted in anew."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import reference_wavs

ROOT = Path(__file__).resolve().parents[1]

# A fresh process per case: glibc's thresholds move with what the process has freed before.
FAULTS_SCRIPT = """
import resource, sys
import dsp
from dsp.heap import reuse_freed_heap
if sys.argv[1] == "tuned":
    assert reuse_freed_heap()
from model import Classifier
c = Classifier.load()
samples, rate = dsp.read_wav(sys.argv[2])
assert rate == 2000
for _ in range(5):
    c.classify(samples, rate)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    c.classify(samples, rate)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_classify(mode: str, wav: Path) -> float:
    result = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode, str(wav)], capture_output=True,
                            text=True, cwd=ROOT, check=True, timeout=120)
    return float(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_classify_stops_page_faulting_its_temporaries_once_the_heap_is_tuned():
    wav = reference_wavs()[0]
    default = faults_per_classify("default", wav)
    tuned = faults_per_classify("tuned", wav)
    assert tuned < 20, f"{tuned} minor page faults per classify with the heap tuned"
    assert default > 10 * max(tuned, 1.0), "the measurement no longer tells the two apart"


def test_every_heartpi_command_tunes_the_heap(monkeypatch, capsys):
    import dsp.heap
    from heartpi import cli

    calls = []
    monkeypatch.setattr(dsp.heap, "reuse_freed_heap", lambda: calls.append(1) or True)
    assert cli.main(["classify", str(reference_wavs()[0])]) == 0
    assert calls == [1]
    assert "NORMAL" in capsys.readouterr().out


RELEASE_SCRIPT = """
import numpy as np
from dsp.heap import release_freed_heap, reuse_freed_heap
def rss_mb():
    return [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")][0] / 1024
assert reuse_freed_heap()
start = rss_mb()
blocks = [np.ones(1 << 17) for _ in range(12)]  # 12 x 1 MB: below both thresholds
del blocks
kept = rss_mb()
release_freed_heap()
print(start, kept, rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_heap_is_kept_for_reuse_until_released():
    result = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT], capture_output=True, text=True,
                            cwd=ROOT, check=True, timeout=60)
    start, kept, released = map(float, result.stdout.split())
    assert kept - start > 8, "freed analysis-sized blocks should stay in the heap for reuse"
    assert kept - released > 8, "release_freed_heap should give them back"
