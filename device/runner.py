"""Assemble and run the daemon: real hardware, or a full simulation without any.

Simulation uses gpiozero's ``MockFactory`` for the pins, plays WAV files as the
stethoscope, presses the virtual button (scripted, or from the keyboard when interactive)
and prints LED changes, while writing real records into the configured data folder.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from . import gpio
from .capture import AudioSource, FileSource, PyAudioSource
from .config import Config
from .daemon import FAULT, IDLE, RESULT, Daemon
from .power import PowerWatch
from .records import RecordStore
from .sdnotify import Notifier

log = logging.getLogger("heartpi.daemon")


def default_simulation_input() -> Path:
    from model.classifier import ASSETS

    return ASSETS / "reference"


def build_daemon(config: Config, *, simulate: bool = False, input_path: Optional[Path] = None,
                 realtime: float = 0.0, pin_factory=None, classifier=None,
                 print_leds: bool = False) -> Daemon:
    from model import Classifier

    if simulate and pin_factory is None:
        from gpiozero.pins.mock import MockFactory

        pin_factory = MockFactory()

    def show(state: str) -> None:
        if print_leds:
            place = f" [place {indicator.flashes}]" if state == gpio.READY_AT_PLACE else ""
            print(f"[LEDs] {gpio.PATTERNS[state].words}{place}", flush=True)

    indicator = gpio.Indicator(button_pin=config.gpio.button, green_pin=config.gpio.led_green,
                               red_pin=config.gpio.led_red, amber_pin=config.gpio.led_amber,
                               long_press_seconds=config.gpio.long_press_seconds,
                               pin_factory=pin_factory, on_change=show)
    source: AudioSource
    if simulate:
        source = FileSource.from_path(input_path or default_simulation_input(), realtime=realtime)
    else:
        source = PyAudioSource(config.audio.card, config.audio.sample_rate, config.audio.frames_per_buffer)
    store = RecordStore(config.database_path)
    classifier = classifier or Classifier.load(config.model_file, calibration=config.calibration_file)
    return Daemon(config=config, source=source, indicator=indicator, store=store,
                  classifier=classifier, notifier=Notifier(), power=None if simulate else PowerWatch.find())


def press_button(daemon: Daemon, hold_seconds: float = 0.05) -> None:
    """Press and release the (mock) button pin."""
    pin = daemon.indicator.button.pin
    pin.drive_low()
    time.sleep(hold_seconds)
    pin.drive_high()


def _scripted_presses(daemon: Daemon, presses: int, stop_after: bool = True,
                      then_keyboard: bool = False) -> None:
    daemon.started.wait()
    for _n in range(presses):
        while daemon.state not in (IDLE, RESULT, FAULT):
            time.sleep(0.02)
        with daemon.cycle_done:
            before = len(daemon.results)
            press_button(daemon)
            daemon.cycle_done.wait_for(lambda: len(daemon.results) > before)
    if then_keyboard:
        _keyboard(daemon)
    elif stop_after:
        daemon.request_stop()


def _keyboard(daemon: Daemon) -> None:
    daemon.started.wait()
    print("Simulated HeartPi: Enter = press the button, h = long press (cancel, or next person), q = quit", flush=True)
    for line in sys.stdin:
        command = line.strip().lower()
        if command == "q":
            break
        if command == "h":
            press_button(daemon, daemon.config.gpio.long_press_seconds + 0.3)
        else:
            press_button(daemon)
    daemon.request_stop()


def warn_if_clock_unset(now: Optional[float] = None) -> bool:
    """Log a warning a technician can act on when the clock cannot be right (a Raspberry Pi
    without internet starts at its last saved time or at 1970): recordings would be dated
    wrongly. Returns True when it warned."""
    from .clock import clock_is_plausible, iso_utc

    now = time.time() if now is None else now
    if clock_is_plausible(now):
        return False
    log.warning("the system clock reads %s, which cannot be right: recordings will carry wrong dates "
                "until it is set (web page: Device, 'Set the device clock', or connect to the internet)",
                iso_utc(now))
    return True


def run_daemon(config: Config, *, simulate: bool = False, input_path: Optional[Path] = None,
               presses: Optional[int] = None, realtime: Optional[float] = None,
               interactive: Optional[bool] = None, keep_running: bool = False) -> int:
    """Run until SIGTERM/SIGINT (or, simulated, until the scripted presses are done), holding
    the data folder so that a restore from a backup cannot swap the database underneath."""
    from .backup import data_dir_in_use

    with data_dir_in_use(config):
        return _run_daemon(config, simulate=simulate, input_path=input_path, presses=presses,
                           realtime=realtime, interactive=interactive, keep_running=keep_running)


def _run_daemon(config: Config, *, simulate: bool, input_path: Optional[Path], presses: Optional[int],
                realtime: Optional[float], interactive: Optional[bool], keep_running: bool) -> int:
    log.info("HeartPi daemon starting (device %s, %s)\n%s", config.device_id,
             "simulation" if simulate else "hardware", config.describe())
    warn_if_clock_unset()
    if realtime is None:
        realtime = 0.0 if presses is not None else 1.0
    daemon = build_daemon(config, simulate=simulate, input_path=input_path, realtime=realtime,
                          print_leds=simulate)
    if isinstance(daemon.source, PyAudioSource):  # not a simulation
        from .errors import SoundCardError

        try:
            daemon.source.open()
        except SoundCardError as exc:  # keep running: the card may be plugged in later
            log.warning("sound card not ready at start: %s", exc)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: daemon.request_stop())
    if simulate:
        keyboard = interactive if interactive is not None else sys.stdin.isatty()
        if presses is not None:
            threading.Thread(target=_scripted_presses, daemon=True,
                             args=(daemon, presses, not keep_running, keyboard and keep_running)).start()
        elif keyboard:
            threading.Thread(target=_keyboard, args=(daemon,), daemon=True).start()
    try:
        return daemon.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        daemon.source.close()
        daemon.indicator.close()
        daemon.store.close()
