"""Phones' compressed recordings (dsp.decode): decoded with the WAV reader's limits, and given
the verdict their WAV would get."""

from __future__ import annotations

import io
import struct
import sys

import numpy as np
import pytest

import dsp
from tests.conftest import PHONE_FORMATS, encode_compressed, phone_copy, reference_wavs

pytest.importorskip("av")


@pytest.mark.parametrize("kind, name", [("m4a", "M4A/MP4 (AAC)"), ("mp3", "MP3"), ("ogg", "OGG (Vorbis/Opus)"),
                                        ("flac", "FLAC")])
def test_each_phone_format_gets_the_verdict_its_wav_gets(classifier, kind, name):
    for path in reference_wavs():
        wav = dsp.read_wav(path)
        audio = dsp.read_audio(phone_copy(path, kind))
        assert (audio.format, audio.decoded, audio.rate) == (name, True, PHONE_FORMATS[kind][2])
        assert audio.samples.dtype == np.float32 and abs(audio.samples.size / audio.rate - 20.0) < 0.1
        ours, theirs = classifier.classify(audio.samples, audio.rate), classifier.classify(*wav)
        assert ours.label == theirs.label, (path.name, kind)
        # MP3 and Opus mark their encoder delay and FFmpeg removes it; these AAC files keep 1024
        # samples of priming (23 ms): on the test split AAC moved P by up to 0.098-0.119 at the
        # 95th percentile (tools/eval_phone_formats.py) with the plain network, 0.079-0.089 with the
        # first anti-aliased one, 0.136-0.147 with the single network that followed (whose
        # reference recordings stayed inside this bound, which is kept), 0.066-0.069 with the
        # ensemble shipped since the second session of 2026-11-30 (its P sits lower)
        assert abs(ours.p_abnormal - theirs.p_abnormal) <= 0.12, (path.name, kind, ours.p_abnormal, theirs.p_abnormal)


def test_flac_is_lossless_and_a_wav_is_still_read_as_wav():
    path = reference_wavs()[0]
    samples, rate = dsp.read_wav(path)
    flac = encode_compressed(samples, rate, "flac", "flac")
    audio = dsp.read_audio(flac)
    assert audio.rate == rate and audio.samples.size == samples.size
    assert np.max(np.abs(audio.samples - samples)) < 2 / 32768
    wav = dsp.read_audio(path)
    assert (wav.format, wav.decoded, wav.rate) == ("WAV", False, rate) and np.array_equal(wav.samples, samples)


def test_the_wav_limits_hold_while_decoding():
    path = reference_wavs()[0]
    with pytest.raises(dsp.BadAudioError, match=r"^recording too long: more than 10 s"):
        dsp.read_audio(phone_copy(path, "mp3"), max_seconds=10)
    with pytest.raises(dsp.BadAudioError, match=r"^recording too short: 0\.5 s, need at least 1 s"):
        dsp.read_audio(phone_copy(path, "flac", seconds=0.5))


@pytest.mark.parametrize("data", [
    pytest.param(b"ID3 this is an mp3", id="mp3 header only"),
    pytest.param(b"\x00\x00\x00\x1cftypM4A " + bytes(300), id="m4a without its boxes"),
], )
def test_a_damaged_compressed_file_is_refused_in_words(data):
    with pytest.raises(dsp.BadAudioError) as info:
        dsp.read_audio(data)
    assert "is damaged or incomplete and cannot be read" in str(info.value) or "contains no audio" in str(info.value)


def test_a_truncated_phone_recording_is_refused_in_words():
    m4a = phone_copy(reference_wavs()[0], "m4a")  # the index (moov) comes last, as phones write it
    with pytest.raises(dsp.BadAudioError, match="M4A/MP4 \\(AAC\\) recording is damaged or incomplete"):
        dsp.read_audio(m4a[: len(m4a) // 2])


def test_without_pyav_a_phone_recording_is_named_with_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with pytest.raises(dsp.BadAudioError, match="this is an M4A/MP4 \\(AAC\\) recording, and this HeartPi cannot "
                                                "decode it .*convert the file to WAV"):
        dsp.read_audio(b"\x00\x00\x00\x1cftypM4A " + bytes(300))
    assert dsp.read_audio(reference_wavs()[0]).format == "WAV"  # WAV needs no PyAV


def _compressed_wav(samples, rate: int, encoding: str) -> bytes:
    """A WAV as a voice recorder or dictation machine saves it: IMA or MS ADPCM (FFmpeg's encoders)
    at 22.05 kHz, or GSM 6.10 (libsndfile's; FFmpeg has no encoder) at a telephone's 8 kHz."""
    if encoding == "GSM 6.10":
        soundfile = pytest.importorskip("soundfile")
        buffer = io.BytesIO()
        soundfile.write(buffer, dsp.resample(samples, rate, 8000), 8000, format="WAV", subtype="GSM610")
        return buffer.getvalue()
    codec = {"IMA ADPCM": "adpcm_ima_wav", "MS ADPCM": "adpcm_ms"}[encoding]
    return encode_compressed(dsp.resample(samples, rate, 22050), 22050, "wav", codec)


@pytest.mark.parametrize("encoding", ["IMA ADPCM", "MS ADPCM", "GSM 6.10"])
def test_a_voice_recorders_compressed_wav_gets_the_verdict_its_pcm_wav_gets(classifier, encoding):
    """Until 2026-12-01 an ADPCM WAV was refused as "the WAV header is damaged": its 4-bit blocks
    failed the PCM sample-size check before its encoding was looked at."""
    for path in reference_wavs():
        samples, rate = dsp.read_wav(path)
        data = _compressed_wav(samples, rate, encoding)
        with pytest.raises(dsp.CompressedWavError, match=rf"^unsupported WAV encoding \({encoding}\)\. Export"):
            dsp.read_wav(data)  # alone, the WAV reader names the encoding: the file is not damaged
        audio = dsp.read_audio(data)
        assert (audio.format, audio.decoded) == (f"{encoding} WAV", True)
        assert abs(audio.samples.size / audio.rate - 20.0) < 0.1
        ours, theirs = classifier.classify(audio.samples, audio.rate), classifier.classify(samples, rate)
        assert ours.label == theirs.label, (path.name, encoding)
        # GSM, a speech codec, moves P most: on 104 test recordings |dP| p95 0.14, max 0.23
        # (tools/eval_phone_formats.py); ADPCM p95 0.01-0.11
        bound = 0.25 if encoding == "GSM 6.10" else 0.06
        assert abs(ours.p_abnormal - theirs.p_abnormal) <= bound, (path.name, encoding, ours.p_abnormal)


def test_a_wav_in_an_encoding_nobody_decodes_is_refused_in_words():
    samples = np.zeros(16000, "<i2").tobytes()
    header = struct.pack("<HHIIHH", 0x1234, 1, 8000, 16000, 2, 16)
    data = (b"RIFF" + struct.pack("<I", 4 + 8 + len(header) + 8 + len(samples)) + b"WAVEfmt "
            + struct.pack("<I", len(header)) + header + b"data" + struct.pack("<I", len(samples)) + samples)
    with pytest.raises(dsp.BadAudioError, match=r"^this WAV \(format code 0x1234\) recording is in an encoding "
                                                r"HeartPi cannot decode\. Export or save it as an uncompressed WAV"):
        dsp.read_audio(data)


def test_a_wave64_file_is_decoded():
    soundfile = pytest.importorskip("soundfile")
    samples, rate = dsp.read_wav(reference_wavs()[0])
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="W64", subtype="PCM_16")
    audio = dsp.read_audio(buffer.getvalue())
    assert (audio.format, audio.rate) == ("Wave64", rate) and np.max(np.abs(audio.samples - samples)) < 2 / 32768


def test_without_pyav_a_compressed_wav_is_named_with_what_to_do(monkeypatch):
    samples, rate = dsp.read_wav(reference_wavs()[0])
    data = _compressed_wav(samples, rate, "IMA ADPCM")
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(dsp.BadAudioError, match="this is an IMA ADPCM WAV recording, and this HeartPi cannot "
                                                "decode it .*convert the file to WAV"):
        dsp.read_audio(data)
