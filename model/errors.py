"""Exceptions raised by :mod:`model`: one root, messages a technician can act on."""

from __future__ import annotations


class ModelError(Exception):
    """Root of every error raised by the model package."""


class ModelFileError(ModelError, ValueError):
    """The model file or its metadata is missing, corrupt or does not match."""


class RuntimeMissingError(ModelError, ImportError):
    """Neither TFLite interpreter package is installed."""
