"""The daemon's state machine end to end: button -> capture -> verdict -> LEDs -> records."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import dsp
from device import gpio
from device.capture import FileSource
from device.daemon import FAULT, IDLE, RESULT, Daemon
from device.errors import SoundCardError
from device.runner import press_button
from device.sdnotify import Notifier
from device.storage import resolve
from tests.conftest import reference_wavs

ROOT = Path(__file__).resolve().parents[1]


class Harness:
    def __init__(self, config, store, classifier, factory, source, **daemon_kwargs):
        self.indicator = gpio.Indicator(button_pin=config.gpio.button, green_pin=config.gpio.led_green,
                                        red_pin=config.gpio.led_red, amber_pin=config.gpio.led_amber,
                                        long_press_seconds=0.3, pin_factory=factory)
        self.daemon = Daemon(config=config, source=source, indicator=self.indicator, store=store,
                             classifier=classifier, **daemon_kwargs)
        self.factory = factory
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)
        self.thread.start()
        assert self.daemon.started.wait(30)

    def press_and_wait(self, hold: float = 0.02):
        with self.daemon.cycle_done:
            before = len(self.daemon.results)
            press_button(self.daemon, hold)
            assert self.daemon.cycle_done.wait_for(lambda: len(self.daemon.results) > before, timeout=30)
        return self.daemon.results[-1]

    def led(self, name: str) -> bool:
        return self.indicator.leds[name].is_lit

    def stop(self):
        self.daemon.request_stop()
        self.thread.join(10)
        self.indicator.close()


@pytest.fixture
def harness(heartpi_config, store, classifier, mock_factory):
    made = []

    def make(source):
        h = Harness(heartpi_config, store, classifier, mock_factory, source)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


def test_each_press_records_classifies_stores_and_shows(harness, heartpi_config, store):
    files = reference_wavs()
    h = harness(FileSource(files))
    for path in files:
        result = h.press_and_wait()
        expected = path.name.split("-")[0]
        assert result.label == expected, (path.name, result)
        assert h.daemon.state == RESULT
        assert h.led("green") == (expected == "normal") and h.led("red") == (expected == "abnormal")
        rec = store.get_recording(result.recording_id)
        stored = resolve(heartpi_config.recordings_dir, rec.file)
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == rec.sha256
        assert rec.source == "device" and rec.device_id == "test-box" and rec.patient_id is None
        assert rec.model_sha256 and rec.software_version and rec.verdict == expected
        assert rec.site is None  # no place configured: not recorded rather than guessed
        assert result.verdict_at - result.capture_ended_at < 2.0
    assert store.status()["state"][0].startswith("result")


def test_recordings_carry_the_place_the_protocol_names(heartpi_config, store, classifier, mock_factory):
    config = dataclasses.replace(heartpi_config, audio=dataclasses.replace(heartpi_config.audio, site="mitral"))
    h = Harness(config, store, classifier, mock_factory, FileSource(reference_wavs()[:1]))
    try:
        assert store.get_recording(h.press_and_wait().recording_id).site == "mitral"
    finally:
        h.stop()


def test_second_press_stops_early_and_long_press_cancels(harness, store, tmp_path):
    h = harness(FileSource(reference_wavs(), realtime=4.0))
    with h.daemon.cycle_done:
        press_button(h.daemon)
        time.sleep(1.0)
        press_button(h.daemon)  # stop early: ~4 s of audio -> too short -> poor signal
        h.daemon.cycle_done.wait_for(lambda: len(h.daemon.results) == 1, timeout=30)
    first = h.daemon.results[0]
    rec = store.get_recording(first.recording_id)
    assert first.label == "poor_signal" and "too_short" in rec.quality_reasons
    assert rec.note == "stopped early by the button" and rec.duration_s < 10
    assert h.led("amber")
    with h.daemon.cycle_done:
        press_button(h.daemon)
        time.sleep(0.5)
        press_button(h.daemon, hold_seconds=0.6)  # long press while recording: cancel
        h.daemon.cycle_done.wait_for(lambda: len(h.daemon.results) == 2, timeout=30)
    assert h.daemon.results[1].error == "cancelled" and h.daemon.results[1].recording_id is None
    assert h.daemon.state == IDLE and store.count_recordings() == 1


def test_a_capture_with_the_chest_piece_lifted_keeps_its_verdict_and_says_what_was_left_out(harness, store, tmp_path):
    """2 s off the skin mid-recording: the stretch is left out (dsp.interruptions), the light shows the
    normal the rest gives, and the recording's note tells staff who hear the gap."""
    normal = [p for p in reference_wavs() if p.name.startswith("normal")][0]
    samples, rate = dsp.read_wav(normal)
    samples[8 * rate:10 * rate] = 1e-4 * np.random.default_rng(3).standard_normal(2 * rate)
    dsp.write_wav(tmp_path / "lifted.wav", samples, rate)
    h = harness(FileSource([tmp_path / "lifted.wav"]))
    result = h.press_and_wait()
    rec = store.get_recording(result.recording_id)
    assert result.label == "normal" and h.led("green")
    assert rec.note.endswith(" s with the stethoscope off the skin left out of the verdict"), rec.note
    assert 2.0 <= rec.left_out_s <= 3.8 and rec.note.startswith(f"{rec.left_out_s:.1f} s with"), rec.note


def test_a_quiet_capture_tells_the_technician_to_raise_the_gain(harness, store, tmp_path, caplog):
    """Captured at -55 dBFS RMS: classified as usual, and the journal names the level and the
    gain; at its own level, or silent (a poor signal the health worker sees), no such line. Each
    record keeps its level (the web page's quiet caution and the Device page's gain line)."""
    samples, rate = dsp.read_wav(reference_wavs()[0])
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert rms_dbfs > -45  # the reference is recorded well
    files = []
    for name, dbfs in (("quiet", -55.0), ("as-recorded", rms_dbfs), ("silent", -80.0)):
        path = tmp_path / f"{name}.wav"
        dsp.write_wav(path, samples * 10 ** ((dbfs - rms_dbfs) / 20), rate)
        files.append(path)
    h = harness(FileSource(files))
    with caplog.at_level(logging.INFO, logger="heartpi.daemon"):
        quiet, loud, silent = (h.press_and_wait() for _ in files)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"recording {quiet.recording_id} was captured quietly (RMS -55 dBFS, below -45)" in warnings[0]
    assert "raise the capture gain" in warnings[0] and quiet.label != "poor_signal"
    assert loud.label != "poor_signal" and silent.label == "poor_signal"
    assert "silence" in store.get_recording(silent.recording_id).quality_reasons
    levels = [store.get_recording(r.recording_id).level_dbfs for r in (quiet, loud, silent)]
    assert levels[0] == pytest.approx(-55.0, abs=0.1) and levels[1] == pytest.approx(rms_dbfs, abs=0.1)
    assert levels[2] == pytest.approx(-80.0, abs=0.5)


class BrokenCard:
    name = "broken"

    def __init__(self):
        self.calls = 0

    def record(self, seconds, stop):
        self.calls += 1
        if self.calls == 1:
            raise SoundCardError("no sound card for recording was found; plug in the USB stethoscope")
        samples, rate = dsp.read_wav(reference_wavs()[0])
        from device.capture import Capture

        return Capture(samples, rate, 3, False, "broken")

    def close(self):
        pass


def test_a_failure_shows_fault_and_the_next_press_works(harness, store):
    h = harness(BrokenCard())
    first = h.press_and_wait()
    assert first.error.startswith("no sound card") and h.daemon.state == FAULT
    time.sleep(0.05)
    assert h.indicator.state == gpio.FAULT
    second = h.press_and_wait()
    assert second.recording_id and store.get_recording(second.recording_id).overflows == 3


def test_disk_full_is_a_fault_and_loses_no_record(harness, heartpi_config, store, monkeypatch):
    import device.storage as storage

    h = harness(FileSource(reference_wavs()))
    monkeypatch.setattr(storage, "free_mb", lambda path: 1.0)
    result = h.press_and_wait()
    assert "disk almost full" in result.error and h.daemon.state == FAULT
    assert store.count_recordings() == 0


def test_recover_analyses_orphan_recordings_and_removes_partials(heartpi_config, store, classifier, mock_factory):
    base = heartpi_config.recordings_dir / "2026" / "01"
    base.mkdir(parents=True)
    orphan = base / "rec-orphan.wav"
    orphan.write_bytes(reference_wavs()[0].read_bytes())
    (base / ".partial-rec-x.wav.tmp").write_bytes(b"RIFF half")
    h = Harness(heartpi_config, store, classifier, mock_factory, FileSource(reference_wavs()))
    try:
        rec = store.recording_by_file("2026/01/rec-orphan.wav")
        assert rec is not None and rec.note.startswith("recovered")
        assert not list(base.glob(".partial-*"))
    finally:
        h.stop()


def _spawn_daemon(data_dir: Path, *args: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, HEARTPI_DATA_DIR=str(data_dir), **(env_extra or {}))
    env.pop("HEARTPI_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "heartpi.cli", "daemon", "--simulate", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)


def test_simulated_daemon_cli_presses_n_times_and_exits(tmp_path):
    proc = _spawn_daemon(tmp_path, "--presses", "3")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert out.count("[LEDs] amber flickers: analysing") == 3
    from device.records import RecordStore

    assert RecordStore(tmp_path / "heartpi.sqlite3").count_recordings() == 3


def test_sigterm_stops_cleanly_and_sd_notify_is_sent(tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    proc = _spawn_daemon(tmp_path, "--speed", "1",
                         env_extra={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
    try:
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        deadline = time.monotonic() + 10
        while not any(m == "WATCHDOG=1" for m in messages) and time.monotonic() < deadline:
            messages.append(sock.recv(4096).decode())
        assert "WATCHDOG=1" in messages
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        sock.close()
    assert proc.returncode == 0 and "daemon stopped" in out


def test_notifier_is_silent_outside_systemd():
    notifier = Notifier(env={})
    assert not notifier.enabled and notifier.ready() is False and notifier.watchdog_interval is None
