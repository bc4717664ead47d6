"""Exceptions raised by :mod:`dsp`.

One root (:class:`DSPError`) so callers can catch everything the DSP layer raises, and
subclasses that also inherit the matching builtin (the gpiozero convention) so code that
expects a ``ValueError`` keeps working.
"""

from __future__ import annotations


class DSPError(Exception):
    """Root of every error raised by the DSP package."""


class BadAudioError(DSPError, ValueError):
    """A recording cannot be used.

    The message is written for the person holding the stethoscope or uploading the file:
    it says what is wrong and what to do about it, never a stack trace or a byte offset.
    """


class ParameterError(DSPError, ValueError):
    """A programming error: a DSP function was called with impossible parameters."""
