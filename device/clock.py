"""Setting the device's clock from a browser's, for a box with no battery clock and no internet.

A Raspberry Pi has no real-time clock. After a power cut it starts at the time it last saved
(fake-hwclock) or at 1970, and in a clinic without internet no time server corrects it: every
recording is then stored with a wrong date, in the web page, the exports and the patients'
histories. The phone or laptop that opens the web page does know the time, so the device page
compares the two clocks and lets an administrator send the difference.

The web service cannot set the clock (it runs with no capabilities and ``ProtectClock``), and
must not be able to. It writes a request file; ``heartpi-clock.path`` starts the one-shot
``heartpi-clock.service``, which holds ``CAP_SYS_TIME`` and nothing else, runs
``heartpi clock apply``, and records the outcome for the page to show.

The request carries an *offset* (how far the device is behind), not a time: however long the
request waits for the service, adding the offset to the clock then gives the right time. An
offset fits only the clock it was measured against, so a request is discarded, never applied, when
that clock has changed since: after a restart (the clock starts again from its saved time) or any
other clock change. What tells is the moment of boot as the wall clock reckons it
(:func:`clock_reckoned_boot`), which stays put while nobody touches the clock.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import DeviceError
from .storage import read_json_with_age

log = logging.getLogger(__name__)

REQUEST_FILE = "request.json"
RESULT_FILE = "last.json"
#: Differences below this are not worth setting the clock for (the page's round trip alone
#: takes a fraction of a second).
MIN_CORRECTION_S = 2.0
#: No correct clock reads earlier than this: this software did not exist before it.
EARLIEST_PLAUSIBLE = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
LATEST_PLAUSIBLE = _dt.datetime(2100, 1, 1, tzinfo=_dt.timezone.utc)


class ClockError(DeviceError):
    """A clock change cannot be requested or applied; the message says what to do."""


@dataclass(frozen=True)
class ClockRequest:
    """A clock change waiting for ``heartpi-clock.service``."""

    offset_s: float  #: seconds to add to the device clock
    requested_by: str
    requested_at: str  #: the device's own (wrong) time when it was asked, ISO 8601 UTC
    booted_at: float = 0.0  #: :func:`clock_reckoned_boot` when the offset was measured


@dataclass(frozen=True)
class ClockResult:
    """What the last ``heartpi clock apply`` did, for the device page."""

    ok: bool
    offset_s: float
    requested_by: str
    applied_at: str  #: device time after the change (or when it failed), ISO 8601 UTC
    message: str


#: How far :func:`clock_reckoned_boot` may move before the clock counts as changed (time
#: servers slew a clock by far less between a request and its application).
SAME_CLOCK_TOLERANCE_S = 5.0


def clock_reckoned_boot(now: Optional[float] = None) -> float:
    """When this boot began, by the wall clock: wall time minus time since boot. Constant
    while the clock runs untouched; moves when the clock is set, and starts anew at a restart."""
    wall = time.time() if now is None else now
    return wall - time.clock_gettime(time.CLOCK_BOOTTIME)


def iso_utc(epoch_s: float) -> str:
    return _dt.datetime.fromtimestamp(epoch_s, _dt.timezone.utc).isoformat(timespec="seconds")


def duration_text(seconds: float) -> str:
    """``"3 h 12 min"``, ``"2 d 4 h"``, ``"40 s"``: a clock's error, as precise as it matters."""
    days, rest = divmod(int(round(abs(seconds))), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    if hours:
        parts.append(f"{hours} h")
    if minutes and not days:
        parts.append(f"{minutes} min")
    return " ".join(parts) or f"{secs} s"


def describe_offset(offset_s: float) -> str:
    """``"3 h 12 min behind"`` / ``"40 s ahead"``: how far the device clock is off."""
    return duration_text(offset_s) + (" behind" if offset_s > 0 else " ahead")


def clock_is_plausible(epoch_s: float) -> bool:
    """False for a clock that cannot be right (before this software existed, or absurdly late)."""
    return EARLIEST_PLAUSIBLE.timestamp() <= epoch_s < LATEST_PLAUSIBLE.timestamp()


def request_clock_change(directory: Path, reference_epoch_s: float, *, requested_by: str,
                         now: Callable[[], float] = time.time) -> Optional[ClockRequest]:
    """Ask for the device clock to be set to ``reference_epoch_s`` (a browser's time, now).

    Returns the request written, or None when the clocks already agree within
    :data:`MIN_CORRECTION_S`. Refuses a reference time that cannot be right, so a computer
    with a wrong clock cannot spoil the device's.
    """
    if not clock_is_plausible(reference_epoch_s):
        raise ClockError(f"the time sent ({_readable(reference_epoch_s)}) cannot be right; "
                         "check this computer's date and time, then try again")
    device_now = now()
    offset = reference_epoch_s - device_now
    if abs(offset) < MIN_CORRECTION_S:
        return None
    request = ClockRequest(offset_s=round(offset, 3), requested_by=requested_by,
                           requested_at=iso_utc(device_now), booted_at=round(clock_reckoned_boot(device_now), 3))
    _write_json(directory, REQUEST_FILE, asdict(request))
    log.info("clock change requested by %s: device clock %s", requested_by, describe_offset(offset))
    return request


def pending_request(directory: Path) -> Optional[tuple[ClockRequest, float]]:
    """The request waiting for the service and the file's age in seconds, or None."""
    found = read_json_with_age(directory / REQUEST_FILE)
    if found is None:
        return None
    try:
        return ClockRequest(**found[0]), found[1]
    except TypeError:  # not the fields of a request
        return None


def last_result(directory: Path) -> Optional[ClockResult]:
    try:
        return ClockResult(**json.loads((directory / RESULT_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _set_realtime_clock(epoch_s: float) -> None:
    time.clock_settime(time.CLOCK_REALTIME, epoch_s)


def apply_clock_request(directory: Path, *, set_clock: Callable[[float], None] = _set_realtime_clock,
                        now: Callable[[], float] = time.time,
                        booted_at: Callable[[], float] = clock_reckoned_boot,
                        after_set: Optional[Callable[[float, float], str]] = None) -> Optional[ClockResult]:
    """Apply a waiting request (``heartpi clock apply``); None when there is none.

    The request is removed whatever happens (a path unit would otherwise start the service
    again and again), and the outcome is written where the device page reads it.
    ``after_set(offset, clock_boot)`` runs once the clock is set (``clock_boot``: the
    :func:`clock_reckoned_boot` of the clock that was wrong) and returns words to add to the
    outcome: the caller re-dates the recordings that clock stamped.
    """
    path = directory / REQUEST_FILE
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClockError(f"clock request {path} cannot be read ({exc.strerror}); check the "
                         "permissions of its folder (tmpfiles: heartpi.conf)") from None
    _remove(path)
    try:
        request = ClockRequest(**json.loads(raw))
        offset, measured_at_boot = float(request.offset_s), float(request.booted_at)
    except (ValueError, TypeError):
        result = ClockResult(False, 0.0, "", iso_utc(now()), "the clock request was damaged and was "
                             "removed; send it again from the web page")
        _write_json(directory, RESULT_FILE, asdict(result))
        raise ClockError(result.message) from None
    target = now() + offset
    ok = False
    if abs(measured_at_boot - booted_at()) > SAME_CLOCK_TOLERANCE_S:
        message = ("the device restarted or its clock changed after the request was sent, so the "
                   "difference measured no longer fits; look at the clock and send it again from the web page")
    elif not clock_is_plausible(target):
        message = f"refused to set the clock to {_readable(target)}, which cannot be right"
    else:
        try:
            set_clock(target)
            ok, message = True, f"clock moved {'forward' if offset > 0 else 'back'} by {duration_text(offset)}"
            if after_set:
                message += after_set(offset, measured_at_boot)
        except PermissionError:
            message = ("the clock could not be set: permission denied (heartpi-clock.service needs "
                       "CAP_SYS_TIME; reinstall the units with tools/install-pi.sh)")
        except OSError as exc:
            message = f"the clock could not be set ({exc.strerror or exc})"
    result = ClockResult(ok, offset, request.requested_by, iso_utc(now()), message)
    _write_json(directory, RESULT_FILE, asdict(result))
    if not ok:
        raise ClockError(message)
    log.info("%s at the request of %s; now %s", message, request.requested_by, result.applied_at)
    return result


def _readable(epoch_s: float) -> str:
    try:
        return _dt.datetime.fromtimestamp(epoch_s, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return "an impossible date"


def _write_json(directory: Path, name: str, data: dict) -> None:
    """Atomically (a reader sees the old file or the new, never half of one), group-writable
    so both the web service and the clock service can replace it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle)
            os.chmod(temporary, 0o660)
            os.replace(temporary, directory / name)
        except BaseException:
            _remove(Path(temporary))
            raise
    except OSError as exc:
        raise ClockError(f"cannot write {directory / name} ({exc.strerror}); check that "
                         f"{directory} exists and is writable by the heartpi group") from None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
