#!/usr/bin/env python3
"""Write the bundled reference recordings (first 20 s, 16-bit WAV) from ../shared/data.

Usage: tools/make_reference.py LABEL:SOURCE_FILE ...  e.g. normal:training-e/e00310.flac
They come from the held-out test split; see model/assets/reference/ATTRIBUTION.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dsp  # noqa: E402
from model.train.dataset import DEFAULT_DATA  # noqa: E402

OUT = ROOT / "model" / "assets" / "reference"


def main(specs: list[str]) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        label, name = spec.split(":", 1)
        samples, rate = soundfile.read(DEFAULT_DATA / "physionet2016" / name, dtype="float32")
        target = OUT / f"{label}-{Path(name).stem}.wav"
        dsp.write_wav(target, samples[: 20 * rate], rate)
        print(target.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
