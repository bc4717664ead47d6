"""The box's power supply, as the Raspberry Pi's firmware sees it: under-voltage.

HeartPi runs all day from a power bank. One that cannot give the current a Raspberry Pi and a
USB stethoscope draw lets the 5 V rail sag (below ~4.63 V: *under-voltage*); the firmware
slows the processor, the USB sound card can drop out or hum, and a write to the SD card can
be lost. Nothing on the box shows it (a Pi's power LED blinks, inside the case), so the
daemon watches it and tells the technician: the journal, the recording's note and the web
page's Device page.

The kernel's ``raspberrypi-hwmon`` driver (loaded on Raspberry Pi OS) asks the firmware every
2 s whether the supply has sagged since it last asked, and shows the answer as
``in0_lcrit_alarm`` of the hwmon device named ``rpi_volt`` (1: under-voltage within about the
last 2 s), besides writing "Undervoltage detected!" to the kernel log. Elsewhere (a laptop, a
simulation) there is no such sensor and the supply is not watched. Nothing here reads
``/sys`` at import time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger("heartpi.power")

#: Where the kernel's hwmon devices appear (tests point this at a scratch tree).
SYS_ROOT = Path("/sys")
#: The hwmon device name of the Raspberry Pi firmware's under-voltage sensor.
SENSOR_NAME = "rpi_volt"
#: How often the daemon reads the alarm while idle (while recording, every 0.1 s): the driver
#: holds each answer for 2 s, so reading every second never misses one.
POLL_SECONDS = 1.0
#: What a technician should do about it, in every message that reports a sag.
ADVICE = ("the power bank or adapter cannot give enough current: use one rated 5 V, 3 A "
          "(the Raspberry Pi's own adapter, or a power bank with a 3 A USB port) and a short, thick cable")


def find_alarm(sys_root: Path = SYS_ROOT) -> Optional[Path]:
    """The ``in0_lcrit_alarm`` file of the ``rpi_volt`` hwmon device, or None if there is none."""
    for device in sorted((sys_root / "class" / "hwmon").glob("hwmon*")):
        try:
            name = (device / "name").read_text().strip()
        except OSError:
            continue
        alarm = device / "in0_lcrit_alarm"
        if name == SENSOR_NAME and alarm.exists():
            return alarm
    return None


@dataclass
class PowerWatch:
    """Counts the supply's sags as seen by polling :data:`SENSOR_NAME`'s alarm.

    A sag is a change of the alarm from 0 to 1; one lasting a minute is one sag. ``alarm`` None
    means not watched (no sensor): every poll then answers None.
    """

    alarm: Optional[Path]
    clock: Callable[[], float] = time.time
    sags: int = 0
    low: bool = False
    last_sag_at: Optional[float] = None
    #: when watching began (the daemon's start): sags count from here
    started_at: float = 0.0
    _unreadable: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.started_at = self.started_at or self.clock()

    @classmethod
    def find(cls, sys_root: Optional[Path] = None, **kwargs) -> "PowerWatch":
        return cls(find_alarm(SYS_ROOT if sys_root is None else sys_root), **kwargs)

    @property
    def watched(self) -> bool:
        return self.alarm is not None

    def poll(self) -> Optional[bool]:
        """Whether the supply is low now (within the driver's last 2 s); None when not watched
        or the sensor cannot be read (said once in the journal, then tried again each poll)."""
        if self.alarm is None:
            return None
        try:
            low = self.alarm.read_text().strip() not in ("", "0")
        except OSError as exc:
            if not self._unreadable:
                log.warning("cannot read the power supply's under-voltage sensor %s: %s", self.alarm, exc)
                self._unreadable = True
            return None
        self._unreadable = False
        if low and not self.low:
            self.sags += 1
            self.last_sag_at = self.clock()
        self.low = low
        return low

    def describe(self) -> str:
        """One line for the daemon's journal."""
        if not self.watched:
            return "not watched: no Raspberry Pi voltage sensor (rpi_volt) here"
        if self.low:
            return f"under-voltage now: {ADVICE}"
        if self.sags:
            return f"under-voltage {self.sags} time(s) since HeartPi started: {ADVICE}"
        return "no under-voltage since HeartPi started"

    def to_status(self) -> dict:
        """What the Device page shows (stored as the daemon's ``power`` status)."""
        return {"watched": self.watched, "low": self.low, "sags": self.sags, "last_sag_at": self.last_sag_at,
                "started_at": self.started_at}
