"""The records store: one SQLite file shared by the daemon (writer) and the web page.

Durability first: WAL journal (readers never block the writer), ``synchronous=FULL`` (a
committed record survives a power cut), foreign keys on, a busy timeout so the two
processes wait for each other instead of failing. The schema is versioned with
``PRAGMA user_version`` and migrated forward on open. The audit log is append-only,
enforced by triggers, not by convention.

Imports neither :mod:`model` nor :mod:`webui`: it stores plain values.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

from .clinic_time import ClinicTime
from .clock import SAME_CLOCK_TOLERANCE_S, clock_reckoned_boot, iso_utc
from .errors import StorageError
from .sites import SITES

BUSY_TIMEOUT_MS = 10_000
VERDICTS = ("normal", "abnormal", "poor_signal")
ROLES = ("admin", "clinician", "health_worker")

MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'clinician', 'health_worker')),
        active INTEGER NOT NULL DEFAULT 1,
        approved INTEGER NOT NULL DEFAULT 1,
        session_epoch INTEGER NOT NULL DEFAULT 0,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE patients (
        id INTEGER PRIMARY KEY,
        external_id TEXT UNIQUE,
        name TEXT NOT NULL,
        birth_date TEXT,
        sex TEXT CHECK (sex IS NULL OR sex IN ('female', 'male', 'other', 'unknown')),
        notes TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE recordings (
        id INTEGER PRIMARY KEY,
        file TEXT NOT NULL UNIQUE,
        sha256 TEXT NOT NULL,
        duration_s REAL NOT NULL,
        rate INTEGER NOT NULL,
        captured_at TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('device', 'upload')),
        device_id TEXT NOT NULL,
        uploaded_by INTEGER REFERENCES users(id),
        patient_id INTEGER REFERENCES patients(id) ON DELETE SET NULL,
        verdict TEXT CHECK (verdict IN ('normal', 'abnormal', 'poor_signal')),
        p_abnormal REAL,
        threshold REAL,
        quality_reasons TEXT NOT NULL DEFAULT '[]',
        heart_rate_bpm REAL,
        overflows INTEGER NOT NULL DEFAULT 0,
        model_sha256 TEXT,
        software_version TEXT,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX recordings_captured ON recordings(captured_at);
    CREATE INDEX recordings_patient ON recordings(patient_id);
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE device_status (
        key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL
    );
    """,
    # 2: server-side web sessions (revocable on logout and password change)
    """
    CREATE TABLE web_sessions (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX web_sessions_user ON web_sessions(user_id);
    """,
    # 3: which clock stamped a recording (device.clock.clock_reckoned_boot), so that recordings
    # dated by a clock found wrong later can be re-dated exactly
    """
    ALTER TABLE recordings ADD COLUMN clock_boot REAL;
    CREATE INDEX recordings_clock ON recordings(clock_boot);
    """,
    # 4: one patient's recordings by time, and the unassigned ones newest first, straight from
    # an index (the patient picker's "most recently seen" and the patient page): after years of
    # use these were scans. It serves every lookup by patient, so it replaces the old index.
    """
    CREATE INDEX recordings_patient_time ON recordings(patient_id, captured_at);
    DROP INDEX recordings_patient;
    """,
    # 5: what a clinician found when they examined the person recorded: the screening
    # programme's measure of how the device does in the field, and known-healthy recordings
    # for `heartpi model calibrate --confirmed-normal`
    """
    ALTER TABLE recordings ADD COLUMN finding TEXT CHECK (finding IS NULL OR finding IN ('normal', 'abnormal'));
    ALTER TABLE recordings ADD COLUMN finding_note TEXT NOT NULL DEFAULT '';
    ALTER TABLE recordings ADD COLUMN finding_by TEXT;
    ALTER TABLE recordings ADD COLUMN finding_at TEXT;
    """,
    # 6: where on the chest the recording was made (device.sites): a murmur's place is half its
    # meaning to the clinician reading a referral. NULL: not recorded (everything before this).
    """
    ALTER TABLE recordings ADD COLUMN site TEXT
        CHECK (site IS NULL OR site IN ('aortic', 'pulmonic', 'tricuspid', 'mitral'));
    """,
    # 7: the audit log by what was touched and by kind of action, from an index: it holds every
    # view of every patient, and after years of use one patient's entries, and the Device page's
    # "last backup", were scans of all of it.
    """
    CREATE INDEX audit_log_target ON audit_log(target);
    CREATE INDEX audit_log_action ON audit_log(action);
    """,
    # 8: which recordings are one person's, recorded at the protocol's places one after another
    # (device.visits): staff assign a patient once for all of them, and the field results count
    # one person. NULL: uploads, and everything before this.
    """
    ALTER TABLE recordings ADD COLUMN visit TEXT;
    CREATE INDEX recordings_visit ON recordings(visit) WHERE visit IS NOT NULL;
    """,
    # 9: the recording's RMS level in dBFS as the quality check measured it: an abnormal from a
    # quiet recording refers more healthy people (model.verdict.verdict_caution), and the Device
    # page shows the technician a capture gain set too low. NULL: not measured (everything before).
    """
    ALTER TABLE recordings ADD COLUMN level_dbfs REAL;
    """,
    # 10: what changed since the records last reached the region's FHIR server (heartpi.fhir_sync).
    # Every recording carries the number of its last change from one counter, so a send takes
    # only what is newer than the last one that went through. Triggers keep it, not the code:
    # no new way of changing a record can forget to. A patient's change counts as a change of
    # their recordings (the Patient resource travels with them). Existing recordings count as
    # changed once: nothing says which of them a server already holds.
    """
    CREATE TABLE change_counter (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
    INSERT INTO change_counter (id, seq) VALUES (1, (SELECT IFNULL(MAX(id), 0) FROM recordings));
    ALTER TABLE recordings ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE recordings SET changed_seq = id;
    CREATE INDEX recordings_changed ON recordings(changed_seq);
    CREATE TRIGGER recordings_changed_on_insert AFTER INSERT ON recordings
    BEGIN
        UPDATE change_counter SET seq = seq + 1 WHERE id = 1;
        UPDATE recordings SET changed_seq = (SELECT seq FROM change_counter WHERE id = 1) WHERE id = NEW.id;
    END;
    CREATE TRIGGER recordings_changed_on_update AFTER UPDATE ON recordings
    WHEN NEW.changed_seq IS OLD.changed_seq
    BEGIN
        UPDATE change_counter SET seq = seq + 1 WHERE id = 1;
        UPDATE recordings SET changed_seq = (SELECT seq FROM change_counter WHERE id = 1) WHERE id = NEW.id;
    END;
    CREATE TRIGGER patients_changed_on_update AFTER UPDATE ON patients
    BEGIN
        UPDATE change_counter SET seq = seq + 1 WHERE id = 1;
        UPDATE recordings SET changed_seq = (SELECT seq FROM change_counter WHERE id = 1) WHERE patient_id = NEW.id;
    END;
    CREATE TABLE fhir_sent (
        server TEXT PRIMARY KEY,
        through_seq INTEGER NOT NULL,
        at TEXT NOT NULL
    );
    """,
    # 11: what a FHIR server must delete (heartpi.fhir_sync): the resources of a recording staff
    # deleted (not of one pruned to free the card: the server is where old records live), of a
    # deleted patient, of a cleared finding. Named as the device's export names them
    # ("Media/media-5"); each server's deletions are ticked off one by one, apart from the change
    # numbers, so one the server refuses (a record it still holds names the patient) does not
    # hold back the new recordings.
    """
    CREATE TABLE fhir_deletions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        resource TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE TABLE fhir_deletions_sent (
        server TEXT NOT NULL,
        deletion_id INTEGER NOT NULL REFERENCES fhir_deletions(id) ON DELETE CASCADE,
        PRIMARY KEY (server, deletion_id)
    );
    CREATE TRIGGER finding_cleared AFTER UPDATE OF finding ON recordings
    WHEN OLD.finding IS NOT NULL AND NEW.finding IS NULL
    BEGIN
        INSERT INTO fhir_deletions (resource, at)
        VALUES ('Observation/finding-' || OLD.id, strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now'));
    END;
    """,
    # 12: the seconds of the recording its verdict did not hear (dsp.interruptions: the chest piece
    # off the skin, talking, rubbing), so a normal that heard under 10 s carries the short-recording
    # caution however long the file is (model.verdict.verdict_caution). NULL: not known (everything
    # before; those verdicts heard every window).
    """
    ALTER TABLE recordings ADD COLUMN left_out_s REAL;
    """,
]
FINDINGS = ("normal", "abnormal")
SCHEMA_VERSION = len(MIGRATIONS)


def screening_verdict(verdicts: Iterable[Optional[str]]) -> Optional[str]:
    """The verdict a health worker acts on for one person's recordings: abnormal if any of them
    is, else normal if any is, else poor signal (None: none scored). The field results count
    screenings by the same rule, in SQL (:meth:`RecordStore.findings_by_verdict`)."""
    present = set(verdicts)
    return next((v for v in ("abnormal", "normal", "poor_signal") if v in present), None)


#: this many poor signals in a row at one place end the person: the box cannot judge them, refer
#: (the guide's rule, kept by :class:`device.visits.Visit`, and the words of the lights'
#: ``cannot_judge`` state in device/gpio.py)
POOR_SIGNALS_TO_REFER = 3
#: the note the daemon gives the poor signal that ended a person so. A verdict stays the
#: recording's own, so this referral lives in the note (written once, with the recording): the
#: referral filter (:meth:`RecordStore._recording_filters`) and the web page's print-out read it.
UNJUDGED_NOTE = (f"poor signal {POOR_SIGNALS_TO_REFER} times in a row at this place: the box could not judge the "
                 "person and asked for a referral")


def ended_unjudged(note: Optional[str]) -> bool:
    """Whether a recording's note says it was the poor signal that ended its person unjudged."""
    return UNJUDGED_NOTE in (note or "")


def _checked_site(site: Optional[str]) -> Optional[str]:
    """A site for the database: one of :data:`device.sites.SITES`, or ``None`` for '' too."""
    if site and site not in SITES:
        raise ValueError(f"site must be one of {', '.join(SITES)} or none")
    return site or None


def _like_literal(text: str) -> str:
    """``text`` for a LIKE pattern with ``ESCAPE '\\'``: ``%`` and ``_`` typed by a user are not wildcards."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _patient_search(search: str) -> tuple[str, list]:
    """WHERE clause matching ``search`` anywhere in a patient's name or number, literally."""
    search = search.strip()
    if not search:
        return "", []
    like = "%" + _like_literal(search) + "%"
    return ("WHERE p.name LIKE ? ESCAPE '\\' OR IFNULL(p.external_id, '') LIKE ? ESCAPE '\\'",
            [like, like])


def utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Recording:
    id: int
    file: str
    sha256: str
    duration_s: float
    rate: int
    captured_at: str
    source: str
    device_id: str
    uploaded_by: Optional[int]
    patient_id: Optional[int]
    verdict: Optional[str]
    p_abnormal: Optional[float]
    threshold: Optional[float]
    quality_reasons: list
    heart_rate_bpm: Optional[float]
    overflows: int
    model_sha256: Optional[str]
    software_version: Optional[str]
    note: str
    finding: Optional[str] = None
    finding_note: str = ""
    finding_by: Optional[str] = None
    finding_at: Optional[str] = None
    site: Optional[str] = None
    visit: Optional[str] = None
    level_dbfs: Optional[float] = None
    #: the number of its last change (schema 10): what a FHIR server has not yet been sent
    changed_seq: int = 0
    #: seconds its verdict left out (schema 12); None: not known (recorded before)
    left_out_s: Optional[float] = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Recording":
        data = dict(row)
        data["quality_reasons"] = json.loads(data["quality_reasons"] or "[]")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def connect(path: Union[str, os.PathLike]) -> sqlite3.Connection:
    """Open the database with the durability settings above (creating its folder)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"database {path} cannot be opened: {exc}") from None
    return conn


def _new_id(cur: sqlite3.Cursor) -> int:
    """The id SQLite gave the row an INSERT just made (never None after one)."""
    if cur.lastrowid is None:
        raise sqlite3.DatabaseError("SQLite reported no id for the new row")
    return cur.lastrowid


def _acted_on(verdicts: int) -> str:
    """The verdict a screening is acted on, from the screening queries' ``2 * any abnormal + any
    normal``: abnormal if any of its recordings is, else normal if any is, else poor signal."""
    return "abnormal" if verdicts >= 2 else "normal" if verdicts else "poor_signal"


class RecordStore:
    """All reads and writes of the database. One instance per process (thread-safe)."""

    def __init__(self, path: Union[str, os.PathLike], *, migrate: bool = True) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._lock = threading.RLock()
        if migrate:
            self.migrate()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- plumbing -----------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): take the write lock up front."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StorageError(f"database is busy or read-only: {exc}") from None
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    self._conn.execute("ROLLBACK")
                    raise StorageError(f"record could not be saved: {exc}") from None

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def migrate(self) -> int:
        """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found."""
        with self.transaction() as conn:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise StorageError(f"database schema {found} is newer than this software "
                                   f"({SCHEMA_VERSION}); update HeartPi")
            for version in range(found, SCHEMA_VERSION):
                for statement in _split_sql(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
        return found

    def schema_version(self) -> int:
        return self._query("PRAGMA user_version")[0][0]

    def integrity_check(self) -> str:
        return self._query("PRAGMA integrity_check")[0][0]

    def backup(self, target: Union[str, os.PathLike]) -> Path:
        """Consistent copy through SQLite's online backup API (safe while others write)."""
        target = Path(target)
        dest = sqlite3.connect(target)
        try:
            with self._lock:
                self._conn.backup(dest)
        finally:
            dest.close()
        return target

    # -- recordings ---------------------------------------------------------------------
    def add_recording(self, *, file: str, sha256: str, duration_s: float, rate: int, source: str,
                      device_id: str, verdict: Optional[str] = None,
                      p_abnormal: Optional[float] = None, threshold: Optional[float] = None,
                      quality_reasons: Sequence[str] = (), heart_rate_bpm: Optional[float] = None,
                      overflows: int = 0, model_sha256: Optional[str] = None,
                      software_version: Optional[str] = None, patient_id: Optional[int] = None,
                      uploaded_by: Optional[int] = None, captured_at: Optional[str] = None,
                      note: str = "", site: Optional[str] = None, visit: Optional[str] = None,
                      level_dbfs: Optional[float] = None, left_out_s: Optional[float] = None,
                      actor: str = "device") -> int:
        # Stamped now: remember which clock did it. A time given by the caller has no known clock.
        clock_boot = None if captured_at else clock_reckoned_boot()
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO recordings (file, sha256, duration_s, rate, captured_at, source, "
                "device_id, uploaded_by, patient_id, verdict, p_abnormal, threshold, "
                "quality_reasons, heart_rate_bpm, overflows, model_sha256, software_version, note, "
                "clock_boot, site, visit, level_dbfs, left_out_s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (file, sha256, float(duration_s), int(rate), captured_at or utcnow(), source,
                 device_id, uploaded_by, patient_id, verdict, p_abnormal, threshold,
                 json.dumps(list(quality_reasons)), heart_rate_bpm, int(overflows), model_sha256,
                 software_version, note, clock_boot, _checked_site(site), visit or None,
                 None if level_dbfs is None else float(level_dbfs),
                 None if left_out_s is None else float(left_out_s)))
            rec_id = _new_id(cur)
            self._audit(conn, actor, "recording.create", f"recording:{rec_id}", verdict or "")
        return rec_id

    def get_recording(self, rec_id: int) -> Optional[Recording]:
        rows = self._query("SELECT * FROM recordings WHERE id = ?", (rec_id,))
        return Recording.from_row(rows[0]) if rows else None

    def recording_by_file(self, file: str) -> Optional[Recording]:
        rows = self._query("SELECT * FROM recordings WHERE file = ?", (file,))
        return Recording.from_row(rows[0]) if rows else None

    @staticmethod
    def _recording_filters(*, verdict: Optional[str] = None, since: Optional[str] = None,
                           until: Optional[str] = None, device_id: Optional[str] = None,
                           patient_id: Optional[int] = None, unassigned: bool = False,
                           finding: Optional[str] = None, source: Optional[str] = None,
                           model_sha256: Optional[str] = None, referrals: bool = False
                           ) -> tuple[str, list]:
        """The WHERE clause (and its arguments) that the list and its count share.

        ``referrals``: only the recordings that asked for a referral, the abnormal ones and the
        poor signals after which the box could not judge the person (:data:`UNJUDGED_NOTE`)."""
        clauses, args = [], []
        for column, op, value in (("verdict", "=", verdict), ("captured_at", ">=", since),
                                  ("captured_at", "<", until), ("device_id", "=", device_id),
                                  ("patient_id", "=", patient_id), ("finding", "=", finding),
                                  ("source", "=", source), ("model_sha256", "=", model_sha256)):
            if value not in (None, ""):
                clauses.append(f"{column} {op} ?")
                args.append(value)
        if unassigned:
            clauses.append("patient_id IS NULL")
        if referrals:
            clauses.append("(verdict = 'abnormal' OR instr(IFNULL(note, ''), ?) > 0)")
            args.append(UNJUDGED_NOTE)
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args

    def list_recordings(self, *, limit: int = 200, offset: int = 0, **filters: Any) -> list[Recording]:
        """Newest first; ``filters``: verdict, since, until (ISO dates), device_id, patient_id,
        unassigned, finding (a clinician's), source, model_sha256, referrals (see
        :meth:`_recording_filters`)."""
        where, args = self._recording_filters(**filters)
        rows = self._query(f"SELECT * FROM recordings {where} ORDER BY captured_at DESC, id DESC "
                           "LIMIT ? OFFSET ?", (*args, int(limit), int(offset)))
        return [Recording.from_row(r) for r in rows]

    def redate_recordings(self, offset_s: float, clock_boot: float, *, actor: str) -> int:
        """Move the recordings stamped by one clock (``clock_boot``, within the clock's own
        tolerance) by ``offset_s``: that clock was found that far behind and has just been set.
        Each change goes into the audit log with both times; returns how many moved.

        Recordings stamped after the clock was set carry the new clock's boot
        (``clock_boot + offset_s``), so they are never moved, whenever this runs: the tolerance
        is kept below half the correction, so a small correction cannot reach them either.
        """
        tolerance_s = min(SAME_CLOCK_TOLERANCE_S, abs(offset_s) / 2)
        with self.transaction() as conn:
            rows = conn.execute("SELECT id, captured_at, clock_boot FROM recordings WHERE clock_boot BETWEEN ? AND ?",
                                (clock_boot - tolerance_s, clock_boot + tolerance_s)).fetchall()
            for row in rows:
                was = _dt.datetime.fromisoformat(row["captured_at"])
                moved = iso_utc(was.timestamp() + offset_s)
                conn.execute("UPDATE recordings SET captured_at = ?, clock_boot = ? WHERE id = ?",
                             (moved, row["clock_boot"] + offset_s, row["id"]))
                self._audit(conn, actor, "recording.redate", f"recording:{row['id']}",
                            f"{row['captured_at']} -> {moved} (device clock was {offset_s:+.0f} s off)")
        return len(rows)

    def delete_recordings(self, rec_ids: Sequence[int], *, actor: str, reason: str, from_fhir_server: bool) -> None:
        """Delete records in one transaction, each with an audit entry saying what it was and
        why (the files: :func:`device.retention.delete_recordings`, which calls this).

        ``from_fhir_server``: the FHIR server is to delete them too (staff deleting a record: a
        test, consent withdrawn), or to keep them (pruning to free the card)."""
        with self.transaction() as conn:
            visits = set()
            for rec_id in rec_ids:
                row = conn.execute("SELECT * FROM recordings WHERE id = ?", (rec_id,)).fetchone()
                if row is None:
                    raise StorageError(f"recording {rec_id} does not exist (deleted meanwhile?)")
                conn.execute("DELETE FROM recordings WHERE id = ?", (rec_id,))
                self._audit(conn, actor, "recording.delete", f"recording:{rec_id}",
                            f"captured {row['captured_at']}, {row['source']}, verdict {row['verdict']}, "
                            f"patient {row['patient_id']}, sha256 {row['sha256'][:16]}, file {row['file']}: {reason}"
                            + ("" if from_fhir_server else " (kept on the FHIR server)"))
                if from_fhir_server:
                    self._fhir_delete(conn, f"Media/media-{rec_id}", f"Observation/observation-{rec_id}",
                                      *([f"Observation/finding-{rec_id}"] if row["finding"] else []))
                    visits.add(row["visit"])
            for visit in sorted(visits - {None}):  # the visit's Encounter goes with its last recording
                if conn.execute("SELECT 1 FROM recordings WHERE visit = ? LIMIT 1", (visit,)).fetchone() is None:
                    self._fhir_delete(conn, f"Encounter/visit-{visit}")

    def latest_levels(self, *, above_dbfs: float, source: str = "device", limit: int = 20) -> list[float]:
        """The RMS levels of the newest ``limit`` recordings from ``source`` that have one above
        ``above_dbfs`` (the caller's silence: a stethoscope left off the chest says nothing about
        the gain), newest first: how loud the box's capture chain records chests."""
        return [row[0] for row in self._query(
            "SELECT level_dbfs FROM recordings WHERE source = ? AND level_dbfs > ? "
            "ORDER BY captured_at DESC, id DESC LIMIT ?", (source, float(above_dbfs), int(limit)))]

    def recordings_with_sha256(self, sha256: str) -> list[int]:
        return [r[0] for r in self._query("SELECT id FROM recordings WHERE sha256 = ?", (sha256,))]

    def count_recordings(self, **filters: Any) -> int:
        """How many recordings :meth:`list_recordings` would list without a limit."""
        where, args = self._recording_filters(**filters)
        return self._query(f"SELECT COUNT(*) FROM recordings {where}", args)[0][0]

    def count_patients(self, search: str = "") -> int:
        """How many patients :meth:`list_patients` would list without a limit."""
        where, args = _patient_search(search)
        return self._query(f"SELECT COUNT(*) FROM patients p {where}", args)[0][0]

    def set_finding(self, rec_id: int, finding: Optional[str], note: str = "", *, actor: str) -> None:
        """Record what a clinician found on examining the person recorded (``None`` clears it).
        The audit entry keeps the old and new finding, not the note (it may name the person)."""
        if finding not in (None, *FINDINGS):
            raise ValueError(f"finding must be one of {', '.join(FINDINGS)} or none")
        self._change_recording(rec_id, "finding", finding, actor=actor, with_it={
            "finding_note": note.strip()[:500] if finding else "", "finding_by": actor if finding else None,
            "finding_at": utcnow() if finding else None})

    def set_site(self, rec_id: int, site: Optional[str], *, actor: str) -> None:
        """Where on the chest the recording was made (``None``: not recorded); audited."""
        self._change_recording(rec_id, "site", _checked_site(site), actor=actor)

    def _change_recording(self, rec_id: int, column: str, value: Any, *, actor: str,
                          with_it: Optional[dict] = None) -> None:
        """Set one of a recording's columns (and ``with_it``, columns that go with it), audited as
        ``recording.<column>`` with the old and new value; KeyError for a missing recording."""
        changes = {column: value, **(with_it or {})}
        with self.transaction() as conn:
            row = conn.execute(f"SELECT {column} FROM recordings WHERE id = ?", (rec_id,)).fetchone()
            if row is None:
                raise KeyError(f"recording {rec_id} does not exist")
            conn.execute(f"UPDATE recordings SET {', '.join(f'{c} = ?' for c in changes)} WHERE id = ?",
                         (*changes.values(), rec_id))
            self._audit(conn, actor, f"recording.{column}", f"recording:{rec_id}", f"{row[0]} -> {value}")

    def findings_by_verdict(self, *, model_sha256: Optional[str] = None, source: Optional[str] = None,
                            clinic: ClinicTime = ClinicTime()) -> dict[tuple[str, str], int]:
        """``{(verdict, finding): people}``: the field's confusion matrix, one count per screening
        a clinician's finding exists for (optionally only recordings scored by one model, or from
        one source).

        A screening is one patient's recordings on one day (the clinic's, ``clinic``), or a
        visit's unassigned recordings (:mod:`device.visits`), or an unassigned recording of no
        visit on its own: a person recorded at four places, or again after a poor signal, is
        one person examined, not four. Its verdict is the one a health worker
        acts on (:func:`screening_verdict`: abnormal if any of its recordings is, else normal if
        any is, else poor signal); its finding is the latest entered on any of its recordings (entered in the same second:
        the later recording's).
        """
        where, args = self._recording_filters(model_sha256=model_sha256, source=source)
        scope = where.replace("WHERE", "AND", 1)  # the same filters, inside the sub-query too
        # Only screenings with a finding are visited: the examined recordings (a scan, as a list
        # filter is), then each assigned one's same-day siblings through the (patient, time) index,
        # between the UTC instants at which the clinic's day starts and the next one does, and
        # each unassigned one's visit through the visit index.
        sql = f"""
            WITH examined AS MATERIALIZED (
                SELECT patient_id, visit, clinic_day(captured_at) AS day, verdict,
                       finding_at || ' ' || printf('%012d', id) || ' ' || finding AS entry
                FROM recordings WHERE finding IS NOT NULL AND verdict IS NOT NULL {scope})
            SELECT (SELECT 2 * MAX(verdict = 'abnormal') + MAX(verdict = 'normal') FROM recordings
                    WHERE patient_id = e.patient_id AND captured_at >= clinic_day_start(e.day)
                    AND captured_at < clinic_day_start(date(e.day, '+1 day')) AND verdict IS NOT NULL {scope}),
                   MAX(entry)
            FROM examined e WHERE patient_id IS NOT NULL GROUP BY patient_id, day
            UNION ALL
            SELECT (SELECT 2 * MAX(verdict = 'abnormal') + MAX(verdict = 'normal') FROM recordings
                    WHERE visit = e.visit AND patient_id IS NULL AND verdict IS NOT NULL {scope}),
                   MAX(entry)
            FROM examined e WHERE patient_id IS NULL AND visit IS NOT NULL GROUP BY visit
            UNION ALL
            SELECT 2 * (verdict = 'abnormal') + (verdict = 'normal'), entry FROM examined
            WHERE patient_id IS NULL AND visit IS NULL
            """
        with self._lock:
            self._conn.create_function("clinic_day", 1, clinic.day, deterministic=True)
            self._conn.create_function("clinic_day_start", 1, clinic.day_start, deterministic=True)
            rows = self._query(sql, [*args, *args, *args])
        counts: dict[tuple[str, str], int] = {}
        for verdicts, latest in rows:
            key = (_acted_on(verdicts), latest.rsplit(" ", 1)[1])
            counts[key] = counts.get(key, 0) + 1
        return counts

    def screenings_by_verdict(self, *, model_sha256: Optional[str] = None, source: Optional[str] = None,
                              since: Optional[str] = None, clinic: ClinicTime = ClinicTime()) -> dict[str, int]:
        """``{verdict: people}`` over every screening, examined by a clinician or not, counted as
        :meth:`findings_by_verdict` counts them (one patient's recordings on one day, a visit's
        unassigned recordings, or an unassigned recording of no visit; abnormal if any of its
        recordings is, else normal if any is, else poor signal). The share referred needs no
        clinician: it is how the Device page notices a stethoscope the model calls most people
        abnormal on before any finding is entered. ``since`` (an ISO date or time, UTC): only
        recordings made from then on, so the count stays recent and the scan short."""
        where, args = self._recording_filters(model_sha256=model_sha256, source=source, since=since)
        scope = where.replace("WHERE", "AND", 1)
        sql = f"""
            WITH screened AS MATERIALIZED (
                SELECT patient_id, visit, clinic_day(captured_at) AS day, verdict
                FROM recordings WHERE verdict IS NOT NULL {scope})
            SELECT 2 * MAX(verdict = 'abnormal') + MAX(verdict = 'normal') FROM screened
            WHERE patient_id IS NOT NULL GROUP BY patient_id, day
            UNION ALL
            SELECT 2 * MAX(verdict = 'abnormal') + MAX(verdict = 'normal') FROM screened
            WHERE patient_id IS NULL AND visit IS NOT NULL GROUP BY visit
            UNION ALL
            SELECT 2 * (verdict = 'abnormal') + (verdict = 'normal') FROM screened
            WHERE patient_id IS NULL AND visit IS NULL
            """
        with self._lock:
            self._conn.create_function("clinic_day", 1, clinic.day, deterministic=True)
            rows = self._query(sql, args)
        counts: dict[str, int] = {}
        for (verdicts,) in rows:
            verdict = _acted_on(verdicts)
            counts[verdict] = counts.get(verdict, 0) + 1
        return counts

    def assign_recording(self, rec_id: int, patient_id: Optional[int], *, actor: str,
                         whole_visit: bool = False) -> list[int]:
        """Give a recording to a patient (``None``: to nobody); returns the ids changed.

        ``whole_visit``: also the other recordings of its visit that were with the same patient
        as it (usually nobody), so one person recorded at four places is assigned once; one
        that staff had already given to someone else stays theirs. Each change is audited.
        """
        with self.transaction() as conn:
            row = conn.execute("SELECT patient_id, visit FROM recordings WHERE id = ?", (rec_id,)).fetchone()
            if row is None:
                raise KeyError(f"recording {rec_id} does not exist")
            ids = [rec_id]
            if whole_visit and row["visit"] is not None:
                ids += [r[0] for r in conn.execute(
                    "SELECT id FROM recordings WHERE visit = ? AND id != ? AND patient_id IS ? ORDER BY id",
                    (row["visit"], rec_id, row["patient_id"]))]
            for changed in ids:
                conn.execute("UPDATE recordings SET patient_id = ? WHERE id = ?", (patient_id, changed))
                self._audit(conn, actor, "recording.assign", f"recording:{changed}", f"patient:{patient_id}"
                            + (f" with recording:{rec_id}'s visit" if changed != rec_id else ""))
        return ids

    def visit_recordings(self, visit: Optional[str]) -> list[Recording]:
        """A visit's recordings in the order they were made (none for ``None``)."""
        if visit is None:
            return []
        return [Recording.from_row(r) for r in
                self._query("SELECT * FROM recordings WHERE visit = ? ORDER BY captured_at, id", (visit,))]

    def visit_sizes(self, visits: Sequence[Optional[str]], *, unassigned: bool = False) -> dict[str, int]:
        """``{visit: number of its recordings}`` (``unassigned``: of those without a patient) for
        the given visits: a list page's rows."""
        wanted = sorted({v for v in visits if v is not None})
        if not wanted:
            return {}
        rows = self._query(f"SELECT visit, COUNT(*) FROM recordings WHERE visit IN ({', '.join('?' * len(wanted))}) "
                           f"{'AND patient_id IS NULL ' if unassigned else ''}GROUP BY visit", wanted)
        return {visit: count for visit, count in rows}

    # -- patients -----------------------------------------------------------------------
    def add_patient(self, *, name: str, external_id: Optional[str] = None,
                    birth_date: Optional[str] = None, sex: Optional[str] = None, notes: str = "",
                    actor: str) -> int:
        now = utcnow()
        with self.transaction() as conn:
            cur = conn.execute("INSERT INTO patients (external_id, name, birth_date, sex, notes, "
                               "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (external_id or None, name, birth_date or None, sex or None, notes, now, now))
            patient_id = _new_id(cur)
            self._audit(conn, actor, "patient.create", f"patient:{patient_id}")
        return patient_id

    def update_patient(self, patient_id: int, *, actor: str, **fields: Any) -> None:
        allowed = {"name", "external_id", "birth_date", "sex", "notes"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"patient fields must be among {sorted(allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        values = [v if v != "" or k in ("notes", "name") else None for k, v in fields.items()]
        with self.transaction() as conn:
            cur = conn.execute(f"UPDATE patients SET {sets}, updated_at = ? WHERE id = ?",
                               (*values, utcnow(), patient_id))
            if cur.rowcount != 1:
                raise KeyError(f"patient {patient_id} does not exist")
            self._audit(conn, actor, "patient.update", f"patient:{patient_id}", ",".join(sorted(fields)))

    def delete_patient(self, patient_id: int, *, actor: str, reason: str) -> int:
        """Delete a patient (consent withdrawn, a duplicate). Their recordings stay, unassigned
        (deleting those first is the caller's choice: :mod:`device.retention`). The audit entry
        names no personal data, only the id, what became of the recordings, and why. Returns
        how many recordings were unassigned."""
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM patients WHERE id = ?", (patient_id,)).fetchone() is None:
                raise KeyError(f"patient {patient_id} does not exist")
            kept = conn.execute("SELECT COUNT(*) FROM recordings WHERE patient_id = ?", (patient_id,)).fetchone()[0]
            conn.execute("UPDATE recordings SET patient_id = NULL WHERE patient_id = ?", (patient_id,))
            conn.execute("DELETE FROM patients WHERE id = ?", (patient_id,))
            self._fhir_delete(conn, f"Patient/patient-{patient_id}")
            self._audit(conn, actor, "patient.delete", f"patient:{patient_id}",
                        f"{kept} recording(s) kept, unassigned: {reason}")
        return kept

    def get_patient(self, patient_id: int) -> Optional[dict]:
        rows = self._query("SELECT * FROM patients WHERE id = ?", (patient_id,))
        return dict(rows[0]) if rows else None

    def list_patients(self, search: str = "", limit: int = 200, offset: int = 0, *,
                      recent_first: bool = False) -> list[dict]:
        """Patients whose name or patient number contains ``search``, by name; or, with
        ``recent_first``, the ones created, edited or recorded most recently first (the patient
        a health worker is seeing today is almost always among those)."""
        where, args = _patient_search(search)
        order = ("MAX(p.updated_at, IFNULL((SELECT MAX(r.captured_at) FROM recordings r "
                 "WHERE r.patient_id = p.id), '')) DESC, p.id DESC" if recent_first
                 else "p.name COLLATE NOCASE, p.id")
        rows = self._query("SELECT p.*, (SELECT COUNT(*) FROM recordings r WHERE r.patient_id = p.id) "
                           f"AS n_recordings FROM patients p {where} ORDER BY {order} LIMIT ? OFFSET ?",
                           (*args, int(limit), int(offset)))
        return [dict(r) for r in rows]

    def patient_names(self, patient_ids: Sequence[int]) -> dict[int, str]:
        """``{id: name}`` for the given patients (those that exist)."""
        ids = sorted({int(i) for i in patient_ids if i is not None})
        names: dict[int, str] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[start:start + 500]
            names.update((r[0], r[1]) for r in self._query(
                f"SELECT id, name FROM patients WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return names

    # -- users --------------------------------------------------------------------------
    def add_user(self, *, email: str, password_hash: str, role: str, approved: bool = True,
                 actor: str) -> int:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        with self.transaction() as conn:
            try:
                cur = conn.execute("INSERT INTO users (email, password_hash, role, approved, created_at) "
                                   "VALUES (?, ?, ?, ?, ?)",
                                   (email.strip(), password_hash, role, int(approved), utcnow()))
            except sqlite3.IntegrityError:
                raise ValueError(f"an account for {email} already exists") from None
            user_id = _new_id(cur)
            self._audit(conn, actor, "user.create", f"user:{user_id}", role)
        return user_id

    def get_user(self, user_id: int) -> Optional[dict]:
        rows = self._query("SELECT * FROM users WHERE id = ?", (user_id,))
        return dict(rows[0]) if rows else None

    def user_by_email(self, email: str) -> Optional[dict]:
        rows = self._query("SELECT * FROM users WHERE email = ? COLLATE NOCASE", (email.strip(),))
        return dict(rows[0]) if rows else None

    def list_users(self) -> list[dict]:
        return [dict(r) for r in self._query("SELECT * FROM users ORDER BY email")]

    def count_admins(self) -> int:
        return self._query("SELECT COUNT(*) FROM users WHERE role = 'admin' AND active = 1")[0][0]

    def update_user(self, user_id: int, *, actor: str, audit_action: str = "user.update", **fields: Any) -> None:
        allowed = {"password_hash", "role", "active", "approved", "session_epoch", "failed_logins",
                   "locked_until"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"user fields must be among {sorted(allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as conn:
            conn.execute(f"UPDATE users SET {sets} WHERE id = ?", (*fields.values(), user_id))
            if audit_action:
                detail = ",".join(sorted(k for k in fields if k != "password_hash")) or "password"
                self._audit(conn, actor, audit_action, f"user:{user_id}", detail)

    # -- web sessions -------------------------------------------------------------------
    def create_session(self, session_id: str, user_id: int, expires_at: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM web_sessions WHERE expires_at < ?", (utcnow(),))
            conn.execute("INSERT INTO web_sessions (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                         (session_id, user_id, utcnow(), expires_at))

    def session_user(self, session_id: str) -> Optional[dict]:
        """The active, approved user of a live session, or None."""
        rows = self._query("SELECT u.* FROM web_sessions s JOIN users u ON u.id = s.user_id "
                           "WHERE s.id = ? AND s.expires_at > ? AND u.active = 1 AND u.approved = 1",
                           (session_id, utcnow()))
        return dict(rows[0]) if rows else None

    def end_session(self, session_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM web_sessions WHERE id = ?", (session_id,))

    def end_user_sessions(self, user_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM web_sessions WHERE user_id = ?", (user_id,))

    def end_all_sessions(self) -> None:
        """Log everyone out (a restored database's sessions belong to another device's page)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM web_sessions")

    # -- what a FHIR server has not been sent yet (heartpi.fhir_sync) -----------------------
    def changed_recordings(self, after: int) -> list[Recording]:
        """The recordings changed (made, assigned, given a finding, their patient edited, ...)
        since change number ``after``, the oldest change first."""
        return [Recording.from_row(r) for r in self._query(
            "SELECT * FROM recordings WHERE changed_seq > ? ORDER BY changed_seq, id", (int(after),))]

    def count_changed_recordings(self, after: int) -> int:
        """How many recordings :meth:`changed_recordings` would give."""
        return self._query("SELECT COUNT(*) FROM recordings WHERE changed_seq > ?", (int(after),))[0][0]

    def fhir_sent_through(self, server: str) -> tuple[int, Optional[str]]:
        """(change number, when): every change up to that number has reached ``server`` (0, None: nothing yet)."""
        rows = self._query("SELECT through_seq, at FROM fhir_sent WHERE server = ?", (server,))
        return (rows[0][0], rows[0][1]) if rows else (0, None)

    def mark_fhir_sent(self, server: str, through_seq: int) -> None:
        """Every change up to ``through_seq`` has reached ``server``. Never moves back: of two sends
        that overlapped, the one that saw more changes has the say."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO fhir_sent (server, through_seq, at) VALUES (?, ?, ?) ON CONFLICT(server) "
                         "DO UPDATE SET through_seq = MAX(through_seq, excluded.through_seq), at = excluded.at",
                         (server, int(through_seq), utcnow()))

    @staticmethod
    def _fhir_delete(conn: sqlite3.Connection, *resources: str) -> None:
        """Ask every FHIR server to delete these resources (the device's names for them, e.g.
        ``Patient/patient-3``), in the deleting transaction."""
        conn.executemany("INSERT INTO fhir_deletions (resource, at) VALUES (?, ?)",
                         [(resource, utcnow()) for resource in resources])

    def fhir_deletions(self, server: str) -> list[tuple[int, str]]:
        """``(id, resource)`` of the deletions ``server`` has not been sent yet, oldest first."""
        return [(r[0], r[1]) for r in self._query(
            "SELECT id, resource FROM fhir_deletions d WHERE NOT EXISTS (SELECT 1 FROM fhir_deletions_sent s "
            "WHERE s.server = ? AND s.deletion_id = d.id) ORDER BY id", (server,))]

    def mark_fhir_deleted(self, server: str, deletion_ids: Sequence[int]) -> None:
        """``server`` has done (or no longer needs) these deletions."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO fhir_deletions_sent (server, deletion_id) VALUES (?, ?)",
                             [(server, int(i)) for i in deletion_ids])

    # -- audit, settings, status --------------------------------------------------------
    @staticmethod
    def _audit(conn: sqlite3.Connection, actor: str, action: str, target: str = "", detail: str = "") -> None:
        conn.execute("INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                     (utcnow(), actor, action, target, detail))

    def audit(self, actor: str, action: str, target: str = "", detail: str = "") -> None:
        with self.transaction() as conn:
            self._audit(conn, actor, action, target, detail)

    def audit_entries(self, limit: int = 200, target: Optional[str] = None,
                      action: Optional[str] = None, before_id: Optional[int] = None,
                      since: Optional[str] = None, until: Optional[str] = None) -> list[dict]:
        """Newest first; ``target`` exact (``patient:7``), ``action`` a prefix (``recording.``),
        ``since``/``until`` instants (``until`` excluded), ``before_id`` for the next page."""
        clauses, args = [], []
        for condition, value in (("id < ?", before_id), ("at >= ?", since), ("at < ?", until)):
            if value is not None:
                clauses.append(condition)
                args.append(value)
        if target:
            clauses.append("target = ?")
            args.append(target)
        if action:
            clauses.append("action LIKE ? ESCAPE '\\'")
            args.append(_like_literal(action) + "%")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?", (*args, int(limit)))
        return [dict(r) for r in rows]

    def last_audited(self, action: str, detail_prefix: str = "") -> Optional[str]:
        """When ``action`` (exactly, through its index) last happened, optionally only with a
        detail starting ``detail_prefix``; None if never."""
        rows = self._query("SELECT MAX(at) FROM audit_log WHERE action = ? AND detail LIKE ? ESCAPE '\\'",
                           (action, _like_literal(detail_prefix) + "%"))
        return rows[0][0]

    def get_setting(self, key: str, default: str = "") -> str:
        rows = self._query("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_setting(self, key: str, value: str, *, actor: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                         "SET value = excluded.value", (key, value))
            self._audit(conn, actor, "setting.update", key, value)

    def set_status(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO device_status (key, value, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                         "updated_at = excluded.updated_at", (key, value, utcnow()))

    def status(self) -> dict[str, tuple[str, str]]:
        return {r["key"]: (r["value"], r["updated_at"]) for r in self._query("SELECT * FROM device_status")}


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN ... END;) whole."""
    statements, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        joined = "\n".join(current).strip()
        in_trigger = joined.upper().startswith("CREATE TRIGGER")
        if joined.endswith(";") and (not in_trigger or joined.upper().endswith("END;")):
            statements.append(joined)
            current = []
    if "\n".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements
