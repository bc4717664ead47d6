"""Setting the device clock from the web page: the request file, the one-shot service's
``heartpi clock apply`` (the real ``clock_settime``, unprivileged and with CAP_SYS_TIME),
and the daemon's warning about a clock that cannot be right."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device import DeviceError
from device.clock import (REQUEST_FILE, RESULT_FILE, ClockError, ClockRequest, apply_clock_request,
                          clock_is_plausible, clock_reckoned_boot, describe_offset, last_result,
                          pending_request, request_clock_change)

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC, a fixed device "now"


def test_request_records_how_far_behind_the_device_is(tmp_path):
    request = request_clock_change(tmp_path, NOW + 3 * 3600 + 12 * 60, requested_by="admin@clinic.test",
                                   now=lambda: NOW)
    assert request == ClockRequest(offset_s=11520.0, requested_by="admin@clinic.test",
                                   requested_at="2026-11-18T11:06:40+00:00", booted_at=request.booted_at)
    assert request.booted_at == pytest.approx(NOW - time.clock_gettime(time.CLOCK_BOOTTIME), abs=5)
    data = json.loads((tmp_path / REQUEST_FILE).read_text())
    assert data["offset_s"] == 11520.0
    assert stat.S_IMODE((tmp_path / REQUEST_FILE).stat().st_mode) == 0o660  # the clock service may remove it
    assert sorted(p.name for p in tmp_path.iterdir()) == [REQUEST_FILE]  # no temporary left behind
    waiting, age = pending_request(tmp_path)
    assert waiting == request and 0 <= age < 60
    assert describe_offset(request.offset_s) == "3 h 12 min behind"
    assert describe_offset(-40) == "40 s ahead" and describe_offset(2 * 86400 + 7200 + 300) == "2 d 2 h behind"


def test_clocks_that_agree_need_no_request(tmp_path):
    assert request_clock_change(tmp_path, NOW + 1.5, requested_by="a", now=lambda: NOW) is None
    assert not (tmp_path / REQUEST_FILE).exists() and pending_request(tmp_path) is None


@pytest.mark.parametrize("reference", [0.0, 1_000_000_000.0, 4_200_000_000.0])
def test_a_computer_with_a_wrong_clock_cannot_spoil_the_device(tmp_path, reference):
    with pytest.raises(ClockError, match="cannot be right; check this computer's date and time"):
        request_clock_change(tmp_path, reference, requested_by="a", now=lambda: NOW)
    assert not (tmp_path / REQUEST_FILE).exists()
    assert isinstance(ClockError("x"), DeviceError)


def test_unwritable_folder_gives_a_technician_message(tmp_path):
    blocker = tmp_path / "clock"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(ClockError, match="check that .*clock exists and is writable by the heartpi group"):
        request_clock_change(blocker, NOW + 600, requested_by="a", now=lambda: NOW)


def _untouched_clock(request: ClockRequest):
    """The clock as the request found it: the moment of boot it reckons has not moved."""
    return lambda: request.booted_at


def test_apply_adds_the_offset_to_the_clock_at_the_time_it_runs(tmp_path):
    request = request_clock_change(tmp_path, NOW + 11520, requested_by="admin@clinic.test", now=lambda: NOW)
    set_to = []
    later = NOW + 37.0  # the service ran 37 s after the request: the offset still applies
    result = apply_clock_request(tmp_path, set_clock=set_to.append, now=lambda: later,
                                 booted_at=_untouched_clock(request))
    assert set_to == [later + 11520.0]
    assert result.ok and result.message == "clock moved forward by 3 h 12 min"
    assert not (tmp_path / REQUEST_FILE).exists()
    assert last_result(tmp_path) == result
    assert apply_clock_request(tmp_path, set_clock=set_to.append) is None  # nothing waiting: nothing done
    assert len(set_to) == 1


def test_apply_moves_a_fast_clock_back(tmp_path):
    request = request_clock_change(tmp_path, NOW - 40, requested_by="a", now=lambda: NOW)
    set_to = []
    result = apply_clock_request(tmp_path, set_clock=set_to.append, now=lambda: NOW,
                                 booted_at=_untouched_clock(request))
    assert set_to == [NOW - 40] and result.message == "clock moved back by 40 s"


def test_damaged_request_is_removed_and_reported(tmp_path):
    (tmp_path / REQUEST_FILE).write_text('{"offset_s": "soon"')
    with pytest.raises(ClockError, match="damaged and was removed; send it again"):
        apply_clock_request(tmp_path, set_clock=pytest.fail)
    assert not (tmp_path / REQUEST_FILE).exists()
    assert last_result(tmp_path).ok is False


def test_refused_target_never_reaches_the_clock(tmp_path):
    (tmp_path / REQUEST_FILE).write_text(json.dumps({"offset_s": -NOW, "requested_by": "a", "requested_at": ""}))
    with pytest.raises(ClockError, match="refused to set the clock to 1970-01-01"):
        apply_clock_request(tmp_path, set_clock=pytest.fail, now=lambda: NOW, booted_at=lambda: 0.0)
    assert not last_result(tmp_path).ok and not (tmp_path / REQUEST_FILE).exists()


def test_permission_denied_names_the_capability(tmp_path):
    request = request_clock_change(tmp_path, NOW + 600, requested_by="a", now=lambda: NOW)

    def denied(_):
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(ClockError, match="permission denied .*CAP_SYS_TIME"):
        apply_clock_request(tmp_path, set_clock=denied, now=lambda: NOW, booted_at=_untouched_clock(request))
    assert not (tmp_path / REQUEST_FILE).exists()  # else the path unit would start the service in a loop
    assert "CAP_SYS_TIME" in last_result(tmp_path).message


def test_plausible_clock():
    assert clock_is_plausible(NOW) and not clock_is_plausible(0) and not clock_is_plausible(4.2e9)


def test_daemon_warns_about_a_clock_that_cannot_be_right(caplog):
    from device.runner import warn_if_clock_unset

    with caplog.at_level(logging.WARNING):
        assert warn_if_clock_unset(now=86400.0 * 365) is True
        assert warn_if_clock_unset(now=NOW) is False
    (record,) = caplog.records
    assert "1971-01-01T00:00:00+00:00, which cannot be right" in record.getMessage()
    assert "Set the device clock" in record.getMessage()


# -- the real clock_settime, as heartpi-clock.service runs it ---------------------------------------
CAP_SYS_TIME = 25


def _effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _clock_apply(data_dir: Path, *prefix: str) -> subprocess.CompletedProcess:
    config = data_dir.parent / "heartpi.toml"
    config.write_text(f'[storage]\ndata_dir = "{data_dir}"\n')
    config.chmod(0o644)
    heartpi = Path(sys.executable).parent / "heartpi"
    return subprocess.run([*prefix, str(heartpi), "--config", str(config), "clock", "apply"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.fixture
def shared_dir():
    """A folder the ``nobody`` user the tests drop to can reach (pytest's own are root's only)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="heartpi-clock-"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _world_writable_data(base: Path) -> Path:
    data = base / "data"
    (data / "clock").mkdir(parents=True)
    for path in (data, data / "clock"):
        os.chmod(path, 0o777)
    return data


def _as_nobody(*capabilities: str) -> tuple[str, ...]:
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("setpriv (util-linux) not installed")
    caps = ",".join(f"+{c}" for c in capabilities) or "-all"
    return (setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps={caps}",
            f"--ambient-caps={caps}", f"--bounding-set={caps if capabilities else '-all'}")


def test_real_clock_change_without_the_capability_is_refused_and_reported(shared_dir):
    data = _world_writable_data(shared_dir)
    request_clock_change(data / "clock", time.time() + 3600, requested_by="admin@clinic.test")
    os.chmod(data / "clock" / REQUEST_FILE, 0o666)  # on a device the web and clock services share a group
    before = time.time()
    prefix = _as_nobody() if os.geteuid() == 0 else ()
    if not prefix and _effective_capabilities() & (1 << CAP_SYS_TIME):
        pytest.skip("this non-root user may set the clock: the refusal cannot be shown")
    result = _clock_apply(data, *prefix)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  device clock: the clock could not be set: permission denied" in result.stdout
    assert "Traceback" not in result.stderr
    assert abs(time.time() - before) < 60  # the clock did not move
    assert not (data / "clock" / REQUEST_FILE).exists()
    assert "CAP_SYS_TIME" in last_result(data / "clock").message


def test_real_clock_change_with_only_cap_sys_time_as_the_service_holds_it(shared_dir):
    """An unprivileged user holding CAP_SYS_TIME alone (the unit's AmbientCapabilities) sets
    the real clock. The offset is zero, so the machine's clock is set to what it already reads."""
    if os.geteuid() != 0 or not _effective_capabilities() & (1 << CAP_SYS_TIME):
        pytest.skip("needs root with CAP_SYS_TIME to hand the capability to an unprivileged user")
    data = _world_writable_data(shared_dir)
    (data / "clock" / REQUEST_FILE).write_text(json.dumps(
        {"offset_s": 0.0, "requested_by": "admin@clinic.test", "requested_at": "", "booted_at": clock_reckoned_boot()}))
    os.chmod(data / "clock" / REQUEST_FILE, 0o666)
    result = _clock_apply(data, *_as_nobody("sys_time"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  device clock: clock moved back by 0 s at the request of admin@clinic.test" in result.stdout
    assert last_result(data / "clock").ok and not (data / "clock" / REQUEST_FILE).exists()
    assert (data / "clock" / RESULT_FILE).stat().st_uid == 65534


@pytest.mark.parametrize("moved", [-3600.0, 6.0, 86400.0 * 3])
def test_request_measured_against_another_clock_is_discarded(tmp_path, moved):
    """After a power cut the clock restarts from its saved time, and a time server or another
    request may have set it meanwhile: an offset measured before would now be wrong."""
    request = request_clock_change(tmp_path, NOW + 600, requested_by="a", now=lambda: NOW)
    with pytest.raises(ClockError, match="restarted or its clock changed after the request was sent"):
        apply_clock_request(tmp_path, set_clock=pytest.fail, now=lambda: NOW,
                            booted_at=lambda: request.booted_at + moved)
    assert not (tmp_path / REQUEST_FILE).exists() and not last_result(tmp_path).ok


def test_clock_reckoned_boot_stays_put_while_the_clock_runs():
    first = clock_reckoned_boot()
    time.sleep(0.2)
    assert clock_reckoned_boot() == pytest.approx(first, abs=0.05)
    assert clock_reckoned_boot(time.time() + 3600) == pytest.approx(first + 3600, abs=0.05)


# -- re-dating the recordings the wrong clock stamped ------------------------------------------------
def _add(store, name: str, **kwargs) -> int:
    return store.add_recording(file=name, sha256="0" * 64, duration_s=20.0, rate=48000, source="device",
                               device_id="box", verdict="normal", **kwargs)


def test_recordings_remember_which_clock_dated_them(store):
    stamped = _add(store, "a.wav")
    given = _add(store, "b.wav", captured_at="2026-11-01T08:00:00+00:00")
    rows = {r["id"]: r["clock_boot"] for r in store._query("SELECT id, clock_boot FROM recordings")}
    assert rows[stamped] == pytest.approx(clock_reckoned_boot(), abs=1)
    assert rows[given] is None  # a time from elsewhere: no clock of ours to blame


def test_clock_change_re_dates_exactly_the_recordings_the_wrong_clock_stamped(heartpi_config, store):
    """End to end as heartpi-clock.service runs it, the clock itself left alone."""
    import datetime as dt

    from heartpi.tools import apply_clock_change

    before = [_add(store, f"wrong-{i}.wav") for i in range(2)]
    other_clock = _add(store, "before-last-power-cut.wav")
    store._conn.execute("UPDATE recordings SET clock_boot = clock_boot - 86400 WHERE id = ?", (other_clock,))
    store._conn.commit()
    unknown = _add(store, "recovered.wav", captured_at="2026-11-01T08:00:00+00:00")
    was = {r.id: r.captured_at for r in store.list_recordings()}

    request = request_clock_change(heartpi_config.clock_dir, time.time() + 7200, requested_by="admin@clinic.test")
    set_to = []
    result = apply_clock_change(heartpi_config, set_clock=set_to.append)
    assert result.ok and set_to
    assert result.message == "clock moved forward by 2 h; 2 recordings were made with the wrong time and re-dated"
    now = {r.id: r.captured_at for r in store.list_recordings()}
    for rec_id in before:
        shift = dt.datetime.fromisoformat(now[rec_id]) - dt.datetime.fromisoformat(was[rec_id])
        assert shift.total_seconds() == pytest.approx(request.offset_s, abs=1)
    assert now[other_clock] == was[other_clock] and now[unknown] == was[unknown]
    audit = [e for e in store.audit_entries() if e["action"] == "recording.redate"]
    assert sorted(e["target"] for e in audit) == sorted(f"recording:{i}" for i in before)
    assert all(e["actor"] == "clock" and "->" in e["detail"] for e in audit)

    # Recordings stamped once the clock is right carry the new clock's boot: a second
    # correction of this same clock (a stale double request) finds nothing to move.
    moved_boot = [r["clock_boot"] for r in store._query("SELECT clock_boot FROM recordings WHERE id IN (?, ?)",
                                                        tuple(before))]
    assert moved_boot == pytest.approx([request.booted_at + request.offset_s] * 2, abs=1)
    assert store.redate_recordings(7200, request.booted_at, actor="clock") == 0


def test_clock_is_set_even_when_the_records_cannot_be_re_dated(heartpi_config, tmp_path):
    from heartpi.tools import apply_clock_change

    heartpi_config.data_dir.mkdir(parents=True, exist_ok=True)
    heartpi_config.database_path.mkdir()  # a folder where the database should be
    request_clock_change(heartpi_config.clock_dir, time.time() + 600, requested_by="a")
    set_to = []
    result = apply_clock_change(heartpi_config, set_clock=set_to.append)
    assert set_to and result.ok
    assert "clock moved forward by 10 min; the recordings made with the wrong time could not be re-dated" in result.message


def test_daemon_follows_a_clock_step_by_re_dating_this_boots_recordings(heartpi_config, store, classifier):
    """A time server reached at last (or ``date -s``) steps the clock: the daemon notices
    between events and moves the recordings that clock stamped by exactly the step."""
    import datetime as dt

    from device.runner import build_daemon

    stamped = [_add(store, f"r{i}.wav") for i in range(2)]
    given = _add(store, "recovered.wav", captured_at="2026-11-01T08:00:00+00:00")
    was = {r.id: r.captured_at for r in store.list_recordings()}
    daemon = build_daemon(heartpi_config, simulate=True, classifier=classifier)
    try:
        before = daemon._clock_boot_seen
        daemon.clock_boot = lambda: before + 3.0  # a slew-sized move: not a step
        assert daemon.follow_clock_steps() == 0
        daemon.clock_boot = lambda: before + 3600.0
        assert daemon._wait_event(0.01) is None  # the daemon's idle wait checks
        assert daemon.follow_clock_steps() == 0  # already followed: nothing left to move
    finally:
        daemon.store.close()
        daemon.indicator.close()
    now = {r.id: r.captured_at for r in store.list_recordings()}
    for rec_id in stamped:
        assert (dt.datetime.fromisoformat(now[rec_id]) - dt.datetime.fromisoformat(was[rec_id])).total_seconds() == 3600
    assert now[given] == was[given]
    actors = [e["actor"] for e in store.audit_entries() if e["action"] == "recording.redate"]
    assert actors == ["daemon", "daemon"]
