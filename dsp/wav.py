"""Reading and validating WAV files with nothing but :mod:`struct` and numpy.

Why our own parser: the files come from anything (phones, USB stethoscopes, other
software), arrive over a web form, and must never crash the device or make it allocate
more memory than a Raspberry Pi has. :mod:`wave` only reads integer PCM, and
``scipy.io.wavfile`` neither enforces limits nor says what is wrong in words a health
worker can act on. Every problem ends in :class:`~dsp.errors.BadAudioError`.
"""

from __future__ import annotations

import io
import os
import struct
from functools import lru_cache
from typing import BinaryIO, Union

import numpy as np

from .errors import BadAudioError

#: Largest file we accept (bytes). A 2-minute 48 kHz stereo 32-bit file is ~46 MB.
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Sample-rate range accepted. Heart sounds need content up to ~800 Hz, so 2 kHz is the floor.
MIN_RATE_HZ = 2000
MAX_RATE_HZ = 192_000
#: Duration range accepted for a screening recording (the lower end is the shortest clip the
#: quality check looks at: a phone's or another stethoscope's few cardiac cycles).
MIN_DURATION_S = 1.0
MAX_DURATION_S = 180.0
#: More channels than this is not a stethoscope recording.
MAX_CHANNELS = 8

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_ALAW = 0x0006
WAVE_FORMAT_MULAW = 0x0007
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
#: The encodings :func:`read_wav` decodes itself; any other is a compressed WAV for :func:`dsp.read_audio`.
DECODED_HERE = frozenset({WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT, WAVE_FORMAT_ALAW, WAVE_FORMAT_MULAW})
#: Compressed WAV encodings by their format code (RFC 2361): voice recorders' and dictation
#: machines' ADPCM, telephony's GSM and G.72x, MP3 in a WAV.
_ENCODING_NAMES = {0x0002: "MS ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM",
                   0x0020: "Yamaha ADPCM", 0x0022: "TrueSpeech", 0x0031: "GSM 6.10", 0x0045: "G.726 ADPCM",
                   0x0064: "G.726 ADPCM", 0x028F: "G.722 ADPCM", 0x0055: "MP3", 0x0050: "MPEG"}
_RE_EXPORT = "Export or save the recording as an uncompressed WAV (PCM) file and try again."


def sniff_other_format(data: bytes) -> str:
    """Name the audio format of a file that is not a WAV, from its first bytes, or "".

    Phones' voice recorders save M4A (AAC), 3GP or AMR, and stethoscope apps MP3, OGG or
    FLAC: a health worker told which one it is knows what to change in the app, and
    :func:`dsp.read_audio` decodes them.
    """
    head = data[:16]
    if head[4:8] == b"ftyp":
        brand = head[8:11]
        return "3GP phone" if brand.startswith(b"3g") else "M4A/MP4 (AAC)"
    if head.startswith(b"#!AMR"):
        return "AMR phone"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:  # ADTS: MPEG sync, layer 0
        return "AAC"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    if head.startswith(b"OggS"):
        return "OGG (Vorbis/Opus)"
    if head.startswith(b"fLaC"):
        return "FLAC"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head.startswith(b"caff"):
        return "CAF (Apple)"
    if head.startswith(b"riff\x2e\x91\xcf\x11"):  # Sony's Wave64: a WAV for files over 4 GB, GUID chunks
        return "Wave64"
    return ""


class CompressedWavError(BadAudioError):
    """A WAV whose audio is compressed in an encoding :func:`read_wav` does not decode itself.

    Voice recorders and dictation machines save IMA or MS ADPCM in a WAV, telephone-grade
    recorders GSM 6.10: the file is not damaged, and :func:`dsp.read_audio` hands it to FFmpeg's
    decoders (PyAV). Called alone, :func:`read_wav` refuses it with this message.
    """

    def __init__(self, code: int) -> None:
        self.code = code
        #: what to call the file in a message, e.g. "IMA ADPCM WAV"
        self.kind = (f"{_ENCODING_NAMES[code]} WAV" if code in _ENCODING_NAMES
                     else f"WAV (format code 0x{code:04x})")
        encoding = _ENCODING_NAMES.get(code, f"format code 0x{code:04x}")
        super().__init__(f"unsupported WAV encoding ({encoding}). " + _RE_EXPORT)


def with_article(name: str) -> str:
    """"an MP3", "a FLAC": a format's name as a sentence needs it."""
    return ("an " if name[0] in "AEIMO" else "a ") + name


#: Sizes at or above this are the placeholders streaming writers (arecord, sox or espeak-ng to a
#: pipe) leave in the header: "until the end of the file", not a claim about the length. A size of
#: 0 with audio after it means the same: a recorder app writes its header first with zero sizes
#: and fills them in when it stops, so one killed part-way (a flat battery, the app closed)
#: leaves every second it recorded behind a header that claims none. FFmpeg reads those too.
STREAMING_SIZE = 0x7FFF0000

PathOrFile = Union[str, os.PathLike, BinaryIO, bytes]


def read_bytes(source: PathOrFile) -> bytes:
    """The file's bytes, refusing anything over :data:`MAX_FILE_BYTES` before reading it all."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        try:
            size = os.stat(source).st_size
        except FileNotFoundError:
            raise BadAudioError(f"recording not found: {os.fspath(source)}") from None
        except OSError as exc:
            raise BadAudioError(f"recording cannot be opened: {exc.strerror}") from None
        if size > MAX_FILE_BYTES:
            raise BadAudioError(_too_big(size))
        with open(source, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    else:
        data = source.read(MAX_FILE_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise BadAudioError("recording could not be read (not a binary file)")
    if len(data) > MAX_FILE_BYTES:
        raise BadAudioError(_too_big(len(data)))
    return bytes(data)


def _too_big(size: int) -> str:
    return (f"file too large: {size / 1e6:.1f} MB, the limit is {MAX_FILE_BYTES / 1e6:.0f} MB. "
            "Record at most 2 minutes.")


def _parse_fmt(body: bytes) -> tuple[int, int, int, int, int]:
    """Return (format code, channels, rate, block_align, bits) from a fmt chunk body."""
    if len(body) < 16:
        raise BadAudioError("the WAV header is damaged (format chunk too short). " + _RE_EXPORT)
    fmt, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    if fmt == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise BadAudioError("the WAV header is damaged (extensible format chunk too short). "
                                + _RE_EXPORT)
        fmt = struct.unpack("<H", body[24:26])[0]  # first two bytes of the sub-format GUID
    return fmt, channels, rate, block_align, bits


@lru_cache(maxsize=2)
def _g711_table(fmt: int) -> np.ndarray:
    """The linear value, in [-1, 1], of each of the 256 G.711 A-law or mu-law bytes (ITU-T G.711:
    an 8-bit logarithmic code, about 13-14 bits of range), as telephone-grade recorders and some
    stethoscope apps store WAVs."""
    codes = np.arange(256)
    if fmt == WAVE_FORMAT_MULAW:
        u = ~codes & 0xFF
        exponent, mantissa = (u >> 4) & 7, u & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        linear = np.where(u & 0x80, -magnitude, magnitude)
    else:
        a = codes ^ 0x55
        exponent, mantissa = (a >> 4) & 7, a & 0x0F
        magnitude = np.where(exponent == 0, (mantissa << 4) + 8,
                             ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
        linear = np.where(a & 0x80, magnitude, -magnitude)
    table = (linear / 32768.0).astype(np.float32)
    table.setflags(write=False)
    return table


def _decode(raw: bytes, fmt: int, bits: int, channels: int) -> np.ndarray:
    """Decode interleaved frames to float (frames, channels) in [-1, 1]."""
    if fmt == WAVE_FORMAT_PCM:
        if bits == 8:
            data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        elif bits == 16:
            data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        elif bits == 24:
            b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16))
            ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
            data = ints.astype(np.float32) / float(1 << 23)
        elif bits == 32:
            data = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
        else:
            raise BadAudioError(f"unsupported PCM bit depth: {bits}-bit. " + _RE_EXPORT)
    elif fmt == WAVE_FORMAT_IEEE_FLOAT:
        if bits not in (32, 64):
            raise BadAudioError(f"unsupported floating-point bit depth: {bits}-bit. " + _RE_EXPORT)
        data = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8")
        if not np.all(np.isfinite(data)):
            raise BadAudioError("the recording contains invalid samples (NaN or infinity). "
                                "It is damaged; record again.")
        peak = float(np.max(np.abs(data))) if data.size else 0.0
        if peak > 1.0:  # unnormalised float file: scale into range rather than clip
            data = data / peak
        data = data.astype(np.float32)
    else:  # G.711 A-law or mu-law: read_wav sent every encoding not in DECODED_HERE elsewhere
        if bits != 8:
            raise BadAudioError(f"unsupported {_ENCODING_NAMES[fmt]} bit depth: {bits}-bit. " + _RE_EXPORT)
        data = _g711_table(fmt)[np.frombuffer(raw, dtype=np.uint8)]
    return data.reshape(-1, channels)


def read_wav(source: PathOrFile, *, min_seconds: float = MIN_DURATION_S,
             max_seconds: float = MAX_DURATION_S) -> tuple[np.ndarray, int]:
    """Read a WAV file and return ``(samples, rate)``: float32 mono in [-1, 1].

    Accepts PCM 8/16/24/32-bit, IEEE float 32/64, G.711 A-law and mu-law and
    WAVE_FORMAT_EXTENSIBLE, any number of
    channels up to :data:`MAX_CHANNELS` (mixed down by averaging). ``source`` is a path, an
    open binary file or the file's bytes. Every way the file can be unusable raises
    :class:`BadAudioError` with a message a health worker can act on; a compressed WAV (ADPCM,
    GSM, ...) raises its subclass :class:`CompressedWavError`, which :func:`dsp.read_audio` decodes.
    """
    data = read_bytes(source)
    if len(data) == 0:
        raise BadAudioError("the file is empty. Record again.")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        if data[:4] == b"RF64":
            raise BadAudioError("RF64 (very large) WAV files are not supported. " + _RE_EXPORT)
        kind = sniff_other_format(data)
        if kind:
            raise BadAudioError(f"this is {with_article(kind)} recording, not a WAV recording. Use a recorder app or stethoscope "
                                "software that saves WAV, or convert the file to WAV (PCM) and try again.")
        raise BadAudioError("this file is not a WAV recording. " + _RE_EXPORT)
    riff_size = struct.unpack("<I", data[4:8])[0]
    if riff_size >= STREAMING_SIZE or riff_size == 0:
        riff_size = len(data) - 8
    if riff_size + 8 > len(data) + 1:  # +1: some writers omit the final pad byte
        raise BadAudioError("the recording is truncated (the file ends before its declared "
                            "length). Copy it again completely, or record again.")
    end = min(len(data), riff_size + 8)
    pos = 12
    fmt_info = None
    raw = None
    while pos + 8 <= end:
        chunk_id = data[pos:pos + 4]
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body_start = pos + 8
        if chunk_id == b"data" and (size >= STREAMING_SIZE or size == 0):
            size = end - body_start
        if body_start + size > end:
            raise BadAudioError("the recording is truncated (a part of the file is missing). "
                                "Copy it again completely, or record again.")
        body = data[body_start:body_start + size]
        if chunk_id == b"fmt ":
            fmt_info = _parse_fmt(body)
        elif chunk_id == b"data":
            if fmt_info is None:
                raise BadAudioError("the WAV header is damaged (audio data before the format "
                                    "description). " + _RE_EXPORT)
            raw = body
            break
        pos = body_start + size + (size & 1)
    if fmt_info is None:
        raise BadAudioError("the WAV header is damaged (no format description). " + _RE_EXPORT)
    if raw is None:
        raise BadAudioError("the WAV file contains no audio data. Record again.")
    fmt, channels, rate, block_align, bits = fmt_info
    if channels == 0:
        raise BadAudioError("the WAV header is damaged (it declares zero channels). " + _RE_EXPORT)
    check_channels(channels)
    check_rate(rate)
    if fmt not in DECODED_HERE:  # before the sample-size check: ADPCM's 4-bit blocks are no damage
        raise CompressedWavError(fmt)
    if bits == 0 or bits % 8 or block_align != channels * bits // 8:
        raise BadAudioError("the WAV header is damaged (inconsistent sample size). " + _RE_EXPORT)
    usable = len(raw) - len(raw) % block_align  # a partial last frame is dropped
    frames = usable // block_align
    if frames == 0:
        raise BadAudioError("the recording contains no audio. Record again.")
    check_duration(frames / rate, min_seconds, max_seconds)
    samples = _decode(raw[:usable], fmt, bits, channels)
    mono = samples[:, 0] if channels == 1 else samples.mean(axis=1, dtype=np.float64)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def check_channels(channels: int) -> None:
    """The limit on channels, for a WAV and for a decoded recording alike."""
    if channels > MAX_CHANNELS:
        raise BadAudioError(f"the recording has {channels} channels; a stethoscope recording "
                            f"has 1 or 2 (at most {MAX_CHANNELS} accepted).")


def check_rate(rate: int) -> None:
    """The sample-rate range, for a WAV and for a decoded recording alike."""
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise BadAudioError(f"unsupported sample rate: {rate} Hz; use between {MIN_RATE_HZ} and "
                            f"{MAX_RATE_HZ} Hz (for example 4000, 8000 or 44100 Hz).")


def check_duration(duration: float, min_seconds: float, max_seconds: float) -> None:
    """The duration range, for a WAV and for a decoded recording alike."""
    if duration < min_seconds:
        raise BadAudioError(f"recording too short: {duration:.1f} s, need at least "
                            f"{min_seconds:.0f} s. Hold the stethoscope still and record again.")
    if duration > max_seconds:
        raise BadAudioError(f"recording too long: {duration:.0f} s, the limit is "
                            f"{max_seconds:.0f} s. Trim it or record again.")


def write_wav(target: Union[str, os.PathLike, BinaryIO], samples: np.ndarray, rate: int) -> None:
    """Write mono 16-bit PCM. Used for recordings the device makes and for test fixtures."""
    pcm = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0 - 1.0 / 32768)
    payload = (pcm * 32768.0).round().astype("<i2").tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(payload), b"WAVE", b"fmt ", 16,
                         WAVE_FORMAT_PCM, 1, int(rate), int(rate) * 2, 2, 16, b"data", len(payload))
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as handle:
            handle.write(header + payload)
    else:
        target.write(header + payload)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """Return a 16-bit PCM mono WAV as bytes."""
    buffer = io.BytesIO()
    write_wav(buffer, samples, rate)
    return buffer.getvalue()
