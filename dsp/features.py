"""Mel spectrogram, power-to-dB and MFCC, numerically equal to librosa's.

librosa is the reference the research prototype used, but it pulls numba, soundfile and
friends onto a Raspberry Pi and rebuilds its mel filter bank on every call. This module
implements the same mathematics with numpy (and, for long transforms, scipy.fft):

* centred frames, zero padding of ``n_fft // 2`` on each side (librosa >= 0.10 default),
* periodic Hann window, power 2 magnitude spectrum,
* Slaney mel scale and Slaney area normalisation, filter bank built in float32,
* ``power_to_db(ref=1.0, amin=1e-10, top_db=80)`` over the whole matrix,
* orthonormal DCT-II over the mel axis.

Filter banks, windows, DFT and DCT matrices are cached per parameter set: that, and short
transforms done as one matrix product, is where the speed over librosa comes from.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Optional

import numpy as np

from .errors import ParameterError


def hz_to_mel(frequencies: np.ndarray | float) -> np.ndarray:
    """Slaney (Auditory Toolbox) mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asanyarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep,
                    mels)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asanyarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=64)
def mel_filterbank(*, sr: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0,
                   fmax: Optional[float] = None) -> np.ndarray:
    """Slaney-normalised triangular mel filters, shape ``(n_mels, 1 + n_fft // 2)``, float32.

    The returned array is cached and read-only.
    """
    if fmax is None:
        fmax = sr / 2.0
    if not 0 <= fmin < fmax <= sr / 2.0 + 1e-9:
        raise ParameterError(f"mel band {fmin}-{fmax} Hz impossible at sr={sr}")
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=16)
def _hann(n_fft: int) -> np.ndarray:
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    window.setflags(write=False)
    return window


@lru_cache(maxsize=16)
def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Rows of the orthonormal DCT-II, so that ``D @ x == scipy.fft.dct(x, norm='ortho')[:n]``."""
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_mels)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2.0 * n_mels)) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    basis = basis.astype(np.float32)
    basis.setflags(write=False)
    return basis


def _validate(y: np.ndarray, sr: int, n_fft: int, hop_length: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ParameterError(f"audio must be mono (1-D), got shape {y.shape}")
    if y.size == 0:
        raise ParameterError("audio is empty")
    if not np.issubdtype(y.dtype, np.floating):
        raise ParameterError(f"audio must be floating point, got {y.dtype}")
    if not np.all(np.isfinite(y)):
        raise ParameterError("audio contains NaN or infinity")
    if sr <= 0 or n_fft <= 0 or hop_length <= 0:
        raise ParameterError("sr, n_fft and hop_length must be positive")
    return y.astype(np.float32, copy=False)


_scratch = threading.local()


def _scratch_buffer(name: str, shape: tuple, dtype) -> np.ndarray:
    """A per-thread work array reused across calls of the same shape.

    Allocating and freeing a few megabytes on every call costs page faults that, for a
    short recording, take longer than the FFT itself.
    """
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    buf = buffers.get(name)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = buffers[name] = np.empty(shape, dtype)
    return buf


#: Transforms up to this length use numpy's FFT: the device's features (n_fft 128) then never
#: import scipy.fft, which costs a Raspberry Pi ~28 MB of memory. Longer transforms (librosa's
#: default 2048) use scipy.fft, 3-4x faster there on float32.
NUMPY_FFT_MAX = 512
#: Frames up to this length are transformed by one matrix product with a windowed DFT
#: matrix: for 1,250 frames of 128 samples that is ~6x faster than numpy's float32 FFT and
#: ~2x its float64 one (the work is O(n^2) per frame, so it stops paying off above this).
DFT_MATMUL_MAX = 256


def rfft_rows(frames: np.ndarray) -> np.ndarray:
    """Real FFT along the last axis, by numpy or scipy depending on the length (see above).

    numpy's FFT runs in float64: its float32 transform (numpy >= 2) is several times slower
    for short rows.
    """
    if frames.shape[-1] <= NUMPY_FFT_MAX:
        return np.fft.rfft(np.asarray(frames, np.float64), axis=-1)
    from scipy.fft import rfft

    return rfft(frames, axis=-1, overwrite_x=True)


def windowed_dft_matrix(window: np.ndarray, first: int, stop: int) -> np.ndarray:
    """``(n, 2 * (stop - first))`` float64: ``window``-weighted cos and -sin of rfft bins
    ``first .. stop - 1``, so that ``frames @ matrix`` is ``[real | imag]`` of those bins of
    the windowed frames' rfft. Callers cache it (and may fold further linear steps in)."""
    n = window.size
    angles = 2.0 * np.pi * np.outer(np.arange(n), np.arange(first, stop)) / n
    weights = np.asarray(window, np.float64)[:, None]
    return np.concatenate([weights * np.cos(angles), -weights * np.sin(angles)], axis=1)


@lru_cache(maxsize=8)
def _windowed_dft(n_fft: int, first: int, stop: int) -> np.ndarray:
    """The STFT's periodic-Hann :func:`windowed_dft_matrix`, float32, cached."""
    matrix = windowed_dft_matrix(_hann(n_fft), first, stop).astype(np.float32)
    matrix.setflags(write=False)
    return matrix


@lru_cache(maxsize=64)
def _mel_bins(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: Optional[float]) -> tuple[int, int]:
    """``(first, stop)``: the rfft bins a mel filter bank gives any weight to."""
    basis = mel_filterbank(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    used = np.flatnonzero(basis.any(axis=0))
    return (int(used[0]), int(used[-1]) + 1) if used.size else (0, basis.shape[1])


def _power_frames(y: np.ndarray, n_fft: int, hop_length: int, bins: Optional[tuple[int, int]] = None
                  ) -> np.ndarray:
    """|STFT|^2 as ``(frames, 1 + n_fft // 2)`` float32: the layout the FFT produces.

    Kept frame-major so the mel projection is one contiguous matrix product with no
    transpose of the (large) spectrogram. The result lives in a scratch buffer: callers
    must copy it (the mel projection does) before the next call on this thread.
    ``bins=(first, stop)`` lets a short transform compute only those columns (the rest are
    left zero): a band-limited mel bank never looks at the others.
    """
    padded = np.pad(y, n_fft // 2, mode="constant")
    if padded.size < n_fft:
        raise ParameterError(f"audio too short ({y.size} samples) for n_fft={n_fft}")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    n_frames, n_bins = frames.shape[0], n_fft // 2 + 1
    power = _scratch_buffer("power", (n_frames, n_bins), np.float32)
    if n_fft <= DFT_MATMUL_MAX:
        first, stop = bins or (0, n_bins)
        contiguous = _scratch_buffer("frames", (n_frames, n_fft), np.float32)
        contiguous[...] = frames  # BLAS needs contiguous rows; the view overlaps them
        parts = contiguous @ _windowed_dft(n_fft, first, stop)
        np.square(parts, out=parts)
        if bins:
            power[:, :first] = 0.0
            power[:, stop:] = 0.0
        np.add(parts[:, :stop - first], parts[:, stop - first:], out=power[:, first:stop])
        return power
    windowed = _scratch_buffer("windowed", (n_frames, n_fft), np.float32)
    np.multiply(frames, _hann(n_fft), out=windowed)
    spectrum = rfft_rows(windowed)
    imag = _scratch_buffer("imag", (n_frames, n_bins), np.float32)
    np.square(spectrum.real, out=power)
    np.square(spectrum.imag, out=imag)
    power += imag
    return power


def power_spectrogram(y: np.ndarray, *, n_fft: int = 2048, hop_length: int = 512) -> np.ndarray:
    """|STFT|^2 with centred, zero-padded frames and a periodic Hann window.

    Shape ``(1 + n_fft // 2, frames)``, float32, as ``abs(librosa.stft(y)) ** 2``.
    """
    y = _validate(y, 1, n_fft, hop_length)
    return np.array(_power_frames(y, n_fft, hop_length).T, order="C")


def melspectrogram(y: np.ndarray, *, sr: int, n_fft: int = 2048, hop_length: int = 512,
                   n_mels: int = 128, fmin: float = 0.0, fmax: Optional[float] = None) -> np.ndarray:
    """Mel power spectrogram, shape ``(n_mels, frames)``, as ``librosa.feature.melspectrogram``."""
    return _mel_frames(y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin,
                       fmax=fmax).T


def _mel_frames(y: np.ndarray, *, sr: int, n_fft: int, hop_length: int, n_mels: int, fmin: float,
                fmax: Optional[float]) -> np.ndarray:
    """Mel power spectrogram frame-major, ``(frames, n_mels)``, contiguous: elementwise work
    (the dB conversion) on it runs ~2x faster than on the transposed view."""
    y = _validate(y, sr, n_fft, hop_length)
    bank = dict(sr=int(sr), n_fft=int(n_fft), n_mels=int(n_mels), fmin=float(fmin),
                fmax=None if fmax is None else float(fmax))
    basis = mel_filterbank(**bank)
    first, stop = _mel_bins(**bank)
    power = _power_frames(y, n_fft, hop_length, (first, stop))
    return power[:, first:stop] @ basis[:, first:stop].T


def power_to_db(S: np.ndarray, *, ref: float = 1.0, amin: float = 1e-10,
                top_db: Optional[float] = 80.0) -> np.ndarray:
    """``10 * log10(S / ref)`` floored at ``amin`` and at ``max - top_db``, as librosa's."""
    if amin <= 0:
        raise ParameterError("amin must be strictly positive")
    if top_db is not None and top_db < 0:
        raise ParameterError("top_db must be non-negative")
    S = np.asarray(S)
    log_spec = np.maximum(S, amin)
    # natural log scaled, in place: numpy vectorises log, not log10 (4x faster), same to ~1 ulp
    np.log(log_spec, out=log_spec)
    log_spec *= 10.0 / np.log(10.0)
    if ref != 1.0:
        log_spec -= 10.0 * np.log10(max(amin, abs(ref)))
    if top_db is not None:
        np.maximum(log_spec, log_spec.max() - top_db, out=log_spec)
    return log_spec


COMPRESSIONS = ("log", "pcen")
#: mel power of audio in [-1, 1] scaled as 16-bit samples' would be, so PCEN's ``eps`` and
#: ``bias`` meet the magnitudes they were designed for (librosa's advice for float audio)
PCEN_INPUT_SCALE = float(2 ** 30)


def pcen(mel_frames: np.ndarray, frame_rate: float, *, time_constant: float = 0.4, gain: float = 0.98,
         bias: float = 2.0, power: float = 0.5, eps: float = 1e-6) -> np.ndarray:
    """Per-channel energy normalisation (Wang et al. 2017) of ``(frames, n_mels)`` mel power,
    librosa's ``pcen`` defaults along the frames.

    Each band is divided by its own running average over about ``time_constant`` seconds (an
    automatic gain control), then root-compressed instead of logged. Why it may travel better
    to an unheard stethoscope than the log: a log stretches the quiet between heart sounds, where
    one device's hiss differs from another's, as much as the sounds themselves; PCEN maps a
    steady floor near zero and keeps what rises above its recent past (S1, S2, a murmur's onset).
    """
    from scipy.signal import lfilter, lfilter_zi

    frames = time_constant * frame_rate
    b = (np.sqrt(1.0 + 4.0 * frames ** 2) - 1.0) / (2.0 * frames ** 2)
    energy = np.asarray(mel_frames, dtype=np.float64)
    start = lfilter_zi([b], [1.0, b - 1.0])[:, None] * energy[:1]  # settled on the first frame
    smooth, _ = lfilter([b], [1.0, b - 1.0], energy, axis=0, zi=start)
    gained = energy * np.exp(-gain * (np.log(eps) + np.log1p(smooth / eps)))
    return ((bias ** power) * np.expm1(power * np.log1p(gained / bias))).astype(np.float32)


def mfcc(y: np.ndarray, *, sr: int, n_mfcc: int = 20, n_fft: int = 2048, hop_length: int = 512,
         n_mels: int = 128, fmin: float = 0.0, fmax: Optional[float] = None,
         median_padding: float = 0.0, compression: str = "log") -> np.ndarray:
    """MFCCs, shape ``(n_mfcc, frames)``, equal to ``librosa.feature.mfcc`` with these arguments
    (``median_padding`` > 0: each mel band's floor raised first, :func:`pad_noise_floor`;
    ``compression="pcen"``: the cepstra of :func:`pcen` instead of the log, an ablation)."""
    if not 0 < n_mfcc <= n_mels:
        raise ParameterError(f"n_mfcc must be in 1..n_mels ({n_mels}), got {n_mfcc}")
    if compression not in COMPRESSIONS:
        raise ParameterError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    mel = _mel_frames(y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, fmin=fmin, fmax=fmax)
    if median_padding > 0:
        pad_noise_floor(mel, median_padding)
    if compression == "pcen":
        compressed = pcen(mel * PCEN_INPUT_SCALE, sr / hop_length)
    else:
        compressed = power_to_db(mel)
    return np.ascontiguousarray((compressed @ dct_matrix(int(n_mfcc), int(n_mels)).T).T)


@dataclass(frozen=True)
class FeatureParams:
    """Everything that turns a recording into the model's input; stored in model metadata.

    Training and the device both call :func:`window_features` with the params read from the
    model's metadata, so the two can never disagree.
    """

    sr: int = 2000
    n_mfcc: int = 13
    n_fft: int = 128
    hop_length: int = 32
    n_mels: int = 32
    fmin: float = 20.0
    fmax: float = 400.0
    window_s: float = 3.0
    window_hop_s: float = 1.5
    normalise: str = "cmvn"  # per-recording cepstral mean and variance normalisation
    #: > 0: this many times each mel band's median power over the recording is added before
    #: the log (see :func:`pad_noise_floor`); 0: off
    median_padding: float = 0.0
    #: how mel power becomes the cepstra's input: "log" (MFCCs, as shipped) or "pcen" (:func:`pcen`)
    compression: str = "log"

    @property
    def frames_per_window(self) -> int:
        return int(round(self.window_s * self.sr / self.hop_length))

    @property
    def frames_per_hop(self) -> int:
        return max(1, int(round(self.window_hop_s * self.sr / self.hop_length)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureParams":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def pad_noise_floor(mel_frames: np.ndarray, factor: float) -> np.ndarray:
    """Add ``factor`` times each band's median power over the recording, in place on
    ``(frames, n_mels)``.

    CMVN removes a stethoscope's fixed *gain* per band (multiplicative: a constant after the
    log) but not its hiss (additive): a noisier device fills the quiet between heart sounds,
    which looks like a murmur. Raising every band's floor to a level set by the recording
    itself masks what lies below it, so a quiet device and a hissing one look more alike
    after CMVN; what stands above the floor (heart sounds, loud murmurs) is kept.
    """
    median = np.median(mel_frames, axis=0).astype(mel_frames.dtype)
    mel_frames += factor * median
    return mel_frames


def recording_features(analysis_samples: np.ndarray, params: FeatureParams, *,
                       skip: Optional[np.ndarray] = None) -> np.ndarray:
    """MFCC matrix of a whole recording already at ``params.sr``, normalised per recording.

    Cepstral mean (and variance) normalisation removes a stethoscope's fixed frequency
    response, the largest single cause of failure on an unseen device. ``skip``: one flag per
    frame left out of the normalisation's statistics (:mod:`dsp.interruptions`: the chest piece
    off the skin, a burst of noise), unless that would leave fewer than two frames.
    """
    coeffs = mfcc(analysis_samples, sr=params.sr, n_mfcc=params.n_mfcc, n_fft=params.n_fft,
                  hop_length=params.hop_length, n_mels=params.n_mels, fmin=params.fmin,
                  fmax=params.fmax, median_padding=params.median_padding, compression=params.compression)
    kept = coeffs
    if skip is not None and np.count_nonzero(~skip[: coeffs.shape[1]]) >= 2:
        kept = coeffs[:, ~skip[: coeffs.shape[1]]]
    if params.normalise in ("cmn", "cmvn"):
        mean = kept.mean(axis=1, keepdims=True)
        centred = coeffs - mean
        kept = centred if kept is coeffs else kept - mean
        coeffs = centred
    if params.normalise == "cmvn":
        coeffs = coeffs / (kept.std(axis=1, keepdims=True) + 1e-3)
    return coeffs.astype(np.float32)


def window_features(analysis_samples: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Cut a recording's features into fixed windows: ``(n_windows, n_mfcc, frames)``.

    A recording shorter than one window is padded by repeating it (heart sounds are
    periodic), so even a short upload gives one window.
    """
    return cut_windows(recording_features(analysis_samples, params), params.frames_per_window,
                       params.frames_per_hop)


def cut_windows(coeffs: np.ndarray, width: int, step: int, *, skip: Optional[np.ndarray] = None) -> np.ndarray:
    """``(n_windows, n_mfcc, width)`` windows of ``coeffs`` every ``step`` frames, a recording
    shorter than one window repeated to fill it (see :func:`window_features`). ``skip``: one
    flag per frame; a window holding a flagged frame is left out (so there may be none)."""
    if coeffs.shape[1] < width:
        reps = int(np.ceil(width / coeffs.shape[1]))
        coeffs = np.tile(coeffs, (1, reps))
        skip = None if skip is None else np.tile(skip, reps)
    starts = [s for s in range(0, coeffs.shape[1] - width + 1, step)
              if skip is None or not skip[s:s + width].any()]
    if not starts:
        return np.empty((0, coeffs.shape[0], width), np.float32)
    return np.stack([coeffs[:, s:s + width] for s in starts]).astype(np.float32)
