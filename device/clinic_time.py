"""The clinic's time: how the web page shows a moment, and where its days begin.

Records hold UTC instants (ISO 8601 ending ``+00:00``), so they sort as text, mean the same on
every device and survive a change of setting. People do not live in UTC. A health worker in
Nairobi writes "10:15" beside a patient's name; the staff who later match recordings to
patients must see 10:15, not 07:15, or a heart is filed under the wrong name. And "today's
recordings", an export "from 1 March" or a screening "on one day" must start at the clinic's
midnight, not at UTC's (03:00 in Nairobi, 05:45 in Kathmandu).

``device.timezone`` names the zone (IANA, as ``timedatectl list-timezones`` prints them);
the system's time-zone database (Debian's ``tzdata``) supplies its rules, summer time included.
"""

from __future__ import annotations

import datetime as _dt
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

UTC = _dt.timezone.utc
#: An example a technician recognises, in every message about a bad zone.
EXAMPLES = "'Africa/Nairobi', 'Asia/Kathmandu' or 'UTC'"


def load_zone(name: str) -> ZoneInfo:
    """The zone called ``name``, or a :class:`ConfigError` a technician can act on."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"device.timezone {name!r} is not a time zone this device knows: use a name such as "
                          f"{EXAMPLES} ('timedatectl list-timezones' lists them; on Debian they come with "
                          "the tzdata package)") from None


def system_zone(root: Path = Path("/")) -> str:
    """The zone the system under ``root`` is set to (``raspi-config``, ``timedatectl
    set-timezone``), as provisioning's default; "UTC" when it names none this device knows."""
    candidates = []
    try:
        candidates.append((root / "etc/timezone").read_text().strip())
    except OSError:
        pass
    try:
        target = str((root / "etc/localtime").readlink())
        candidates.append(target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "")
    except OSError:
        pass
    for name in candidates:
        try:
            load_zone(name)
            return name
        except ConfigError:
            continue
    return "UTC"


@functools.lru_cache(maxsize=4096)
def _day_start(zone: _dt.tzinfo, day: str) -> str:
    """:meth:`ClinicTime.day_start`, remembered: the field results ask for the same few hundred
    days thousands of times, and each answer costs a zone lookup."""
    # midnight; where summer time starts at midnight, the first moment after the jump
    start = _dt.datetime.combine(_dt.date.fromisoformat(day), _dt.time(), tzinfo=zone)
    return start.astimezone(UTC).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=8192)
def _local_days_of_utc_date(zone: _dt.tzinfo, utc_date: str) -> tuple[tuple[str, str], ...]:
    """``((from_instant, local_day), ...)`` in time order: the clinic's days that one UTC date
    overlaps (two, or one or three around a change of summer time), each from the instant it
    starts ("" for the one already running at the date's first second)."""
    first = _dt.datetime.fromisoformat(f"{utc_date}T00:00:00+00:00").astimezone(zone).date()
    last = _dt.datetime.fromisoformat(f"{utc_date}T23:59:59+00:00").astimezone(zone).date()
    days = [("", first.isoformat())]
    while first < last:
        first += _dt.timedelta(days=1)
        days.append((_day_start(zone, first.isoformat()), first.isoformat()))
    return tuple(days)


@dataclass(frozen=True)
class ClinicTime:
    """Stored UTC instants shown, and days cut, in the clinic's zone."""

    name: str = "UTC"
    zone: _dt.tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", UTC if self.name == "UTC" else load_zone(self.name))

    def local(self, instant: str) -> _dt.datetime:
        """A stored instant (ISO 8601; one without an offset counts as UTC) in the clinic's zone."""
        moment = _dt.datetime.fromisoformat(instant)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.zone)

    def text(self, instant: str | None, *, seconds: bool = False) -> str:
        """``2026-11-30 10:15`` (or ``10:15:42``), as the clinic's clocks showed it; "–" for none."""
        if not instant:
            return "–"
        try:
            return self.local(instant).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
        except ValueError:  # not an instant at all: show what is stored rather than fail the page
            return instant

    def iso(self, instant: str) -> str:
        """The instant with the clinic's offset, ``2026-11-30T10:15:42+03:00`` (exports)."""
        return self.local(instant).isoformat(timespec="seconds")

    def day(self, instant: str) -> str:
        """The clinic's date (``YYYY-MM-DD``) at a stored instant.

        The field results ask this of every examined recording, so a stored-form instant
        (``YYYY-MM-DDTHH:MM:SS+00:00``) is answered by comparing text with the local days'
        starts within its UTC date, worked out once per date; anything else is converted."""
        if len(instant) == 25 and instant.endswith("+00:00"):
            days = _local_days_of_utc_date(self.zone, instant[:10])  # the first starts at "": always one
            return next(day for start, day in reversed(days) if instant >= start)
        return self.local(instant).date().isoformat()

    def day_start(self, day: Union[str, _dt.date]) -> str:
        """The UTC instant, stored-style, at which the clinic's ``day`` begins: what a filter
        "from this day" compares stored instants with (text order is time order)."""
        return _day_start(self.zone, day if isinstance(day, str) else day.isoformat())

    def day_bound(self, day: str | None) -> str | None:
        """:meth:`day_start` of a date typed in a form or on a command line; None for none
        or for text that is not a date (``YYYY-MM-DD``)."""
        if not day:
            return None
        try:
            return self.day_start(day)
        except ValueError:
            return None

    def day_range(self, since: str | None, until: str | None) -> tuple[str | None, str | None]:
        """:meth:`day_bound` of both ends of a range typed for an export ("from" ``since``,
        "before" ``until``, either may be empty); ValueError naming a text that is not a date,
        where exporting everything instead would be a leak."""
        bounds = self.day_bound(since), self.day_bound(until)
        for day, bound in zip((since, until), bounds):
            if day and bound is None:
                raise ValueError(f"{day!r} is not a date: use YYYY-MM-DD")
        return bounds

    @property
    def is_utc(self) -> bool:
        return self.zone is UTC
