"""Recording files: written atomically so a power cut or a kill never leaves half a WAV.

Write to a hidden temporary file in the same folder, fsync it, rename it into place, fsync
the folder. A reader (the web page, an export) sees either no file or the whole file.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Optional

from .errors import StorageError

TMP_PREFIX = ".partial-"


def free_mb(path: Path) -> float:
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 1e6


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (the folder's own metadata)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json_with_age(path: Path) -> Optional[tuple[dict, float]]:
    """A small JSON object one service leaves for another (a request from the web page) and its
    age in seconds; None when it is not there or cannot be read. JSON that is not an object
    reads as an empty one: the file is there (a request is waiting), but it says nothing."""
    path = Path(path)
    try:
        data, age = json.loads(path.read_text()), time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return (data if isinstance(data, dict) else {}), age


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (see module docstring)."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.tmp")  # never *.wav: not a recording yet
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with _suppress():
            tmp.unlink()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError("disk full: the recording could not be saved. Export and delete "
                               "old recordings ('heartpi prune'), or replace the SD card.") from None
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise StorageError(f"cannot write recordings to {path.parent} ({exc.strerror}); "
                               "check the data folder's permissions") from None
        raise StorageError(f"recording could not be saved: {exc.strerror}") from None


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def new_recording_path(recordings_dir: Path, *, prefix: str = "rec",
                       when: Optional[_dt.datetime] = None) -> tuple[Path, str]:
    """A fresh (absolute path, path relative to recordings_dir) by year/month."""
    when = when or _dt.datetime.now(_dt.timezone.utc)
    relative = Path(f"{when:%Y}") / f"{when:%m}" / f"{prefix}-{when:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.wav"
    return Path(recordings_dir) / relative, relative.as_posix()


def store_recording(recordings_dir: Path, data: bytes, *, min_free_mb: float = 0,
                    prefix: str = "rec") -> tuple[str, str]:
    """Save WAV bytes atomically; returns (path relative to recordings_dir, sha256)."""
    if min_free_mb and free_mb(recordings_dir) < min_free_mb + len(data) / 1e6:
        raise StorageError(f"disk almost full ({free_mb(recordings_dir):.0f} MB free, "
                           f"{min_free_mb:.0f} MB kept in reserve): export and delete old "
                           "recordings ('heartpi prune', or Delete on a recording's web page) "
                           "before recording again.")
    path, relative = new_recording_path(recordings_dir, prefix=prefix)
    atomic_write(path, data)
    return relative, hashlib.sha256(data).hexdigest()


def resolve(recordings_dir: Path, relative: str) -> Path:
    """The absolute path of a stored recording, refusing anything outside the folder."""
    base = Path(recordings_dir).resolve()
    path = (base / relative).resolve()
    if base not in path.parents:
        raise StorageError(f"recording path {relative!r} is outside the recordings folder")
    return path
