#!/usr/bin/env python3
"""Benchmark the recording page's listening copies (``dsp.listening``).

1. Making a copy of a 20 s recording, ours (numpy, as on the Pi) against the obvious scipy way in
   the same run (``resample_poly`` to 2 kHz, ``sosfiltfilt`` of the same Butterworth band-pass,
   ``resample_poly`` to 8 kHz, the same level rule), with the largest difference between the two.
2. Through the real Flask app: the first request of a copy (read, filter, cache on disk) and a
   repeat (served from the cache), against serving the recording as captured in the same run;
   and the bytes each sends over the clinic Wi-Fi.

Not a test: run it by hand. Needs scipy (a test dependency; the device path never imports it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PASSWORD = "a long benchmark password"


def scipy_copy(samples: np.ndarray, rate: int, mode: str) -> np.ndarray:
    """The reference: the same copy made with scipy.signal."""
    from math import gcd

    import scipy.signal

    import dsp
    from dsp.listening import loudness_normalise

    band = dsp.LISTENING_MODES[mode]
    g = gcd(rate, dsp.ANALYSIS_RATE_HZ)
    y = scipy.signal.resample_poly(samples.astype(np.float64), dsp.ANALYSIS_RATE_HZ // g, rate // g)
    sos = scipy.signal.butter(4, [band.low_hz, band.high_hz], btype="bandpass", fs=dsp.ANALYSIS_RATE_HZ,
                              output="sos")
    y = scipy.signal.sosfiltfilt(sos, y)
    y = scipy.signal.resample_poly(y, dsp.LISTEN_RATE_HZ // dsp.ANALYSIS_RATE_HZ, 1)
    return loudness_normalise(y.astype(np.float32), dsp.LISTEN_RATE_HZ)


def best_ms(make, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        make()
        best = min(best, time.perf_counter() - began)
    return best * 1000


def test_recording(rate: int) -> np.ndarray:
    """The shipped abnormal example (2 kHz, 20 s) brought to ``rate``, at a USB stethoscope's level."""
    import dsp
    from model.classifier import ASSETS

    samples, source_rate = dsp.read_wav(sorted((ASSETS / "reference").glob("abnormal-*.wav"))[0])
    return 0.05 * dsp.resample(samples[: 20 * source_rate], source_rate, rate)


def bench_copies(repeat: int) -> None:
    import dsp

    print(f"{'listening copy of 20 s':32s} {'ours ms':>8s} {'scipy ms':>9s} {'speed-up':>9s} {'max |diff|':>11s}")
    for rate in (2000, 44100, 48000):
        samples = test_recording(rate)
        for mode in dsp.LISTENING_MODES:
            ours = dsp.listening_copy(samples, rate, mode)
            reference = scipy_copy(samples, rate, mode)
            difference = float(np.max(np.abs(ours - reference)))
            ours_ms = best_ms(lambda: dsp.listening_copy(samples, rate, mode), repeat)
            scipy_ms = best_ms(lambda: scipy_copy(samples, rate, mode), repeat)
            print(f"{f'{rate} Hz, {mode}':32s} {ours_ms:8.1f} {scipy_ms:9.1f} {scipy_ms / ours_ms:8.1f}× "
                  f"{difference:11.1e}")


def bench_web(repeat: int) -> None:
    import dsp
    from device.config import config_from_mapping
    from device.storage import store_recording
    from webui import create_app
    from webui.passwords import hash_password

    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_mapping({"device": {"id": "bench"}, "storage": {"data_dir": tmp}}, env={})
        app = create_app({"TESTING": True, "HEARTPI_CONFIG": config})
        store = app.extensions["heartpi_store"]
        store.add_user(email="admin@bench", password_hash=hash_password(PASSWORD), role="admin", actor="bench")
        client = app.test_client()
        token = client.get("/login", base_url="https://localhost").get_data(as_text=True).split(
            'name="csrf_token" value="', 1)[1].split('"', 1)[0]
        client.post("/login", base_url="https://localhost",
                    data={"email": "admin@bench", "password": PASSWORD, "csrf_token": token})

        def get(url: str) -> bytes:
            response = client.get(url, base_url="https://localhost")
            if response.status_code != 200:
                raise SystemExit(f"{url}: HTTP {response.status_code}")
            return response.get_data()

        print(f"\n{'through the web page, 20 s':32s} {'first ms':>9s} {'cached ms':>10s} {'as captured ms':>15s} "
              f"{'KB sent':>8s} {'captured KB':>12s}")
        for rate in (2000, 48000):
            relative, sha = store_recording(config.recordings_dir, dsp.wav_bytes(test_recording(rate), rate))
            rec_id = store.add_recording(file=relative, sha256=sha, duration_s=20.0, rate=rate, source="device",
                                         device_id="bench", verdict="normal")
            captured = f"/recordings/{rec_id}/audio.wav"
            captured_ms = statistics.median(best_ms(lambda: get(captured), 1) for _ in range(repeat))
            captured_kb = len(get(captured)) / 1024
            for mode in dsp.LISTENING_MODES:
                url = f"/recordings/{rec_id}/listen/{mode}.wav"
                began = time.perf_counter()
                sent = get(url)
                first_ms = (time.perf_counter() - began) * 1000
                cached_ms = statistics.median(best_ms(lambda: get(url), 1) for _ in range(repeat))
                print(f"{f'{rate} Hz, {mode}':32s} {first_ms:9.1f} {cached_ms:10.2f} {captured_ms:15.2f} "
                      f"{len(sent) / 1024:8.0f} {captured_kb:12.0f}")
        store.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    bench_copies(args.repeat)
    bench_web(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
