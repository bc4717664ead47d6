"""read_wav: every supported encoding round-trips; every broken file is a BadAudioError."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsp
from dsp.wav import MAX_FILE_BYTES
from tests.signals import heart_sounds, wav_from_parts

RATE = 4000
SECONDS = 6
REFERENCE = heart_sounds(75, SECONDS, RATE)


def _encode(samples: np.ndarray, bits: int, fmt: int) -> bytes:
    if fmt == 3:
        return samples.astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return (np.round(samples * 127) + 128).astype(np.uint8).tobytes()
    if bits == 16:
        return np.round(samples * 32767).astype("<i2").tobytes()
    if bits == 24:
        ints = np.round(samples * (2 ** 23 - 1)).astype("<i4")
        return b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    return np.round(samples.astype(np.float64) * (2 ** 31 - 1)).astype("<i4").tobytes()


@pytest.mark.parametrize("bits,fmt,tolerance", [(8, 1, 1e-2), (16, 1, 1e-4), (24, 1, 1e-6),
                                                (32, 1, 1e-6), (32, 3, 1e-7), (64, 3, 1e-7)])
@pytest.mark.parametrize("extensible", [False, True])
def test_supported_encodings_round_trip(bits, fmt, tolerance, extensible):
    data = wav_from_parts(fmt=fmt, bits=bits, rate=RATE, payload=_encode(REFERENCE, bits, fmt),
                          extensible=extensible)
    samples, rate = dsp.read_wav(io.BytesIO(data))
    assert rate == RATE and samples.dtype == np.float32
    assert np.max(np.abs(samples - REFERENCE)) <= tolerance


def test_stereo_is_mixed_down_and_path_input_works(tmp_path):
    stereo = np.stack([REFERENCE, -0.5 * REFERENCE], axis=1).reshape(-1)
    data = wav_from_parts(channels=2, rate=RATE, payload=_encode(stereo, 16, 1))
    path = tmp_path / "stereo.wav"
    path.write_bytes(data)
    samples, rate = dsp.read_wav(path)
    np.testing.assert_allclose(samples, 0.25 * REFERENCE, atol=1e-4)
    assert dsp.read_wav(str(path))[0].size == samples.size


def test_unknown_chunks_and_odd_sizes_are_skipped():
    extra = b"LIST" + struct.pack("<I", 5) + b"hello" + b"\x00"
    data = wav_from_parts(rate=RATE, payload=_encode(REFERENCE, 16, 1), extra_chunks=extra)
    samples, _ = dsp.read_wav(data)
    assert samples.size == REFERENCE.size


def test_write_wav_round_trip(tmp_path):
    path = tmp_path / "x.wav"
    dsp.write_wav(path, REFERENCE, RATE)
    samples, rate = dsp.read_wav(path)
    assert rate == RATE and np.max(np.abs(samples - REFERENCE)) < 1e-4


def _pcm(seconds: float = SECONDS, rate: int = RATE) -> bytes:
    return _encode(heart_sounds(70, seconds, rate), 16, 1)


GOOD = wav_from_parts(rate=RATE, payload=_pcm())

BROKEN = {
    "empty": b"",
    "one byte": b"R",
    "riff only": b"RIFF",
    "not riff": b"ID3\x03" + GOOD[4:],
    "not wave": GOOD[:8] + b"AVI " + GOOD[12:],
    "rf64": b"RF64" + GOOD[4:],
    "text file": b"patient,verdict\n1,normal\n" * 20,
    "truncated half": GOOD[: len(GOOD) // 2],
    "truncated header": GOOD[:30],
    "riff size too big": wav_from_parts(rate=RATE, payload=_pcm(), riff_size=len(GOOD) * 3),
    "data size too big": wav_from_parts(rate=RATE, payload=_pcm(), data_size=len(GOOD) * 3),
    "no data chunk": GOOD[:36].replace(GOOD[4:8], struct.pack("<I", 28)),
    "no fmt chunk": b"RIFF" + struct.pack("<I", 4 + 8 + len(_pcm())) + b"WAVE" + b"data"
                    + struct.pack("<I", len(_pcm())) + _pcm(),
    "data before fmt": wav_from_parts(rate=RATE, payload=_pcm(), fmt_first=False),
    "fmt too short": b"RIFF" + struct.pack("<I", 4 + 8 + 8) + b"WAVEfmt " + struct.pack("<I", 8) + b"\x01\x00" * 4,
    "zero channels": wav_from_parts(channels=0, rate=RATE, payload=_pcm(), block_align=2),
    "too many channels": wav_from_parts(channels=32, rate=RATE, payload=_pcm()),
    "rate zero": wav_from_parts(rate=0, payload=_pcm()),
    "rate absurd": wav_from_parts(rate=4_000_000_000, payload=_pcm()),
    "rate too low": wav_from_parts(rate=500, payload=_pcm(30, 500)),
    "bits zero": wav_from_parts(bits=0, rate=RATE, payload=_pcm(), block_align=2),
    "bits 12": wav_from_parts(bits=12, rate=RATE, payload=_pcm(), block_align=2),
    "block align wrong": wav_from_parts(rate=RATE, payload=_pcm(), block_align=3),
    "float 16": wav_from_parts(fmt=3, bits=16, rate=RATE, payload=_pcm()),
    "mu-law 16-bit": wav_from_parts(fmt=7, bits=16, rate=RATE, payload=_pcm()),
    "adpcm": wav_from_parts(fmt=2, bits=4, rate=RATE, payload=_pcm(), block_align=1),
    "nan samples": wav_from_parts(fmt=3, bits=32, rate=RATE,
                                  payload=np.full(RATE * SECONDS, np.nan, "<f4").tobytes()),
    "inf samples": wav_from_parts(fmt=3, bits=64, rate=RATE,
                                  payload=np.full(RATE * SECONDS, np.inf, "<f8").tobytes()),
    "empty data": wav_from_parts(rate=RATE, payload=b""),
    "half a frame": wav_from_parts(rate=RATE, payload=b"\x01"),
    "too short": wav_from_parts(rate=RATE, payload=_pcm(0.6)),
    "too long": wav_from_parts(rate=2000, payload=_pcm(200, 2000)),
    "extensible truncated fmt": b"RIFF" + struct.pack("<I", 4 + 8 + 18) + b"WAVEfmt "
                                + struct.pack("<IHHIIHHH", 18, 0xFFFE, 1, RATE, RATE * 2, 2, 16, 0),
}


@pytest.mark.parametrize("fmt, subtype", [(7, "ULAW"), (6, "ALAW")])
@pytest.mark.parametrize("extensible", [False, True])
def test_g711_wavs_decode_every_byte_as_libsndfile_does(fmt, subtype, extensible):
    """A-law and mu-law WAVs (telephone-grade recorders, some stethoscope apps): each of the 256
    codes decodes to the 16-bit value libsndfile gives it, and a recording survives the round trip."""
    soundfile = pytest.importorskip("soundfile")
    codes = np.tile(np.arange(256, dtype=np.uint8), RATE * SECONDS // 256 + 1)[: RATE * SECONDS]
    data = wav_from_parts(fmt=fmt, bits=8, rate=RATE, payload=codes.tobytes(), extensible=extensible)
    ours, rate = dsp.read_wav(data)
    theirs, their_rate = soundfile.read(io.BytesIO(wav_from_parts(fmt=fmt, bits=8, rate=RATE,
                                                                  payload=codes.tobytes())), dtype="int16")
    assert rate == their_rate == RATE
    np.testing.assert_array_equal(np.round(ours * 32768.0).astype(np.int16), theirs)
    assert np.unique(ours).size == 255 if fmt == 7 else 256  # mu-law has a +0 and a -0
    recorded = io.BytesIO()
    soundfile.write(recorded, REFERENCE, RATE, format="WAV", subtype=subtype)
    samples, _ = dsp.read_wav(recorded.getvalue())
    assert np.max(np.abs(samples - REFERENCE)) <= 1024 / 32768  # within G.711's largest step


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_raise_bad_audio_error_with_words(name):
    with pytest.raises(dsp.BadAudioError) as info:
        dsp.read_wav(BROKEN[name])
    message = str(info.value)
    assert len(message) > 15 and "Traceback" not in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, dsp.DSPError)


@pytest.mark.parametrize("head, named", [
    (b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00", "M4A/MP4 (AAC)"),    # iPhone Voice Memos, Android recorders
    (b"\x00\x00\x00\x18ftyp3gp4\x00\x00\x00\x00", "3GP phone"),
    (b"#!AMR\n\x3c\x91", "AMR phone"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00", "MP3"),
    (b"\xff\xfb\x90\x64\x00", "MP3"),                                      # MP3 without a tag
    (b"\xff\xf1\x50\x80\x02", "AAC"),                                      # ADTS, a raw .aac file
    (b"OggS\x00\x02\x00\x00", "OGG (Vorbis/Opus)"),
    (b"fLaC\x00\x00\x00\x22", "FLAC"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "WebM"),
    (b"FORM\x00\x00\x10\x00AIFFCOMM", "AIFF"),
    (b"caff\x00\x01\x00\x00", "CAF (Apple)"),
    (b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00", "Wave64"),
])
def test_other_audio_formats_are_named_so_the_app_can_be_changed(head, named):
    with pytest.raises(dsp.BadAudioError) as info:
        dsp.read_wav(head + bytes(200))
    message = str(info.value)
    assert f"{named} recording, not a WAV recording" in message and "saves WAV" in message


def test_a_file_that_is_no_audio_at_all_is_not_given_a_format():
    with pytest.raises(dsp.BadAudioError, match="^this file is not a WAV recording"):
        dsp.read_wav(b"Dear patient, your appointment is" + bytes(100))


def test_corpus_is_large_enough():
    assert len(BROKEN) >= 25


def test_too_short_message_is_actionable():
    with pytest.raises(dsp.BadAudioError, match=r"recording too short: 0\.6 s, need at least 1 s"):
        dsp.read_wav(BROKEN["too short"])


def test_oversized_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.wav"
    with open(path, "wb") as handle:
        handle.write(GOOD[:44])
        handle.truncate(MAX_FILE_BYTES + 10)
    with pytest.raises(dsp.BadAudioError, match="too large"):
        dsp.read_wav(path)


def test_missing_file(tmp_path):
    with pytest.raises(dsp.BadAudioError, match="not found"):
        dsp.read_wav(tmp_path / "nope.wav")


ODD_BUT_VALID = {
    "trailing garbage after riff": GOOD + b"\x00garbage",
    "partial last frame": wav_from_parts(channels=2, rate=RATE, payload=_pcm(12) + b"\x01\x02"),
    "missing final pad byte": GOOD[:-1] if len(_pcm()) % 2 else GOOD,
    "streaming placeholder sizes": wav_from_parts(rate=RATE, payload=_pcm(), riff_size=0xFFFFFFFF,
                                                  data_size=0x7FFFF000),
    # a recorder app killed before it filled in its header (Android's AudioRecord apps write zeros first)
    "unfinished header, zero sizes": wav_from_parts(rate=RATE, payload=_pcm(), riff_size=0, data_size=0),
    "unfinished header, zero data size": wav_from_parts(rate=RATE, payload=_pcm(), data_size=0),
    "float above one": wav_from_parts(fmt=3, bits=32, rate=RATE,
                                      payload=(4 * heart_sounds(70, SECONDS, RATE)).astype("<f4").tobytes()),
}


@pytest.mark.parametrize("name", sorted(ODD_BUT_VALID))
def test_odd_but_valid_files_read(name):
    samples, rate = dsp.read_wav(ODD_BUT_VALID[name])
    assert rate == RATE and samples.size > 0
    assert np.all(np.abs(samples) <= 1.0)


def test_a_killed_recorders_zero_size_header_keeps_every_second_it_recorded():
    """Until 2026-12-01 such a file was refused as containing no audio, which it did."""
    whole, _ = dsp.read_wav(wav_from_parts(rate=RATE, payload=_pcm()))
    for name in ("unfinished header, zero sizes", "unfinished header, zero data size"):
        samples, _ = dsp.read_wav(ODD_BUT_VALID[name])
        np.testing.assert_array_equal(samples, whole)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(GOOD)))
def test_mutated_wavs_read_or_raise_bad_audio_only(mutations, cut):
    """Any byte mutation or truncation of a valid WAV: valid audio or BadAudioError, nothing else."""
    data = bytearray(wav_from_parts(rate=RATE, payload=_pcm(5.5)))
    for offset, value in mutations:
        data[offset % len(data)] = value
    data = bytes(data[: max(cut, 1)]) if cut < 60 else bytes(data)
    try:
        samples, rate = dsp.read_wav(data)
    except dsp.BadAudioError:
        return
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert np.all(np.isfinite(samples)) and np.all(np.abs(samples) <= 1.0)
    assert dsp.MIN_RATE_HZ <= rate <= dsp.MAX_RATE_HZ
