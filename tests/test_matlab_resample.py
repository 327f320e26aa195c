"""The default feature pipeline against an independent transcription of Wisdom's MATLAB steps.

Wisdom et al. (stwisdom/urnn matlab/downsample_audio.m) run MATLAB ``resample(x, 8000, 16000)``
and write the result as a 16-bit WAV with ``wavwrite`` before the Python STFT. The transcription
below follows MATLAB's own steps one by one, in NumPy only: ``firls`` by solving its normal
equations, the Kaiser window from its Bessel formula, ``upfirdn`` as zero-stuffing, a full
convolution and decimation, then the delay cut; ``wavwrite``'s rounding; and the STFT with
``np.fft``. The harness computes the same thing differently (a closed-form filter and a polyphase
sum, torch.stft), so agreement checks both.

The comparison can fail (checked by hand once, not kept as tests): with a one-sample delay error
(±1), β = 4 or 6, or N = 9 in the transcription, the feature MSE on the five real clips is
0.040-0.046, 0.017 / 0.012 and 0.015 dB² (the harness against the unchanged transcription:
4e-10 dB²), and the waveform and small-signal checks fail by orders of magnitude.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.tasks import audio

realdata = pytest.mark.realdata
FEATURE_MSE_TOL = 0.01                    # dB², over all frames and bins of a clip


# ---- the transcription --------------------------------------------------------------------------

def firls_type1(order: int, edges: list[float], desired: list[float]) -> np.ndarray:
    """MATLAB ``firls(order, edges, desired)`` for an even order (a type-I linear-phase filter),
    unit weights: minimise Σ_bands ∫ (A(ω) - D(ω))² dω over ω = π·edge, with the zero-phase
    amplitude A(ω) = Σ_{k=0..M} a_k cos(kω), M = order/2, and D linear across each band.
    Normal equations Q a = b with
        Q_kl = Σ_bands ∫ cos(kω) cos(lω) dω = Σ_bands ½ [S_{k-l} + S_{k+l}],  S_n = ∫ cos(nω) dω,
        b_k  = Σ_bands ∫ D(ω) cos(kω) dω,  D(ω) = c + s·ω on the band,
               ∫ (c + sω) cos(kω) dω = c·S_k + s·[ω sin(kω)/k + cos(kω)/k²]   (k > 0),
               c·(ω1 - ω0) + s·(ω1² - ω0²)/2                                   (k = 0);
    then h = [a_M/2 ... a_1/2, a_0, a_1/2 ... a_M/2].
    """
    assert order % 2 == 0
    M = order // 2
    k = np.arange(M + 1)

    def S(n, w0, w1):
        n = np.asarray(n, dtype=float)
        safe = np.where(n == 0, 1.0, n)
        return np.where(n == 0, w1 - w0, (np.sin(safe * w1) - np.sin(safe * w0)) / safe)

    Q = np.zeros((M + 1, M + 1))
    b = np.zeros(M + 1)
    for j in range(0, len(edges), 2):
        w0, w1 = math.pi * edges[j], math.pi * edges[j + 1]
        d0, d1 = desired[j], desired[j + 1]
        s = (d1 - d0) / (w1 - w0)
        c = d0 - s * w0
        Q += 0.5 * (S(k[:, None] - k[None, :], w0, w1) + S(k[:, None] + k[None, :], w0, w1))
        kk = np.where(k == 0, 1.0, k)
        ramp = (w1 * np.sin(kk * w1) - w0 * np.sin(kk * w0)) / kk + (np.cos(kk * w1) - np.cos(kk * w0)) / kk ** 2
        b += np.where(k == 0, c * (w1 - w0) + s * (w1 ** 2 - w0 ** 2) / 2, c * S(k, w0, w1) + s * ramp)
    a = np.linalg.solve(Q, b)
    return np.concatenate([a[:0:-1] / 2, a[:1], a[1:] / 2])


def kaiser(L: int, beta: float) -> np.ndarray:
    """MATLAB ``kaiser(L, β)``: I0(β·sqrt(1 - (2n/(L-1) - 1)²)) / I0(β), n = 0..L-1."""
    n = np.arange(L)
    return np.i0(beta * np.sqrt(1 - (2 * n / (L - 1) - 1) ** 2)) / np.i0(beta)


def resample_reference(x: np.ndarray, p: int, q: int, N: int = 10, beta: float = 5.0, shift: int = 0):
    """MATLAB ``resample(x, p, q, N, β)`` step by step (``shift`` is a deliberate delay error)."""
    g = math.gcd(p, q)
    p, q = p // g, q // g
    Lx = len(x)
    pqmax = max(p, q)
    fc = 1 / 2 / pqmax
    L = 2 * N * pqmax + 1
    h = firls_type1(L - 1, [0, 2 * fc, 2 * fc, 1], [1, 1, 0, 0]) * kaiser(L, beta)
    h = p * h / h.sum()
    Lhalf = (L - 1) / 2
    nz = math.floor(q - Lhalf % q)                 # delay so that decimation hits the centre tap
    h = np.concatenate([np.zeros(nz), h])
    Lhalf += nz
    delay = math.floor(math.ceil(Lhalf) / q) + shift
    Ly = math.ceil(Lx * p / q)
    nz1 = 0                                        # zero-pad so the output has exactly Ly samples
    while math.ceil(((Lx - 1) * p + len(h) + nz1) / q) - delay < Ly:
        nz1 += 1
    h = np.concatenate([h, np.zeros(nz1)])
    up = np.zeros((Lx - 1) * p + 1)                # upfirdn: upsample by p, filter, downsample by q
    up[::p] = x
    y = np.convolve(up, h)[::q]
    return y[delay:delay + Ly]


def wavwrite16(y: np.ndarray) -> np.ndarray:
    """wavwrite, 16 bits, read back as int16/32768: round(32768·y) clipped to [-32768, 32767]."""
    return np.clip(np.round(y * 32768), -32768, 32767) / 32768


def features_reference(wave: np.ndarray, sr: int, **resample_args) -> np.ndarray:
    """Wisdom's features: resample + wavwrite, pad to a multiple of 128 plus 256 zeros each side,
    periodic Hann 256 / hop 128 STFT (np.fft), 10·log10(1e-5 + |X|²)."""
    x = wavwrite16(resample_reference(np.asarray(wave, dtype=np.float64), 8000, sr, **resample_args))
    x = np.concatenate([np.zeros(256), x, np.zeros(-len(x) % 128 + 256)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(256) / 256)
    frames = np.stack([x[i:i + 256] * window for i in range(0, len(x) - 256 + 1, 128)])
    return 10 * np.log10(1e-5 + np.abs(np.fft.rfft(frames, axis=1)) ** 2)


# ---- tests --------------------------------------------------------------------------------------

def test_filter_is_the_firls_kaiser_design():
    for p, q in ((1, 2), (2, 1), (3, 2), (2, 3)):
        m = max(p, q)
        L = 2 * 10 * m + 1
        ref = firls_type1(L - 1, [0, 1 / m, 1 / m, 1], [1, 1, 0, 0]) * kaiser(L, 5)
        ours = audio.resample_filter(p, q)
        assert len(ours) == L
        np.testing.assert_allclose(ours, p * ref / ref.sum(), atol=1e-12)
        assert ours.sum() == pytest.approx(p)                      # gain p


@pytest.mark.parametrize("p,q,n", [(1, 2, 1001), (1, 2, 1000), (2, 1, 333), (3, 2, 500), (2, 3, 500), (4, 1, 7)])
def test_resample_matches_the_transcription(p, q, n):
    x = np.random.default_rng(n).standard_normal(n)
    ours = audio.matlab_resample(x, p, q)
    assert len(ours) == math.ceil(n * p / q)
    np.testing.assert_allclose(ours, resample_reference(x, p, q), atol=1e-12)


@pytest.mark.parametrize("n", [16000, 16001])
def test_sine_lines_up_with_the_analytic_sine(n):
    """A 1 kHz sine at 16 kHz comes out as the 1 kHz sine sampled at 8 kHz: output k is input
    time 2k (a one-sample delay at 16 kHz would leave an error of 2·sin(π/16) ≈ 0.39)."""
    x = np.sin(2 * np.pi * 1000 * np.arange(n) / 16000)
    y = audio.matlab_resample(x, 8000, 16000)
    assert len(y) == math.ceil(n / 2)
    k = np.arange(len(y))
    inner = slice(40, len(y) - 40)                                  # two filter lengths from the edges
    assert np.abs(y - np.sin(2 * np.pi * 1000 * k / 8000))[inner].max() < 1e-3


def test_wav16_rounds_and_clips_like_wavwrite():
    x = np.array([-1.5, -1.0, -0.2, -0.5 / 32768, 0.0, 0.5 / 32768, 0.2, 32767.4 / 32768, 1.0, 2.0])
    assert (audio.wav16(x) * 32768).tolist() == [-32768, -32768, -6554, -1, 0, 1, 6554, 32767, 32767, 32767]


@realdata
def test_features_match_the_transcription(speech_dir):
    clips = sorted(speech_dir.glob("*.wav"))
    assert len(clips) == 5
    for path in clips:
        wave, sr = audio.read_audio(path)
        ours = audio.file_features(path)                            # the default pipeline, as training sees it
        ref = features_reference(wave, sr)
        assert ours.shape == ref.shape == (audio.n_frames(len(wave), sr), 129)
        mse = float(np.mean((ours - ref) ** 2))
        assert mse <= FEATURE_MSE_TOL, (path.name, mse)
        # the requantised 8 kHz waveforms agree to the sample (a rounding tie may differ by 1 LSB)
        x_ours = audio.resample(wave, sr).numpy().astype(np.float64)
        x_ref = wavwrite16(resample_reference(wave.astype(np.float64), 8000, sr))
        assert np.abs(x_ours - x_ref).max() <= 1 / 32768 and np.mean(x_ours != x_ref) < 1e-3


@realdata
def test_torchaudio_option_gives_the_previous_features(speech_dir):
    """``resampler="torchaudio"`` is the pipeline before the MATLAB resampler became the default."""
    import torchaudio

    settings = audio.FeatureSettings(resampler="torchaudio")
    path = sorted(speech_dir.glob("*.wav"))[0]
    wave, sr = audio.read_audio(path)
    x = torchaudio.functional.resample(torch.from_numpy(wave), sr, 8000)
    n = x.shape[0]
    x = torch.cat([torch.zeros(256), x, torch.zeros(-n % 128 + 256)])
    spec = torch.stft(x, 256, hop_length=128, window=torch.hann_window(256, periodic=True), center=False,
                      return_complex=True)
    old = (10 * torch.log10(1e-5 + spec.real ** 2 + spec.imag ** 2)).T.numpy()
    ours = audio.file_features(path, settings)
    assert ours.shape == old.shape and np.abs(ours - old).max() < 1e-4       # float32 STFT rounding only
    assert np.abs(audio.file_features(path) - old).max() > 1.0              # the default is another pipeline


def test_resampler_is_validated_and_keys_the_cache(tmp_path):
    from bench.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="unknown resampler 'scipy'; known resamplers: matlab, torchaudio"):
        audio.FeatureSettings(resampler="scipy")
    assert audio.PAPER_FEATURES.resampler == "matlab"
    keys = [audio.cache_key([], tmp_path, audio.FeatureSettings(resampler=r)) for r in audio.RESAMPLERS]
    assert keys[0] != keys[1] and keys[0]["settings"]["version"] >= 2
