"""The records store: schema, migrations, append-only audit, concurrency, backup."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from device.errors import StorageError
from device.records import SCHEMA_VERSION, RecordStore


def _add(store, n=0, **kw):
    return store.add_recording(file=f"2026/01/rec-{n}.wav", sha256="0" * 64, duration_s=20.0, rate=48000,
                               source="device", device_id="box", verdict="normal", p_abnormal=0.1,
                               quality_reasons=["noisy"], **kw)


def _old_database(path, version: int) -> sqlite3.Connection:
    """A database as software at schema ``version`` left it (open; the caller adds rows and closes)."""
    from device import records

    conn = sqlite3.connect(path)
    for migration in records.MIGRATIONS[:version]:
        for statement in records._split_sql(migration):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def _migrated_recording(path, version: int, **columns):
    """One recording written by software at schema ``version`` (the columns it knew, plus
    ``columns``), then opened by this software: (the migrated store, the recording)."""
    row = {"file": "a.wav", "sha256": "x", "duration_s": 20, "rate": 48000, "captured_at": "2026-01-01T00:00:00+00:00",
           "source": "device", "device_id": "box", **columns}
    conn = _old_database(path, version)
    conn.execute(f"INSERT INTO recordings ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    conn.commit()
    conn.close()
    store = RecordStore(path)
    return store, store.list_recordings()[0]


def test_pragmas_and_schema(store):
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.schema_version() == SCHEMA_VERSION
    assert store.integrity_check() == "ok"


def test_migration_from_version_1_keeps_data(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = _old_database(path, 1)
    conn.execute("INSERT INTO patients (name, created_at, updated_at) VALUES ('Old', 'x', 'x')")
    conn.commit()
    conn.close()
    store = RecordStore(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.list_patients()[0]["name"] == "Old"
    store.create_session("s1", store.add_user(email="a@b.c", password_hash="h", role="admin", actor="t"),
                         "2999-01-01T00:00:00+00:00")


def test_migration_to_version_6_keeps_recordings_without_a_place(tmp_path):
    """Recordings made before sites were recorded keep everything and say 'not recorded'."""
    store, rec = _migrated_recording(tmp_path / "v5.sqlite3", 5, verdict="abnormal", finding="abnormal")
    assert (rec.file, rec.verdict, rec.finding, rec.site) == ("a.wav", "abnormal", "abnormal", None)
    store.set_site(rec.id, "aortic", actor="t")
    assert store.get_recording(rec.id).site == "aortic"
    store.close()


def test_migration_to_version_9_keeps_recordings_without_a_level_and_new_ones_store_it(tmp_path):
    """Recordings made before levels were measured keep everything with no level (no quiet caution
    can be judged for them); new ones store the level their verdict measured."""
    store, old = _migrated_recording(tmp_path / "v8.sqlite3", 8, verdict="abnormal", visit="v-1")
    assert (old.verdict, old.visit, old.level_dbfs) == ("abnormal", "v-1", None)
    new = store.get_recording(_add(store, 1, level_dbfs=-52.25))
    assert new.level_dbfs == -52.25
    assert store.latest_levels(above_dbfs=-70.0) == [-52.25]  # the old recording has none to give
    store.close()


def test_migration_to_version_10_counts_every_old_recording_as_not_yet_sent(tmp_path):
    """No database before schema 10 says what a FHIR server holds, so each of its recordings is
    one change to send; the changes made after it number on from there."""
    path = tmp_path / "v9.sqlite3"
    conn = _old_database(path, 9)
    for n in range(3):
        conn.execute("INSERT INTO recordings (file, sha256, duration_s, rate, captured_at, source, device_id) "
                     "VALUES (?, 'x', 20, 48000, '2026-01-01T00:00:00+00:00', 'device', 'box')", (f"{n}.wav",))
    conn.commit()
    conn.close()
    store = RecordStore(path)
    assert [(r.id, r.changed_seq) for r in store.changed_recordings(0)] == [(1, 1), (2, 2), (3, 3)]
    new = _add(store, 9)
    assert store.get_recording(new).changed_seq == 4 and store.count_changed_recordings(3) == 1
    store.close()


def test_every_change_to_a_recording_or_its_patient_numbers_it_anew(store):
    """The triggers number what a FHIR server must be sent again: each way a recording's record
    changes, and its patient's; other recordings keep their numbers."""
    a, b, other = _add(store, 1), _add(store, 2), _add(store, 3)
    ama = store.add_patient(name="Ama", actor="t")

    def seq(rec_id):
        return store.get_recording(rec_id).changed_seq

    numbers = [seq(a), seq(b), seq(other)]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3
    changes = [lambda: store.assign_recording(a, ama, actor="t"),
               lambda: store.set_finding(a, "abnormal", "echo: MR", actor="t"),
               lambda: store.set_site(a, "mitral", actor="t"),
               lambda: store.update_patient(ama, name="Ama Owusu", actor="t")]
    for change in changes:
        before, untouched = seq(a), seq(other)
        change()
        assert seq(a) > before and seq(a) > untouched and seq(other) == untouched
    store.assign_recording(b, ama, actor="t")
    last = max(seq(a), seq(b))
    store.delete_patient(ama, actor="t", reason="duplicate")  # both sent again, without the patient
    assert min(seq(a), seq(b)) > last
    assert [r.id for r in store.changed_recordings(seq(other))] == [a, b]


def test_what_a_fhir_server_has_is_kept_per_server_and_never_moves_back(store):
    assert store.fhir_sent_through("https://a/fhir") == (0, None)
    store.mark_fhir_sent("https://a/fhir", 7)
    store.mark_fhir_sent("https://a/fhir", 5)  # a send that overlapped and saw less
    assert store.fhir_sent_through("https://a/fhir")[0] == 7
    assert store.fhir_sent_through("https://b/fhir") == (0, None)


def test_deletions_for_the_fhir_server_are_what_staff_deleted_not_what_was_pruned(store):
    """A server is asked to delete a recording staff deleted (its Media, verdict, finding; its
    visit's Encounter with the visit's last recording), a deleted patient, a cleared finding; not
    a recording pruned to free the card (the server is where old records live)."""
    visit = [_add(store, n, visit="a1b2c3d4e5f6") for n in (1, 2)]
    pruned, examined = _add(store, 3), _add(store, 4)
    store.set_finding(examined, "normal", actor="t")
    ama = store.add_patient(name="Ama", actor="t")
    store.delete_recordings([pruned], actor="cli:prune", reason="card full", from_fhir_server=False)
    assert store.fhir_deletions("https://a/fhir") == []
    store.delete_recordings([visit[0]], actor="t", reason="test", from_fhir_server=True)
    assert [r for _, r in store.fhir_deletions("https://a/fhir")] == [
        f"Media/media-{visit[0]}", f"Observation/observation-{visit[0]}"]  # the visit still has a recording
    store.delete_recordings([visit[1], examined], actor="t", reason="consent withdrawn", from_fhir_server=True)
    store.delete_patient(ama, actor="t", reason="duplicate")
    names = [r for _, r in store.fhir_deletions("https://a/fhir")]
    assert names[2:] == [f"Media/media-{visit[1]}", f"Observation/observation-{visit[1]}", f"Media/media-{examined}",
                         f"Observation/observation-{examined}", f"Observation/finding-{examined}",
                         "Encounter/visit-a1b2c3d4e5f6", f"Patient/patient-{ama}"]
    store.mark_fhir_deleted("https://a/fhir", [i for i, _ in store.fhir_deletions("https://a/fhir")[:3]])
    assert len(store.fhir_deletions("https://a/fhir")) == 6 and len(store.fhir_deletions("https://b/fhir")) == 9


def test_a_cleared_finding_is_a_deletion_for_the_fhir_server(store):
    rec = _add(store, 1)
    store.set_finding(rec, "abnormal", "echo: AS", actor="t")
    store.set_finding(rec, "normal", actor="t")  # changed, not cleared: the server's copy is replaced
    assert store.fhir_deletions("https://a/fhir") == []
    store.set_finding(rec, None, actor="t")
    assert [r for _, r in store.fhir_deletions("https://a/fhir")] == [f"Observation/finding-{rec}"]


def test_latest_levels_are_the_sources_newest_above_silence(store):
    """The Device page judges the box's capture gain from its own newest recordings: not uploads
    (other devices' gains), not silent ones (a stethoscope off the chest), not unmeasured ones."""
    levels = {1: -30.0, 2: -50.0, 3: -200.0, 4: None, 5: -44.0}
    for n, level in levels.items():
        _add(store, n, level_dbfs=level, captured_at=f"2026-02-0{n}T10:00:00+00:00")
    store.add_recording(file="upload-1.wav", sha256="1" * 64, duration_s=20.0, rate=44100, source="upload",
                        device_id="box", verdict="abnormal", level_dbfs=-60.0, captured_at="2026-02-09T10:00:00+00:00")
    assert store.latest_levels(above_dbfs=-70.0) == [-44.0, -50.0, -30.0]
    assert store.latest_levels(above_dbfs=-70.0, limit=2) == [-44.0, -50.0]
    assert store.latest_levels(source="upload", above_dbfs=-70.0) == [-60.0]
    assert store.latest_levels(above_dbfs=-300.0) == [-44.0, -200.0, -50.0, -30.0]  # the floor is the caller's


def test_the_place_is_one_of_four_and_changes_are_audited(store):
    from device.sites import SITES

    rec_id = _add(store, site="mitral")
    assert store.get_recording(rec_id).site == "mitral"
    store.set_site(rec_id, "tricuspid", actor="user:1:hw@clinic.test")
    store.set_site(rec_id, "", actor="user:1:hw@clinic.test")
    assert store.get_recording(rec_id).site is None
    assert [e["detail"] for e in store.audit_entries(action="recording.site")] == ["tricuspid -> None",
                                                                                 "mitral -> tricuspid"]
    with pytest.raises(ValueError, match="site must be one of aortic, pulmonic, tricuspid, mitral"):
        store.set_site(rec_id, "apex", actor="t")
    with pytest.raises(ValueError):
        _add(store, 2, site="back")
    with pytest.raises(KeyError):
        store.set_site(999999, "mitral", actor="t")
    with pytest.raises(sqlite3.IntegrityError):  # the schema's own check agrees with device.sites
        store._conn.execute("UPDATE recordings SET site = 'apex' WHERE id = ?", (rec_id,))
    for name in SITES:
        store._conn.execute("UPDATE recordings SET site = ? WHERE id = ?", (name, rec_id))


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(StorageError, match="newer than this software"):
        RecordStore(path)


def test_recording_round_trip_assign_and_filters(store):
    rec_id = _add(store)
    rec = store.get_recording(rec_id)
    assert rec.verdict == "normal" and rec.quality_reasons == ["noisy"] and rec.patient_id is None
    pid = store.add_patient(name="Amina", external_id="P-1", actor="t")
    store.assign_recording(rec_id, pid, actor="t")
    assert store.get_recording(rec_id).patient_id == pid
    assert store.list_recordings(unassigned=True) == []
    assert [r.id for r in store.list_recordings(patient_id=pid)] == [rec_id]
    assert store.list_recordings(verdict="abnormal") == []
    with pytest.raises(KeyError):
        store.assign_recording(999, pid, actor="t")


def test_constraints_are_enforced(store):
    with pytest.raises(sqlite3.IntegrityError):
        store.add_recording(file="x.wav", sha256="0", duration_s=1, rate=1, source="device",
                            device_id="b", verdict="maybe")
    with pytest.raises(sqlite3.IntegrityError):
        _add(store, patient_id=12345)  # foreign key


def test_audit_log_is_append_only(store):
    store.audit("tester", "something", "patient:1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._conn.execute("UPDATE audit_log SET actor = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._conn.execute("DELETE FROM audit_log")
    assert store.audit_entries()[0]["action"] == "something"


def test_the_audit_log_is_read_through_its_indexes_and_remembers_the_last_backup(store):
    """One patient's entries and the last backup come from an index, not a scan of a log that
    holds every view of every patient for years."""
    assert store.last_audited("backup.create") is None
    store.audit("cli:backup", "backup.create", "", "3 recordings")
    store.audit("user:1:a@c", "backup.download", "", "")  # the database alone
    created = store.audit_entries(limit=1, action="backup.create")[0]["at"]
    assert store.last_audited("backup.create") == created
    assert store.last_audited("backup.download", "whole device") is None
    store.audit("user:1:a@c", "backup.download", "", "whole device: 3 recordings")
    assert store.last_audited("backup.download", "whole device") is not None
    assert store.last_audited("backup.down") is None  # exact, not a prefix
    plans = {
        "target": "SELECT * FROM audit_log WHERE target = ? ORDER BY id DESC LIMIT 500",
        "action": "SELECT MAX(at) FROM audit_log WHERE action = ? AND detail LIKE ? ESCAPE '\\'",
    }
    for column, sql in plans.items():
        plan = " ".join(row[3] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql, ("x",) * sql.count("?")))
        assert f"USING INDEX audit_log_{column}" in plan and "TEMP B-TREE" not in plan, plan


def test_concurrent_writer_and_reader_processes(tmp_path):
    """A daemon-like writer thread on one connection and a web-like reader on another."""
    path = tmp_path / "c.sqlite3"
    writer, reader = RecordStore(path), RecordStore(path)
    errors = []
    done = threading.Event()

    def write():
        try:
            for n in range(200):
                _add(writer, n)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    counts = []
    thread = threading.Thread(target=write)
    thread.start()
    while not done.is_set():
        counts.append(len(reader.list_recordings(limit=1000)))
        time.sleep(0.001)
    thread.join()
    assert not errors
    assert counts == sorted(counts)  # a reader never sees records disappear
    assert len(reader.list_recordings(limit=1000)) == 200


def test_backup_is_consistent(store, tmp_path):
    for n in range(5):
        _add(store, n)
    target = store.backup(tmp_path / "backup.sqlite3")
    copy = RecordStore(target)
    assert copy.count_recordings() == 5 and copy.integrity_check() == "ok"


def test_sessions_end(store):
    uid = store.add_user(email="u@x.y", password_hash="h", role="clinician", actor="t")
    store.create_session("a", uid, "2999-01-01T00:00:00+00:00")
    store.create_session("b", uid, "2999-01-01T00:00:00+00:00")
    store.create_session("old", uid, "2000-01-01T00:00:00+00:00")
    assert store.session_user("a")["id"] == uid and store.session_user("old") is None
    store.end_session("a")
    assert store.session_user("a") is None and store.session_user("b")
    store.end_user_sessions(uid)
    assert store.session_user("b") is None


def test_lookups_by_patient_and_time_use_an_index_after_migration(tmp_path):
    """The patient picker's "most recently seen" and the unassigned list stay index lookups on a
    database migrated from version 3 (they were scans, ~90 ms on three years of records)."""
    path = tmp_path / "v3.sqlite3"
    conn = _old_database(path, 3)
    conn.commit()
    conn.close()
    store = RecordStore(path)
    indexes = {r[0] for r in store._query("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "recordings_patient_time" in indexes and "recordings_patient" not in indexes

    def plan(sql: str) -> str:
        return " ".join(str(tuple(r)) for r in store._query("EXPLAIN QUERY PLAN " + sql))

    assert "recordings_patient_time" in plan(
        "SELECT * FROM recordings WHERE patient_id IS NULL ORDER BY captured_at DESC, id DESC LIMIT 50")
    assert "recordings_patient_time" in plan(
        "SELECT MAX(captured_at) FROM recordings WHERE patient_id = 1")
