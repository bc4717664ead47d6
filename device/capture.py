"""Audio capture: PyAudio from a USB sound card, or WAV files for simulation and tests.

Both sources have the same interface: ``record(seconds, stop) -> Capture``. PyAudio is
imported when a source is opened, never at import time, so importing :mod:`device` probes
no hardware.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Protocol, Sequence, Union

import numpy as np

import dsp

from .errors import SoundCardError

log = logging.getLogger(__name__)
#: Rates tried, nearest to the configured one first, when the card refuses it.
STANDARD_RATES = (48000, 44100, 32000, 22050, 16000, 11025, 8000, 96000)


@dataclass(frozen=True)
class Capture:
    samples: np.ndarray   # float32 mono in [-1, 1]
    rate: int
    overflows: int        # buffers the card overran (samples were lost there)
    stopped_early: bool
    source: str

    @property
    def duration_s(self) -> float:
        return self.samples.size / float(self.rate)


class AudioSource(Protocol):
    name: str

    def record(self, seconds: float, stop: threading.Event) -> Capture: ...

    def close(self) -> None: ...


def _pa_module():
    try:
        import pyaudio
    except ImportError as exc:  # pragma: no cover - installed with the package
        raise SoundCardError(f"PyAudio is not installed ({exc}); reinstall HeartPi") from None
    return pyaudio


def list_input_devices(pa) -> list[dict]:
    devices = []
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        if int(info.get("maxInputChannels", 0)) > 0:
            devices.append(info)
    return devices


class OverflowCounter:
    """PyAudio stream callback that keeps the audio and counts overrun buffers."""

    def __init__(self, pyaudio_module, frames_wanted: int) -> None:
        self._pa = pyaudio_module
        self.frames_wanted = frames_wanted
        self.chunks: list[bytes] = []
        self.frames = 0
        self.overflows = 0
        self.done = threading.Event()

    def __call__(self, in_data, frame_count, time_info, status_flags):
        if status_flags & self._pa.paInputOverflow:
            self.overflows += 1
        self.chunks.append(in_data)
        self.frames += frame_count
        if self.frames >= self.frames_wanted:
            self.done.set()
            return (None, self._pa.paComplete)
        return (None, self._pa.paContinue)


class PyAudioSource:
    """Records mono 16-bit audio from one input device."""

    def __init__(self, card: Union[str, int] = "", rate: int = 48000, frames_per_buffer: int = 1024) -> None:
        self.card = card
        self.wanted_rate = int(rate)
        self.frames_per_buffer = int(frames_per_buffer)
        self._pa = None
        self.device_index: Optional[int] = None
        self.rate: Optional[int] = None
        self.name = "sound card"

    def open(self) -> "PyAudioSource":
        """Find the card and a rate it supports; SoundCardError listing the cards otherwise."""
        if self._pa is not None:
            return self
        pyaudio = _pa_module()
        pa = pyaudio.PyAudio()
        try:
            inputs = list_input_devices(pa)
            found = ", ".join(f"[{d['index']}] {d['name']}" for d in inputs) or "none"
            if self.card == "" or self.card is None:
                try:
                    info = pa.get_default_input_device_info()
                except (IOError, OSError):
                    raise SoundCardError(f"no sound card for recording was found (input devices: "
                                         f"{found}); plug in the USB stethoscope or sound card") from None
            elif isinstance(self.card, int):
                matches = [d for d in inputs if d["index"] == self.card]
                if not matches:
                    raise SoundCardError(f"sound card index {self.card} not found; input devices: {found}")
                info = matches[0]
            else:
                matches = [d for d in inputs if str(self.card).lower() in d["name"].lower()]
                if not matches:
                    raise SoundCardError(f"no sound card matching {self.card!r}; input devices: {found}. "
                                         "Check the USB cable or set audio.card in heartpi.toml")
                info = matches[0]
            self.device_index = int(info["index"])
            self.name = str(info["name"])
            self.rate = self._pick_rate(pa, pyaudio)
        except BaseException:
            pa.terminate()
            raise
        self._pa = pa
        log.info("sound card: [%d] %s at %d Hz", self.device_index, self.name, self.rate)
        return self

    def _pick_rate(self, pa, pyaudio) -> int:
        candidates = sorted(set(STANDARD_RATES) | {self.wanted_rate}, key=lambda r: abs(r - self.wanted_rate))
        for rate in candidates:
            try:
                if pa.is_format_supported(rate, input_device=self.device_index, input_channels=1,
                                          input_format=pyaudio.paInt16):
                    return rate
            except ValueError:
                continue
        raise SoundCardError(f"sound card {self.name!r} supports none of the rates "
                             f"{', '.join(map(str, candidates))} Hz in mono 16-bit")

    def record(self, seconds: float, stop: threading.Event) -> Capture:
        self.open()
        pa, rate = self._pa, self.rate
        assert pa is not None and rate is not None  # open() sets both or raises
        pyaudio = _pa_module()
        wanted = int(round(seconds * rate))
        counter = OverflowCounter(pyaudio, wanted)
        try:
            stream = pa.open(format=pyaudio.paInt16, channels=1, rate=rate, input=True,
                                   input_device_index=self.device_index,
                                   frames_per_buffer=self.frames_per_buffer, stream_callback=counter)
        except (IOError, OSError) as exc:
            self.close()  # re-enumerate the cards at the next press: it may have been replugged
            raise SoundCardError(f"sound card {self.name!r} could not be opened for recording ({exc}); "
                                 "unplug and replug it") from None
        stopped_early = stalled = False
        deadline = time.monotonic() + seconds + 5.0
        try:
            while not counter.done.is_set():
                if stop.wait(0.05):
                    stopped_early = True
                    break
                if time.monotonic() > deadline:
                    stalled = True
                    break
        finally:
            stream.stop_stream()
            stream.close()
        if stalled:
            self.close()  # re-enumerate the cards at the next press
            raise SoundCardError(f"sound card {self.name!r} stopped delivering audio; unplug and replug it")
        raw = b"".join(counter.chunks)
        samples = np.frombuffer(raw, dtype="<i2")[:wanted].astype(np.float32) / 32768.0
        if counter.overflows:
            log.warning("capture: %d buffer overflow(s); some audio was lost", counter.overflows)
        return Capture(samples, int(rate), counter.overflows, stopped_early, self.name)

    def close(self) -> None:
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


class FileSource:
    """Plays WAV files in order (cycling) as if they were recorded: simulation and tests.

    ``realtime`` is the playback speed: 1.0 takes as long as a real recording, 0 returns at
    once. A second press (``stop``) ends a recording early, as with the real card.
    """

    def __init__(self, files: Sequence[Union[str, Path]], *, realtime: float = 0.0) -> None:
        self.files = [Path(f) for f in files]
        if not self.files:
            raise SoundCardError("simulation needs at least one WAV file to play")
        self.realtime = realtime
        self._next = 0
        self.name = "simulated stethoscope (files)"

    @classmethod
    def from_path(cls, path: Union[str, Path], **kwargs) -> "FileSource":
        path = Path(path)
        files: Iterable[Path] = sorted(path.glob("*.wav")) if path.is_dir() else [path]
        return cls(list(files), **kwargs)

    def record(self, seconds: float, stop: threading.Event) -> Capture:
        path = self.files[self._next % len(self.files)]
        self._next += 1
        samples, rate = dsp.read_wav(path, min_seconds=0.0)
        samples = samples[: int(seconds * rate)]
        stopped_early = False
        if self.realtime > 0:
            duration = samples.size / rate / self.realtime
            start = time.monotonic()
            if stop.wait(duration):
                stopped_early = True
                elapsed = (time.monotonic() - start) * self.realtime
                samples = samples[: int(elapsed * rate)]
        log.info("simulated capture from %s", path.name)
        return Capture(samples, rate, 0, stopped_early, f"file:{path.name}")

    def close(self) -> None:
        pass
