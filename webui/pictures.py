"""Phonocardiogram (SVG) and spectrogram (PNG) pictures, drawn with numpy only.

No matplotlib on a Raspberry Pi: a waveform is a polyline of per-pixel min/max, and a
spectrogram is a colour-mapped array written by a 30-line PNG encoder. Both are cached on
disk by the recording's sha256, so each is computed once.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

import dsp

WIDTH, HEIGHT = 1000, 200


#: What each kind of stretch left out of the verdict (:func:`dsp.left_out_stretches`) is called on the picture.
LEFT_OUT_TITLES = {"lifted": "left out of the verdict: the stethoscope off the skin",
                   "noisy": "left out of the verdict: talking or rubbing"}


def waveform_svg(samples: np.ndarray, rate: int, *, width: int = WIDTH, height: int = HEIGHT) -> str:
    """Band-passed waveform (what a clinician would hear) as an SVG with a seconds axis; the
    stretches the device leaves out of the verdict (:mod:`dsp.interruptions`) shaded grey."""
    raw = dsp.resample(samples, rate, dsp.ANALYSIS_RATE_HZ)
    y = dsp.bandpass(raw, dsp.ANALYSIS_RATE_HZ)  # dsp.to_analysis_rate, keeping its input for the shading below
    peak = float(np.max(np.abs(y))) or 1.0
    columns = np.array_split(y / peak, width)
    top = [float(c.max()) if c.size else 0.0 for c in columns]
    bottom = [float(c.min()) if c.size else 0.0 for c in columns]
    mid = height / 2
    points = [f"{x},{mid - v * (mid - 4):.1f}" for x, v in enumerate(top)]
    points += [f"{x},{mid - v * (mid - 4):.1f}" for x, v in reversed(list(enumerate(bottom)))]
    seconds = y.size / dsp.ANALYSIS_RATE_HZ
    ticks = []
    step = 1 if seconds <= 30 else 5
    for s in np.arange(0, seconds + 1e-9, step):
        x = s / seconds * width
        ticks.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" class="grid"/>'
                     f'<text x="{x + 2:.1f}" y="{height - 4}" class="tick">{s:g} s</text>')
    shaded = [f'<rect class="left-out {kind}" x="{start / seconds * width:.1f}" y="0" '
              f'width="{(end - start) / seconds * width:.1f}" height="{height}"><title>{LEFT_OUT_TITLES[kind]}</title></rect>'
              for start, end, kind in dsp.left_out_stretches(raw, y)]
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'preserveAspectRatio="none" role="img" aria-label="phonocardiogram">'
            f'<style>.grid{{stroke:#ddd;stroke-width:1}}.tick{{font:11px sans-serif;fill:#666}}'
            f'.left-out{{fill:#d9d9d9}}polygon{{fill:#1f5f8b;stroke:#1f5f8b;stroke-width:0.5}}</style>'
            f'<rect width="{width}" height="{height}" fill="#fff"/>{"".join(shaded)}{"".join(ticks)}'
            f'<polygon points="{" ".join(points)}"/></svg>')


# 9-stop approximation of the viridis colour map (perceptually uniform, colour-blind safe)
_STOPS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                   [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]], dtype=np.float64)


def _colormap(values: np.ndarray) -> np.ndarray:
    x = np.clip(values, 0, 1) * (len(_STOPS) - 1)
    low = np.floor(x).astype(int).clip(0, len(_STOPS) - 2)
    frac = (x - low)[..., None]
    return (_STOPS[low] * (1 - frac) + _STOPS[low + 1] * frac).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an (h, w, 3) uint8 array as PNG."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def spectrogram_png(samples: np.ndarray, rate: int, *, fmax: float = 800.0, height: int = 160) -> bytes:
    """Log-power spectrogram 0-800 Hz of the recording at the analysis rate, as PNG."""
    y = dsp.resample(samples, rate, dsp.ANALYSIS_RATE_HZ)
    n_fft, hop = 256, 32
    power = dsp.power_spectrogram(y, n_fft=n_fft, hop_length=hop)
    freqs = np.fft.rfftfreq(n_fft, 1 / dsp.ANALYSIS_RATE_HZ)
    power = power[freqs <= fmax]
    db = dsp.power_to_db(power, ref=float(power.max()) or 1.0, top_db=70)
    norm = (db - db.min()) / max(1e-9, float(db.max() - db.min()))
    rows = np.linspace(0, norm.shape[0] - 1, height).round().astype(int)
    image = norm[rows][::-1]  # low frequencies at the bottom
    return png_bytes(_colormap(image))


def cached(cache_dir: Path, key: str, suffix: str, make) -> Path:
    """Return the cached picture, making it (atomically) the first time."""
    path = Path(cache_dir) / f"{key}{suffix}"
    if not path.exists():
        from device.storage import atomic_write

        data = make()
        atomic_write(path, data.encode() if isinstance(data, str) else data)
    return path
