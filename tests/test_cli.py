"""The heartpi command line: version, analyze, and the demo that the README's first command runs."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from heartpi import __version__
from tests.conftest import reference_wavs

ROOT = Path(__file__).resolve().parents[1]


def heartpi(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full = dict(os.environ, **(env or {}))
    full.pop("HEARTPI_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "heartpi.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=full, timeout=timeout, stdin=subprocess.DEVNULL)


def test_version():
    result = heartpi("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"heartpi {__version__}"


def test_analyze_prints_figures_and_reports_bad_files(tmp_path):
    bad = tmp_path / "empty.wav"
    bad.write_bytes(b"")
    result = heartpi("analyze", str(reference_wavs()[0]), str(bad))
    assert result.returncode == 1
    line = result.stdout.strip()
    assert re.search(r"20\.0 s at 2000 Hz, level -?\d+\.\d dBFS, .* \d+ bpm; quality ok", line), line
    assert "empty.wav: the file is empty" in result.stderr and "Traceback" not in result.stderr


def test_demo_runs_device_and_web_with_a_one_time_password(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = heartpi("demo", "--once", "--presses", "2", "--port", str(port), "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"http://127.0.0.1:{port}/" in result.stdout
    password = re.search(r"Password:\s+(\S+)", result.stdout).group(1)
    assert len(password) >= 12
    from device.records import RecordStore
    from webui.passwords import verify_password

    store = RecordStore(tmp_path / "heartpi.sqlite3")
    assert store.count_recordings() == 2
    assert verify_password(store.user_by_email("admin@heartpi.local")["password_hash"], password)
    second = heartpi("demo", "--once", "--presses", "1", "--port", str(port), "--data-dir", str(tmp_path))
    assert re.search(r"Password:\s+(\S+)", second.stdout).group(1) != password  # never a fixed default


def test_demo_uses_the_hardware_only_when_gpio_and_a_card_are_there(tmp_path, alsa_device):
    from device.config import config_from_mapping
    from heartpi.demo import hardware_present

    config = config_from_mapping({"audio": {"card": "stetho"}}, env={})
    real, why = hardware_present(config, gpio_chip=tmp_path / "gpiochip0")
    assert not real and "no GPIO" in why
    chip = tmp_path / "gpiochip0"
    chip.touch()
    real, why = hardware_present(config, gpio_chip=chip)
    assert real and "stetho" in why
    missing_card = config_from_mapping({"audio": {"card": "Littmann"}}, env={})
    real, why = hardware_present(missing_card, gpio_chip=chip)
    assert not real and "no sound card matching 'Littmann'" in why


@pytest.mark.parametrize("argv,config,message", [
    (["--config", "/nonexistent/heartpi.toml", "backup", "copy.sqlite3"], "",
     "configuration file /nonexistent/heartpi.toml does not exist"),
    (["clock", "apply"], "[storage]\ndata_dir = 5\n", "storage.data_dir must be text, got 5"),
    (["export"], '[storage]\ndata_dir = "data"\n[audio]\nrecord_seconds = 2\n', "audio.record_seconds"),
])
def test_technician_tools_report_bad_input_in_one_line(tmp_path, argv, config, message):
    (tmp_path / "heartpi.toml").write_text(config)
    env = dict(os.environ, HEARTPI_CONFIG=str(tmp_path / "heartpi.toml"))
    result = subprocess.run([sys.executable, "-m", "heartpi.cli", *argv], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("heartpi: ") and message in result.stderr, result.stderr
