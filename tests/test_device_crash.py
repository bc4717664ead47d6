"""SIGKILL the daemon mid-cycle again and again: committed records and files stay intact."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import dsp
from device.records import RecordStore
from device.storage import TMP_PREFIX

ROOT = Path(__file__).resolve().parents[1]


def test_repeated_sigkill_loses_no_committed_record(tmp_path):
    rng = random.Random(1234)
    env = dict(os.environ, HEARTPI_DATA_DIR=str(tmp_path))
    env.pop("HEARTPI_CONFIG", None)
    kills = 0
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-m", "heartpi.cli", "daemon", "--simulate", "--presses", "1000"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(30)
    assert kills >= 6
    store = RecordStore(tmp_path / "heartpi.sqlite3")
    assert store.integrity_check() == "ok"
    records = store.list_recordings(limit=100000)
    assert len(records) >= 8
    base = tmp_path / "recordings"
    for rec in records:
        data = (base / rec.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == rec.sha256, rec.file
    # every visible recording is a whole, readable WAV; only hidden temporaries may be partial
    on_disk = {p.relative_to(base).as_posix() for p in base.rglob("*.wav")}
    for relative in on_disk:
        samples, rate = dsp.read_wav(base / relative, min_seconds=0.0)
        assert samples.size > 0
    assert all(p.name.startswith(TMP_PREFIX) and p.suffix == ".tmp"
               for p in base.rglob("*") if p.is_file() and p.suffix != ".wav")
    # a restart analyses recordings whose record was not yet committed, and cleans temporaries
    proc = subprocess.run([sys.executable, "-m", "heartpi.cli", "daemon", "--simulate", "--presses", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    store = RecordStore(tmp_path / "heartpi.sqlite3")
    assert {r.file for r in store.list_recordings(limit=100000)} == on_disk
    assert not list(base.rglob(f"{TMP_PREFIX}*"))
