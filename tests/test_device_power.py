"""The power supply's under-voltage: the sensor found in a sysfs tree laid out as a Raspberry Pi's,
sags counted, a recording made during one noted, the Device page and the selftest saying so."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

import dsp
from device import power
from device.capture import Capture
from device.daemon import SAGGED_NOTE
from device.power import PowerWatch, find_alarm
from tests.conftest import reference_wavs
from tests.sysfs import fake_sysfs
from tests.test_device_daemon import Harness


def test_the_sensor_is_found_by_its_name_and_absent_elsewhere(tmp_path):
    alarm = fake_sysfs(tmp_path / "pi")
    assert find_alarm(tmp_path / "pi") == alarm
    fake_sysfs(tmp_path / "laptop", with_sensor=False)
    assert find_alarm(tmp_path / "laptop") is None
    assert find_alarm(tmp_path / "no-sysfs-at-all") is None


def test_sags_are_counted_once_each_and_a_vanished_sensor_is_said_once(tmp_path, caplog):
    alarm = fake_sysfs(tmp_path)
    now = [1000.0]
    watch = PowerWatch.find(tmp_path, clock=lambda: now[0])
    assert watch.watched and watch.started_at == 1000.0
    seen = []
    for t, value in ((1001, "0"), (1003, "1"), (1005, "1"), (1007, "0"), (1009, "1")):
        now[0] = float(t)
        alarm.write_text(value + "\n")
        seen.append(watch.poll())
    assert seen == [False, True, True, False, True]
    assert watch.sags == 2 and watch.last_sag_at == 1009.0 and watch.low
    assert "under-voltage now" in watch.describe() and "5 V, 3 A" in watch.describe()
    assert watch.to_status() == {"watched": True, "low": True, "sags": 2, "last_sag_at": 1009.0,
                                 "started_at": 1000.0}

    alarm.unlink()
    with caplog.at_level(logging.WARNING, logger="heartpi.power"):
        assert watch.poll() is None and watch.poll() is None
    assert len(caplog.records) == 1 and "cannot read the power supply's under-voltage sensor" in caplog.text
    alarm.write_text("0\n")
    assert watch.poll() is False and watch.sags == 2
    assert "under-voltage 2 time(s) since HeartPi started" in watch.describe()

    unwatched = PowerWatch(None)
    assert unwatched.poll() is None and not unwatched.watched and "not watched" in unwatched.describe()


class SaggingCard:
    """Plays the reference recordings; during the recordings named in ``sag_during`` the supply's
    alarm reads 1 for most of the capture (long enough for the daemon's polls to see it)."""

    name = "sagging card"

    def __init__(self, alarm: Path, sag_during: set[int]):
        self.alarm, self.sag_during, self.calls = alarm, sag_during, 0

    def record(self, seconds: float, stop: threading.Event) -> Capture:
        self.calls += 1
        samples, rate = dsp.read_wav(reference_wavs()[0])
        if self.calls in self.sag_during:
            self.alarm.write_text("1\n")
            time.sleep(0.5)
            self.alarm.write_text("0\n")
        time.sleep(0.3)
        return Capture(samples, rate, 0, False, self.name)

    def close(self) -> None:
        pass


def test_a_recording_made_during_a_sag_says_so_and_the_status_counts_it(
        heartpi_config, store, classifier, mock_factory, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("device.daemon.POLL_SECONDS", 0.05)
    alarm = fake_sysfs(tmp_path / "sys")
    card = SaggingCard(alarm, sag_during={2})
    with caplog.at_level(logging.INFO, logger="heartpi.daemon"):
        h = Harness(heartpi_config, store, classifier, mock_factory, card,
                    power=PowerWatch.find(tmp_path / "sys"))
        try:
            first, second, third = (h.press_and_wait() for _ in range(3))
            alarm.write_text("1\n")  # a sag while idle: counted, no recording to note
            deadline = time.monotonic() + 10
            while h.daemon.power.sags < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            h.stop()
    notes = [store.get_recording(r.recording_id).note for r in (first, second, third)]
    assert notes == ["", SAGGED_NOTE, ""]
    assert second.label == first.label  # the verdict stands: the note is for the technician
    status = json.loads(store.status()["power"][0])
    assert status["watched"] and status["low"] and status["sags"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("under-voltage: the supply sagged below 4.63 V" in w for w in warnings) == 2
    assert any(f"recording {second.recording_id}: the supply sagged (under-voltage) while recording" in w
               for w in warnings)
    assert "power supply: no under-voltage since HeartPi started" in caplog.text


def test_without_a_sensor_the_daemon_says_the_supply_is_not_watched(heartpi_config, store, classifier,
                                                                    mock_factory, caplog):
    with caplog.at_level(logging.INFO, logger="heartpi.daemon"):
        h = Harness(heartpi_config, store, classifier, mock_factory, SaggingCard(Path("/nonexistent"), set()))
        try:
            assert store.get_recording(h.press_and_wait().recording_id).note == ""
        finally:
            h.stop()
    assert "power supply: not watched: no Raspberry Pi voltage sensor" in caplog.text
    assert json.loads(store.status()["power"][0])["watched"] is False


@pytest.mark.parametrize("alarm_value, line", [
    ("0", "PASS  power supply: no under-voltage while recording and lighting the LEDs"),
    ("1", "FAIL  power supply: under-voltage while recording: the power bank or adapter cannot give enough current"),
    (None, "SKIP  power supply: not measured (no Raspberry Pi voltage sensor, rpi_volt, here)"),
])
def test_selftest_power_line(tmp_path, monkeypatch, capsys, alarm_value, line):
    from heartpi.tools import _power_check

    fake_sysfs(tmp_path, with_sensor=alarm_value is not None, alarm=alarm_value or "0")
    monkeypatch.setattr(power, "SYS_ROOT", tmp_path)
    results = _power_check()
    assert line in capsys.readouterr().out
    assert results == ([] if alarm_value is None else [alarm_value == "0"])


LOW_SINCE_AN_HOUR = {"watched": True, "low": True, "sags": 1, "last_sag_at": 1796003600.0, "started_at": 1796000000.0}


@pytest.mark.parametrize("stored, shown, flagged", [
    (None, "not known yet: the device's daemon has not run", False),
    ({"watched": False, "low": False, "sags": 0, "last_sag_at": None, "started_at": 1796000000.0},
     "not measured: no Raspberry Pi voltage sensor here", False),
    ({"watched": True, "low": False, "sags": 0, "last_sag_at": None, "started_at": 1796000000.0},
     "no under-voltage since 2026-11-30 00:53", False),
    ({"watched": True, "low": False, "sags": 3, "last_sag_at": 1796003600.0, "started_at": 1796000000.0},
     "under-voltage 3 times since 2026-11-30 00:53, last at\n    2026-11-30 01:53", True),
    (LOW_SINCE_AN_HOUR, "under-voltage now: the power bank or adapter cannot give enough current", True),
])
def test_device_page_shows_the_power_supply(client, auth, web_store, stored, shown, flagged):
    if stored is not None:
        web_store.set_status("power", json.dumps(stored))
    auth.login("health_worker")
    page = client.get("/device").get_data(as_text=True)
    row = page[page.index('<dd id="power-supply"'):].split("</dd>")[0]
    assert shown in row, row
    assert ('class="flash error"' in row) == flagged


@pytest.mark.parametrize("state, shown", [("idle", "under-voltage now:"), ("recording", "under-voltage now:"),
                                          ("stopped", "under-voltage when the daemon stopped:")])
def test_a_stopped_daemon_s_last_word_on_the_supply_is_not_called_now(client, auth, web_store, state, shown):
    """The daemon writes the supply's state; once it has stopped nobody watches, so a low supply
    it last saw is reported as then, not now (a killed daemon is restarted by systemd, which
    writes both afresh)."""
    web_store.set_status("power", json.dumps(LOW_SINCE_AN_HOUR))
    web_store.set_status("state", state)
    auth.login("health_worker")
    page = client.get("/device").get_data(as_text=True)
    row = page[page.index('<dd id="power-supply"'):].split("</dd>")[0]
    assert shown in row, row
    assert 'class="flash error"' in row
