"""Resampling and zero-phase Butterworth filtering in numpy.

Why not ``scipy.signal``: importing it costs a Raspberry Pi ~50 MB of memory for the
daemon's whole life, for four functions. These are the same mathematics, checked against
``scipy.signal.resample_poly`` / ``butter`` / ``sosfiltfilt`` by the tests to ~1e-6:

* resampling is polyphase FIR (``resample_poly``'s Kaiser design, beta 5, 10 zero
  crossings per side, the same alignment), computing only the output samples kept, as
  float32 matrix products (BLAS); decimation by 2 or more as one banded matrix product
  (:func:`_resample_banded`). Sound-card and phone rates (48 or 44.1 kHz -> 2 kHz, the
  common case) are first decimated by an integer factor with a short Kaiser filter of
  our own (:func:`_cascade`): the tests check that stage against ``resample_poly`` given
  that filter, and the pair against the single stage's passband and alias rejection;
* filtering is ``sosfiltfilt``'s: odd extension, a steady-state start, forward and
  backward passes. A filter started in steady state for input ``x0`` outputs ``G0 * x0``
  plus its response to ``x - x0`` from rest (linearity), and that response is a
  convolution with the impulse response; both passes together are one FFT multiplication
  by ``|H|^2`` plus a short, exact correction at the end (see :func:`_filtfilt`).
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd
from typing import NamedTuple, Optional

import numpy as np

from .errors import ParameterError

#: Every source is resampled to this rate before analysis. PhysioNet records at 2 kHz and
#: heart sounds live below ~800 Hz, so nothing useful is lost and every device looks alike.
ANALYSIS_RATE_HZ = 2000
#: Heart-sound band used for quality, heart rate and the model's features (S1/S2 and most
#: murmurs; the challenge's reference entry uses the same band).
HEART_BAND_HZ = (25.0, 400.0)
#: Impulse responses are kept until they fall below this fraction of their peak.
_TAIL = 1e-13


# -- resampling ------------------------------------------------------------------------------
def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``rate_in`` to ``rate_out``; float32 out.

    Sound-card and phone rates (above :data:`CASCADE_MIN_RATE_HZ`) are first decimated by an
    integer factor with a short filter, then resampled as below (see :func:`_cascade`).
    """
    if rate_in <= 0 or rate_out <= 0:
        raise ParameterError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    samples = np.asarray(samples, dtype=np.float32)
    rate_in, rate_out = int(rate_in), int(rate_out)
    if rate_in == rate_out:
        return samples.copy()
    plan = _cascade(rate_in, rate_out)
    if plan is None:
        return _resample_single(samples, rate_in, rate_out)
    factor, taps = plan
    first = _resample_banded(samples, 1, factor, -(-samples.size // factor), taps)
    return _resample_single(first, rate_in, rate_out * factor)[:-(-samples.size * rate_out // rate_in)]


def _resample_single(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``resample_poly`` with its own filter, in one stage."""
    divisor = gcd(rate_in, rate_out)
    up, down = rate_out // divisor, rate_in // divisor
    n_in = samples.size
    n_out = -(-n_in * up // down)
    if down >= 2 * up and _banded_size(up, down) <= _BANDED_MAX_ENTRIES:
        # every usual capture or upload rate above 4 kHz -> 2 kHz; the envelope's 2 kHz -> 100 Hz
        return _resample_banded(samples, up, down, n_out)
    # Upsampling (tools, tests) and ratios near 1 keep the per-phase products: among them the
    # training's +-8 % clock augmentation, whose arithmetic a reproduced model depends on bit for bit.
    h, first = _polyphase_design(up, down, n_in, n_out)
    return _upfirdn(h, samples, up, down, first, n_out).astype(np.float32)


#: Inputs above this rate are decimated in two stages. Below it (the training data's 2, 4 and
#: 8 kHz, the envelope's 2 kHz -> 100 Hz) one stage is cheap enough, and keeping it keeps a
#: retrained model's arithmetic bit for bit what it was.
CASCADE_MIN_RATE_HZ = 16000
#: What the cascade's first stage must leave intact: up to ``0.6 * rate_out`` (resample_poly's
#: own filter, which the second stage is, has stopped everything above ~0.58 * rate_out).
_CASCADE_KEEP = 0.6
#: The first stage's stopband attenuation (dB): beyond resample_poly's own ~53 dB.
_CASCADE_STOP_DB = 70.0


def _prefilter_taps(rate_in: int, factor: int, rate_out: int) -> int:
    """Odd length of a Kaiser low-pass that keeps ``0 .. keep`` and stops every band that
    decimating by ``factor`` would fold onto it (from ``rate_in / factor - keep`` on)."""
    keep = _CASCADE_KEEP * rate_out
    transition = 2 * np.pi * (rate_in / factor - 2 * keep) / rate_in
    taps = int(np.ceil((_CASCADE_STOP_DB - 7.95) / (2.285 * transition))) + 1
    return taps | 1


@lru_cache(maxsize=16)
def _prefilter(factor: int, taps: int) -> np.ndarray:
    """The first stage's filter: a Kaiser-windowed sinc cutting at half the intermediate rate
    (its transition band centred between what is kept and what would fold onto it), unit DC
    gain."""
    n = np.arange(taps) - 0.5 * (taps - 1)
    cutoff = 1.0 / factor
    beta = 0.1102 * (_CASCADE_STOP_DB - 8.7)
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(taps, beta)
    h /= h.sum()
    h.setflags(write=False)
    return h


#: What one row of a banded product costs beyond its multiply-adds, in multiply-adds: a product
#: with few outputs per row runs far below BLAS's peak (timed on the 48 and 44.1 kHz cascades).
_ROW_COST = 200


def _banded_cost(up: int, down: int, taps: int = 0) -> float:
    """Estimated work of :func:`_resample_banded` per input sample, in multiply-adds:
    ``2 * up * g`` (the matrix has ``2 * up * g`` columns, one row per ``down * g`` inputs)
    plus :data:`_ROW_COST` per row."""
    if _banded_size(up, down, taps) > _BANDED_MAX_ENTRIES:
        return np.inf
    g, _ = _banded_rows(up, down, taps)
    return 2 * up * g + _ROW_COST / (down * g)


@lru_cache(maxsize=16)
def _cascade(rate_in: int, rate_out: int) -> Optional[tuple[int, int]]:
    """``(factor, taps)`` of a first stage that makes decimating ``rate_in -> rate_out`` cheaper, or None.

    A 48 kHz recording needs only what lies below ~1.2 kHz. resample_poly's single filter for
    48 -> 2 kHz is 481 taps long because its transition band is narrow at the input rate; a
    first stage to 4.8 kHz has from 1.2 to 3.6 kHz to roll off (89 taps, in rows of 80
    inputs), and the narrow transition is then cut at 4.8 kHz, where it costs a tenth. The
    factor is the one with the least estimated work (:func:`_banded_cost`), and the cascade is
    used only when that beats the single stage (timed: 48 kHz 0.94 -> 0.53 ms, 44.1 kHz
    0.69 -> 0.45 ms for 20 s). Verdicts barely move: ``tools/eval_capture_rates.py``.
    """
    if rate_in <= CASCADE_MIN_RATE_HZ or rate_in < 8 * rate_out:
        return None
    divisor = gcd(rate_in, rate_out)
    best, plan = _banded_cost(rate_out // divisor, rate_in // divisor), None
    for factor in range(2, rate_in // (2 * rate_out) + 1):
        divisor = gcd(rate_in, rate_out * factor)
        up, down = rate_out * factor // divisor, rate_in // divisor
        if down < 2 * up:
            continue
        taps = _prefilter_taps(rate_in, factor, rate_out)
        cost = _banded_cost(1, factor, taps) + _banded_cost(up, down) / factor
        if cost < best:
            best, plan = cost, (factor, taps)
    return plan


def _half_length(up: int, down: int) -> int:
    """``resample_poly``'s filter half length: 10 zero crossings per side of the slower rate."""
    return 10 * max(up, down)


@lru_cache(maxsize=16)
def _polyphase_fir(up: int, down: int) -> np.ndarray:
    """``firwin(2 * 10 * m + 1, 1 / m, window=('kaiser', 5.0))`` with ``m = max(up, down)``."""
    max_rate = max(up, down)
    taps = 2 * _half_length(up, down) + 1
    n = np.arange(taps) - 0.5 * (taps - 1)
    cutoff = 1.0 / max_rate
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(taps, 5.0)
    h /= h.sum()
    h.setflags(write=False)
    return h


#: Largest banded matrix built (float32 entries, 4 MB): 48 kHz needs 19,200, 44.1 kHz 17,640,
#: 11.025 kHz 70,560; an odd rate such as 47,999 Hz (up 2000, down 47999) would need ~10^8.
_BANDED_MAX_ENTRIES = 1 << 20


def _fir(up: int, down: int, taps: int = 0) -> np.ndarray:
    """The filter scaled by ``up``: resample_poly's own design, or, given ``taps``, the
    cascade's first-stage filter (``up`` is then 1)."""
    return _prefilter(down, taps) if taps else _polyphase_fir(up, down) * up


def _fir_half(up: int, down: int, taps: int = 0) -> int:
    """Half length of :func:`_fir`'s filter, without designing it."""
    return taps // 2 if taps else _half_length(up, down)


@lru_cache(maxsize=32)
def _banded_rows(up: int, down: int, taps: int = 0) -> tuple[int, int]:
    """``(g, shift)`` of :func:`_banded_matrix`: periods per row and the input's shift."""
    half = _fir_half(up, down, taps)
    shift = -(-half // up)
    g = 1
    while ((up * g - 1) * down + half) // up + shift >= 2 * down * g:
        g += 1
    return g, shift


def _banded_size(up: int, down: int, taps: int = 0) -> int:
    """Entries of the banded matrix for ``up / down``: ``down * g`` rows, ``2 * up * g`` columns."""
    g, _ = _banded_rows(up, down, taps)
    return 2 * up * down * g * g


@lru_cache(maxsize=16)
def _banded_matrix(up: int, down: int, taps: int = 0) -> tuple[np.ndarray, int]:
    """The matrix of :func:`_resample_banded`, ``(down * g, 2 * up * g)``, and the input's shift.

    ``resample_poly``'s output ``n`` is ``sum_i x[i] h[n * down + half - i * up]`` (``h``
    scaled by ``up``, ``half`` its half length). A row of ``down * g`` inputs gives ``up * g``
    outputs; with the input shifted right by ``shift = ceil(half / up)``, the inputs output
    ``q`` of a row needs sit at offsets ``0 ..`` from the row's start, and ``g`` is the
    smallest that keeps them within that row and the next. Column ``q`` holds the taps that
    meet the row itself, column ``up * g + q`` those that meet the next row.
    """
    h, half = _fir(up, down, taps), _fir_half(up, down, taps)
    g, shift = _banded_rows(up, down, taps)
    row_len, outputs = down * g, up * g
    band = np.zeros((2 * row_len, outputs), dtype=np.float32)
    offsets = np.arange(2 * row_len)
    for q in range(outputs):
        tap = q * down + half - (offsets - shift) * up
        inside = (tap >= 0) & (tap < h.size)
        band[offsets[inside], q] = h[tap[inside]]
    matrix = np.hstack([band[:row_len], band[row_len:]])  # a new, contiguous array
    matrix.setflags(write=False)
    return matrix, shift


def _resample_banded(x: np.ndarray, up: int, down: int, n_out: int, taps: int = 0) -> np.ndarray:
    """``resample_poly(x, up, down)`` as one float32 matrix product (for ``down >= 2 * up``);
    with ``taps``, ``resample_poly(x, 1, down, window=_prefilter(down, taps))``.

    Cut the (shifted, zero-padded) input into rows: every output of row ``s`` is a dot
    product with rows ``s`` and ``s + 1`` only, so one product ``rows @ M`` gives each row's
    part of its own outputs and of the previous row's, and a shifted sum of the two halves
    finishes them. Much of ``M`` is zeros, yet one large, contiguous BLAS product that reads
    the input once beats :func:`_upfirdn`'s per-phase products when decimating: ~2x at
    48 kHz -> 2 kHz, ~6x at 44.1 kHz (whose 20 phases each read the whole input there).
    The cascade's first stage multiplies the input in place instead, one product per half
    of ``M`` (:func:`_banded_products_in_place`).
    """
    matrix, shift = _banded_matrix(up, down, taps)
    row_len, outputs = matrix.shape[0], matrix.shape[1] // 2
    n_rows = -(-n_out // outputs)
    if taps:
        own, following = _banded_products_in_place(x, _banded_halves(up, down, taps), shift, n_rows)
        y = own[:-1] + following[1:]
    else:
        padded = np.zeros((n_rows + 1) * row_len, dtype=np.float32)
        padded[shift:shift + x.size] = x  # n_rows * row_len >= x.size, and shift < row_len: it fits
        parts = padded.reshape(n_rows + 1, row_len) @ matrix
        y = parts[:-1, :outputs] + parts[1:, outputs:]
    return y.reshape(-1)[:n_out]


@lru_cache(maxsize=16)
def _banded_halves(up: int, down: int, taps: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The banded matrix's two halves (taps meeting a row's own outputs, and the previous
    row's), each contiguous."""
    matrix, _ = _banded_matrix(up, down, taps)
    outputs = matrix.shape[1] // 2
    halves = np.ascontiguousarray(matrix[:, :outputs]), np.ascontiguousarray(matrix[:, outputs:])
    for half in halves:
        half.setflags(write=False)
    return halves


def _banded_products_in_place(x: np.ndarray, halves: tuple[np.ndarray, np.ndarray], shift: int,
                              n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows @ half`` for both halves and the shifted, zero-padded input's ``n_rows + 1`` rows,
    without copying the input. For the cascade's first stage, which reads the most samples.

    Row ``r`` is ``x[r * row_len - shift:][:row_len]``: the rows wholly inside ``x`` are
    multiplied as a view of it, and only the first and the last few are copied into a padded
    buffer (a 48 kHz recording is 4 MB; copying it cost about half as much as the product).
    Two products, one per half, instead of one and a sum of two column blocks of each row:
    with a few outputs per row that sum ran a numpy inner loop per row and cost more than
    the product. Split this way, BLAS chooses its kernels by other shapes and outputs can
    differ from the padded product's in the last bit, so the single stage keeps its padded
    product: its rounding is what training's features and the shipped poor-signal figures
    were computed with (compared bit for bit with the earlier code when this was written).
    """
    row_len, outputs = halves[0].shape
    body = max(0, min((x.size + shift) // row_len - 1, n_rows))  # rows 1 .. body lie inside x
    head = min(row_len - shift, x.size)
    edges = np.zeros((n_rows + 1 - body) * row_len, dtype=np.float32)
    edges[shift:shift + head] = x[:head]
    rest = x[head + body * row_len:]
    edges[row_len:row_len + rest.size] = rest
    edges = edges.reshape(-1, row_len)
    inside = x[head:head + body * row_len].reshape(body, row_len)
    products = []
    for half in halves:
        out = np.empty((n_rows + 1, outputs), dtype=np.float32)
        np.matmul(edges[:1], half, out=out[:1])
        if body:
            np.matmul(inside, half, out=out[1:body + 1])
        np.matmul(edges[1:], half, out=out[body + 1:])
        products.append(out)
    return products[0], products[1]


def _polyphase_design(up: int, down: int, n_in: int, n_out: int) -> tuple[np.ndarray, int]:
    """The padded filter and the first output kept, exactly as ``resample_poly`` aligns them."""
    half_len = _half_length(up, down)
    h = _polyphase_fir(up, down) * up
    n_pre_pad = down - half_len % down
    n_pre_remove = (half_len + n_pre_pad) // down
    # resample_poly's post-padding: the fewest zeros that give n_out + n_pre_remove outputs
    filtered = (n_in - 1) * up + h.size + n_pre_pad - 1
    n_post_pad = max(0, (n_out + n_pre_remove - 1) * down - filtered)
    return np.concatenate([np.zeros(n_pre_pad), h, np.zeros(n_post_pad)]), n_pre_remove


def _upfirdn(h: np.ndarray, x: np.ndarray, up: int, down: int, first: int, count: int) -> np.ndarray:
    """Outputs ``first .. first + count - 1`` of upsample-by-``up``, filter, downsample-by-``down``.

    Output ``n`` only sees input samples ``b - m`` through the polyphase branch
    ``h[p::up]``, where ``p, b`` are the remainder and quotient of ``n * down / up``;
    outputs of one branch are ``up`` apart and their inputs ``down`` apart (see
    :func:`_strided_dot` for how each branch is computed).
    """
    out = np.zeros(count)
    branches = []
    for phase in range(up):
        taps = h[phase::up][::-1]
        # first n >= first whose remainder is this phase (n * down = phase mod up)
        n0 = next((n for n in range(first, first + up) if (n * down) % up == phase), None)
        if taps.size and n0 is not None and n0 < first + count:
            branches.append((taps, n0, (first + count - 1 - n0) // up + 1, (n0 * down) // up))
    if not branches:
        return out
    pad_left = max(taps.size for taps, *_ in branches)
    blocks = -(-pad_left // down)
    stop = max(b0 + pad_left + 1 + (rows + blocks) * down for _, _, rows, b0 in branches)
    # One zero-padded float32 copy for every branch: half the memory traffic of float64, and
    # BLAS's float32 products are ~2x faster; the result stays within ~1.5e-6 of
    # resample_poly's float64 one (the tests hold it to 2e-6).
    padded = np.zeros(max(stop, pad_left + x.size), dtype=np.float32)
    padded[pad_left:pad_left + x.size] = x
    for taps, n0, rows, b0 in branches:
        start = b0 - taps.size + 1 + pad_left
        out[n0 - first::up] = _strided_dot(padded[start:], taps, rows, down)
    return out


def _strided_dot(x: np.ndarray, taps: np.ndarray, rows: int, step: int) -> np.ndarray:
    """``y[r] = x[r * step : r * step + taps.size] @ taps`` for ``r < rows``, by BLAS.

    A strided sliding-window view cannot go to BLAS (numpy loops in C, 2-4x slower when
    decimating 48 kHz audio). Cut ``x`` into rows of ``step`` samples and ``taps`` into
    blocks of ``step``: block ``j`` meets input row ``r + j``, so one matrix product gives
    every (block, row) pair, and output ``r`` sums block ``j``'s product with row ``r + j``.
    """
    if step < 2:  # blocks of one sample: the product would be all bookkeeping; loop in C
        # (from 2 on, e.g. 3 kHz -> 2 kHz, blocks beat the strided loop 2-3x)
        window = np.lib.stride_tricks.as_strided(x, shape=(rows, taps.size),
                                                 strides=(step * x.itemsize, x.itemsize), writeable=False)
        return window @ taps
    blocks = -(-taps.size // step)
    kernel = np.zeros(blocks * step, dtype=x.dtype)
    kernel[:taps.size] = taps
    matrix = x[: (rows + blocks - 1) * step].reshape(rows + blocks - 1, step)
    products = kernel.reshape(blocks, step) @ matrix.T  # (blocks, rows + blocks - 1): rows contiguous
    y = products[0, :rows].astype(np.float64)
    for j in range(1, blocks):
        y += products[j, j:j + rows]
    return y


# -- zero-phase Butterworth filtering --------------------------------------------------------------
@lru_cache(maxsize=32)
def _butterworth(order: int, low: float, high: float, rate: float, btype: str) -> tuple[np.ndarray, float, int]:
    """(impulse response, DC gain, sosfiltfilt's pad length) of a digital Butterworth filter.

    Designed as ``scipy.signal.butter``: analog prototype, frequency transform of the
    pre-warped edges, bilinear transform.
    """
    poles = -np.exp(1j * np.pi * np.arange(-order + 1, order, 2) / (2 * order))
    zeros = np.array([], complex)
    gain = 1.0
    fs = 2.0

    def warp(freq: float) -> float:
        return 2 * fs * np.tan(np.pi * (2 * freq / rate) / fs)

    degree = poles.size - zeros.size
    if btype == "lowpass":
        wo = warp(high)
        zeros, poles, gain = zeros * wo, poles * wo, gain * wo ** degree
    elif btype == "highpass":
        wo = warp(low)
        gain = gain * np.real(np.prod(-zeros) / np.prod(-poles))
        zeros, poles = np.append(wo / zeros, np.zeros(degree)), wo / poles
    else:
        w1, w2 = warp(low), warp(high)
        bw, wo = w2 - w1, np.sqrt(w1 * w2)
        zl, pl = zeros * bw / 2, poles * bw / 2
        zeros = np.append(np.concatenate([zl + np.sqrt(zl ** 2 - wo ** 2), zl - np.sqrt(zl ** 2 - wo ** 2)]),
                          np.zeros(degree))
        poles = np.concatenate([pl + np.sqrt(pl ** 2 - wo ** 2), pl - np.sqrt(pl ** 2 - wo ** 2)])
        gain = gain * bw ** degree
    fs2 = 2 * fs
    degree = poles.size - zeros.size
    gain = gain * np.real(np.prod(fs2 - zeros) / np.prod(fs2 - poles))
    zeros = np.append((fs2 + zeros) / (fs2 - zeros), -np.ones(degree))
    poles = (fs2 + poles) / (fs2 - poles)
    # Impulse response from the frequency response on a grid far longer than the response
    # lasts (the slowest filter used, a 10 Hz high-pass, decays below 1e-13 within ~1200
    # samples), so time aliasing is below rounding.
    size = 1 << 15
    z = np.exp(1j * np.pi * np.arange(size // 2 + 1) / (size // 2))
    response = np.full(z.shape, gain, dtype=complex)
    for zero in zeros:
        response *= z - zero
    for pole in poles:
        response /= z - pole
    h = np.fft.irfft(response, size)
    keep = np.flatnonzero(np.abs(h) > _TAIL * np.abs(h).max())
    h = h[: keep[-1] + 1]
    h.setflags(write=False)
    sections = -(-poles.size // 2)
    padlen = 3 * (2 * sections + 1 - (poles.size % 2))
    return h, float(np.real(response[0])), padlen


@lru_cache(maxsize=256)
def _fast_size(n: int) -> int:
    """Smallest 2^a * 3^b * 5^c >= n: a length numpy's FFT handles fast (a power of two alone
    can nearly double the work)."""
    best = 1 << int(np.ceil(np.log2(n)))
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35 << max(0, int(np.ceil(np.log2(n / power35))))
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


@lru_cache(maxsize=64)
def _response_spectra(design: tuple, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The impulse response's spectrum ``H`` and ``|H|^2`` at one transform length, computed once."""
    spectrum = np.fft.rfft(_butterworth(*design)[0], size)
    power = np.abs(spectrum) ** 2
    spectrum.setflags(write=False)
    power.setflags(write=False)
    return spectrum, power


@lru_cache(maxsize=64)
def _reversed_response_spectrum(design: tuple, size: int) -> np.ndarray:
    """FFT of the time-reversed impulse response at one transform length, computed once."""
    spectrum = np.fft.rfft(_butterworth(*design)[0][::-1], size)
    spectrum.setflags(write=False)
    return spectrum


def _convolve_response(design: tuple, x: np.ndarray, *, reverse: bool = False) -> np.ndarray:
    """Full linear convolution of a short ``x`` (a few thousand samples) with the filter's
    impulse response, or with its time reversal, by FFT."""
    size_out = x.size + _butterworth(*design)[0].size - 1
    size = _fast_size(size_out)
    spectrum = _reversed_response_spectrum(design, size) if reverse else _response_spectra(design, size)[0]
    return np.fft.irfft(np.fft.rfft(x, size) * spectrum, size)[:size_out]


class Spectrum(NamedTuple):
    """One-sided FFT of a signal zero-padded to ``size`` samples at ``rate`` Hz: enough to
    compare the power in bands (:meth:`band_power`)."""

    values: np.ndarray
    size: int
    rate: float

    def band_power(self, low_hz: float, high_hz: float) -> float:
        """Sum of ``|X|^2`` over the bins at ``low_hz <= f < high_hz``."""
        first = int(np.ceil(low_hz * self.size / self.rate))
        stop = int(np.ceil(high_hz * self.size / self.rate))
        part = self.values[first:stop]
        return float(np.vdot(part, part).real)


def _filtfilt(design: tuple, samples: np.ndarray, *, with_spectrum: bool = False):
    """``sosfiltfilt`` (odd extension, steady-state starts) in one FFT pair instead of two.

    Forward then backward filtering from rest is a convolution with ``h`` followed by a
    correlation with ``h``, i.e. one multiplication by ``|H|^2``. What that leaves out is
    small and exact to add back: the backward pass starts in steady state for the forward
    output's last sample ``f[N-1]``, and it only sees the forward output up to ``N-1``, so the
    forward tail beyond the end (``L - 1`` samples) is subtracted from the last outputs.

    ``with_spectrum``: also return the input's :class:`Spectrum` that the product used (the
    odd-extended input less its first sample: the input's spectrum away from 0 Hz).
    """
    h, dc_gain, default_pad = _butterworth(*design)
    x = np.asarray(samples, dtype=np.float64)
    padlen = min(default_pad, max(0, x.size - 1))
    if padlen:
        x = np.concatenate([2 * x[0] - x[padlen:0:-1], x, 2 * x[-1] - x[-2:-padlen - 2:-1]])
    n, taps = x.size, h.size
    x0 = x[0]
    u = x - x0
    # Backward pass of the full forward output: correlation of (h * u) with h. Negative lags
    # wrap past n + taps - 2, so they never land on the samples kept.
    size = _fast_size(n + 2 * taps - 2)
    _spectrum, power = _response_spectra(design, size)
    spectrum = np.fft.rfft(u, size)
    out = np.fft.irfft(spectrum * power, size)[:n]
    # The forward output from sample n - 1 on, from the last ``taps`` inputs.
    head = max(0, n - taps)
    forward = _convolve_response(design, u[head:])[n - 1 - head: n - 1 - head + taps]
    last = forward[0]
    tail = forward[1:]  # forward output beyond the end, which the backward pass never sees
    if tail.size:
        # correction[d] = sum_j h[j + d] * tail[j] for output n - d, d = 1 .. taps - 1
        span = min(taps - 1, n)
        correction = _convolve_response(design, tail, reverse=True)[taps - 1 - np.arange(1, span + 1)]
        out[n - np.arange(1, span + 1)] -= correction
    # Steady-state starts: the backward pass starts at y[n-1] = dc_gain * x0 + last and sees
    # only samples up to n - 1, so its step term sums h[0 .. n-1-i].
    cumulative = np.cumsum(h)
    out += dc_gain * (dc_gain * x0 + last) - last * cumulative[-1]
    near_end = min(taps - 1, n)  # outputs whose backward sum stops at the last sample
    out[n - near_end:] += last * (cumulative[-1] - cumulative[near_end - 1::-1][:near_end])
    out = (out[padlen:-padlen] if padlen else out).astype(np.float32)
    return (out, Spectrum(spectrum, size, design[3])) if with_spectrum else out


def bandpass(samples: np.ndarray, rate: int, *, low_hz: float = HEART_BAND_HZ[0],
             high_hz: float = HEART_BAND_HZ[1], order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass (forward-backward, as ``sosfiltfilt``).

    Zero phase keeps S1/S2 where they are in time, which the envelope-based heart rate and
    the windowing rely on.
    """
    return _filtfilt(_bandpass_design(rate, low_hz, high_hz, order), samples)


def bandpass_with_spectrum(samples: np.ndarray, rate: int) -> tuple[np.ndarray, Spectrum]:
    """The heart-band :func:`bandpass`, plus the spectrum of its input that the filter's FFT
    computes anyway: the quality check compares band powers on it instead of transforming
    the recording a second time."""
    return _filtfilt(_bandpass_design(rate, *HEART_BAND_HZ, 4), samples, with_spectrum=True)


def _bandpass_design(rate: float, low_hz: float, high_hz: float, order: int) -> tuple:
    if not 0 < low_hz < high_hz < rate / 2:
        raise ParameterError(f"band {low_hz}-{high_hz} Hz impossible at {rate} Hz")
    return (order, float(low_hz), float(high_hz), float(rate), "bandpass")


def lowpass(samples: np.ndarray, rate: float, cutoff_hz: float, *, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth low-pass."""
    if not 0 < cutoff_hz < rate / 2:
        raise ParameterError(f"cut-off {cutoff_hz} Hz impossible at {rate} Hz")
    return _filtfilt((order, 0.0, float(cutoff_hz), float(rate), "lowpass"), samples)


def highpass(samples: np.ndarray, rate: float, cutoff_hz: float, *, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth high-pass."""
    if not 0 < cutoff_hz < rate / 2:
        raise ParameterError(f"cut-off {cutoff_hz} Hz impossible at {rate} Hz")
    return _filtfilt((order, float(cutoff_hz), 0.0, float(rate), "highpass"), samples)


def to_analysis_rate(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample to :data:`ANALYSIS_RATE_HZ` and band-pass to the heart band.

    This is the single front end shared by quality, heart rate, training and inference.
    """
    return bandpass(resample(samples, rate, ANALYSIS_RATE_HZ), ANALYSIS_RATE_HZ)
