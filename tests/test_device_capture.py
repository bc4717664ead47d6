"""Capture through real PyAudio against an ALSA file-plugin device; file source; storage."""

from __future__ import annotations

import errno
import threading

import numpy as np
import pytest

from device.capture import FileSource, OverflowCounter, PyAudioSource
from device.errors import SoundCardError, StorageError
from device.storage import TMP_PREFIX, atomic_write, resolve, store_recording


def test_pyaudio_records_exactly_what_the_card_delivers(alsa_device):
    source = PyAudioSource("stetho", 48000, 1024)
    try:
        capture = source.record(2.0, threading.Event())
    finally:
        source.close()
    assert capture.rate == 48000 and capture.overflows == 0 and not capture.stopped_early
    assert capture.samples.size == 96000
    np.testing.assert_allclose(capture.samples, alsa_device[:96000], atol=1 / 32768)


def test_pyaudio_opens_at_the_configured_rate_when_supported(alsa_device):
    source = PyAudioSource("stetho", 44100, 512)
    try:
        source.open()
        assert source.rate == 44100 and "stetho" in source.name
    finally:
        source.close()


def test_the_nearest_supported_rate_is_chosen():
    """PortAudio answers is_format_supported with ValueError for rates a card refuses."""
    import pyaudio

    class Card:
        def is_format_supported(self, rate, **kwargs):
            if rate not in (44100, 16000):
                raise ValueError("Invalid sample rate")
            return True

    source = PyAudioSource("usb", 47000)
    source.device_index = 1
    assert source._pick_rate(Card(), pyaudio) == 44100
    source.wanted_rate = 12000
    assert source._pick_rate(Card(), pyaudio) == 16000

    class Deaf:
        def is_format_supported(self, rate, **kwargs):
            raise ValueError("Invalid sample rate")

    with pytest.raises(SoundCardError, match="supports none of the rates"):
        source._pick_rate(Deaf(), pyaudio)


def test_missing_sound_card_lists_the_cards_found(alsa_device):
    with pytest.raises(SoundCardError) as info:
        PyAudioSource("Littmann 3200", 48000).open()
    message = str(info.value)
    assert "no sound card matching 'Littmann 3200'" in message and "stetho" in message
    with pytest.raises(SoundCardError, match="index 99 not found"):
        PyAudioSource(99, 48000).open()


def test_overflow_flags_are_counted_not_dropped():
    import pyaudio

    counter = OverflowCounter(pyaudio, frames_wanted=3000)
    chunk = b"\x01\x00" * 1000
    assert counter(chunk, 1000, {}, 0)[1] == pyaudio.paContinue
    assert counter(chunk, 1000, {}, pyaudio.paInputOverflow)[1] == pyaudio.paContinue
    assert counter(chunk, 1000, {}, pyaudio.paInputOverflow | pyaudio.paInputUnderflow)[1] == pyaudio.paComplete
    assert counter.overflows == 2 and counter.frames == 3000 and len(counter.chunks) == 3


def test_file_source_cycles_and_stops_early(tmp_path):
    import dsp
    from tests.signals import heart_sounds

    for n in range(2):
        dsp.write_wav(tmp_path / f"{n}.wav", heart_sounds(60 + 20 * n, 10.0), 2000)
    source = FileSource.from_path(tmp_path, realtime=0.0)
    first = source.record(5.0, threading.Event())
    assert first.samples.size == 10000 and first.source == "file:0.wav"
    assert source.record(5.0, threading.Event()).source == "file:1.wav"
    realtime = FileSource.from_path(tmp_path, realtime=10.0)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    capture = realtime.record(10.0, stop)
    assert capture.stopped_early and 0 < capture.duration_s < 10.0


def test_atomic_write_and_disk_full(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b.wav"
    atomic_write(target, b"RIFF1234")
    assert target.read_bytes() == b"RIFF1234"
    import device.storage as storage

    real_write = storage.os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "write", full)
    with pytest.raises(StorageError, match="disk full"):
        atomic_write(tmp_path / "c.wav", b"x" * 100)
    monkeypatch.setattr(storage.os, "write", real_write)
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*")) and not (tmp_path / "c.wav").exists()


def test_store_recording_refuses_when_reserve_would_be_used(tmp_path):
    with pytest.raises(StorageError, match="disk almost full"):
        store_recording(tmp_path, b"x" * 10, min_free_mb=10 ** 9)
    relative, sha = store_recording(tmp_path, b"RIFF" + b"\0" * 40)
    assert resolve(tmp_path, relative).exists() and len(sha) == 64
    with pytest.raises(StorageError, match="outside"):
        resolve(tmp_path, "../../etc/passwd")
