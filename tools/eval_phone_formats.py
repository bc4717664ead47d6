#!/usr/bin/env python3
"""Does a phone's compression change the verdict?

Every test-split recording (PhysioNet, 2 kHz) is brought to a phone's rate (44.1 kHz; Opus:
48 kHz) as if a phone had recorded it, saved as the WAV and as each compressed format at the
bit rates recorder apps use (FFmpeg's encoders, through PyAV), and as the compressed WAVs voice
recorders save (IMA and MS ADPCM at 44.1 kHz; GSM 6.10 at 8 kHz, against the 8 kHz WAV), decoded again by
``dsp.read_audio`` and classified. Printed per format: how many verdicts differ from the WAV's,
the median / 95th percentile / largest change of P(abnormal), and Se / Sp / MAcc of each
against the labels (the WAV's first). For scale, the same for the WAV started one analysis frame
(16 ms) later: an encoder's start-up delay shifts the sound by about that much (FFmpeg's AAC
encoder writes 1024 samples of priming, which PyAV's muxer does not mark for removal, as phones'
files do), and the network's strided pooling makes its scores move with the start of a
recording. Not a test: it reads the test split (about 5 s per recording on 2 cores).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dsp  # noqa: E402
from model import Classifier  # noqa: E402
from model.metrics import screening_metrics  # noqa: E402
from model.train.dataset import DEFAULT_DATA, model_splits  # noqa: E402
from tests.conftest import encode_compressed  # noqa: E402

#: label -> (container, codec, rate, bit rate)
FORMATS = {
    "M4A (AAC) 64 kbit/s": ("ipod", "aac", 44100, 64000),
    "M4A (AAC) 128 kbit/s": ("ipod", "aac", 44100, 128000),
    "MP3 64 kbit/s": ("mp3", "libmp3lame", 44100, 64000),
    "MP3 128 kbit/s": ("mp3", "libmp3lame", 44100, 128000),
    "OGG (Opus) 32 kbit/s": ("ogg", "libopus", 48000, 32000),
    "OGG (Opus) 64 kbit/s": ("ogg", "libopus", 48000, 64000),
    "FLAC": ("flac", "flac", 44100, 0),
    # voice recorders' and dictation machines' compressed WAVs; GSM is libsndfile's (FFmpeg has no encoder)
    "WAV (IMA ADPCM)": ("wav", "adpcm_ima_wav", 44100, 0),
    "WAV (MS ADPCM)": ("wav", "adpcm_ms", 44100, 0),
    "WAV (GSM 6.10) 8 kHz": ("soundfile", "GSM610", 8000, 0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="about N test recordings, spread over the split (0: all)")
    args = parser.parse_args()
    import soundfile

    classifier = Classifier.load()
    test = model_splits(classifier.metadata, args.data)["test"]
    if args.limit:  # spread over the split (it is ordered by source set and label), not its first N
        test = test[:: -(-len(test) // args.limit)]
    labels = np.array([r.label for r in test], dtype=int)
    wav: dict[int, list] = {44100: [], 48000: [], 8000: []}
    later: list = []  # the 44.1 kHz WAV, one analysis frame (16 ms) later
    coded: dict[str, list] = {name: [] for name in FORMATS}
    for record in test:
        samples, rate = soundfile.read(str(args.data / record.name), dtype="float32")
        for phone_rate in wav:
            audio = dsp.read_audio(dsp.wav_bytes(dsp.resample(samples, rate, phone_rate), phone_rate))
            wav[phone_rate].append(classifier.classify(audio.samples, audio.rate))
            if phone_rate == 44100:
                delay = round(44100 * classifier.params.hop_length / classifier.params.sr)
                later.append(classifier.classify(np.concatenate([np.zeros(delay, np.float32), audio.samples]),
                                                 44100))
        for name, (container, codec, phone_rate, bit_rate) in FORMATS.items():
            at_phone_rate = dsp.resample(samples, rate, phone_rate)
            if container == "soundfile":
                buffer = io.BytesIO()
                soundfile.write(buffer, at_phone_rate, phone_rate, format="WAV", subtype=codec)
                data = buffer.getvalue()
            else:
                data = encode_compressed(at_phone_rate, phone_rate, container, codec, bit_rate=bit_rate or 64000)
            audio = dsp.read_audio(data)
            coded[name].append(classifier.classify(audio.samples, audio.rate))

    def figures(verdicts) -> str:
        """Se/Sp/MAcc of the recordings given a verdict (poor signal counted apart), and AUC."""
        got = [i for i, v in enumerate(verdicts) if v.label != "poor_signal"]
        scores = np.array([verdicts[i].p_abnormal for i in got])
        m = screening_metrics(labels[got], scores >= classifier.threshold, scores, bootstrap=0)
        poor = len(verdicts) - len(got)
        return f"Se {m.sensitivity:.3f} Sp {m.specificity:.3f} MAcc {m.macc:.3f} AUC {m.auc or float('nan'):.3f}, {poor} poor signal"

    print(f"{len(test)} test-split recordings, each as a phone's WAV and compressed, decoded by dsp.read_audio")
    print(f"  {'WAV 44.1 kHz':24} {figures(wav[44100])}")
    print(f"  {'WAV 8 kHz':24} {figures(wav[8000])}")
    for name, verdicts in {"WAV, 16 ms later": later, **coded}.items():
        base = wav[FORMATS[name][2] if name in FORMATS else 44100]
        flips = sum(v.label != b.label for v, b in zip(verdicts, base))
        deltas = np.array([abs(v.p_abnormal - b.p_abnormal) for v, b in zip(verdicts, base)
                           if v.p_abnormal is not None and b.p_abnormal is not None])
        print(f"  {name:24} {flips:3d} verdicts differ from the WAV's; |dP| median {np.median(deltas):.4f} "
              f"p95 {np.percentile(deltas, 95):.4f} max {deltas.max():.4f}; {figures(verdicts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
