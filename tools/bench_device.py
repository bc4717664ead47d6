#!/usr/bin/env python3
"""Benchmark the device: idle RSS and CPU of the daemon, capture-end-to-verdict latency.

Runs the real daemon (``heartpi daemon --simulate``: MockFactory pins, file source) in a
child process for RSS and CPU, and an in-process daemon for latency over 48 kHz, 20 s
recordings (what a USB card delivers). Targets on this machine: RSS <= 80 MB, verdict
<= 0.5 s after the capture ends, idle CPU ~ 0. A simulation has no power-supply sensor, so
the idle cost of watching one (device/power.py: a sysfs read every second) is measured apart,
in-process, as the CPU of an idle daemon that watches a sensor against one that does not,
taking turns.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TICKS = os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def make_inputs(folder: Path) -> Path:
    """The bundled reference recordings as a USB card delivers them: 20 s at 48 kHz."""
    import dsp
    from model.classifier import ASSETS

    folder.mkdir(parents=True)
    for path in sorted((ASSETS / "reference").glob("*.wav")):
        samples, rate = dsp.read_wav(path)
        dsp.write_wav(folder / path.name, dsp.resample(samples, rate, 48000)[: 20 * 48000], 48000)
    return folder


def idle_figures(data_dir: Path, inputs: Path, seconds: float, presses: int = 3) -> tuple[float, float, float]:
    """RSS right after start, then RSS and CPU share while idle after ``presses`` recordings.

    The daemon's keyboard control (a pseudo-terminal as its stdin) presses the virtual button,
    exactly as a person at the simulated device would.
    """
    import pty

    env = dict(os.environ, HEARTPI_DATA_DIR=str(data_dir))
    env.pop("HEARTPI_CONFIG", None)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "heartpi.cli", "daemon", "--simulate", "--speed", "20",
                             "--input", str(inputs)],
                            cwd=ROOT, env=env, stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    from device.gpio import PATTERNS, READY

    ready = f"[LEDs] {PATTERNS[READY].words}"  # what the simulation prints for the ready light
    watchdog = threading.Timer(120 + seconds, proc.kill)  # a daemon that never gets there ends the wait
    watchdog.start()
    try:
        if not any(ready in line for line in proc.stdout):
            raise SystemExit("the simulated daemon never showed the ready light; its output ended first")
        time.sleep(2.0)  # let start-up settle
        start_rss = _rss_mb(proc.pid)
        for _ in range(presses):
            os.write(master, b"\n")
            for line in proc.stdout:
                if "[LEDs]" in line and ("steady" in line or "fault" in line):
                    break
        time.sleep(2.0)
        start_cpu, start = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu_share = (_cpu_seconds(proc.pid) - start_cpu) / (time.monotonic() - start)
        used_rss = _rss_mb(proc.pid)
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(30)
        os.close(master)
        os.close(slave)
    return start_rss, used_rss, cpu_share


def _in_process_daemon(data_dir: Path, inputs: Path, classifier, power=None):
    """A daemon with mock pins and a file source, running in a thread; stop with ``request_stop``."""
    from gpiozero.pins.mock import MockFactory

    from device.capture import FileSource
    from device.config import config_from_mapping
    from device.daemon import Daemon
    from device.gpio import Indicator
    from device.records import RecordStore

    config = config_from_mapping({"storage": {"data_dir": str(data_dir / "d")}}, env={})
    indicator = Indicator(button_pin=17, green_pin=27, red_pin=22, amber_pin=23, pin_factory=MockFactory())
    daemon = Daemon(config=config, source=FileSource.from_path(inputs), indicator=indicator,
                    store=RecordStore(config.database_path), classifier=classifier, power=power)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    daemon.started.wait()
    return daemon, thread, indicator


def idle_power_watch(data_dir: Path, inputs: Path, seconds: float, rounds: int = 2) -> tuple[float, float]:
    """CPU seconds per minute of an idle in-process daemon without and with a power-supply sensor
    to watch (a sysfs tree laid out as a Raspberry Pi's, alarm 0), best of ``rounds`` turns each."""
    from device.power import PowerWatch
    from model import Classifier

    from tests.sysfs import fake_sysfs

    sysfs = data_dir / "sys"
    fake_sysfs(sysfs)  # alarm 0
    classifier = Classifier.load()
    best = {False: float("inf"), True: float("inf")}
    for n in range(rounds):
        for watched in (False, True):
            power = PowerWatch.find(sysfs) if watched else None
            daemon, thread, indicator = _in_process_daemon(data_dir / f"{n}-{watched}", inputs, classifier, power)
            time.sleep(1.0)
            start_cpu, start = time.process_time(), time.monotonic()
            time.sleep(seconds)
            best[watched] = min(best[watched], (time.process_time() - start_cpu) / (time.monotonic() - start) * 60)
            daemon.request_stop()
            thread.join(10)
            indicator.close()
    return best[False], best[True]


def latency(data_dir: Path, inputs: Path, cycles: int) -> list[float]:
    from device.runner import press_button
    from model import Classifier

    daemon, thread, _indicator = _in_process_daemon(data_dir, inputs, Classifier.load())
    times = []
    for _ in range(cycles):
        with daemon.cycle_done:
            before = len(daemon.results)
            press_button(daemon, 0.01)
            daemon.cycle_done.wait_for(lambda: len(daemon.results) > before)
        result = daemon.results[-1]
        times.append(result.verdict_at - result.capture_ended_at)
    daemon.request_stop()
    thread.join(10)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--cycles", type=int, default=12)
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp) / "inputs")
        start_rss, rss, cpu = idle_figures(Path(tmp) / "idle", inputs, args.idle_seconds)
        ok &= rss <= 80 and cpu <= 0.01
        print(f"daemon idle: RSS {start_rss:.1f} MB after start, {rss:.1f} MB after 3 recordings at 48 kHz "
              f"(target <= 80 MB), CPU {100 * cpu:.2f}% of one core over {args.idle_seconds:.0f} s (target ~ 0)")
        times = latency(Path(tmp) / "latency", inputs, args.cycles)
        p50, p95 = np.median(times), np.percentile(times, 95)
        ok &= p95 <= 0.5
        print(f"capture end -> verdict (20 s at 48 kHz: save, classify, store): p50 {1e3 * p50:.0f} ms, "
              f"p95 {1e3 * p95:.0f} ms, max {1e3 * max(times):.0f} ms over {len(times)} cycles (target <= 500 ms)")
        plain, watched = idle_power_watch(Path(tmp) / "power", inputs, args.idle_seconds)
        ok &= watched <= 0.6  # 1 % of one core
        print(f"idle daemon CPU per minute, in-process: {1e3 * plain:.0f} ms without a power-supply sensor, "
              f"{1e3 * watched:.0f} ms watching one every second (+{1e3 * (watched - plain):.0f} ms; "
              f"target <= 600 ms, 1 % of one core)")
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
