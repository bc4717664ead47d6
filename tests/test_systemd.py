"""The shipped units verify clean and stay within their exposure targets (real systemd-analyze)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
TARGETS = {"heartpi-daemon.service": 3.5, "heartpi-web.service": 2.0, "heartpi-clock.service": 1.5,
           "heartpi-fhir-sync.service": 2.0}
OTHER_UNITS = ("heartpi-clock.path", "heartpi-fhir-sync.timer", "heartpi-fhir-sync.path")


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} missing: tools/bootstrap.sh test installs systemd")
        pytest.skip(f"{tool} not installed")
    return path


@pytest.fixture
def unit_dir(tmp_path):
    """The units with ExecStart pointed at this checkout's heartpi (verify needs it to exist)."""
    heartpi = Path(sys.executable).parent / "heartpi"
    assert heartpi.exists()
    for unit in (*TARGETS, *OTHER_UNITS):
        text = (UNITS / unit).read_text().replace("/opt/heartpi/venv/bin/heartpi", str(heartpi))
        (tmp_path / unit).write_text(text)
    return tmp_path


@pytest.mark.parametrize("unit", sorted((*TARGETS, *OTHER_UNITS)))
def test_unit_verifies_clean(unit_dir, unit):
    tool = _require("systemd-analyze")
    result = subprocess.run([tool, "verify", "--man=no", unit], cwd=unit_dir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if unit in line or "heartpi" in line]
    assert not problems, problems


@pytest.mark.parametrize("unit,target", sorted(TARGETS.items()))
def test_exposure_within_target(unit_dir, unit, target):
    tool = _require("systemd-analyze")
    result = subprocess.run([tool, "security", "--offline=true", "--no-pager", unit], cwd=unit_dir,
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    print(f"{unit}: exposure {score}")
    assert score <= target, f"{unit} exposure {score} above {target}"


def test_daemon_unit_essentials():
    text = (UNITS / "heartpi-daemon.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "DevicePolicy=closed",
                 "DeviceAllow=char-alsa rw", "ProtectSystem=strict", "StateDirectory=heartpi",
                 "ConfigurationDirectory=heartpi", "PrivateNetwork=yes", "User=heartpi"):
        assert line in text, line
    web = (UNITS / "heartpi-web.service").read_text()
    assert "User=heartpi-web" in web and "ReadWritePaths=/var/lib/heartpi" in web
    assert "AF_INET" in web and "PrivateNetwork" not in web


def test_only_the_clock_service_may_set_the_clock():
    """The web page asks, a one-shot service with CAP_SYS_TIME alone answers (device/clock.py)."""
    from device.clock import REQUEST_FILE

    for unit in ("heartpi-daemon.service", "heartpi-web.service"):
        text = (UNITS / unit).read_text()
        assert "ProtectClock=yes" in text and "CapabilityBoundingSet=\n" in text, unit
    clock = (UNITS / "heartpi-clock.service").read_text()
    assert "CapabilityBoundingSet=CAP_SYS_TIME\n" in clock and "AmbientCapabilities=CAP_SYS_TIME\n" in clock
    assert not re.search(r"^(ProtectClock|PrivateUsers)=", clock, re.M)  # either would take the clock away
    assert "Type=oneshot" in clock and "ExecStart=/opt/heartpi/venv/bin/heartpi clock apply" in clock
    assert "@clock" in clock.split("SystemCallFilter=@system-service")[1].splitlines()[0]
    path = (UNITS / "heartpi-clock.path").read_text()
    assert f"PathExists=/var/lib/heartpi/clock/{REQUEST_FILE}" in path and "Unit=heartpi-clock.service" in path
    assert re.search(r"^d /var/lib/heartpi/clock\s+2770 heartpi heartpi", (UNITS / "heartpi.tmpfiles.conf").read_text(), re.M)
    install = (ROOT / "tools/install-pi.sh").read_text()
    assert "heartpi-clock.path" in install and "heartpi-clock.service" in install


def test_sysusers_and_tmpfiles_in_a_scratch_root(tmp_path):
    sysusers, tmpfiles = _require("systemd-sysusers"), _require("systemd-tmpfiles")
    (tmp_path / "usr/lib/sysusers.d").mkdir(parents=True)
    (tmp_path / "usr/lib/tmpfiles.d").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (tmp_path / "etc" / name).touch()
    shutil.copy(UNITS / "heartpi.sysusers.conf", tmp_path / "usr/lib/sysusers.d/heartpi.conf")
    shutil.copy(UNITS / "heartpi.tmpfiles.conf", tmp_path / "usr/lib/tmpfiles.d/heartpi.conf")
    subprocess.run([sysusers, f"--root={tmp_path}"], check=True, capture_output=True)
    passwd = (tmp_path / "etc/passwd").read_text()
    group = (tmp_path / "etc/group").read_text()
    assert "heartpi:" in passwd and "heartpi-web:" in passwd and "nologin" in passwd
    assert re.search(r"^heartpi:x:\d+:heartpi-web$", group, re.M)
    assert re.search(r"^audio:x:\d+:heartpi$", group, re.M)
    subprocess.run([tmpfiles, "--create", f"--root={tmp_path}"], check=True, capture_output=True)
    data = tmp_path / "var/lib/heartpi"
    assert oct(data.stat().st_mode & 0o7777) == "0o2770"
    assert (data / "recordings").is_dir() and (tmp_path / "etc/heartpi/tls").is_dir()
    assert oct((data / "clock").stat().st_mode & 0o7777) == "0o2770"


def test_install_script_is_idempotent_and_keeps_data(tmp_path):
    env = dict(os.environ, HEARTPI_PIP_ARGS="--no-deps")
    cmd = ["bash", str(ROOT / "tools/install-pi.sh"), "--prefix", str(tmp_path), "--no-apt", "--no-systemd"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    data = tmp_path / "var/lib/heartpi"
    data.mkdir(parents=True)
    (data / "heartpi.sqlite3").write_bytes(b"precious records")
    (tmp_path / "etc/heartpi").mkdir(parents=True)
    (tmp_path / "etc/heartpi/heartpi.toml").write_text('[device]\nid = "box"\n')
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert (data / "heartpi.sqlite3").read_bytes() == b"precious records"
    assert (tmp_path / "etc/heartpi/heartpi.toml").read_text() == '[device]\nid = "box"\n'
    for path in ("etc/systemd/system/heartpi-daemon.service", "etc/systemd/system/heartpi-web.service",
                 "etc/systemd/system/heartpi-clock.service", "etc/systemd/system/heartpi-clock.path",
                 "etc/systemd/system/heartpi-fhir-sync.service", "etc/systemd/system/heartpi-fhir-sync.timer",
                 "usr/lib/sysusers.d/heartpi.conf", "usr/lib/tmpfiles.d/heartpi.conf",
                 "etc/sysctl.d/60-heartpi.conf", "opt/heartpi/README.md"):
        assert (tmp_path / path).is_file(), path
    assert (tmp_path / "etc/systemd/system/heartpi-daemon.service").read_text() == \
        (UNITS / "heartpi-daemon.service").read_text()
    # dependencies were skipped (--no-deps): check the packages landed in the venv, not here
    probe = ("import importlib.util as u, heartpi; print(heartpi.__version__); "
             "print(*[u.find_spec(n).origin for n in ('dsp', 'model', 'device', 'webui')], sep='\\n')")
    result = subprocess.run([str(tmp_path / "opt/heartpi/venv/bin/python"), "-c", probe],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] and all(str(tmp_path / "opt/heartpi/venv") in line for line in lines[1:])
    assert (tmp_path / "opt/heartpi/venv/bin/heartpi").exists()
    packaged = list((tmp_path / "opt/heartpi/venv/lib").glob("python3*/site-packages/model/assets/heartpi-cnn.tflite"))
    assert packaged, "the model file is not packaged"


def test_fhir_sync_runs_hourly_with_the_token_as_its_own_credential():
    """heartpi-fhir-sync: a one-shot service every hour, the daemon's user, the token handed to it
    alone as a systemd credential named as heartpi.fhir_sync reads it (tests/test_fhir_sync.py
    reads one the way systemd lays it out)."""
    from heartpi.fhir_sync import NO_TOKEN, TOKEN_CREDENTIAL, TOKEN_FILE

    service = (UNITS / "heartpi-fhir-sync.service").read_text()
    for line in ("Type=oneshot", "ExecStart=/opt/heartpi/venv/bin/heartpi fhir-sync", "User=heartpi\n",
                 f"LoadCredential={TOKEN_CREDENTIAL}:{TOKEN_FILE}\n", f"SetCredential={TOKEN_CREDENTIAL}:{NO_TOKEN}\n",
                 "ReadWritePaths=/var/lib/heartpi", "AF_INET6"):
        assert line in service, line
    assert "PrivateNetwork" not in service and "Restart=" not in service
    timer = (UNITS / "heartpi-fhir-sync.timer").read_text()
    assert "Unit=heartpi-fhir-sync.service" in timer and "OnUnitActiveSec=1h" in timer and "Persistent=true" in timer
    install = (ROOT / "tools/install-pi.sh").read_text()
    assert re.search(r"systemctl enable .*heartpi-fhir-sync\.timer", install)
    assert re.search(r"systemctl start .*heartpi-fhir-sync\.timer heartpi-fhir-sync\.path", install)
    assert re.search(r"heartpi-fhir-sync\.timer \\\n\s+heartpi-fhir-sync\.path", install)  # enabled too


def test_send_now_on_the_web_page_reaches_the_sending_service_through_a_path_unit():
    """The web page writes device.send_request's file where heartpi-fhir-sync.path looks, in a
    folder both services' group may write."""
    from device.config import config_from_mapping
    from device.send_request import REQUEST_FILE

    folder = config_from_mapping({"storage": {"data_dir": "/var/lib/heartpi"}}, env={}).send_request_dir
    path = (UNITS / "heartpi-fhir-sync.path").read_text()
    assert f"PathExists={folder / REQUEST_FILE}\n" in path and "Unit=heartpi-fhir-sync.service" in path
    assert re.search(rf"^d {folder}\s+2770 heartpi heartpi", (UNITS / "heartpi.tmpfiles.conf").read_text(), re.M)
