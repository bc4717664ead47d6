"""The clinic's time zone (``device.timezone``): what staff see is what the clinic's clocks
read, and a day (list filters, exports, prune, field results) starts at the clinic's midnight.

Kathmandu (UTC+05:45) is the test's clinic: a whole-hour zone could hide a rounding error.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import subprocess
import sys
from pathlib import Path

import pytest

from device.clinic_time import ClinicTime, system_zone
from device.errors import ConfigError
from tests.test_browser import _login, live_server, page  # noqa: F401 (fixtures, on this module's config)

ROOT = Path(__file__).resolve().parents[1]
#: 00:15 on 30 November in Kathmandu, still 29 November in UTC.
AFTER_MIDNIGHT = "2026-11-29T18:30:00+00:00"
#: 22:45 on 29 November in Kathmandu.
BEFORE_MIDNIGHT = "2026-11-29T17:00:00+00:00"


@pytest.fixture
def heartpi_config(tmp_path):
    from device.config import config_from_mapping

    return config_from_mapping({"device": {"id": "test-box", "timezone": "Asia/Kathmandu"},
                                "storage": {"data_dir": str(tmp_path / "data")}}, env={})


def _add(store, captured_at: str, *, finding: str | None = None, **fields) -> int:
    values = dict(file=f"{captured_at}.wav", sha256="0" * 64, duration_s=20.0, rate=48000, source="device",
                  device_id="test-box", verdict="normal", captured_at=captured_at)
    values.update(fields)
    rec_id = store.add_recording(**values)
    if finding:
        store.set_finding(rec_id, finding, actor="user:2:doc@clinic.test")
    return rec_id


# -- the zone itself ------------------------------------------------------------------------
def test_instants_are_shown_and_days_cut_in_the_clinics_zone():
    kathmandu = ClinicTime("Asia/Kathmandu")
    assert kathmandu.text(AFTER_MIDNIGHT) == "2026-11-30 00:15"
    assert kathmandu.text(AFTER_MIDNIGHT, seconds=True) == "2026-11-30 00:15:00"
    assert kathmandu.iso(AFTER_MIDNIGHT) == "2026-11-30T00:15:00+05:45"
    assert (kathmandu.day(AFTER_MIDNIGHT), kathmandu.day(BEFORE_MIDNIGHT)) == ("2026-11-30", "2026-11-29")
    assert kathmandu.day_start("2026-11-30") == "2026-11-29T18:15:00+00:00"
    assert kathmandu.day_start(dt.date(2026, 11, 30)) == kathmandu.day_bound("2026-11-30")
    assert kathmandu.text("2026-11-29T18:30:00") == "2026-11-30 00:15"  # no offset stored: UTC
    utc = ClinicTime()
    assert utc.is_utc and not kathmandu.is_utc
    assert utc.text(AFTER_MIDNIGHT) == "2026-11-29 18:30" and utc.day_start("2026-11-30") == "2026-11-30T00:00:00+00:00"


def test_a_day_that_starts_with_summer_time_starts_when_the_clocks_jump():
    """Santiago's clocks jump from 00:00 to 01:00 on 6 September 2026: that day begins at
    01:00 local, 04:00 UTC; the day the clocks go back has 25 hours, its start at 04:00 UTC too."""
    santiago = ClinicTime("America/Santiago")
    assert santiago.day_start("2026-09-06") == "2026-09-06T04:00:00+00:00"
    assert santiago.day_start("2026-09-07") == "2026-09-07T03:00:00+00:00"
    assert santiago.day_start("2026-04-05") == "2026-04-05T04:00:00+00:00"
    assert santiago.day("2026-09-06T03:59:59+00:00") == "2026-09-05"
    assert santiago.day("2026-09-06T04:00:00+00:00") == "2026-09-06"


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu", "America/Santiago", "Australia/Lord_Howe",
                                  "Pacific/Chatham", "Europe/London", "America/St_Johns", "Pacific/Kiritimati"])
def test_the_quick_day_of_a_stored_instant_agrees_with_a_full_conversion(zone):
    """:meth:`ClinicTime.day` answers stored instants from each UTC date's local-day starts;
    every 5 minutes through 2026 (summer time both ways, half-hour and 45-minute offsets,
    +14:00) it must say what converting each instant says, and so must the day's start."""
    clinic = ClinicTime(zone)
    moment, end, step = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc), dt.timedelta(minutes=5)
    while moment < end:
        stored = moment.isoformat(timespec="seconds")
        local = moment.astimezone(clinic.zone).date().isoformat()
        assert clinic.day(stored) == local, stored
        assert clinic.day_start(local) <= stored < clinic.day_start(dt.date.fromisoformat(local) + dt.timedelta(days=1))
        moment += step


def test_what_is_not_a_date_or_an_instant_is_said_not_hidden():
    clinic = ClinicTime("Asia/Kathmandu")
    assert clinic.day_bound("") is None and clinic.day_bound(None) is None
    assert clinic.day_bound("30/11/2026") is None
    assert clinic.day_range("", None) == (None, None)
    assert clinic.day_range("2026-11-30", "") == ("2026-11-29T18:15:00+00:00", None)
    with pytest.raises(ValueError, match=r"'30/11/2026' is not a date: use YYYY-MM-DD"):
        clinic.day_range("2026-11-30", "30/11/2026")
    assert clinic.text(None) == "–" and clinic.text("") == "–"
    assert clinic.text("not a time") == "not a time"
    for bad in ("Mars/Base", "", "../../etc/passwd", "Asia/"):
        with pytest.raises(ConfigError, match=r"device\.timezone .*Africa/Nairobi.*timedatectl list-timezones"):
            ClinicTime(bad)


def test_the_configuration_refuses_an_unknown_zone_when_it_is_read(tmp_path):
    from device.config import config_from_mapping, load_config

    assert config_from_mapping({}, env={}).clinic_time.is_utc  # the default
    config = config_from_mapping({"device": {"timezone": "Africa/Nairobi"}}, env={})
    assert config.clinic_time.text(AFTER_MIDNIGHT) == "2026-11-29 21:30"
    path = tmp_path / "heartpi.toml"
    path.write_text('[device]\ntimezone = "Africa/Nairobbi"\n')
    with pytest.raises(ConfigError, match="Africa/Nairobbi"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match="device.timezone must be text"):
        config_from_mapping({"device": {"timezone": 3}}, env={})


def test_provisioning_defaults_to_the_systems_zone(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert system_zone(root) == "UTC"  # nothing set
    (root / "etc/localtime").symlink_to("/usr/share/zoneinfo/Africa/Nairobi")
    assert system_zone(root) == "Africa/Nairobi"
    (root / "etc/timezone").write_text("Asia/Kathmandu\n")
    assert system_zone(root) == "Asia/Kathmandu"  # Debian's own file first
    (root / "etc/timezone").write_text("Nowhere/Special\n")
    assert system_zone(root) == "Africa/Nairobi"  # a name this device does not know is passed over


def _provision(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "heartpi.cli", "provision", "--root", str(root), "--device-id", "box-7",
                           *extra], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_provision_writes_the_zone_and_refuses_an_unknown_one(tmp_path):
    import tomllib

    done = _provision(tmp_path / "a", "--timezone", "Asia/Kathmandu")
    assert done.returncode == 0, done.stderr
    written = tomllib.loads((tmp_path / "a/etc/heartpi/heartpi.toml").read_text())
    assert written["device"]["timezone"] == "Asia/Kathmandu"
    quoted = _provision(tmp_path / "q", "--timezone", 'Asia/"Kathmandu')  # still a TOML file, refused cleanly
    assert quoted.returncode != 0 and "Traceback" not in quoted.stderr
    refused = _provision(tmp_path / "b", "--timezone", "Asia/Katmandoo")
    assert refused.returncode != 0
    assert "Asia/Katmandoo" in refused.stdout + refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "b/etc/heartpi/heartpi.toml").exists()


# -- a day in the records --------------------------------------------------------------------
def test_a_screening_is_one_day_of_the_clinic_not_of_utc(store):
    """Recorded at 22:45 and again at 00:15 (Kathmandu): two screenings there, one in UTC.
    Recorded at 01:45 and 06:45 (20:00 and 01:00 UTC): one screening there, two in UTC."""
    kathmandu = ClinicTime("Asia/Kathmandu")
    first = store.add_patient(name="A", actor="test")
    _add(store, BEFORE_MIDNIGHT, patient_id=first, verdict="abnormal", finding="abnormal")
    _add(store, AFTER_MIDNIGHT, patient_id=first, verdict="normal", finding="normal")
    second = store.add_patient(name="B", actor="test")
    _add(store, "2026-11-20T20:00:00+00:00", patient_id=second, verdict="normal", finding="normal")
    _add(store, "2026-11-21T01:00:00+00:00", patient_id=second, verdict="abnormal")
    # In UTC, A's two recordings are one screening (abnormal, latest finding normal) and B's
    # examined one is a screening of its own (normal, normal).
    assert store.findings_by_verdict() == {("abnormal", "normal"): 1, ("normal", "normal"): 1}
    # In Kathmandu, A was screened on two days; B's two recordings are one screening, referred.
    assert store.findings_by_verdict(clinic=kathmandu) == {("abnormal", "abnormal"): 1, ("normal", "normal"): 1,
                                                           ("abnormal", "normal"): 1}


# -- the web page -----------------------------------------------------------------------------
def test_the_web_page_shows_and_filters_by_the_clinics_clock(client, auth, web_store):
    early = _add(web_store, BEFORE_MIDNIGHT)
    late = _add(web_store, AFTER_MIDNIGHT, site="mitral")
    auth.login("clinician")
    page = client.get("/recordings").get_data(as_text=True)
    assert "When (Asia/Kathmandu)" in page and "2026-11-30 00:15" in page and "2026-11-29 22:45" in page
    assert "18:30" not in page
    today = client.get("/recordings?since=2026-11-30").get_data(as_text=True)
    assert f"/recordings/{late}" in today and f"/recordings/{early}" not in today
    yesterday = client.get("/recordings?since=2026-11-29&until=2026-11-30").get_data(as_text=True)
    assert f"/recordings/{early}" in yesterday and f"/recordings/{late}" not in yesterday
    junk = client.get("/recordings?since=yesterday").get_data(as_text=True)  # ignored, not a 500
    assert f"/recordings/{early}" in junk and f"/recordings/{late}" in junk
    detail = html.unescape(client.get(f"/recordings/{late}").get_data(as_text=True))
    assert "2026-11-30 00:15:00 Asia/Kathmandu" in detail.split('id="recorded-at"', 1)[1].split("</span>", 1)[0]
    guide = html.unescape(client.get("/guide").get_data(as_text=True))
    assert "shows times in Asia/Kathmandu" in guide.split('id="guide-time"', 1)[1].split("</li>", 1)[0]
    audit = client.get("/admin/audit").get_data(as_text=True)  # a clinician may not
    assert "When (Asia/Kathmandu)" not in audit
    auth.logout()
    auth.login("admin")
    audit = client.get("/admin/audit").get_data(as_text=True)
    assert "When (Asia/Kathmandu)" in audit


def test_the_audit_log_is_read_by_the_clinics_days(client, auth, web_store):
    """"Who looked at this patient on 30 November?" means the clinic's 30 November."""
    with web_store.transaction() as conn:
        for at, target in ((BEFORE_MIDNIGHT, "patient:1"), (AFTER_MIDNIGHT, "patient:2")):
            conn.execute("INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, 'user:5:n@c.test', "
                         "'patient.view', ?, '')", (at, target))
    auth.login("admin")
    page = client.get("/admin/audit?action=patient.view&since=2026-11-30&until=2026-12-01").get_data(as_text=True)
    assert "patient:2" in page and "patient:1" not in page and "2026-11-30 00:15:00" in page
    assert 'value="2026-11-30"' in page  # the form keeps the day typed
    day_before = client.get("/admin/audit?action=patient.view&until=2026-11-30").get_data(as_text=True)
    assert "patient:1" in day_before and "patient:2" not in day_before
    rows = list(csv.reader(io.StringIO(client.get("/admin/audit.csv?action=patient.view&since=2026-11-30")
                                       .get_data(as_text=True))))
    assert [row[4] for row in rows[1:]] == ["patient:2"]
    assert web_store.audit_entries(limit=1, action="audit.export")[0]["detail"] == "action=patient.view since=2026-11-30"


def test_the_csv_export_cuts_days_in_the_clinic_and_carries_both_clocks(client, auth, web_store):
    _add(web_store, BEFORE_MIDNIGHT)
    late = _add(web_store, AFTER_MIDNIGHT)
    auth.login("clinician")
    response = client.get("/export/records.csv?since=2026-11-30")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [int(r["recording_id"]) for r in rows] == [late]
    assert rows[0]["captured_at"] == AFTER_MIDNIGHT and rows[0]["captured_local"] == "2026-11-30T00:15:00+05:45"
    assert list(rows[0])[-5:] == ["captured_local", "visit", "caution", "level_dbfs", "note"]  # each added last: existing readers keep theirs
    refused = client.get("/export/records.csv?until=30.11.2026")  # not everything, for a mistyped day
    assert refused.status_code == 400 and "not a date" in refused.get_data(as_text=True)
    assert client.get("/export/fhir.json?since=soon").status_code == 400


def _cli(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "heartpi.cli", "--config", str(config_path), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_the_command_line_uses_the_clinics_days_too(tmp_path, heartpi_config):
    from device.records import RecordStore

    config_path = tmp_path / "heartpi.toml"
    config_path.write_text(f'[device]\nid = "test-box"\ntimezone = "Asia/Kathmandu"\n'
                           f'[storage]\ndata_dir = "{heartpi_config.data_dir}"\n')
    store = RecordStore(heartpi_config.database_path)
    early, late = _add(store, BEFORE_MIDNIGHT), _add(store, AFTER_MIDNIGHT)
    store.close()
    exported = _cli(config_path, "export", "--since", "2026-11-30")
    assert exported.returncode == 0, exported.stderr
    assert [int(r["recording_id"]) for r in csv.DictReader(io.StringIO(exported.stdout))] == [late]
    bad = _cli(config_path, "export", "--until", "30.11.2026")
    assert bad.returncode != 0 and "not a date: use YYYY-MM-DD" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    pruned = _cli(config_path, "prune", "--before", "2026-11-30", "--yes")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    store = RecordStore(heartpi_config.database_path)
    assert [r.id for r in store.list_recordings()] == [late]  # 22:45 the day before went; 00:15 stayed
    assert store.get_recording(early) is None
    store.close()


# -- in a real browser --------------------------------------------------------------------------
@pytest.mark.browser
def test_a_health_worker_finds_todays_recordings_by_the_clinics_clock_in_a_real_browser(live_server, page):
    """Chromium (in the machine's own zone, UTC here): the list, its date filter and the
    recording's page follow the clinic's clock, whatever the browser's or UTC's say."""
    base, store = live_server  # this module's heartpi_config: the clinic is in Kathmandu
    early, late = _add(store, BEFORE_MIDNIGHT), _add(store, AFTER_MIDNIGHT)
    _login(page, base)
    page.fill("input[name=since]", "2026-11-30")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(lambda url: "since=2026-11-30" in url)
    assert "Asia/Kathmandu" in page.inner_text("table.list thead")
    rows = page.inner_text("table.list tbody")
    assert "2026-11-30 00:15" in rows and "22:45" not in rows
    assert page.locator(f"a[href='/recordings/{early}']").count() == 0
    page.click(f"a[href='/recordings/{late}']")
    assert "2026-11-30 00:15:00 Asia/Kathmandu" in page.inner_text("#recorded-at")
