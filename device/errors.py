"""Exceptions raised by :mod:`device`: one root, messages a technician can act on."""

from __future__ import annotations


class DeviceError(Exception):
    """Root of every error raised by the device package."""


class ConfigError(DeviceError, ValueError):
    """The configuration file is invalid; the message names the key and what is allowed."""


class SoundCardError(DeviceError, OSError):
    """The sound card is missing, busy or cannot record at any usable rate."""


class StorageError(DeviceError, OSError):
    """A recording or record could not be stored (disk full, read-only, database locked)."""


class BackupError(DeviceError):
    """A backup could not be made or restored (no space, a damaged archive, HeartPi running)."""
