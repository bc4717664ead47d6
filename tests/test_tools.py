"""Technician tools: provision into a scratch root, selftest (PASS and FAIL paths against
MockFactory pins and the ALSA file device), model install/rollback, CLI export and backup."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import numpy as np

from heartpi.cli import main
from model.classifier import DEFAULT_MODEL, metadata_path
from tests.conftest import reference_wavs

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("HEARTPI_CONFIG", None) if "HEARTPI_CONFIG" not in (env or {}) else None
    return subprocess.run([sys.executable, "-m", "heartpi.cli", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, env=full_env, timeout=300)


def test_provision_into_a_scratch_root_is_idempotent(tmp_path):
    root = tmp_path / "root"
    first = run_cli("provision", "--root", str(root), "--device-id", "clinic-3-box-1", "--hostname", "heartpi",
                    "--admin-email", "admin@clinic.test", stdin="a strong admin password\n")
    assert first.returncode == 0, first.stdout + first.stderr
    config = root / "etc/heartpi/heartpi.toml"
    key, cert = root / "etc/heartpi/tls/heartpi.key", root / "etc/heartpi/tls/heartpi.crt"
    assert 'id = "clinic-3-box-1"' in config.read_text()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(cert.stat().st_mode) == 0o644
    text = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-text"], capture_output=True,
                          text=True).stdout
    assert "DNS:heartpi.local" in text and "CN = heartpi" in text
    from device.config import load_config
    from device.records import RecordStore
    from webui.passwords import verify_password

    load_config(config, env={})  # the written config is valid
    store = RecordStore(root / "var/lib/heartpi/heartpi.sqlite3")
    admin = store.user_by_email("admin@clinic.test")
    assert admin["role"] == "admin" and verify_password(admin["password_hash"], "a strong admin password")
    fingerprint = cert.read_bytes()

    again = run_cli("provision", "--root", str(root), "--admin-email", "other@clinic.test",
                    stdin="another long password\n")
    assert again.returncode == 1
    assert "kept existing" in again.stdout and "an administrator already exists" in again.stdout
    assert cert.read_bytes() == fingerprint and store.user_by_email("other@clinic.test") is None

    forced = run_cli("provision", "--root", str(root), "--force", "--device-id", "box-2", "--hostname", "heartpi")
    assert forced.returncode == 0 and cert.read_bytes() != fingerprint
    assert 'id = "box-2"' in config.read_text()


def test_provision_refuses_a_short_password(tmp_path):
    result = run_cli("provision", "--root", str(tmp_path), "--admin-email", "a@b.test", stdin="short\n")
    assert result.returncode == 1 and "too short" in result.stdout


@pytest.fixture
def selftest_config(tmp_path, alsa_device):
    path = tmp_path / "heartpi.toml"
    path.write_text(f'[audio]\ncard = "stetho"\nsample_rate = 48000\n[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    return path


def _selftest(config: Path, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["--config", str(config), "selftest", *extra])
    return code, out.getvalue()


def test_selftest_passes_with_card_pins_and_a_button_press(selftest_config, mock_factory, tmp_path, monkeypatch):
    from tests.test_device_power import fake_sysfs

    fake_sysfs(tmp_path / "sys")  # a Raspberry Pi's voltage sensor, no under-voltage
    monkeypatch.setattr("device.power.SYS_ROOT", tmp_path / "sys")
    def press_when_asked():
        button = mock_factory.pin(17)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.1)
            button.drive_low()
            time.sleep(0.05)
            button.drive_high()

    threading.Thread(target=press_when_asked, daemon=True).start()
    code, out = _selftest(selftest_config, "--button-timeout", "10")
    assert code == 0, out
    for check in ("sound card: stetho", "capture level", "LEDs", "button: press seen", "model: sha256",
                  "clock", "disk space", "database", "reference normal-", "reference abnormal-",
                  "phone recordings: M4A, 3GP, AMR, MP3, OGG, FLAC and ADPCM or GSM WAV decoded by PyAV",
                  "power supply: no under-voltage while recording and lighting the LEDs",
                  "FHIR server: none set (fhir.server_url)"):
        assert f"PASS  {check}" in out, check
    assert "FAIL" not in out


def test_selftest_fails_without_card_and_without_press(tmp_path, alsa_device, mock_factory):
    path = tmp_path / "heartpi.toml"
    path.write_text(f'[audio]\ncard = "USB Stethoscope"\n[storage]\ndata_dir = "{tmp_path / "d"}"\n')
    code, out = _selftest(path, "--button-timeout", "0.5")
    assert code == 1
    assert "FAIL  sound card: no sound card matching 'USB Stethoscope'" in out
    assert "FAIL  button: no press seen" in out
    assert "PASS  model" in out


def test_selftest_says_whether_the_fhir_server_answers(tmp_path, capsys, fhir_server):
    """With fhir.server_url set, selftest asks the server for its CapabilityStatement (sending no
    record): a technician sees the address, network and certificate work before the first hour."""
    from device.config import config_from_mapping
    from heartpi.tools import _fhir_server_check

    for url, ok, words in ((fhir_server.url, True, "answers: HAPI FHIR Server 7.4.0, FHIR 4.0.1"),
                           (fhir_server.url.replace("/fhir", "/fhir2"), False, "answered HTTP 404 (no such endpoint "
                            "/fhir2/metadata) when asked what it is: is http://"),
                           ("http://127.0.0.1:9/fhir", False, "could not reach the FHIR server at 127.0.0.1:9")):
        config = config_from_mapping({"fhir": {"server_url": url}, "storage": {"data_dir": str(tmp_path)}}, env={})
        assert _fhir_server_check(config) is ok
        line = capsys.readouterr().out
        assert line.startswith("PASS  FHIR server" if ok else "FAIL  FHIR server") and words in line, line
    assert not fhir_server.requests  # nothing was sent


def test_selftest_clock_line_fails_for_a_clock_that_cannot_be_right(capsys):
    from heartpi.tools import _clock_check

    assert _clock_check(1_795_000_000.0) is True
    assert _clock_check(86400.0 * 365) is False
    out = capsys.readouterr().out
    assert "PASS  clock: 2026-11-18 11:06 UTC" in out
    assert "FAIL  clock: 1971-01-01 00:00 UTC cannot be right: set it from the web page's Device page" in out


def test_model_install_rollback_and_corrupt_model(tmp_path):
    data = tmp_path / "data"
    env = {"HEARTPI_DATA_DIR": str(data)}
    good = tmp_path / "new" / "heartpi-cnn.tflite"
    good.parent.mkdir()
    shutil.copy(DEFAULT_MODEL, good)
    shutil.copy(metadata_path(DEFAULT_MODEL), metadata_path(good))
    installed = run_cli("model", "install", str(good), env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    current = data / "models" / "current" / "heartpi-cnn.tflite"
    assert current.read_bytes() == DEFAULT_MODEL.read_bytes()

    # a second, different (re-tagged) model becomes current; the first becomes previous
    meta = json.loads(metadata_path(good).read_text())
    meta["created"] = "2030-01-01"
    second = tmp_path / "second" / "heartpi-cnn.tflite"
    second.parent.mkdir()
    content = bytearray(good.read_bytes())
    shutil.copy(good, second)
    metadata_path(second).write_text(json.dumps(meta))
    run_cli("model", "install", str(second), env=env)

    corrupt = tmp_path / "bad" / "heartpi-cnn.tflite"
    corrupt.parent.mkdir()
    content[len(content) // 3] ^= 0x55
    corrupt.write_bytes(bytes(content))
    shutil.copy(metadata_path(good), metadata_path(corrupt))
    before = os.readlink(data / "models" / "current")
    refused = run_cli("model", "install", str(corrupt), env=env)
    assert refused.returncode == 1 and "the current model is kept" in refused.stdout
    assert os.readlink(data / "models" / "current") == before and current.read_bytes() == DEFAULT_MODEL.read_bytes()

    info = run_cli("model", "info", env=env)
    assert info.returncode == 0 and str(data / "models" / "current") in info.stdout

    (data / "models" / "previous").unlink(missing_ok=True)
    assert run_cli("model", "rollback", env=env).returncode == 1
    run_cli("model", "install", str(second), env=env)  # same version again: still one current
    assert os.readlink(data / "models" / "current") == before


def test_model_rollback_swaps_current_and_previous(tmp_path):
    from heartpi.tools import _swap_link

    models = tmp_path / "data" / "models"
    for version in ("v1", "v2"):
        (models / version).mkdir(parents=True)
        shutil.copy(DEFAULT_MODEL, models / version / "heartpi-cnn.tflite")
        shutil.copy(metadata_path(DEFAULT_MODEL), models / version / "heartpi-cnn.json")
    _swap_link(models / "current", "v2")
    _swap_link(models / "previous", "v1")
    result = run_cli("model", "rollback", env={"HEARTPI_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 0, result.stdout
    assert os.readlink(models / "current") == "v1" and os.readlink(models / "previous") == "v2"


def test_cli_export_and_backup(tmp_path):
    data = tmp_path / "data"
    env = {"HEARTPI_DATA_DIR": str(data)}
    made = run_cli("daemon", "--simulate", "--presses", "3", env=env)
    assert made.returncode == 0, made.stdout[-2000:]
    csv_out = run_cli("export", "--format", "csv", env=env)
    assert csv_out.returncode == 0 and len(csv_out.stdout.strip().splitlines()) == 4
    fhir_file = tmp_path / "bundle.json"
    fhir = run_cli("export", "--format", "fhir", "--no-audio", "-o", str(fhir_file), env=env)
    assert fhir.returncode == 0 and "3 recording(s)" in fhir.stderr
    bundle = json.loads(fhir_file.read_text())
    assert sum(e["resource"]["resourceType"] == "Observation" for e in bundle["entry"]) == 3
    from webui.exporting import device_id_prefix

    to_server = run_cli("export", "--format", "fhir-transaction", "--no-audio", env=env)
    assert to_server.returncode == 0, to_server.stderr
    transaction = json.loads(to_server.stdout)
    assert transaction["type"] == "transaction"
    assert [e["request"]["url"].split("/", 1)[1] for e in transaction["entry"]] == [
        device_id_prefix(socket.gethostname()) + e["resource"]["id"] for e in bundle["entry"]]
    backup = run_cli("backup", str(tmp_path / "copy.sqlite3"), env=env)
    assert backup.returncode == 0
    from device.records import RecordStore

    assert RecordStore(tmp_path / "copy.sqlite3").count_recordings() == 3
    # the bundled examples in order: two abnormal hearts, then a normal one, which asks for no referral
    verdicts = {r.id: r.verdict for r in RecordStore(tmp_path / "copy.sqlite3").list_recordings()}
    assert sorted(verdicts.values()) == ["abnormal", "abnormal", "normal"]
    referred = run_cli("export", "--referrals-only", env=env)
    assert referred.returncode == 0, referred.stderr
    assert [int(r["recording_id"]) for r in csv.DictReader(io.StringIO(referred.stdout))] == \
        [i for i, v in verdicts.items() if v == "abnormal"]


def test_provisioned_device_serves_the_page_over_tls(tmp_path):
    import socket
    import ssl
    import urllib.request

    root = tmp_path / "root"
    assert run_cli("provision", "--root", str(root), "--hostname", "heartpi").returncode == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = (root / "etc/heartpi/heartpi.toml").read_text()
    config = config.replace("/etc/heartpi", str(root / "etc/heartpi")).replace(
        "/var/lib/heartpi", str(root / "var/lib/heartpi")).replace("port = 443", f"port = {port}")
    (tmp_path / "test.toml").write_text(config)
    env = dict(os.environ)
    env.pop("HEARTPI_CONFIG", None)
    server = subprocess.Popen([sys.executable, "-m", "heartpi.cli", "--config", str(tmp_path / "test.toml"), "web",
                               "--host", "127.0.0.1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        context = ssl.create_default_context(cafile=str(root / "etc/heartpi/tls/heartpi.crt"))
        deadline = time.monotonic() + 30
        while True:
            try:
                response = urllib.request.urlopen(f"https://127.0.0.1:{port}/login", context=context, timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        assert response.status == 200
        assert response.headers["Set-Cookie"].startswith("__Host-heartpi=")
        assert "max-age" in response.headers["Strict-Transport-Security"]
        with pytest.raises(OSError):  # plain HTTP is not served on the TLS port
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5).read()
    finally:
        server.terminate()
        server.wait(20)


def _recording(store, data, name, samples, model, **fields):
    """A recording whose audio is on the card, as the device would have stored it."""
    import dsp

    path = data / "recordings" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dsp.wav_bytes(samples, 2000))
    defaults = dict(sha256="0" * 64, duration_s=samples.size / 2000, rate=2000, source="device", device_id="box",
                    verdict="normal", p_abnormal=0.5, model_sha256=model.sha256)
    return store.add_recording(file=name, **{**defaults, **fields})


def test_model_calibrate_sets_a_per_device_threshold(tmp_path):
    """The threshold is the quantile of the named healthy recordings' scores, each scored again
    from its audio by the model and windows in use now (not the score stored when it was made)."""
    import dsp
    from device.records import RecordStore
    from model import Classifier

    data = tmp_path / "data"
    model = Classifier.load()
    store = RecordStore(data / "heartpi.sqlite3")
    normals = [dsp.read_wav(path)[0] for path in reference_wavs() if path.name.startswith("normal")]
    hearts = [normals[i % 2][2000 * (i // 2):2000 * (i // 2 + 8)] for i in range(25)]  # 8 s of two healthy hearts
    scores = [model.classify(h, 2000).p_abnormal for h in hearts]
    # scores that differ, so the quantile picks one of them (healthy hearts score low: 0-0.02 for
    # the ensemble shipped since 2026-11-30, whose threshold is 0.076)
    assert all(p is not None for p in scores) and len(set(scores)) >= 5 and max(scores) - min(scores) > 0.005
    ids = [_recording(store, data, f"r{i}.wav", h, model, p_abnormal=0.99) for i, h in enumerate(hearts)]
    silent = _recording(store, data, "poor.wav", np.zeros(24000, np.float32), model, verdict="poor_signal")
    gone = store.add_recording(file="gone.wav", sha256="0" * 64, duration_s=20, rate=2000, source="device",
                               device_id="box", verdict="normal", p_abnormal=0.99, model_sha256=model.sha256)
    store.close()
    env = {"HEARTPI_DATA_DIR": str(data)}
    too_few = run_cli("model", "calibrate", *map(str, ids[:10]), env=env)
    assert too_few.returncode == 1 and "record at least 20 healthy people" in too_few.stdout
    assert run_cli("model", "calibrate", "999", env=env).returncode == 1

    done = run_cli("model", "calibrate", "--specificity", "0.9", *map(str, ids + [silent, gone]), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    calibration = json.loads((data / "models" / "calibration.json").read_text())
    expected = float(np.quantile(scores, 0.9))  # the stored 0.99s, the silence and the missing file play no part
    assert calibration["threshold"] == pytest.approx(expected, abs=1e-6) and calibration["recordings"] == 25
    assert calibration["features"] == model.params.to_dict()
    calibrated = Classifier.load(calibration=data / "models" / "calibration.json")
    assert calibrated.calibrated and calibrated.threshold == pytest.approx(expected, abs=1e-6)
    verdict = calibrated.classify_file(reference_wavs()[0])
    assert verdict.threshold == pytest.approx(expected, abs=1e-6)
    info = run_cli("model", "info", env=env)
    assert "calibrated for this device" in info.stdout

    # (files without settings, from before 2026-11-30, were all made for the model before: its sha256)
    for key, value in (("features", {**model.params.to_dict(), "window_hop_s": 2 * model.params.window_hop_s}),
                       ("model_sha256", "f" * 64)):     # made for another model
        (data / "models" / "calibration.json").write_text(json.dumps({**calibration, key: value}))
        other = Classifier.load(calibration=data / "models" / "calibration.json")
        assert not other.calibrated and other.threshold == model.threshold, key

    assert run_cli("model", "calibrate", "--reset", env=env).returncode == 0
    assert not (data / "models" / "calibration.json").exists()


def test_model_calibrate_from_clinicians_findings_on_this_device(tmp_path):
    """--confirmed-normal takes the recordings this device made of people a clinician found
    healthy: not uploads, not other devices, not people found abnormal or not yet examined."""
    import socket

    import dsp
    from device.records import RecordStore
    from model import Classifier

    data = tmp_path / "data"
    model = Classifier.load()
    store = RecordStore(data / "heartpi.sqlite3")
    here = socket.gethostname()
    healthy = dsp.read_wav([p for p in reference_wavs() if p.name.startswith("normal")][0])[0]
    abnormal, _ = dsp.read_wav(reference_wavs()[0])  # scores ~0.97: counted by mistake, it would show

    def add(n, samples, *, finding, device_id=here, source="device"):
        ids = [_recording(store, data, f"{device_id}-{source}-{finding}-{i}.wav", samples, model, source=source,
                          device_id=device_id) for i in range(n)]
        for rec_id in ids:
            if finding:
                store.set_finding(rec_id, finding, actor="user:1:doc@clinic.test")
        return ids

    add(22, healthy, finding="normal")
    add(5, abnormal, finding="normal", source="upload")    # a phone: another device
    add(5, abnormal, finding="normal", device_id="other-box")
    add(5, abnormal, finding="abnormal")
    add(5, abnormal, finding=None)
    store.close()
    env = {"HEARTPI_DATA_DIR": str(data)}
    nothing = run_cli("model", "calibrate", env=env)
    assert nothing.returncode == 1 and "--confirmed-normal" in nothing.stdout
    done = run_cli("model", "calibrate", "--confirmed-normal", "--specificity", "0.9", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    calibration = json.loads((data / "models" / "calibration.json").read_text())
    expected = model.classify(healthy, 2000).p_abnormal
    assert calibration["recordings"] == 22 and calibration["threshold"] == pytest.approx(expected, abs=1e-6)


def test_selftest_says_when_phone_recordings_cannot_be_decoded(monkeypatch, capsys):
    from heartpi.tools import _phone_decoders_check

    monkeypatch.setitem(sys.modules, "av", None)  # PyAV missing: import av raises ImportError
    assert _phone_decoders_check() is False
    assert "FAIL  phone recordings: PyAV is not installed: uploads must be WAV" in capsys.readouterr().out
