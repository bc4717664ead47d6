"""Deleting recordings: the one way a recording leaves the device, each deletion audited.

An SD card fills up (a 20 s recording at 48 kHz is ~2 MB), a test recording or one made on
the wrong patient must go, and a patient may withdraw consent. Deleting has to lose nothing
else and leave nothing half-done, whatever fails or is killed part-way:

1. each file is renamed to ``NAME.wav.deleted`` (the daemon's start-up recovery, which
   re-analyses any ``.wav`` without a record, no longer sees it as a recording);
2. the records go in one transaction, each with an audit-log entry saying what it was and why;
3. the renamed files and their cached pictures are removed.

If step 2 fails, the files are renamed back. After a crash, the daemon's next start finishes
or undoes what it finds (:func:`remove_leftovers`): a ``.deleted`` file whose record is gone
is removed, one whose record is still there (killed between steps 1 and 2) is renamed back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import StorageError
from .records import Recording, RecordStore
from .storage import resolve

log = logging.getLogger(__name__)

DELETED_SUFFIX = ".deleted"
#: A deletion must say why (it stays in the audit log); this short is not a reason.
MIN_REASON_CHARS = 3


def audit_reason(reason: str, deleted: str) -> str:
    """The reason for a deletion, whitespace tidied, as the audit log keeps it; StorageError
    when it is too short to be one (``deleted``: "the recordings are", "the patient is")."""
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON_CHARS:
        raise StorageError(f"say why {deleted} deleted (it is kept in the audit log)")
    return reason


@dataclass(frozen=True)
class Deleted:
    """What a deletion removed."""

    recordings: int
    bytes_freed: int


def delete_recordings(store: RecordStore, recordings_dir: Path, cache_dir: Path,
                      recordings: Sequence[Recording], *, actor: str, reason: str, from_fhir_server: bool) -> Deleted:
    """Delete ``recordings`` (records, files, cached pictures); see the module docstring.
    ``from_fhir_server``: whether the FHIR server deletes them too (:meth:`RecordStore.delete_recordings`)."""
    reason = audit_reason(reason, "the recordings are")
    if not recordings:
        return Deleted(0, 0)
    moved: list[tuple[Path, Path]] = []
    try:
        for rec in recordings:
            path = resolve(recordings_dir, rec.file)
            if path.exists():
                trash = path.with_name(path.name + DELETED_SUFFIX)
                path.rename(trash)
                moved.append((path, trash))
        store.delete_recordings([rec.id for rec in recordings], actor=actor, reason=reason,
                                from_fhir_server=from_fhir_server)
    except (OSError, StorageError) as exc:
        for path, trash in reversed(moved):
            try:
                trash.rename(path)
            except OSError:
                log.error("could not put back %s after a failed deletion", path)
        if isinstance(exc, StorageError):
            raise
        raise StorageError(f"recordings could not be deleted ({exc.strerror}); check the "
                           "permissions of the recordings folder") from None
    freed = 0
    for _, trash in moved:
        try:
            size = trash.stat().st_size
            trash.unlink()
            freed += size
        except OSError as exc:  # removed at the daemon's next start
            log.warning("deleted recording's file %s not removed yet: %s", trash, exc.strerror)
    for sha256 in {rec.sha256 for rec in recordings}:
        if not store.recordings_with_sha256(sha256):  # the same audio uploaded twice keeps its pictures
            for picture in Path(cache_dir).glob(f"{sha256}-*"):
                picture.unlink(missing_ok=True)
    log.info("%s deleted %d recording(s), %.1f MB freed: %s", actor, len(recordings), freed / 1e6, reason)
    return Deleted(len(recordings), freed)


def remove_leftovers(recordings_dir: Path, store: RecordStore) -> tuple[int, int]:
    """Finish or undo deletions a crash interrupted; returns (files removed, files put back)."""
    removed = restored = 0
    base = Path(recordings_dir)
    if not base.exists():
        return 0, 0
    for leftover in base.rglob(f"*{DELETED_SUFFIX}"):
        original = leftover.with_name(leftover.name[: -len(DELETED_SUFFIX)])
        if store.recording_by_file(original.relative_to(base).as_posix()) is not None:
            leftover.rename(original)  # its record never went: the deletion did not happen
            restored += 1
        else:
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed, restored
