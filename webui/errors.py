"""Exceptions raised by :mod:`webui`."""

from __future__ import annotations


class WebError(Exception):
    """Root of every error raised by the web UI package."""


class SetupError(WebError, RuntimeError):
    """The web page cannot start (no secret key file writable, bad TLS files...)."""
