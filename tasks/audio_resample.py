"""Resampling to the feature rate: MATLAB's ``resample`` and ``wavwrite`` as Wisdom et al.'s
matlab/downsample_audio.m runs them, or torchaudio's resampler (:data:`RESAMPLERS`).
"""
from __future__ import annotations

import math

import numpy as np
import torch


def resample_filter(p: int, q: int, *, half_taps: int = 10, beta: float = 5.0) -> np.ndarray:
    """The anti-aliasing filter of MATLAB's ``resample(x, p, q)`` (defaults N = 10, β = 5).

    MATLAB: ``h = firls(L-1, [0 2fc 2fc 1], [1 1 0 0]) .* kaiser(L, β)'`` with fc = 1/(2·max(p, q)),
    L = 2·N·max(p, q) + 1, then ``h = p·h/sum(h)`` (gain p, the window's DC loss removed).
    firls minimises the integrated squared error of the zero-phase amplitude over the bands;
    with equal weights and two bands that abut and cover [0, Nyquist], its normal matrix is
    diagonal (cosines are orthogonal on [0, π]; firls itself skips the solve in this case), so
    the design is the ideal low-pass cut to L taps: sin(ωc·n)/(π·n) with ωc = π/max(p, q).
    ``tests/test_matlab_resample.py`` checks this against the full normal-equation solve.
    """
    m = max(p, q)
    n = np.arange(-half_taps * m, half_taps * m + 1)
    h = np.sinc(n / m) / m * np.kaiser(len(n), beta)
    return p * h / h.sum()


def matlab_resample(x: np.ndarray, p: int, q: int, *, half_taps: int = 10, beta: float = 5.0) -> np.ndarray:
    """MATLAB's ``resample(x, p, q, N, β)`` of a 1-D signal, in float64: ceil(len·p/q) samples.

    MATLAB pads h with zeros so that its centre tap falls on the first output sample, runs
    ``upfirdn(x, h, p, q)`` and cuts the delay and the tail; the result is, with L = len(h),
    y[k] = Σ_m x[m]·h[(L-1)/2 + k·q - m·p]   (x = 0 outside the signal),
    so output sample k lies at input time k·q/p. Computed here polyphase: the taps that meet
    output k are h[r + i·p] (r = ((L-1)/2 + k·q) mod p), applied to x[⌊((L-1)/2 + k·q)/p⌋ - i].
    p/q is reduced by the gcd first (MATLAB reduces it with ``rat(p/q, 1e-12)``: the same terms
    for any pair of integer sample rates).
    """
    g = math.gcd(p, q)
    p, q = p // g, q // g
    x = np.asarray(x, dtype=np.float64)
    if p == q == 1:
        return x.copy()
    h = resample_filter(p, q, half_taps=half_taps, beta=beta)
    centre, n_taps = (len(h) - 1) // 2, -(-len(h) // p)
    phases = np.zeros(n_taps * p)
    phases[: len(h)] = h
    phases = phases.reshape(n_taps, p).T                         # (p, n_taps): phases[r, i] = h[r + i·p]
    t = centre + np.arange(-(-len(x) * p // q)) * q                # upsampled index of each output's centre
    first, phase = t // p, t % p
    lead = n_taps                                                  # zeros before x: index first - i >= -lead
    padded = np.concatenate([np.zeros(lead), x, np.zeros(centre // p + 2)])
    y = np.zeros(len(t))
    for i in range(n_taps):
        y += phases[phase, i] * padded[first - i + lead]
    return y


def wav16(x: np.ndarray) -> np.ndarray:
    """``x`` written as a 16-bit WAV by MATLAB's ``wavwrite`` and read back as int16/32768.

    wavwrite's PCM_Quantize (MATLAB's toolbox/matlab/audio/wavwrite.m): m = 2^(nbits-1) = 32768,
    y = round(m·x) (MATLAB rounds halves away from zero), clipped to [-m, m-1]. Wisdom's
    matlab/downsample_audio.m calls ``wavwrite``; ``audiowrite``, its successor, floors instead
    (MATLAB Answers 432779: audiowrite of ±0.2 reads back as 6553 and -6554), a half-LSB offset.
    """
    y = np.sign(x) * np.floor(np.abs(x) * 32768.0 + 0.5)
    return np.clip(y, -32768, 32767) / 32768.0


def resample_matlab(wave: np.ndarray, sr: int, target: int) -> torch.Tensor:
    """Wisdom's step: MATLAB ``resample(x, target, sr)`` then ``wavwrite`` at 16 bits (also when
    sr == target, as the script writes every file)."""
    return torch.from_numpy(wav16(matlab_resample(wave, target, sr)).astype(np.float32))


def resample_torchaudio(wave: np.ndarray, sr: int, target: int) -> torch.Tensor:
    """torchaudio.functional.resample (sinc_interp_hann, width 6, rolloff 0.99), no requantisation."""
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if sr == target:
        return x
    import torchaudio

    return torchaudio.functional.resample(x, sr, target)


# name -> (mono float waveform, its rate, the target rate) -> float32 tensor of ceil(n·target/sr) samples
RESAMPLERS = {"matlab": resample_matlab, "torchaudio": resample_torchaudio}
