"""The device's state machine: idle -> recording -> analysing -> result -> idle.

Button callbacks, SIGTERM and timers only put events on a queue; one thread runs the cycle,
so every transition happens in one place and is logged. Any failure inside a cycle ends in
the fault state (red LED blinking, message in the journal) and the next press tries again.

Order inside a cycle protects the recording: the WAV is written (atomically) before it is
analysed, and the record is committed after; a recording left without a record by a crash
is found and analysed at the next start (:meth:`Daemon.recover`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import dsp
from dsp.heap import release_freed_heap
from dsp.signal_quality import QUIET_RMS_DBFS, SILENCE

from . import gpio
from .capture import AudioSource, Capture
from .clock import SAME_CLOCK_TOLERANCE_S, clock_reckoned_boot, describe_offset
from .config import Config
from .errors import DeviceError, StorageError
from .power import ADVICE, POLL_SECONDS, PowerWatch
from .records import UNJUDGED_NOTE, RecordStore
from .retention import remove_leftovers
from .sdnotify import Notifier
from .storage import TMP_PREFIX, store_recording
from .visits import CANNOT_JUDGE, Visit

log = logging.getLogger("heartpi.daemon")

PRESS, HOLD, SHUTDOWN = "press", "hold", "shutdown"
IDLE, RECORDING, ANALYSING, RESULT, FAULT = "idle", "recording", "analysing", "result", "fault"
#: A recording's note when the supply sagged while it was made (its page and the exports show it)
SAGGED_NOTE = "the power supply sagged (under-voltage) during this recording"


@dataclass
class CycleResult:
    recording_id: Optional[int]
    label: Optional[str]
    error: Optional[str] = None
    capture_ended_at: Optional[float] = None
    verdict_at: Optional[float] = None


class Daemon:
    def __init__(self, *, config: Config, source: AudioSource, indicator: gpio.Indicator,
                 store: RecordStore, classifier, notifier: Optional[Notifier] = None,
                 clock: Callable[[], float] = time.monotonic,
                 clock_boot: Callable[[], float] = clock_reckoned_boot,
                 power: Optional[PowerWatch] = None) -> None:
        self.config = config
        self.source = source
        self.indicator = indicator
        self.store = store
        self.classifier = classifier
        self.notifier = notifier or Notifier(env={})
        self.clock = clock
        self.clock_boot = clock_boot
        self._clock_boot_seen = clock_boot()
        #: the supply's under-voltage sensor (not watched without one: simulation, tests)
        self.power = power or PowerWatch(None)
        self.events: "queue.Queue[str]" = queue.Queue()
        self.state = IDLE
        self.results: list[CycleResult] = []
        self.cycle_done = threading.Condition()
        self._result_until: Optional[float] = None
        self._last_ping = 0.0
        #: the person being recorded: the protocol's next place, the visit id (device.visits)
        self.visit = Visit(config.protocol, gap_seconds=config.audio.visit_gap_minutes * 60, clock=clock)
        #: set once recovery is done and the daemon waits for the button
        self.started = threading.Event()
        indicator.on_press = lambda: self.events.put(PRESS)
        indicator.on_long_press = lambda: self.events.put(HOLD)

    # -- external controls ----------------------------------------------------------------
    def request_stop(self) -> None:
        """Safe from a signal handler: the current step finishes, then the loop ends."""
        self.events.put(SHUTDOWN)

    # -- state ------------------------------------------------------------------------------
    def _enter(self, state: str, led: str, detail: str = "", flashes: int = 1) -> None:
        log.info("state %s -> %s%s", self.state, state, f" ({detail})" if detail else "")
        self.state = state
        self.indicator.show(led, flashes)
        self.notifier.status(f"{state}{': ' + detail if detail else ''}")
        try:
            self.store.set_status("state", state if not detail else f"{state}: {detail}")
        except DeviceError as exc:  # the database is not what the LEDs depend on
            log.warning("could not record daemon state: %s", exc)

    def _ready(self, detail: str = "") -> None:
        """Idle, waiting for a press; with a protocol of places the light flashes the next one's number."""
        if self.visit.guided:
            self._enter(IDLE, gpio.READY_AT_PLACE, detail, flashes=self.visit.place_number)
        else:
            self._enter(IDLE, gpio.READY, detail)
        if self.visit.sites:
            log.info("%s", self.visit.describe_next())

    def _next_person(self, why: str) -> None:
        self.visit.next_person()
        self._result_until = None
        self._ready(why)

    def _ping(self, force: bool = False) -> None:
        interval = self.notifier.watchdog_interval
        now = self.clock()
        if interval and (force or now - self._last_ping >= interval * 0.9):
            self.notifier.watchdog()
            self._last_ping = now

    def follow_clock_steps(self) -> int:
        """Re-date this boot's recordings when the wall clock has been stepped since they were
        stamped (a time server reached at last, the web page's clock setting, ``date -s``), so
        that all of them agree with the clock as it is now. Within one boot the step is known
        exactly: how far the boot moment, as the wall clock reckons it, has moved. Called
        between events (at least every watchdog interval). Returns how many moved."""
        now_boot = self.clock_boot()
        step = now_boot - self._clock_boot_seen
        if abs(step) <= SAME_CLOCK_TOLERANCE_S:
            return 0
        try:
            moved = self.store.redate_recordings(step, self._clock_boot_seen, actor="daemon")
        except DeviceError as exc:  # tried again at the next event
            log.warning("the clock was stepped but recordings could not be re-dated: %s", exc)
            return 0
        self._clock_boot_seen = now_boot
        log.warning("the wall clock was stepped (it had been %s); %d recording(s) re-dated to match",
                    describe_offset(step), moved)
        return moved

    def watch_power(self) -> Optional[bool]:
        """Poll the supply's under-voltage sensor; a change goes to the journal and to the
        status the Device page shows. Called between events (at least every second when watched)."""
        was_low, sags = self.power.low, self.power.sags
        low = self.power.poll()
        if low is None or (low == was_low and self.power.sags == sags):
            return low
        if low:
            log.warning("under-voltage: the supply sagged below 4.63 V (%d time(s) since start); %s",
                        self.power.sags, ADVICE)
        else:
            log.info("the supply is back above the under-voltage limit")
        self._record_power()
        return low

    def _record_power(self) -> None:
        try:
            self.store.set_status("power", json.dumps(self.power.to_status()))
        except DeviceError as exc:
            log.warning("could not record the power supply's state: %s", exc)

    def _wait_event(self, timeout: Optional[float]) -> Optional[str]:
        limits = [t for t in (self.notifier.watchdog_interval, POLL_SECONDS if self.power.watched else None) if t]
        if limits:
            timeout = min(limits) if timeout is None else min(timeout, *limits)
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        finally:
            self._ping()
            self.follow_clock_steps()
            self.watch_power()

    # -- main loop --------------------------------------------------------------------------
    def run(self) -> int:
        self.watch_power()
        log.info("power supply: %s", self.power.describe())
        self._record_power()
        self.recover()
        self._ready()
        self.notifier.ready(status="ready")
        self._ping(force=True)
        self.started.set()
        try:
            while True:
                deadlines = [t for t in (self._result_until, self.visit.expires_at()) if t is not None]
                timeout = max(0.0, min(deadlines) - self.clock()) if deadlines else None
                event = self._wait_event(timeout)
                if event == SHUTDOWN:
                    break
                if event == PRESS:
                    self._result_until = None
                    self.cycle()
                elif event == HOLD and self.state in (IDLE, RESULT, FAULT):
                    self._next_person("next person: long press")
                if self.visit.expire_if_paused():
                    log.info("no recording for %g minutes: the next press starts a new person",
                             self.config.audio.visit_gap_minutes)
                    if self.state == IDLE:
                        self._ready("next person: pause")
                if self._result_until is not None and self.clock() >= self._result_until:
                    self._result_until = None
                    self._ready()
        finally:
            self.notifier.stopping()
            self.indicator.show(gpio.OFF)
            try:
                self.store.set_status("state", "stopped")
            except DeviceError:
                pass
            log.info("daemon stopped")
        return 0

    def cycle(self) -> CycleResult:
        """One press: record, save, analyse, store, show. Never raises."""
        try:
            result = self._cycle()
        except Exception as exc:  # noqa: BLE001 - any failure becomes the fault state
            message = str(exc) or exc.__class__.__name__
            if not isinstance(exc, (DeviceError, dsp.DSPError)):
                log.exception("unexpected failure in recording cycle")
            self._enter(FAULT, gpio.FAULT, message)
            log.error("fault: %s", message)
            self._result_until = self.clock() + self.config.device.result_hold_seconds
            result = CycleResult(None, None, error=message)
        release_freed_heap()
        with self.cycle_done:
            self.results.append(result)
            self.cycle_done.notify_all()
        return result

    def _record(self) -> tuple[Capture, bool, bool]:
        """Capture in a worker thread while this thread answers the button and the watchdog.

        Returns (capture, cancelled, shutting_down).
        """
        stop = threading.Event()
        box: dict = {}

        def worker() -> None:
            try:
                box["capture"] = self.source.record(self.config.audio.record_seconds, stop)
            except BaseException as exc:  # re-raised in the main thread
                box["error"] = exc

        thread = threading.Thread(target=worker, name="capture", daemon=True)
        thread.start()
        cancelled = shutting_down = False
        while thread.is_alive():
            event = self._wait_event(0.1)
            if event == PRESS:
                log.info("second press: stopping the recording early")
                stop.set()
            elif event == HOLD:
                cancelled = True
                stop.set()
            elif event == SHUTDOWN:
                shutting_down = True
                stop.set()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["capture"], cancelled, shutting_down

    def _cycle(self) -> CycleResult:
        self.visit.expire_if_paused()  # the place the light showed at the press is the one recorded
        self._enter(RECORDING, gpio.RECORDING, self.visit.describe_next() if self.visit.guided else "")
        sags = self.power.sags
        capture, cancelled, shutting_down = self._record()
        ended = self.clock()
        sagged = bool(self.watch_power()) or self.power.sags > sags
        if shutting_down:
            log.warning("stopping during a recording: the unfinished recording is discarded")
            self.events.put(SHUTDOWN)
            return CycleResult(None, None, error="shutdown")
        if cancelled:
            self._ready("recording cancelled")
            return CycleResult(None, None, error="cancelled")
        self._enter(ANALYSING, gpio.ANALYSING)
        wav = dsp.wav_bytes(capture.samples, capture.rate)
        relative, sha = store_recording(self.config.recordings_dir, wav,
                                        min_free_mb=self.config.storage.min_free_mb)
        verdict = self.classifier.classify(capture.samples, capture.rate,
                                           min_seconds=self.config.audio.min_seconds)
        site, visit_id = self.visit.stamp()
        notes = ["stopped early by the button"] if capture.stopped_early else []
        if verdict.left_out_note:
            notes.append(verdict.left_out_note)
        if sagged:
            notes.append(SAGGED_NOTE)
        if self.visit.ends_unjudged(verdict.label, verdict.quality_reasons):
            notes.append(UNJUDGED_NOTE)
        rec_id = self._store_verdict(relative, sha, capture.duration_s, capture.rate, verdict,
                                     overflows=capture.overflows, site=site, visit=visit_id, note="; ".join(notes))
        person = self.visit.recorded(verdict.label, verdict.quality_reasons)
        done = self.clock()
        # after the last of several places the light is the person's: red if any place said refer
        shown = person.verdict if person else verdict.label
        led = {"normal": gpio.NORMAL, "abnormal": gpio.ABNORMAL, CANNOT_JUDGE: gpio.CANNOT_JUDGE}.get(
            shown, gpio.POOR_SIGNAL)
        detail = verdict.text + (f" [{', '.join(verdict.quality_reasons)}]" if verdict.quality_reasons else "")
        if person:
            detail += f"; {person.describe()}"
        self._enter(RESULT, led, detail)
        log.info("recording %d saved as %s: %s, p(abnormal)=%s, %s overflow(s), place %s, visit %s", rec_id,
                 relative, verdict.label, "n/a" if verdict.p_abnormal is None else f"{verdict.p_abnormal:.2f}",
                 capture.overflows, site or "not recorded", visit_id)
        self._warn_if_quiet(rec_id, verdict)
        if sagged:
            log.warning("recording %d: the supply sagged (under-voltage) while recording, which can add hum or "
                        "drop-outs; %s", rec_id, ADVICE)
        self._result_until = self.clock() + self.config.device.result_hold_seconds
        return CycleResult(rec_id, verdict.label, capture_ended_at=ended, verdict_at=done)

    @staticmethod
    def _warn_if_quiet(rec_id: int, verdict) -> None:
        """A journal line for the technician when a recording was captured quietly but not silent
        (silence is a poor signal the health worker already sees): the gain is set too low."""
        rms_dbfs = verdict.level_dbfs
        if rms_dbfs is None or SILENCE in verdict.quality_reasons or rms_dbfs >= QUIET_RMS_DBFS:
            return
        log.warning("recording %d was captured quietly (RMS %.0f dBFS, below %.0f): quiet recordings refer more "
                    "healthy people; raise the capture gain (alsamixer -c N, F4) so that a chest's sound "
                    "reaches %.0f to -15 dBFS", rec_id, rms_dbfs, QUIET_RMS_DBFS, QUIET_RMS_DBFS)

    def _store_verdict(self, relative: str, sha: str, duration_s: float, rate: int, verdict, *,
                       overflows: int = 0, note: str = "", site: Optional[str] = None,
                       visit: Optional[str] = None) -> int:
        return self.store.add_recording(
            file=relative, sha256=sha, duration_s=duration_s, rate=rate, source="device",
            device_id=self.config.device_id, overflows=overflows, note=note, site=site, visit=visit,
            **verdict.stored_fields())

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> int:
        """Remove unfinished temporary files and deleted recordings' leftovers; analyse
        recordings that have no record yet."""
        base = Path(self.config.recordings_dir)
        if not base.exists():
            return 0
        for partial in base.rglob(f"{TMP_PREFIX}*"):
            log.warning("removing unfinished recording %s left by an interrupted write", partial.name)
            partial.unlink(missing_ok=True)
        removed, restored = remove_leftovers(base, self.store)
        if removed or restored:
            log.warning("finished %d and undid %d deletion(s) of recordings that were interrupted", removed, restored)
        recovered = 0
        for path in sorted(base.rglob("*.wav")):
            relative = path.relative_to(base).as_posix()
            if self.store.recording_by_file(relative) is not None:
                continue
            try:
                data = path.read_bytes()
                samples, rate = dsp.read_wav(data, min_seconds=0.0)
                verdict = self.classifier.classify(samples, rate, min_seconds=self.config.audio.min_seconds)
                self._store_verdict(relative, hashlib.sha256(data).hexdigest(), samples.size / rate, rate,
                                    verdict, note="recovered after an interrupted cycle", site=self.config.only_site)
                recovered += 1
                log.warning("recovered recording %s that had no record (interrupted cycle)", relative)
            except (dsp.DSPError, StorageError) as exc:
                log.error("could not recover %s: %s", relative, exc)
        return recovered
