"""The features of one utterance: the pipeline's settings (:class:`FeatureSettings`) and the
log-spectrogram of a waveform or an audio file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.errors import UnknownNameError

from .audio_files import read_audio
from .audio_resample import RESAMPLERS


@dataclass(frozen=True)
class FeatureSettings:
    """Every setting the features depend on; the cache is keyed by all of them.

    ``resampler`` names the step to 8 kHz (a key of :data:`RESAMPLERS`): ``"matlab"``, Wisdom's
    MATLAB ``resample`` + 16-bit ``wavwrite``, or ``"torchaudio"`` (no requantisation).
    """

    sample_rate: int = 8000
    n_fft: int = 256
    hop: int = 128
    edge_pad: int = 256            # zeros added on each side after padding to a multiple of the hop
    floor: float = 1e-5            # 10·log10(floor + |X|^2); padded frames are 10·log10(floor)
    resampler: str = "matlab"      # a key of RESAMPLERS: "matlab" (Wisdom's) or "torchaudio"
    version: int = 2               # bump when the code's output changes for the same settings

    def __post_init__(self):
        if self.resampler not in RESAMPLERS:
            raise UnknownNameError(f"unknown resampler {self.resampler!r}; known resamplers: "
                                   f"{', '.join(RESAMPLERS)}")

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def pad_db(self) -> float:
        return 10 * math.log10(self.floor)


PAPER_FEATURES = FeatureSettings()


def resample(wave, sr: int, settings: FeatureSettings = PAPER_FEATURES) -> torch.Tensor:
    """``wave`` at ``settings.sample_rate`` by ``settings.resampler``."""
    return RESAMPLERS[settings.resampler](np.asarray(wave, dtype=np.float32), sr, settings.sample_rate)


def log_spectrogram(wave, sr: int, settings: FeatureSettings = PAPER_FEATURES) -> np.ndarray:
    """(T, n_bins) float32 features of a mono waveform (numpy or torch, float in [-1, 1))."""
    x = resample(np.asarray(wave, dtype=np.float32), sr, settings)
    n = x.shape[-1]
    right = -n % settings.hop
    x = torch.nn.functional.pad(x, (settings.edge_pad, right + settings.edge_pad))
    window = torch.hann_window(settings.n_fft, periodic=True)
    spec = torch.stft(x, settings.n_fft, hop_length=settings.hop, window=window, center=False,
                      return_complex=True)                                      # (n_bins, T)
    power = spec.real ** 2 + spec.imag ** 2
    return (10 * torch.log10(settings.floor + power)).T.contiguous().numpy()


def n_frames(n_samples: int, sr: int, settings: FeatureSettings = PAPER_FEATURES) -> int:
    """Frames :func:`log_spectrogram` gives for ``n_samples`` at ``sr`` (both resamplers give
    ceil(n·p/q) samples)."""
    g = math.gcd(sr, settings.sample_rate)
    n = -(-n_samples * (settings.sample_rate // g) // (sr // g))
    padded = -(-n // settings.hop) * settings.hop + 2 * settings.edge_pad
    return (padded - settings.n_fft) // settings.hop + 1


def file_features(path: str | Path, settings: FeatureSettings = PAPER_FEATURES) -> np.ndarray:
    wave, sr = read_audio(path)
    return log_spectrogram(wave, sr, settings)
