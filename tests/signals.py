"""Small, deterministic test signals: synthetic heart sounds, noise and hand-made WAV bytes."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Optional

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def heart_sounds(bpm: float, seconds: float = 20.0, rate: int = 2000, *, noise: float = 0.01,
                 jitter: float = 0.02, seed: int = 0, murmur: float = 0.0) -> np.ndarray:
    """A train of S1/S2 sounds at ``bpm`` (damped low-frequency bursts), float32 in [-1, 1].

    Systole shortens with heart rate as in real hearts (about 0.4 s at 40 bpm, 0.18 s at
    180 bpm). ``murmur`` adds systolic band-limited noise of that amplitude.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros(n)
    cycle = 60.0 / bpm
    systole = 0.08 + 0.22 * cycle if cycle < 1.2 else 0.35
    t = 0.1
    while t < seconds:
        for onset, freq, dur, amp in ((t, 60.0, 0.10, 1.0), (t + systole, 90.0, 0.07, 0.7)):
            start = int(onset * rate)
            k = np.arange(int(dur * rate))
            burst = amp * np.sin(2 * np.pi * freq * k / rate) * np.hanning(k.size)
            end = min(n, start + k.size)
            if start < n:
                out[start:end] += burst[: end - start]
        if murmur:
            start, stop = int((t + 0.1) * rate), int((t + systole - 0.02) * rate)
            stop = min(stop, n)
            if start < stop:
                out[start:stop] += murmur * rng.standard_normal(stop - start) * np.hanning(stop - start)
        t += cycle * (1 + jitter * rng.standard_normal())
    out += noise * rng.standard_normal(n)
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


def pink_noise(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
    x = np.fft.irfft(spectrum, n)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def wav_from_parts(*, fmt: int = 1, channels: int = 1, rate: int = 8000, bits: int = 16,
                   payload: bytes = b"", block_align: Optional[int] = None,
                   extensible: bool = False, riff_size: Optional[int] = None,
                   data_size: Optional[int] = None, extra_chunks: bytes = b"",
                   fmt_first: bool = True) -> bytes:
    """Assemble a WAV file from raw parts, so tests can break any field on purpose."""
    block = channels * bits // 8 if block_align is None else block_align
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt_body = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits, 22,
                               bits, 0) + struct.pack("<H", fmt) + guid_tail
    else:
        fmt_body = struct.pack("<HHIIHH", fmt, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    fmt_chunk = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
    size = len(payload) if data_size is None else data_size
    data_chunk = b"data" + struct.pack("<I", size) + payload + (b"\x00" if len(payload) & 1 else b"")
    body = b"WAVE" + extra_chunks + ((fmt_chunk + data_chunk) if fmt_first else (data_chunk + fmt_chunk))
    total = len(body) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", total) + body


def real_recordings(limit: int = 4, *, label: Optional[str] = None, source: Optional[str] = None):
    """Yield (name, samples, rate) of PhysioNet recordings from ../shared/data when present."""
    labels = SHARED_DATA / "physionet2016" / "labels.csv"
    if not labels.exists():
        return
    import csv

    import soundfile

    count = 0
    with open(labels) as handle:
        for row in csv.DictReader(handle):
            if label and row["label"] != label or source and row["source_set"] != source:
                continue
            if row["sqi"] != "1":
                continue
            samples, rate = soundfile.read(SHARED_DATA / "physionet2016" / row["file"], dtype="float32")
            yield row["file"], samples, rate
            count += 1
            if count >= limit:
                return
