"""Whole-device backup and restore: the records, the recordings they point to, the models.

A Raspberry Pi's SD card is the part most likely to fail, and a database copy alone is not a
backup of a screening device: without the audio nobody can listen again or re-analyse. A
backup is one plain ``.tar`` (WAV does not compress; a Pi should not spend minutes trying):

- ``database/heartpi.sqlite3``: a consistent copy through SQLite's online backup API, so
  the daemon and the web page keep working while it is made;
- ``recordings/...``: every recording that copy lists, each checked against the sha256 its
  record holds (a file that no longer matches is still included, and named);
- ``models/...``: installed models, the per-device calibration, and which model is current;
- ``heartpi-backup.json``: the manifest, with every file's size and sha256, written last.

Restoring is made to lose nothing and to be safe against a kill at any moment:

1. it needs the data folder to itself: the daemon and the web page hold a shared lock on it
   for their whole life (:func:`data_dir_in_use`), a restore takes it exclusively;
2. the archive is unpacked into a staging folder beside the data and every file checked
   against the manifest; the database copy must pass SQLite's integrity check and is
   migrated forward there; web sessions are dropped (everyone logs in again);
3. a journal names each item to swap; the current database (with its WAL), recordings and
   models are moved to ``DATA_DIR/replaced-<time>/``, never deleted, and the staged ones
   renamed into place; the journal goes last.

Killed during step 3, the next process to take the lock (a restore run again, the daemon or
the web page starting) finishes the swap from the journal before anything opens the database.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Iterator, Optional, Union

from .config import Config
from .errors import BackupError
from .records import SCHEMA_VERSION, RecordStore
from .storage import TMP_PREFIX, atomic_write, fsync_dir, resolve

log = logging.getLogger(__name__)

ARCHIVE_FORMAT = "heartpi-backup"
ARCHIVE_VERSION = 1
MANIFEST = "heartpi-backup.json"
DATABASE_MEMBER = "database/heartpi.sqlite3"
LOCK_FILE = ".heartpi.lock"
JOURNAL_FILE = "restore-journal.json"
STAGING_PREFIX = ".restore-"
REPLACED_PREFIX = "replaced-"
#: What a restore may write: archive members outside these folders are never unpacked.
RESTORED_FOLDERS = ("recordings", "models")
CHUNK = 1 << 20


# -- the data folder's lock ---------------------------------------------------------------------
@contextlib.contextmanager
def data_dir_in_use(config: Config) -> Iterator[None]:
    """Hold the data folder (shared) while the daemon or the web page runs.

    A restore takes the same lock exclusively, so it can never swap the database under a
    running process; a process that starts while a restore runs waits for it. The first to
    take the lock also finishes a restore that a kill interrupted (see the module docstring).
    A lock that cannot be taken at all (a read-only folder) is logged, not fatal: the device
    must still record.
    """
    try:
        fd = _open_lock(config)
    except OSError as exc:
        log.warning("cannot take the data folder's lock %s (%s): a restore would not know that "
                    "HeartPi is running", config.data_dir / LOCK_FILE, exc.strerror)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # others run (shared) or a restore runs (exclusive): wait for a restore
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("a restore from a backup is running; waiting for it to finish")
                fcntl.flock(fd, fcntl.LOCK_SH)
        else:
            try:
                finished = finish_interrupted_restore(config)
            except (BackupError, OSError) as exc:
                log.error("an interrupted restore could not be finished: %s", exc)
            else:
                if finished:
                    log.warning("finished a restore from a backup that had been interrupted")
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _open_lock(config: Config) -> int:
    """The data folder's lock file, opened (and made, owned like the folder, if missing)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(config.data_dir / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o660)
    owner = _owner_of(config.data_dir)
    if owner:  # made by root's restore: the daemon and the web page must still open it
        try:
            os.fchown(fd, *owner)
        except OSError:
            os.close(fd)
            raise
    return fd


@contextlib.contextmanager
def _data_dir_exclusive(config: Config) -> Iterator[None]:
    fd = _open_lock(config)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError("HeartPi is running (the device or the web page uses the data folder): "
                              "stop both with 'sudo systemctl stop heartpi-daemon heartpi-web', restore, "
                              "then start them again") from None
        yield
    finally:
        os.close(fd)


# -- backup -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupSummary:
    """What went into an archive."""

    path: Path
    recordings: int
    bytes: int
    missing: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)


class _Chunks(io.RawIOBase):
    """A write-only stream that hands out what was written since the last :meth:`take`."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


class BackupArchive:
    """One backup in the making: a snapshot of the database and the files it names.

    :meth:`chunks` streams the archive, so the same bytes go to a USB drive (:func:`create_backup`)
    or straight to an administrator's browser (the web page's Export page) without a second copy
    on the SD card. Files are read and hashed as they are written: one that changed since the
    snapshot is named as damaged, one deleted since (a prune running) as missing.
    """

    def __init__(self, config: Config, store: RecordStore, snapshot: Path) -> None:
        self.config = config
        self.snapshot = snapshot
        store.backup(snapshot)
        with contextlib.closing(sqlite3.connect(snapshot, isolation_level=None)) as copy:
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal
            self._rows = copy.execute("SELECT file, sha256 FROM recordings ORDER BY id").fetchall()
            self.schema = copy.execute("PRAGMA user_version").fetchone()[0]
        self.missing: list[str] = []
        self.damaged: list[str] = []
        self._wanted: list[tuple[str, Path, str]] = []
        for file, sha256 in self._rows:
            path = resolve(config.recordings_dir, file)
            if path.is_file():
                self._wanted.append((file, path, sha256))
            else:
                self.missing.append(file)
        self._model_files, self.links = _model_files(config.models_dir)
        self.audio_bytes = 0

    @property
    def recordings(self) -> int:
        return len(self._rows) - len(self.missing)

    def estimated_size(self) -> int:
        files = [self.snapshot, *(p for _, p, _ in self._wanted), *(p for _, p in self._model_files)]
        return sum(p.stat().st_size + 1536 for p in files) + 64 * 1024

    def chunks(self) -> Iterator[bytes]:
        """The archive, a piece at a time (see the module docstring for its layout)."""
        sink = _Chunks()
        entries: list[dict] = []
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            database = self._add(tar, DATABASE_MEMBER, self.snapshot.read_bytes(), self.snapshot)
            self.snapshot.unlink(missing_ok=True)  # archived: a long download keeps no copy on the card
            yield sink.take()
            for file, path, sha256 in self._wanted:
                try:
                    data = path.read_bytes()  # a few MB each; read once, hashed as archived
                except FileNotFoundError:
                    self.missing.append(file)
                    continue
                entry = self._add(tar, f"recordings/{file}", data, path)
                if entry["sha256"] != sha256:
                    self.damaged.append(file)
                entries.append(entry)
                self.audio_bytes += entry["bytes"]
                yield sink.take()
            for name, path in self._model_files:
                entries.append(self._add(tar, name, path.read_bytes(), path))
            manifest = {
                "format": ARCHIVE_FORMAT, "version": ARCHIVE_VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "device_id": self.config.device_id, "software_version": _software_version(),
                "schema_version": self.schema, "database": database, "files": entries, "links": self.links,
                "recordings": self.recordings, "missing": self.missing, "damaged": self.damaged,
            }
            self._add(tar, MANIFEST, json.dumps(manifest, indent=1).encode(), None)
        yield sink.take()

    @staticmethod
    def _add(tar: tarfile.TarFile, name: str, data: bytes, path: Optional[Path]) -> dict:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o640
        info.mtime = int(path.stat().st_mtime) if path else int(_dt.datetime.now().timestamp())
        tar.addfile(info, io.BytesIO(data))
        return {"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def audit_detail(self) -> str:
        return (f"{self.recordings} recordings, {self.audio_bytes / 1e6:.1f} MB of audio, "
                f"{len(self.missing)} missing, {len(self.damaged)} damaged")


def _model_files(models_dir: Path) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """Regular files under ``models/`` and the ``current``/``previous`` links (by name)."""
    files: list[tuple[str, Path]] = []
    links: dict[str, str] = {}
    if not models_dir.is_dir():
        return files, links
    for item in sorted(models_dir.rglob("*")):
        relative = item.relative_to(models_dir).as_posix()
        if item.is_symlink():
            target = os.readlink(item)
            if "/" not in target and item.parent == models_dir:
                links[f"models/{relative}"] = target
        elif item.is_file() and not item.name.startswith("."):
            files.append((f"models/{relative}", item))
    return files, links


def create_backup(config: Config, output: Union[str, os.PathLike], *, actor: str = "cli:backup") -> BackupSummary:
    """Write the whole device's data to ``output`` (a ``.tar``); safe while HeartPi runs."""
    output = Path(output)
    if output.suffix != ".tar":
        raise BackupError(f"{output}: a full backup is a .tar file (name it e.g. heartpi-backup.tar)")
    partial = output.with_name(f"{TMP_PREFIX}{output.name}")
    snapshot = output.with_name(f"{TMP_PREFIX}{output.stem}.sqlite3")
    store = RecordStore(config.database_path)
    try:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            archive = BackupArchive(config, store, snapshot)
            need, free = archive.estimated_size(), shutil.disk_usage(output.parent).free
            if free < need:
                raise BackupError(f"not enough space for the backup on {output.parent}: it needs "
                                  f"{need / 1e6:.0f} MB, {free / 1e6:.0f} MB are free; use a larger USB "
                                  "drive or free some space")
            with open(partial, "wb") as raw:
                os.fchmod(raw.fileno(), 0o600)  # patients' records: readable by root only
                for chunk in archive.chunks():
                    raw.write(chunk)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(partial, output)
            fsync_dir(output.parent)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"the backup could not be written to {output}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        finally:
            for leftover in (snapshot, partial):
                leftover.unlink(missing_ok=True)
        store.audit(actor, "backup.create", "", archive.audit_detail())
    finally:
        store.close()
    log.info("backup %s: %s", output, archive.audit_detail())
    return BackupSummary(output, archive.recordings, archive.audio_bytes, archive.missing, archive.damaged)


def _software_version() -> str:
    from model.classifier import software_version  # the version every verdict carries

    return software_version()


# -- restore ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestoreSummary:
    """What a restore brought back, and where the data it replaced was put."""

    recordings: int
    patients: int
    created: str
    device_id: str
    replaced: Optional[Path]


def _member_path(name: str) -> PurePosixPath:
    """An archive member's path, refused unless it is a plain relative path in a restored folder."""
    path = PurePosixPath(name)
    if (path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] not in RESTORED_FOLDERS
            or len(path.parts) < 2):
        raise BackupError(f"the backup holds an unexpected file {name!r}: it was not made by "
                          "'heartpi backup', or it was altered; nothing was restored")
    return path


def _read_manifest(tar: tarfile.TarFile) -> dict:
    try:
        handle = tar.extractfile(tar.getmember(MANIFEST))  # None when it is not a file
        manifest = json.loads(handle.read()) if handle is not None else None
    except (KeyError, ValueError):
        manifest = None
    if not isinstance(manifest, dict):
        raise BackupError("this is not a HeartPi backup (no readable heartpi-backup.json inside); "
                          "nothing was restored")
    if manifest.get("format") != ARCHIVE_FORMAT or not isinstance(manifest.get("files"), list):
        raise BackupError("this is not a HeartPi backup; nothing was restored")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > ARCHIVE_VERSION:
        raise BackupError(f"this backup was made by a newer HeartPi (format {manifest.get('version')}); "
                          "update this device first; nothing was restored")
    for entry in [manifest.get("database"), *manifest["files"]]:
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)
                and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)):
            raise BackupError("the backup's manifest is damaged; nothing was restored")
    for entry in manifest["files"]:
        _member_path(entry["path"])
    if not isinstance(manifest.get("links", {}), dict):
        raise BackupError("the backup's manifest is damaged; nothing was restored")
    return manifest


def _unpack(tar: tarfile.TarFile, entry: dict, target: Path) -> None:
    """Copy one member to ``target``, checking its size and sha256 against the manifest."""
    try:
        member = tar.getmember(entry["path"])
    except KeyError:
        raise BackupError(f"the backup is incomplete: {entry['path']} is missing; nothing was restored") from None
    if not member.isfile():
        raise BackupError(f"the backup is damaged: {entry['path']} is not a file; nothing was restored")
    stream: Optional[IO[bytes]] = tar.extractfile(member)
    if stream is None:  # isfile() said it is one
        raise BackupError(f"the backup is damaged: {entry['path']} cannot be read; nothing was restored")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with open(target, "wb") as out:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size != entry["bytes"] or digest.hexdigest() != entry["sha256"]:
        raise BackupError(f"the backup is damaged: {entry['path']} does not match its checksum; "
                          "nothing was restored (try another copy of the backup)")


def _check_database(path: Path) -> int:
    """The staged database's schema version, after SQLite's integrity check."""
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            schema = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise BackupError(f"the backup's database cannot be read ({exc}); nothing was restored") from None
    if result != "ok":
        raise BackupError(f"the backup's database is damaged ({result}); nothing was restored")
    if schema > SCHEMA_VERSION:
        raise BackupError(f"the backup was made by a newer HeartPi (database schema {schema}, this one "
                          f"reads up to {SCHEMA_VERSION}); update this device first; nothing was restored")
    return schema


def _existing_records(database: Path) -> tuple[int, int]:
    if not database.exists():
        return 0, 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "recordings" not in tables:
                return 0, 0
            return (conn.execute("SELECT count(*) FROM recordings").fetchone()[0],
                    conn.execute("SELECT count(*) FROM patients").fetchone()[0])
    except sqlite3.Error as exc:
        log.warning("the current database cannot be read (%s); it will be set aside", exc)
        return 0, 0


def _owner_of(path: Path) -> Optional[tuple[int, int]]:
    """Whose files the restored ones must be: the data folder's owner, when we run as root
    (``sudo heartpi restore``) and would otherwise leave root's files the daemon cannot write."""
    if os.geteuid() != 0:
        return None
    st = path.stat()
    return st.st_uid, st.st_gid


def _hand_over(root: Path, owner: Optional[tuple[int, int]]) -> None:
    """Give the staged tree the modes (and owner) the daemon's own files have (UMask=0007)."""
    for item in [root, *root.rglob("*")]:
        if item.is_symlink():
            if owner:
                os.lchown(item, *owner)
            continue
        os.chmod(item, 0o2770 if item.is_dir() else 0o660)
        if owner:
            os.chown(item, *owner)


def restore_backup(config: Config, archive: Union[str, os.PathLike], *, force: bool = False,
                   actor: str = "cli:restore") -> RestoreSummary:
    """Replace this device's records, recordings and models with a backup's (module docstring)."""
    archive = Path(archive)
    with _data_dir_exclusive(config):
        finish_interrupted_restore(config)
        present = _existing_records(config.database_path)
        if any(present) and not force:
            raise BackupError(f"this device already holds {present[0]} recording(s) and {present[1]} "
                              "patient(s); a restore replaces them (they are moved aside to "
                              f"{config.data_dir}/{REPLACED_PREFIX}..., not deleted): run again with --force")
        try:
            tar = tarfile.open(archive, mode="r:")
        except FileNotFoundError:
            raise BackupError(f"{archive} does not exist") from None
        except (tarfile.TarError, OSError) as exc:
            raise BackupError(f"{archive} is not a readable backup ({exc}); nothing was restored") from None
        staging = config.data_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
        try:
            with tar:
                manifest = _read_manifest(tar)
                entries = manifest["files"]
                need = manifest["database"]["bytes"] + sum(e["bytes"] for e in entries)
                free = shutil.disk_usage(config.data_dir).free
                if free < need * 1.05 + 50e6:
                    raise BackupError(f"not enough space to restore: it needs {need / 1e6:.0f} MB, "
                                      f"{free / 1e6:.0f} MB are free on {config.data_dir}")
                staging.mkdir(mode=0o700)
                database_entry = dict(manifest["database"], path=DATABASE_MEMBER)
                _unpack(tar, database_entry, staging / "heartpi.sqlite3")
                for entry in entries:
                    _unpack(tar, entry, staging / entry["path"])
            schema = _check_database(staging / "heartpi.sqlite3")
            for link, target in manifest.get("links", {}).items():
                name = _member_path(link)
                if "/" in target or target in ("", ".", "..") or len(name.parts) != 2 or name.parts[0] != "models":
                    raise BackupError(f"the backup holds an unexpected link {link!r}; nothing was restored")
                (staging / "models").mkdir(exist_ok=True)
                os.symlink(target, staging / link)
            (staging / "recordings").mkdir(exist_ok=True)
            store = RecordStore(staging / "heartpi.sqlite3")  # migrated forward here, not in place
            try:
                store.end_all_sessions()
                recordings, patients = store.count_recordings(), store.count_patients()
                forward = f"; its records brought forward from schema {schema} to {SCHEMA_VERSION}" \
                    if schema < SCHEMA_VERSION else ""
                store.audit(actor, "backup.restore", "", f"from a backup of device {manifest.get('device_id')} "
                            f"made {manifest.get('created')}: {recordings} recordings, {patients} patients{forward}")
            finally:
                store.close()
            _hand_over(staging, _owner_of(config.data_dir))
        except (tarfile.TarError, EOFError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BackupError(f"{archive} is damaged or incomplete ({exc}); nothing was restored "
                              "(try another copy of the backup)") from None
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BackupError(f"the backup could not be unpacked into {config.data_dir} "
                              f"({exc.strerror or exc}); nothing was restored") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        replaced = config.data_dir / f"{REPLACED_PREFIX}{_dt.datetime.now():%Y%m%dT%H%M%S}"
        items = [("heartpi.sqlite3", str(config.database_path)), ("recordings", str(config.recordings_dir))]
        if (staging / "models").exists():
            items.append(("models", str(config.models_dir)))
        journal = {"staging": str(staging), "replaced": str(replaced), "items": items}
        atomic_write(config.data_dir / JOURNAL_FILE, json.dumps(journal, indent=1).encode())
        _swap(journal)
    moved_aside = replaced if replaced.exists() else None
    log.warning("restored a backup of device %s made %s: %d recordings, %d patients%s",
                manifest.get("device_id"), manifest.get("created"), recordings, patients,
                f"; the data it replaced is in {moved_aside}" if moved_aside else "")
    return RestoreSummary(recordings, patients, str(manifest.get("created")), str(manifest.get("device_id")),
                          moved_aside)


def finish_interrupted_restore(config: Config) -> bool:
    """Finish a swap a kill interrupted (the caller holds the data folder exclusively); also
    removes a staging folder left by a restore killed before its swap. True if it finished one."""
    journal_path = config.data_dir / JOURNAL_FILE
    finished = False
    if journal_path.exists():
        try:
            journal = json.loads(journal_path.read_text())
        except (OSError, ValueError) as exc:
            raise BackupError(f"the restore journal {journal_path} cannot be read ({exc}); move it away "
                              "and run the restore again") from None
        _swap(journal)
        finished = True
    for leftover in config.data_dir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return finished


def _swap(journal: dict) -> None:
    """Move each current item aside and its staged replacement in; idempotent, so running it
    again after a kill at any point completes it."""
    staging, replaced = Path(journal["staging"]), Path(journal["replaced"])
    replaced.mkdir(parents=True, exist_ok=True)
    for staged_name, target_name in journal["items"]:
        staged, target = staging / staged_name, Path(target_name)
        if not staged.exists() and not staged.is_symlink():
            continue  # already swapped in
        companions = [target]
        if staged_name == "heartpi.sqlite3":  # its WAL belongs to it and must never meet the new file
            companions += [target.with_name(target.name + suffix) for suffix in ("-wal", "-shm")]
        for item in companions:
            if item.exists() or item.is_symlink():
                shutil.move(str(item), str(_free_name(replaced / item.name)))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(target))
    for directory in {Path(t).parent for _, t in journal["items"]}:
        fsync_dir(directory)
    (Path(journal["staging"]).parent / JOURNAL_FILE).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        replaced.rmdir()  # nothing was there to replace (a fresh card): no empty folder left


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{path.name}.{n}")
        n += 1
    return candidate
