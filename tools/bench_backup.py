#!/usr/bin/env python3
"""Benchmark whole-device backup and restore against plain ``tar`` in the same run.

Builds a data folder like a busy clinic's month (``--recordings`` 20 s, 48 kHz, 16-bit WAVs,
~1.9 MB each, with their records), then times, each in its own child process so that peak
RSS is the process's own:

- ``heartpi backup X.tar`` against ``tar -cf`` of the same folder (the reference: it reads
  and writes the same bytes but checks nothing);
- ``heartpi restore`` against ``tar -xf`` of that archive.

Ours additionally hashes every file twice (at backup against its record, at restore against
the manifest) and fsyncs what it writes, so a ratio near 1 means the checks cost little next
to the I/O. Prints times, the ratios and peak RSS. Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_device(data_dir: Path, recordings: int, seconds: float = 20.0, rate: int = 48000) -> int:
    """A data folder with ``recordings`` WAVs and their records; returns the audio bytes."""
    import wave

    from device.records import RecordStore
    from device.storage import store_recording

    rng = np.random.default_rng(7)
    store = RecordStore(data_dir / "heartpi.sqlite3")
    total = 0
    try:
        for n in range(recordings):
            samples = (rng.standard_normal(int(seconds * rate)) * 3000).astype("<i2")
            path = data_dir / f".scratch-{n}.wav"
            with wave.open(str(path), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(rate)
                out.writeframes(samples.tobytes())
            data = path.read_bytes()
            path.unlink()
            relative, sha = store_recording(data_dir / "recordings", data)
            store.add_recording(file=relative, sha256=sha, duration_s=seconds, rate=rate, source="device",
                                device_id="bench", verdict="normal")
            total += len(data)
    finally:
        store.close()
    return total


def timed(command: list[str], env: dict, cwd: Path = ROOT) -> tuple[float, float]:
    """(wall seconds, this child's own peak RSS in MB) of one command."""
    with tempfile.TemporaryFile("w+") as output:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            output.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{output.read()}")
    return elapsed, usage.ru_maxrss / 1024


def drop_caches_if_possible() -> None:
    """Each path should read from the same kind of cache; sync at least (dropping needs root)."""
    os.sync()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="heartpi-bench-backup-", dir=args.work))
    python = sys.executable
    try:
        data = work / "device"
        audio = make_device(data, args.recordings)
        print(f"device: {args.recordings} recordings, {audio / 1e6:.0f} MB of audio")
        env = dict(os.environ, HEARTPI_DATA_DIR=str(data))
        env.pop("HEARTPI_CONFIG", None)
        rows = []
        for run in range(args.runs):
            archive, reference = work / f"ours-{run}.tar", work / f"tar-{run}.tar"
            drop_caches_if_possible()
            ours_backup, ours_backup_rss = timed([python, "-m", "heartpi.cli", "backup", str(archive)], env)
            drop_caches_if_possible()
            tar_backup, _ = timed(["tar", "-cf", str(reference), "-C", str(data), "recordings", "heartpi.sqlite3"],
                                  env)
            target = work / f"restored-{run}"
            restore_env = dict(env, HEARTPI_DATA_DIR=str(target))
            drop_caches_if_possible()
            ours_restore, ours_restore_rss = timed([python, "-m", "heartpi.cli", "restore", str(archive)],
                                                   restore_env)
            untar = work / f"untar-{run}"
            untar.mkdir()
            drop_caches_if_possible()
            tar_restore, _ = timed(["tar", "-xf", str(reference), "-C", str(untar)], env)
            rows.append((ours_backup, tar_backup, ours_restore, tar_restore))
            print(f"run {run + 1}: backup {ours_backup:.2f} s (tar -cf {tar_backup:.2f} s, "
                  f"{ours_backup / tar_backup:.2f}x), restore {ours_restore:.2f} s (tar -xf {tar_restore:.2f} s, "
                  f"{ours_restore / tar_restore:.2f}x)")
            for path in (archive, reference):
                path.unlink()
            shutil.rmtree(target)
            shutil.rmtree(untar)
        table = np.array(rows)
        best = table.min(axis=0)
        print(f"best of {args.runs}: backup {best[0]:.2f} s = {audio / 1e6 / best[0]:.0f} MB/s "
              f"({np.median(table[:, 0] / table[:, 1]):.2f}x tar -cf, median ratio); restore {best[2]:.2f} s = "
              f"{audio / 1e6 / best[2]:.0f} MB/s ({np.median(table[:, 2] / table[:, 3]):.2f}x tar -xf)")
        print(f"peak RSS of the last run's processes: backup {ours_backup_rss:.0f} MB, "
              f"restore {ours_restore_rss:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
