"""MFCC, mel and dB equal librosa's (the test-only reference) over rates, lengths and signals."""

from __future__ import annotations

import numpy as np
import pytest

import dsp
from tests.signals import heart_sounds, pink_noise, real_recordings

librosa = pytest.importorskip("librosa")
TOLERANCE = 1e-3


def _signal(kind: str, rate: int, seconds: float) -> np.ndarray:
    n = int(rate * seconds)
    rng = np.random.default_rng(rate + n)
    if kind == "noise":
        return (0.1 * rng.standard_normal(n)).astype(np.float32)
    if kind == "tones":
        t = np.arange(n) / rate
        return (0.4 * np.sin(2 * np.pi * 97 * t) + 0.1 * np.sin(2 * np.pi * 0.37 * rate * t)).astype(np.float32)
    if kind == "pink":
        return pink_noise(n, seed=n)
    return dsp.resample(heart_sounds(72, seconds, 2000), 2000, rate)[:n]


# Every rate x length x signal, except 60 s of tones and pink noise above 8 kHz (the same code
# paths as 60 s of noise and heart sounds there, and a minute of librosa time saved).
CASES = [(rate, seconds, kind) for rate in (2000, 4000, 8000, 22050, 44100, 48000)
         for seconds in (0.5, 7.3, 60.0) for kind in ("noise", "tones", "heart", "pink")
         if not (seconds == 60.0 and kind in ("tones", "pink") and rate > 8000)]


@pytest.mark.parametrize("rate,seconds,kind", CASES)
def test_mfcc_equals_librosa_with_defaults(rate, seconds, kind):
    y = _signal(kind, rate, seconds)
    ours = dsp.mfcc(y, sr=rate)
    ref = librosa.feature.mfcc(y=y, sr=rate)
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= TOLERANCE


@pytest.mark.parametrize("params", [
    dict(n_mfcc=13, n_fft=128, hop_length=32, n_mels=32, fmin=20.0, fmax=400.0),
    dict(n_mfcc=40, n_fft=1024, hop_length=256, n_mels=64),
    dict(n_mfcc=20, n_fft=512, hop_length=100, n_mels=40, fmin=25.0, fmax=800.0),
    dict(n_mfcc=1, n_fft=256, hop_length=64, n_mels=16, fmin=0.0, fmax=1000.0),
    dict(n_mfcc=128, n_fft=2048, hop_length=2048, n_mels=128),
])
@pytest.mark.parametrize("rate", [2000, 44100])
def test_mfcc_equals_librosa_with_other_parameters(params, rate):
    y = _signal("heart", rate, 10.0)
    ours = dsp.mfcc(y, sr=rate, **params)
    ref = librosa.feature.mfcc(y=y, sr=rate, **params)
    assert ours.shape == ref.shape
    assert np.max(np.abs(ours - ref)) <= TOLERANCE


@pytest.mark.parametrize("rate", [2000, 16000])
def test_melspectrogram_and_db_equal_librosa(rate):
    y = _signal("noise", rate, 4.0)
    ours = dsp.melspectrogram(y, sr=rate, n_fft=512, hop_length=128, n_mels=40)
    ref = librosa.feature.melspectrogram(y=y, sr=rate, n_fft=512, hop_length=128, n_mels=40)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dsp.power_to_db(ours), librosa.power_to_db(ref), atol=1e-3)
    np.testing.assert_allclose(dsp.power_to_db(ours, ref=3.0, top_db=None),
                               librosa.power_to_db(ref, ref=3.0, top_db=None), atol=1e-3)


def test_mel_filterbank_equals_librosa():
    for sr, n_fft, n_mels, fmin, fmax in [(2000, 128, 32, 20.0, 400.0), (44100, 2048, 128, 0.0, None)]:
        ours = dsp.mel_filterbank(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


def test_mfcc_on_real_recordings_equals_librosa():
    found = list(real_recordings(limit=3))
    if not found:
        pytest.skip("../shared/data not present")
    for name, samples, rate in found:
        ours = dsp.mfcc(samples, sr=rate, n_mfcc=13, n_fft=256, hop_length=64, n_mels=40)
        ref = librosa.feature.mfcc(y=samples, sr=rate, n_mfcc=13, n_fft=256, hop_length=64, n_mels=40)
        assert np.max(np.abs(ours - ref)) <= TOLERANCE, name


@pytest.mark.parametrize("bad", [np.zeros((2, 100), np.float32), np.zeros(0, np.float32),
                                 np.array([0.0, np.nan] * 600, np.float32), np.arange(3000)])
def test_bad_feature_input_is_a_parameter_error(bad):
    with pytest.raises(dsp.ParameterError):
        dsp.mfcc(bad, sr=2000)


def test_window_features_shape_and_normalisation():
    params = dsp.FeatureParams()
    y = dsp.to_analysis_rate(heart_sounds(70, 20.0, 4000), 4000)
    windows = dsp.window_features(y, params)
    assert windows.shape[1:] == (params.n_mfcc, params.frames_per_window)
    expected = 1 + (dsp.recording_features(y, params).shape[1] - params.frames_per_window) // params.frames_per_hop
    assert windows.shape[0] == expected
    whole = dsp.recording_features(y, params)
    np.testing.assert_allclose(whole.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(whole.std(axis=1), 1.0, atol=1e-2)
    short = dsp.window_features(y[:2000], params)  # 1 s: padded by repetition into one window
    assert short.shape[0] == 1


def test_resample_keeps_a_tone_and_length():
    rate_in, rate_out = 44100, 2000
    t = np.arange(rate_in * 2) / rate_in
    y = np.sin(2 * np.pi * 100 * t).astype(np.float32)
    out = dsp.resample(y, rate_in, rate_out)
    assert out.dtype == np.float32 and out.size == rate_out * 2
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * rate_out / out.size - 100) < 1


def test_bandpass_removes_out_of_band_energy():
    rate = 2000
    t = np.arange(rate * 4) / rate
    low, mid, high = (np.sin(2 * np.pi * f * t) for f in (3.0, 100.0, 900.0))
    filtered = dsp.bandpass((low + mid + high).astype(np.float32), rate)
    core = slice(rate, 3 * rate)
    assert np.std(filtered[core] - mid[core]) < 0.05


def test_median_padding_is_off_by_default_and_masks_hiss_when_on():
    """``median_padding`` (an ablation, model card) adds each band's median before the log: off it
    changes nothing (old metadata lacks the key), on it makes a hissing copy of a heart recording
    look more like the quiet one."""
    from dsp.features import FeatureParams, pad_noise_floor, recording_features

    assert FeatureParams.from_dict({"sr": 2000}).median_padding == 0.0
    mel = np.array([[1.0, 10.0], [3.0, 30.0], [2.0, 20.0]], np.float32)
    assert pad_noise_floor(mel, 1.0) is mel and np.allclose(mel, [[3, 30], [5, 50], [4, 40]])

    clean = heart_sounds(70, 20.0, 2000, seed=4)
    hiss = clean + 0.3 * clean.std() * np.random.default_rng(5).standard_normal(clean.size).astype(np.float32)
    plain, padded = FeatureParams(), FeatureParams(median_padding=3.0)
    assert np.array_equal(recording_features(clean, FeatureParams(median_padding=0.0)),
                          recording_features(clean, plain))
    change = {p.median_padding: np.abs(recording_features(clean, p) - recording_features(hiss, p)).mean()
              for p in (plain, padded)}
    assert change[3.0] < 0.85 * change[0.0], change


def test_pcen_is_librosas_once_settled_and_an_option_old_metadata_never_turns_on():
    """``compression="pcen"`` (an ablation, model card): per-channel energy normalisation with
    librosa's defaults, its smoother started on the first frame instead of on 1.0 (so the first
    second does not depend on the recording's level); the shipped log path is untouched."""
    from dsp.features import PCEN_INPUT_SCALE, FeatureParams, mfcc, pcen, recording_features

    assert FeatureParams.from_dict({"sr": 2000}).compression == "log"
    power = np.random.default_rng(3).random((1000, 32)) ** 2
    settled = slice(500, None)  # 500 frames: 20 time constants of 25 frames (0.4 s at 2000 / 32 per second)
    np.testing.assert_allclose(pcen(power, 2000 / 32)[settled],
                               librosa.pcen(power.T, sr=2000, hop_length=32).T[settled], atol=1e-5)

    clean = heart_sounds(70, 20.0, 2000, seed=4)
    log_params, pcen_params = FeatureParams(), FeatureParams(compression="pcen")
    assert np.array_equal(recording_features(clean, log_params),
                          recording_features(clean, FeatureParams(compression="log")))
    with_pcen = recording_features(clean, pcen_params)
    assert with_pcen.shape == recording_features(clean, log_params).shape
    # nearly level-free (the log's CMVN is exactly): a 20 dB louder chain moves it by under 2 %
    assert np.abs(recording_features(10 * clean, pcen_params) - with_pcen).mean() < 0.02
    # a device's hiss under the same heart moves PCEN's cepstra less than the log's
    hiss = clean + 0.3 * clean.std() * np.random.default_rng(5).standard_normal(clean.size).astype(np.float32)
    change = {p.compression: np.abs(recording_features(clean, p) - recording_features(hiss, p)).mean()
              for p in (log_params, pcen_params)}
    assert change["pcen"] < 0.9 * change["log"], change
    assert PCEN_INPUT_SCALE == 2.0 ** 30
    with pytest.raises(dsp.ParameterError, match="compression must be one of log, pcen"):
        mfcc(clean, sr=2000, n_fft=128, hop_length=32, n_mels=32, compression="cube-root")
