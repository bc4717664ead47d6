"""Button and LEDs through gpiozero.

The pin factory comes from gpiozero's own configuration (``GPIOZERO_PIN_FACTORY``), or is
passed in: tests and the simulation use ``MockFactory``. Nothing is probed at import time.

A short press acts on *release* (so a long press is never mistaken for one); holding the
button for ``long_press_seconds`` cancels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

log = logging.getLogger(__name__)

READY = "ready"
RECORDING = "recording"
ANALYSING = "analysing"
NORMAL = "normal"
ABNORMAL = "abnormal"
POOR_SIGNAL = "poor_signal"
FAULT = "fault"
OFF = "off"


@dataclass(frozen=True)
class Pattern:
    """One LED's behaviour: steady on, or blinking with on/off times (seconds)."""

    led: str                      # green | amber | red
    on_time: Optional[float] = None
    off_time: Optional[float] = None

    @property
    def steady(self) -> bool:
        return self.on_time is None


#: What the health worker sees; the README's table is written from this.
PATTERNS: dict[str, tuple[Optional[Pattern], str]] = {
    READY: (Pattern("green", 0.1, 2.9), "green flashes every 3 s: ready, press the button to record"),
    RECORDING: (Pattern("green", 0.5, 0.5), "green blinks every second: recording, hold the stethoscope still"),
    ANALYSING: (Pattern("amber", 0.15, 0.15), "amber flickers: analysing, wait"),
    NORMAL: (Pattern("green"), "green steady: normal"),
    ABNORMAL: (Pattern("red"), "red steady: abnormal, refer the patient"),
    POOR_SIGNAL: (Pattern("amber"), "amber steady: poor signal, record again"),
    FAULT: (Pattern("red", 0.2, 0.2), "red blinks fast: fault (no sound card, disk full...), call the technician"),
    OFF: (None, "all off: HeartPi is not running"),
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
        self._on_change = on_change
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

    def show(self, state: str) -> None:
        if state not in PATTERNS:
            raise ValueError(f"unknown LED state {state!r}")
        pattern, meaning = PATTERNS[state]
        for name, led in self.leds.items():
            if pattern is None or name != pattern.led:
                led.off()
        if pattern is not None:
            led = self.leds[pattern.led]
            if pattern.steady:
                led.on()
            else:
                led.blink(on_time=pattern.on_time, off_time=pattern.off_time)
        if state != self.state:
            log.info("LEDs: %s (%s)", state, meaning)
            self.state = state
            if self._on_change:
                self._on_change(state)

    def close(self) -> None:
        for led in self.leds.values():
            led.close()
        self.button.close()
