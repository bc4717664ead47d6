"""Button and LEDs through gpiozero.

The pin factory comes from gpiozero's own configuration (``GPIOZERO_PIN_FACTORY``), or is
passed in: tests and the simulation use ``MockFactory``. Nothing is probed at import time.

A short press acts on *release* (so a long press is never mistaken for one); holding the
button for ``long_press_seconds`` cancels a recording, or clears a result and starts the next
person (:mod:`device.visits`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Optional

log = logging.getLogger(__name__)

READY = "ready"
READY_AT_PLACE = "ready_at_place"
RECORDING = "recording"
ANALYSING = "analysing"
NORMAL = "normal"
ABNORMAL = "abnormal"
POOR_SIGNAL = "poor_signal"
CANNOT_JUDGE = "cannot_judge"
FAULT = "fault"
OFF = "off"


@dataclass(frozen=True)
class Pattern:
    """One LED's behaviour: steady on, or blinking with on/off times (seconds); with a
    ``period``, a group of flashes (as many as ``Indicator.show`` is given) once per period.
    ``also``: other LEDs lit steady beside it (two results at once, read by the lights' places)."""

    led: str                      # green | amber | red
    on_time: Optional[float] = None
    off_time: Optional[float] = None
    period: Optional[float] = None
    also: tuple[str, ...] = ()

    @property
    def steady(self) -> bool:
        return self.on_time is None

    def flash_timing(self) -> tuple[float, float]:
        """(on, off) seconds of one flash of a blinking pattern."""
        if self.on_time is None or self.off_time is None:
            raise ValueError(f"the {self.led} LED's pattern is steady, not blinking")
        return self.on_time, self.off_time


@dataclass(frozen=True)
class LightState:
    """What one state shows and what it tells the health worker. The web page's guide and the
    README's table are made from these (a test holds the README to them), so the words can
    never drift from what the LEDs do."""

    pattern: Optional[Pattern]
    lights: str    # what is seen, e.g. "green flashes every 3 s"
    meaning: str
    action: str    # what the health worker does next
    result: bool = False  # one of the three verdicts (shown in bold)

    @property
    def words(self) -> str:
        """One line for logs and the simulation's console."""
        return f"{self.lights}: {self.meaning}; {self.action}"


#: What the health worker sees, in the order a recording goes through them.
PATTERNS: dict[str, LightState] = {
    READY: LightState(Pattern("green", 0.1, 2.9), "green flashes every 3 s", "ready",
                      "press the button once to start recording"),
    READY_AT_PLACE: LightState(Pattern("green", 0.2, 0.3, period=3.0), "green flashes 1 to 4 times every 3 s",
                               "ready for place 1 to 4 of the clinic's protocol (guide)",
                               "stethoscope on that place, press once; hold to start the next person"),
    RECORDING: LightState(Pattern("green", 0.5, 0.5), "green blinks every second", "recording",
                          "hold the stethoscope still on the chest; press again to stop early"),
    ANALYSING: LightState(Pattern("amber", 0.15, 0.15), "amber flickers", "analysing", "wait a moment"),
    NORMAL: LightState(Pattern("green"), "green steady", "normal",
                       "nothing more; symptoms still need a clinician", result=True),
    ABNORMAL: LightState(Pattern("red"), "red steady", "abnormal: refer",
                         "refer the person to a clinician", result=True),
    POOR_SIGNAL: LightState(Pattern("amber"), "amber steady", "poor signal: record again",
                            "quiet room, stethoscope firmly on the chest, record again", result=True),
    CANNOT_JUDGE: LightState(Pattern("amber", also=("red",)), "amber and red steady",
                             "poor signal 3 times in a row: the box cannot judge this person",
                             "refer the person to a clinician; the next press is the next person", result=True),
    FAULT: LightState(Pattern("red", 0.2, 0.2), "red blinks fast", "fault (no sound card, disk full...)",
                      "call the technician; the next press tries again"),
    OFF: LightState(None, "all off", "HeartPi is not running", "call the technician"),
}


class Indicator:
    """Three LEDs and one button; ``show(state)`` sets the LED pattern for a state."""

    def __init__(self, *, button_pin: int, green_pin: int, red_pin: int, amber_pin: int,
                 long_press_seconds: float = 2.0, pin_factory=None,
                 on_change: Optional[Callable[[str], None]] = None) -> None:
        from gpiozero import LED, Button

        self.leds = {
            "green": LED(green_pin, pin_factory=pin_factory),
            "red": LED(red_pin, pin_factory=pin_factory),
            "amber": LED(amber_pin, pin_factory=pin_factory),
        }
        self.button = Button(button_pin, pull_up=True, hold_time=long_press_seconds,
                             pin_factory=pin_factory)
        self.state = OFF
        self.flashes = 0
        self._on_change = on_change
        self._group_stop: Optional[threading.Event] = None
        self._group_thread: Optional[threading.Thread] = None
        self._held = False
        self.on_press: Callable[[], None] = lambda: None
        self.on_long_press: Callable[[], None] = lambda: None
        self.button.when_held = self._held_cb
        self.button.when_released = self._released_cb
        self.button.when_pressed = self._pressed_cb

    def _pressed_cb(self) -> None:
        self._held = False

    def _held_cb(self) -> None:
        self._held = True
        self.on_long_press()

    def _released_cb(self) -> None:
        if not self._held:
            self.on_press()
        self._held = False

    def show(self, state: str, flashes: int = 1) -> None:
        """Set the LEDs for ``state``; ``flashes``: how many in each group of a grouped pattern
        (the place number of :data:`READY_AT_PLACE`)."""
        if state not in PATTERNS:
            raise ValueError(f"unknown LED state {state!r}")
        pattern = PATTERNS[state].pattern
        if pattern is not None and pattern.period is not None:
            on, off = pattern.flash_timing()
            most = int((pattern.period - off) // (on + off))
            if not 1 <= flashes <= most:
                raise ValueError(f"{state} shows 1 to {most} flashes, not {flashes}")
        else:
            flashes = 1
        if state == self.state and flashes == self.flashes:
            return
        self._stop_group()
        for name, led in self.leds.items():
            if pattern is None or name not in (pattern.led, *pattern.also):
                led.off()
        if pattern is not None:
            for name in pattern.also:
                self.leds[name].on()
            led = self.leds[pattern.led]
            if pattern.steady:
                led.on()
            elif pattern.period is not None:
                self._start_group(led, pattern, flashes)
            else:
                led.blink(on_time=pattern.on_time, off_time=pattern.off_time)
        log.info("LEDs: %s%s (%s)", state, f" x{flashes}" if pattern and pattern.period else "",
                 PATTERNS[state].words)
        self.state, self.flashes = state, flashes
        if self._on_change:
            self._on_change(state)

    def _start_group(self, led, pattern: Pattern, flashes: int) -> None:
        """Flash ``led`` ``flashes`` times, rest for the period's remainder, and again, in a
        thread of its own (gpiozero's ``blink`` has no groups), until :meth:`_stop_group`."""
        stop = threading.Event()
        on, off = pattern.flash_timing()
        rest = (pattern.period or 0.0) - flashes * (on + off)

        def run() -> None:
            while not stop.is_set():
                for _ in range(flashes):
                    led.on()
                    if stop.wait(on):
                        break
                    led.off()
                    if stop.wait(off):
                        break
                else:
                    stop.wait(rest)

        self._group_stop = stop
        self._group_thread = threading.Thread(target=run, name="led-flashes", daemon=True)
        self._group_thread.start()

    def _stop_group(self) -> None:
        if self._group_thread is not None and self._group_stop is not None:  # set and cleared together
            self._group_stop.set()
            self._group_thread.join()
            self._group_thread = self._group_stop = None

    def close(self) -> None:
        self._stop_group()
        for led in self.leds.values():
            led.close()
        self.button.close()
