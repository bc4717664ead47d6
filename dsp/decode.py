"""Recordings that are not WAV: phones' M4A (AAC), 3GP and AMR, stethoscope apps' MP3, OGG or
FLAC, and compressed WAVs (voice recorders' IMA or MS ADPCM, telephone recorders' GSM 6.10),
decoded through PyAV (FFmpeg's decoders, bundled in its wheel).

Why: a clinic's second stethoscope is often a phone, and a phone's voice recorder saves M4A.
Asking staff to convert files on a phone loses recordings. A lossy codec keeps the 25-400 Hz
heart band; what moves a verdict is mostly the codec's start-up delay, a shift the model's
anti-aliased pooling mostly ignores (the tests check that the reference recordings keep their verdicts;
``tools/eval_phone_formats.py`` counts the changes per codec on the test split).

The same limits hold as for WAV (:mod:`dsp.wav`): size, duration, rate and channels, checked
while decoding, so a small file that expands to hours of audio is refused before it fills the
memory. PyAV is imported only when such a file arrives: importing :mod:`dsp` stays cheap, and
a machine without PyAV still reads WAV and says what to do with the rest. Every problem ends
in :class:`~dsp.errors.BadAudioError`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .errors import BadAudioError
from .wav import (MAX_DURATION_S, MIN_DURATION_S, CompressedWavError, PathOrFile, check_channels, check_duration,
                  check_rate, read_bytes, read_wav, sniff_other_format, with_article)

#: Integer sample formats FFmpeg's decoders hand out, and the scale to [-1, 1].
_INTEGER_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


@dataclass(frozen=True)
class Audio:
    """A recording read from a file: float32 mono in [-1, 1] at its own rate, and what it was."""

    samples: np.ndarray
    rate: int
    format: str = "WAV"  #: "WAV", or the compressed format it was decoded from, e.g. "M4A/MP4 (AAC)"

    @property
    def decoded(self) -> bool:
        """True when the file was compressed (so keeping it means writing a WAV of it)."""
        return self.format != "WAV"


def read_audio(source: PathOrFile, *, min_seconds: float = MIN_DURATION_S,
               max_seconds: float = MAX_DURATION_S) -> Audio:
    """Read a WAV, or decode a compressed recording, with the limits of :func:`dsp.read_wav`.

    ``source`` is a path, an open binary file or the file's bytes. A file that is neither WAV
    nor a known audio format gets read_wav's message.
    """
    data = read_bytes(source)
    kind = sniff_other_format(data) if data[:4] not in (b"RIFF", b"RF64") else ""
    if not kind:
        try:
            samples, rate = read_wav(data, min_seconds=min_seconds, max_seconds=max_seconds)
        except CompressedWavError as compressed:  # a voice recorder's ADPCM, a GSM recorder's WAV
            kind = compressed.kind
        else:
            return Audio(samples, rate)
    samples, rate = _decode(data, kind, min_seconds=min_seconds, max_seconds=max_seconds)
    return Audio(samples, rate, kind)


def _decode(data: bytes, kind: str, *, min_seconds: float, max_seconds: float) -> tuple[np.ndarray, int]:
    try:
        import av
    except ImportError:
        raise BadAudioError(f"this is {with_article(kind)} recording, and this HeartPi cannot decode it "
                            "(PyAV is not installed; the technician can install it). Meanwhile convert "
                            "the file to WAV (PCM), or use an app that saves WAV.") from None
    damaged = (f"this {kind} recording is damaged or incomplete and cannot be read. Copy it again "
               "completely, or record again.")
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            audio = container.streams.audio
            stream = audio[0] if audio else None
            if stream is None:
                raise BadAudioError(f"this {kind} file holds no sound (a video without audio?). Record again.")
            if stream.codec_context is None:  # FFmpeg knows no decoder for it
                raise BadAudioError(f"this {kind} recording is in an encoding HeartPi cannot decode. Export or "
                                    "save it as an uncompressed WAV (PCM) file and try again.")
            rate = int(stream.codec_context.sample_rate or 0)
            check_rate(rate)
            chunks: list[np.ndarray] = []
            frames = 0
            limit = int(max_seconds * rate) + 1
            for frame in container.decode(stream):
                if frame.sample_rate != rate:
                    raise BadAudioError(f"this {kind} recording changes its sample rate part-way "
                                        f"({rate} to {frame.sample_rate} Hz). Export it again as WAV.")
                mono = _mono(frame)
                chunks.append(mono)
                frames += mono.size
                if frames > limit:
                    raise BadAudioError(f"recording too long: more than {max_seconds:.0f} s, the limit. "
                                        "Trim it or record again.")
    except BadAudioError:
        raise
    except (av.error.FFmpegError, ValueError, EOFError, IndexError) as exc:  # FFmpeg's own and PyAV's refusals
        raise BadAudioError(damaged) from exc
    if frames == 0:
        raise BadAudioError(f"this {kind} recording contains no audio. Record again.")
    check_duration(frames / rate, min_seconds, max_seconds)
    samples = np.concatenate(chunks)
    if not np.all(np.isfinite(samples)):
        raise BadAudioError(damaged)
    return np.clip(samples, -1.0, 1.0).astype(np.float32), rate


def _mono(frame) -> np.ndarray:
    """One decoded frame as float mono: channels averaged, as :func:`dsp.read_wav` does."""
    channels = len(frame.layout.channels)
    check_channels(channels)  # none at all cannot be reshaped below: a damaged file
    array = frame.to_ndarray()
    if not frame.format.is_planar:  # packed: one row of interleaved samples
        array = array.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")
    if name in _INTEGER_SCALE:
        offset = 128.0 if name == "u8" else 0.0
        array = (array.astype(np.float64) - offset) / _INTEGER_SCALE[name]
    elif name not in ("flt", "dbl"):
        raise BadAudioError(f"the decoder gave an unexpected sample format ({frame.format.name}). "
                            "Export the recording as WAV (PCM) and try again.")
    return array.mean(axis=0, dtype=np.float64).astype(np.float32)

