"""Whole-device backup and restore: every record, recording and model comes back byte for byte;
a damaged, foreign or newer archive restores nothing; a running HeartPi is never swapped under;
existing data is moved aside, never deleted; a restore killed at any step is finished by the next
process to start."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from device import backup as backup_module
from device.backup import (JOURNAL_FILE, MANIFEST, REPLACED_PREFIX, create_backup, data_dir_in_use,
                           restore_backup)
from device.config import config_from_mapping
from device.errors import BackupError
from device.records import RecordStore
from device.storage import store_recording
from tests.conftest import reference_wavs

ROOT = Path(__file__).resolve().parents[1]


def _config(path: Path, device_id: str = "box-1"):
    return config_from_mapping({"device": {"id": device_id}, "storage": {"data_dir": str(path)}}, env={})


def _filled_device(config) -> dict:
    """A device with two patients' recordings, a web session, an installed model and a calibration."""
    store = RecordStore(config.database_path)
    try:
        patient = store.add_patient(name="Amina K.", external_id="P-7", actor="test")
        ids = []
        for n, wav in enumerate(reference_wavs()):
            relative, sha = store_recording(config.recordings_dir, wav.read_bytes())
            ids.append(store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                                           device_id=config.device_id, verdict="normal",
                                           patient_id=patient if n % 2 else None))
        user = store.add_user(email="nurse@clinic.test", password_hash="x", role="clinician", actor="test")
        store.create_session("s" * 32, user, "2999-01-01T00:00:00+00:00")
    finally:
        store.close()
    version = config.models_dir / "abc123"
    version.mkdir(parents=True)
    (version / "heartpi-cnn.tflite").write_bytes(b"model bytes")
    (version / "heartpi-cnn.json").write_text("{}")
    os.symlink("abc123", config.models_dir / "current")
    (config.models_dir / "calibration.json").write_text('{"threshold": 0.7}')
    return {"patient": patient, "ids": ids}


def _files(config) -> dict[str, str]:
    return {p.relative_to(config.recordings_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in config.recordings_dir.rglob("*.wav")}


def _rewrite(archive: Path, out: Path, change) -> Path:
    """Copy a tar member by member, ``change(name, data)`` returning new bytes (or None to drop)."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            data = change(member.name, src.extractfile(member).read())
            if data is None:
                continue
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out


def test_backup_then_restore_on_a_new_card_brings_everything_back(tmp_path):
    old = _config(tmp_path / "old")
    made = _filled_device(old)
    archive = tmp_path / "usb" / "heartpi.tar"
    summary = create_backup(old, archive)
    assert summary.recordings == len(reference_wavs()) and not summary.missing and not summary.damaged
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # patients' records
    assert not list(archive.parent.glob(".partial-*"))
    source = RecordStore(old.database_path)
    (entry,) = [e for e in source.audit_entries() if e["action"] == "backup.create"]
    assert entry["detail"].startswith(f"{len(reference_wavs())} recordings")
    source.close()

    new = _config(tmp_path / "new", device_id="box-2")
    result = restore_backup(new, archive)
    assert (result.recordings, result.patients, result.device_id) == (len(reference_wavs()), 1, "box-1")
    assert result.replaced is None  # a fresh card: nothing to move aside
    assert _files(new) == _files(old)
    store = RecordStore(new.database_path)
    try:
        recordings = {r.id: r for r in store.list_recordings(limit=100)}
        assert sorted(recordings) == sorted(made["ids"])
        for rec in recordings.values():
            path = new.recordings_dir / rec.file
            assert hashlib.sha256(path.read_bytes()).hexdigest() == rec.sha256
        assert store.get_patient(made["patient"])["name"] == "Amina K."
        assert store.session_user("s" * 32) is None  # everyone logs in again
        assert store.audit_entries()[0]["action"] == "backup.restore"
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    assert os.readlink(new.models_dir / "current") == "abc123"
    assert (new.models_dir / "abc123" / "heartpi-cnn.tflite").read_bytes() == b"model bytes"
    assert json.loads((new.models_dir / "calibration.json").read_text()) == {"threshold": 0.7}
    db_mode = stat.S_IMODE(new.database_path.stat().st_mode)
    assert db_mode == 0o660  # the web page (group) writes it too
    assert not list(new.data_dir.glob(".restore-*")) and not (new.data_dir / JOURNAL_FILE).exists()


def test_backup_names_missing_and_damaged_audio_and_still_keeps_their_records(tmp_path):
    config = _config(tmp_path / "data")
    _filled_device(config)
    store = RecordStore(config.database_path)
    first, second = store.list_recordings(limit=100)[:2]
    store.close()
    (config.recordings_dir / first.file).unlink()
    damaged = config.recordings_dir / second.file
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"\0" * 10)
    summary = create_backup(config, tmp_path / "b.tar")
    assert summary.missing == [first.file] and summary.damaged == [second.file]
    with tarfile.open(tmp_path / "b.tar") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
    assert manifest["missing"] == [first.file] and manifest["damaged"] == [second.file]

    new = _config(tmp_path / "new")
    restore_backup(new, tmp_path / "b.tar")
    restored = RecordStore(new.database_path)
    assert restored.get_recording(first.id) is not None  # the record is kept, without its audio
    restored.close()
    assert (new.recordings_dir / second.file).read_bytes() == damaged.read_bytes()


def test_restore_over_existing_records_needs_force_and_moves_them_aside(tmp_path):
    source = _config(tmp_path / "source")
    _filled_device(source)
    archive = tmp_path / "b.tar"
    create_backup(source, archive)
    device = _config(tmp_path / "device")
    store = RecordStore(device.database_path)
    relative, sha = store_recording(device.recordings_dir, reference_wavs()[0].read_bytes())
    mine = store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                               device_id="box", verdict="abnormal")
    store.close()
    before = device.database_path.read_bytes()

    with pytest.raises(BackupError, match="already holds 1 recording.*--force"):
        restore_backup(device, archive)
    assert (device.recordings_dir / relative).exists() and _records(device) == [mine]

    result = restore_backup(device, archive, force=True)
    assert result.replaced is not None and result.replaced.name.startswith(REPLACED_PREFIX)
    assert len(_records(device)) == len(reference_wavs())
    aside = RecordStore(result.replaced / "heartpi.sqlite3")  # the replaced data, intact and readable
    try:
        assert [r.id for r in aside.list_recordings()] == [mine]
        assert aside.get_recording(mine).verdict == "abnormal"
    finally:
        aside.close()
    assert (result.replaced / "recordings" / relative).read_bytes() == reference_wavs()[0].read_bytes()
    assert before  # the old file was a real database, not an empty one


def _records(config) -> list[int]:
    store = RecordStore(config.database_path)
    try:
        return [r.id for r in store.list_recordings(limit=100)]
    finally:
        store.close()


@pytest.fixture
def archive_and_device(tmp_path):
    source = _config(tmp_path / "source")
    _filled_device(source)
    archive = create_backup(source, tmp_path / "b.tar").path
    device = _config(tmp_path / "device")
    store = RecordStore(device.database_path)
    store.add_user(email="admin@clinic.test", password_hash="x", role="admin", actor="provision")
    store.close()
    return archive, device


def _unchanged(device) -> None:
    """The device still has its own (provisioned) database and nothing half-restored."""
    store = RecordStore(device.database_path)
    try:
        assert [u["email"] for u in store.list_users()] == ["admin@clinic.test"]
        assert store.count_recordings() == 0
    finally:
        store.close()
    assert not list(device.data_dir.glob(".restore-*")) and not list(device.data_dir.glob(f"{REPLACED_PREFIX}*"))
    assert not (device.data_dir / JOURNAL_FILE).exists()


def _flip_last_byte_of_first_recording(name: str, data: bytes):
    if name.startswith("recordings/") and not getattr(_flip_last_byte_of_first_recording, "done", False):
        _flip_last_byte_of_first_recording.done = True
        return data[:-1] + bytes([data[-1] ^ 1])
    return data


@pytest.mark.parametrize("damage, message", [
    ("flip", "does not match its checksum"),
    ("drop-recording", "incomplete"),
    ("drop-manifest", "not a HeartPi backup"),
    ("manifest-not-an-object", "not a HeartPi backup"),  # was an AttributeError's traceback
    ("traversal", "unexpected file"),
    ("newer-format", "newer HeartPi"),
    ("newer-schema", "newer HeartPi"),
    ("truncated", "not a readable backup|incomplete|checksum"),
    ("not-a-tar", "not a readable backup"),
])
def test_a_damaged_foreign_or_newer_archive_restores_nothing(archive_and_device, tmp_path, damage, message):
    archive, device = archive_and_device
    bad = tmp_path / "bad.tar"
    if damage == "flip":
        _flip_last_byte_of_first_recording.done = False
        _rewrite(archive, bad, _flip_last_byte_of_first_recording)
    elif damage == "drop-recording":
        dropped = []

        def drop(name, data):
            if name.startswith("recordings/") and not dropped:
                dropped.append(name)
                return None
            return data
        _rewrite(archive, bad, drop)
    elif damage == "drop-manifest":
        _rewrite(archive, bad, lambda name, data: None if name == MANIFEST else data)
    elif damage == "manifest-not-an-object":
        _rewrite(archive, bad, lambda name, data: b"[]" if name == MANIFEST else data)
    elif damage in ("traversal", "newer-format"):
        def edit(name, data):
            if name != MANIFEST:
                return data
            manifest = json.loads(data)
            if damage == "traversal":
                manifest["files"][0]["path"] = "recordings/../../../outside.wav"
            else:
                manifest["version"] = 99
            return json.dumps(manifest).encode()
        _rewrite(archive, bad, edit)
    elif damage == "newer-schema":
        import sqlite3

        def newer(name, data):
            if name == "database/heartpi.sqlite3":
                scratch = tmp_path / "newer.sqlite3"
                scratch.write_bytes(data)
                with sqlite3.connect(scratch) as conn:
                    conn.execute("PRAGMA user_version = 99")
                conn.close()
                data = scratch.read_bytes()
            if name == MANIFEST:
                manifest = json.loads(data)
                manifest["database"].update(bytes=len(database[0]), sha256=hashlib.sha256(database[0]).hexdigest())
                return json.dumps(manifest).encode()
            database.append(data)
            return data
        database: list[bytes] = []
        _rewrite(archive, bad, newer)  # the manifest is last, so its checksums are the new ones
    elif damage == "truncated":
        bad.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    else:
        bad.write_bytes(b"RIFF....WAVE" * 100)
    with pytest.raises(BackupError, match=message):
        restore_backup(device, bad, force=True)
    _unchanged(device)
    assert not (tmp_path / "outside.wav").exists()


def test_a_running_heartpi_is_never_restored_under(archive_and_device, tmp_path):
    """A real ``heartpi daemon`` process holds the data folder; the restore refuses until it stops."""
    archive, device = archive_and_device
    config_file = tmp_path / "heartpi.toml"
    config_file.write_text(f'[storage]\ndata_dir = "{device.data_dir}"\n')
    env = dict(os.environ, HEARTPI_CONFIG=str(config_file))
    daemon = subprocess.Popen([sys.executable, "-m", "heartpi.cli", "daemon", "--simulate"], cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in daemon.stdout:  # the simulated LEDs' first line: the daemon is up and waiting
            if line.startswith("[LEDs]"):
                break
        assert daemon.poll() is None, "the daemon stopped"
        with pytest.raises(BackupError, match="HeartPi is running.*systemctl stop heartpi-daemon heartpi-web"):
            restore_backup(device, archive, force=True)
        _unchanged(device)
    finally:
        daemon.send_signal(signal.SIGTERM)
        output = daemon.communicate(timeout=60)[0]
    assert daemon.returncode == 0, output
    restore_backup(device, archive, force=True)
    assert len(_records(device)) == len(reference_wavs())


def test_a_process_starting_during_a_restore_waits_for_it(archive_and_device):
    archive, device = archive_and_device
    script = ("import sys, time\nfrom device.config import config_from_mapping\nfrom device.backup import data_dir_in_use\n"
              f"config = config_from_mapping({{'storage': {{'data_dir': {str(device.data_dir)!r}}}}}, env={{}})\n"
              "with data_dir_in_use(config):\n    print('in', time.monotonic(), flush=True)\n")
    with backup_module._data_dir_exclusive(device):
        waiting = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiting.poll() is None  # still waiting for the restore
        released = time.monotonic()
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and float(out.split()[1]) >= released
    assert "a restore from a backup is running; waiting" in err


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no ``except Exception`` catches it."""


def _count_moves(device, archive) -> int:
    calls = []
    real = backup_module.shutil.move

    def counting(src, dst):
        calls.append(src)
        return real(src, dst)
    backup_module.shutil.move = counting
    try:
        restore_backup(device, archive, force=True)
    finally:
        backup_module.shutil.move = real
    return len(calls)


def test_a_restore_killed_at_any_step_of_the_swap_is_finished_by_the_next_start(tmp_path, monkeypatch):
    source = _config(tmp_path / "source")
    _filled_device(source)
    archive = create_backup(source, tmp_path / "b.tar").path
    expected = _files(source)
    steps = _count_moves(_config(tmp_path / "probe-device"), archive)
    assert steps >= 3  # database, recordings, models in

    for kill_at in range(steps + 1):
        device = _config(tmp_path / f"device-{kill_at}")
        store = RecordStore(device.database_path)
        relative, sha = store_recording(device.recordings_dir, reference_wavs()[1].read_bytes())
        mine = store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=2000, source="device",
                                   device_id="box", verdict="normal")
        store.close()
        real, calls = backup_module.shutil.move, []

        def killing(src, dst, real=real, calls=calls, kill_at=kill_at):
            if len(calls) == kill_at:
                raise _Killed
            calls.append(src)
            return real(src, dst)
        monkeypatch.setattr(backup_module.shutil, "move", killing)
        try:
            restore_backup(device, archive, force=True)
        except _Killed:
            pass
        monkeypatch.setattr(backup_module.shutil, "move", real)

        with data_dir_in_use(device):  # what the daemon and the web page do first
            pass
        assert _files(device) == expected, kill_at
        assert len(_records(device)) == len(reference_wavs()), kill_at
        assert os.readlink(device.models_dir / "current") == "abc123"
        assert not (device.data_dir / JOURNAL_FILE).exists() and not list(device.data_dir.glob(".restore-*"))
        (aside,) = device.data_dir.glob(f"{REPLACED_PREFIX}*")
        old = RecordStore(aside / "heartpi.sqlite3")
        assert [r.id for r in old.list_recordings()] == [mine], kill_at
        old.close()
        assert (aside / "recordings" / relative).exists()


def test_no_space_for_the_backup_leaves_no_partial_file(tmp_path, monkeypatch):
    config = _config(tmp_path / "data")
    _filled_device(config)
    usage = backup_module.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(backup_module.shutil, "disk_usage", lambda path: usage._replace(free=10_000))
    with pytest.raises(BackupError, match="not enough space for the backup.*MB are free"):
        create_backup(config, tmp_path / "usb" / "b.tar")
    assert not list((tmp_path / "usb").iterdir())


def test_cli_backup_and_restore(tmp_path):
    from tests.test_tools import run_cli

    source = tmp_path / "source"
    _filled_device(_config(source))
    env = {"HEARTPI_DATA_DIR": str(source)}
    made = run_cli("backup", str(tmp_path / "b.tar"), env=env)
    assert made.returncode == 0, made.stderr
    assert f"PASS  backup: {len(reference_wavs())} recording(s)" in made.stdout and "keep it as safe" in made.stdout
    wrong = run_cli("backup", str(tmp_path / "b.zip"), env=env)
    assert wrong.returncode == 1 and "name it .tar" in wrong.stdout
    database_only = run_cli("backup", str(tmp_path / "copy.sqlite3"), env=env)
    assert database_only.returncode == 0 and "recordings are not in it" in database_only.stdout

    target = {"HEARTPI_DATA_DIR": str(tmp_path / "target")}
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 64)
    refused = run_cli("restore", str(bad), env=target)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "is not a readable backup" in refused.stderr and refused.stderr.count("\n") == 1
    done = run_cli("restore", str(tmp_path / "b.tar"), env=target)
    assert done.returncode == 0, done.stderr
    assert f"PASS  restore: {len(reference_wavs())} recording(s) and 1 patient(s) from device " in done.stdout
    again = run_cli("restore", str(tmp_path / "b.tar"), env=target)
    assert again.returncode == 1 and "--force" in again.stderr


def test_a_backup_from_an_older_heartpi_is_migrated_forward(tmp_path):
    """Schema 1 (before web sessions and clock stamps), archived as that version would have."""
    import sqlite3

    from device import records

    wav = reference_wavs()[0].read_bytes()
    old_db = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(old_db)
    for statement in records._split_sql(records.MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO recordings (file, sha256, duration_s, rate, captured_at, source, device_id, verdict) "
                 "VALUES ('2025/03/rec-1.wav', ?, 20, 2000, '2025-03-01T10:00:00+00:00', 'device', 'old', 'normal')",
                 (hashlib.sha256(wav).hexdigest(),))
    conn.commit()
    conn.close()
    members = {"database/heartpi.sqlite3": old_db.read_bytes(), "recordings/2025/03/rec-1.wav": wav}
    entry = {name: {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
             for name, data in members.items()}
    manifest = {"format": "heartpi-backup", "version": 1, "created": "2025-03-02T00:00:00+00:00",
                "device_id": "old", "schema_version": 1, "database": entry["database/heartpi.sqlite3"],
                "files": [entry["recordings/2025/03/rec-1.wav"]], "links": {}}
    members[MANIFEST] = json.dumps(manifest).encode()
    archive = tmp_path / "old.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    device = _config(tmp_path / "device")
    assert restore_backup(device, archive).recordings == 1
    store = RecordStore(device.database_path)
    try:
        assert store.schema_version() == records.SCHEMA_VERSION
        (entry,) = store.audit_entries(action="backup.restore")
        assert entry["detail"].endswith(f"; its records brought forward from schema 1 to {records.SCHEMA_VERSION}")
        (rec,) = store.list_recordings()
        assert rec.captured_at == "2025-03-01T10:00:00+00:00"
        assert (device.recordings_dir / rec.file).read_bytes() == wav
    finally:
        store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away (what 'sudo heartpi restore' does)")
def test_a_restore_run_as_root_leaves_files_the_daemon_can_write(tmp_path):
    source = _config(tmp_path / "source")
    _filled_device(source)
    archive = create_backup(source, tmp_path / "b.tar").path
    device = _config(tmp_path / "device")
    device.data_dir.mkdir()
    os.chown(device.data_dir, 65534, 65534)  # as tmpfiles.d makes it: owned by the daemon's user
    restore_backup(device, archive)
    owned = [device.database_path, device.recordings_dir, *device.recordings_dir.rglob("*"),
             *device.models_dir.rglob("*"), device.data_dir / ".heartpi.lock"]
    assert len(owned) > 8
    for path in owned:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (65534, 65534), path
