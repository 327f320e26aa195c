"""Speech features shared by the ``timit`` and ``speech`` tasks (stwisdom/urnn util.py, downsample_audio.m).

The pipeline of Wisdom et al., which the scuRNN paper cites: first channel, resample to
8 kHz as MATLAB's ``resample(x, 8000, 16000)`` does and requantise to 16 bits as MATLAB's
``wavwrite`` does (``resampler="matlab"``, the default; ``"torchaudio"`` uses
torchaudio.functional.resample and no requantisation), right-pad with zeros to a multiple of
the hop, 256 zeros on each side, STFT with a periodic Hann window of 256 and hop 128 (129
bins), then 10·log10(1e-5 + |X|²). An utterance of L samples at 8 kHz gives ceil(L/128) + 3
frames; padded frames are -50 dB.

Also here: reading NIST SPHERE / RIFF / FLAC files, the on-disk feature cache (keyed by the
pipeline settings and the files; written atomically) and the padded (x, y, mask) batches
with the two masked-MSE conventions.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.errors import ConfigError, DataError, UnknownNameError
from bench.results import atomic_write

from .base import DEFAULT_DATA_SEED
from .loader import ResumableDataModule

AUDIO_EXTENSIONS = (".wav", ".flac", ".sph", ".nist")
SPH2PIPE_HINT = ("convert it to uncompressed audio with LDC's sph2pipe, e.g. `sph2pipe -f wav {name} {name}.wav` "
                 "(a converted `{name}.wav` next to the original is used instead of it)")


# ---- resampling to the feature rate -----------------------------------------------------------

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


def cache_root() -> Path:
    """Where downloads and feature caches go: $BENCH_CACHE_DIR, else ~/.cache/unitary-rnn-bench."""
    env = os.environ.get("BENCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unitary-rnn-bench"


# ---- reading audio ----------------------------------------------------------------------------

def sphere_header(path: str | Path) -> dict | None:
    """The fields of a NIST SPHERE header (``{"header_size": 1024, "sample_rate": 16000, ...}``),
    or ``None`` if the file does not start with ``NIST_1A``."""
    with open(path, "rb") as f:
        head = f.read(1024)
        if not head.startswith(b"NIST_1A"):
            return None
        lines = head.split(b"\n")
        try:
            size = int(lines[1].strip())
        except (IndexError, ValueError):
            raise DataError(f"{path}: malformed NIST SPHERE header (no header size on line 2)") from None
        if size > len(head):
            head += f.read(size - len(head))
    fields: dict = {"header_size": size}
    for line in head[:size].decode("ascii", "replace").splitlines()[2:]:
        if line.strip() == "end_head":
            break
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        name, kind, value = parts
        if kind == "-i":
            try:
                fields[name] = int(value)
            except ValueError:
                fields[name] = value.strip()
        else:
            fields[name] = value.strip()
    return fields


def check_sphere(path: str | Path, header: dict) -> None:
    """Reject compressed SPHERE (shorten, wavpack, shortpack), which libsndfile cannot read."""
    coding = str(header.get("sample_coding", "pcm")).lower()
    byte_format = str(header.get("sample_byte_format", "")).lower()
    if any(c in coding for c in ("shorten", "wavpack")) or "shortpack" in byte_format:
        field = f"sample_coding {coding}" if "shortpack" not in byte_format else f"sample_byte_format {byte_format}"
        raise DataError(f"{path}: compressed NIST SPHERE ({field}) cannot be read; "
                        + SPH2PIPE_HINT.format(name=Path(path).name))


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(first channel as float32 in [-1, 1), sample rate) of a WAV, FLAC or uncompressed SPHERE file."""
    import soundfile as sf

    header = sphere_header(path)
    if header is not None:
        check_sphere(path, header)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise DataError(f"{path}: cannot read audio ({exc}); supported: RIFF WAV, FLAC and uncompressed "
                        "NIST SPHERE (16-bit PCM)") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: the audio file has no samples")
    return np.ascontiguousarray(data[:, 0]), int(sr)


def audio_length(path: str | Path) -> tuple[int, int]:
    """(number of samples, sample rate) from the header, without decoding."""
    import soundfile as sf

    header = sphere_header(path)
    if header is not None and "sample_count" in header and "sample_rate" in header:
        return int(header["sample_count"]), int(header["sample_rate"])
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DataError(f"{path}: cannot read the audio header ({exc})") from None
    return int(info.frames), int(info.samplerate)


# ---- features ---------------------------------------------------------------------------------

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


# ---- the feature cache ------------------------------------------------------------------------

def _file_id(path: Path, root: Path) -> list:
    st = path.stat()
    try:
        name = str(path.relative_to(root))
    except ValueError:
        name = str(path)
    return [name, st.st_size, st.st_mtime_ns]


def cache_key(paths: list[Path], root: Path, settings: FeatureSettings) -> dict:
    from importlib.metadata import version

    key = {"settings": dataclasses.asdict(settings), "root": str(Path(root).resolve()),
           "files": [_file_id(Path(p), Path(root)) for p in paths]}
    if settings.resampler == "torchaudio":    # its version stands for its resampler's code
        key["torchaudio"] = version("torchaudio")
    return key


def cached_features(paths: list[Path], root: str | Path, settings: FeatureSettings = PAPER_FEATURES, *,
                    name: str = "speech", cache_dir: str | Path | None = None) -> tuple[list[np.ndarray], Path]:
    """Features of every file in ``paths`` (in order), computed once and cached on disk.

    The cache file's name is a hash of the settings and of the files (path, size, mtime), so
    changed settings or files select a new cache; the key is also stored inside and checked.
    It is written to a temporary file and renamed, so a half-written cache is never read; an
    unreadable one is rebuilt. Returns (features, cache path).
    """
    key = cache_key(paths, root, settings)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "features"
    path = folder / f"{name}-{digest}.npz"
    feats = _load_cache(path, key)
    if feats is not None:
        return feats, path
    started = time.time()
    print(f"[bench] computing {settings.n_bins}-bin log-spectra of {len(paths)} audio files "
          f"(cached afterwards in {path})", file=sys.stderr, flush=True)
    feats = [file_features(p, settings) for p in paths]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_cache(path, key, feats)
    except OSError as exc:  # a read-only cache folder costs time, not correctness
        print(f"[bench] could not write the feature cache {path}: {exc}; set BENCH_CACHE_DIR to a writable "
              "folder", file=sys.stderr)
    print(f"[bench] features done in {time.time() - started:.1f} s", file=sys.stderr, flush=True)
    return feats, path


def _write_cache(path: Path, key: dict, feats: list[np.ndarray]) -> None:
    lengths = np.array([len(f) for f in feats], dtype=np.int64)
    stacked = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
    atomic_write(path, lambda f: np.savez(f, features=stacked, lengths=lengths,
                                          key=np.array(json.dumps(key, sort_keys=True))))


def _load_cache(path: Path, key: dict) -> list[np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["key"])) != json.loads(json.dumps(key, sort_keys=True)):
                return None
            stacked, lengths = data["features"], data["lengths"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        print(f"[bench] ignoring unreadable feature cache {path} ({exc}); rebuilding it", file=sys.stderr)
        return None
    if lengths.sum() != len(stacked) or len(lengths) != len(key["files"]):
        return None
    return np.split(stacked, np.cumsum(lengths)[:-1]) if len(lengths) else []


# ---- batches and loss -------------------------------------------------------------------------

class Utterances(Dataset):
    def __init__(self, feats: list[np.ndarray]):
        self.feats = [torch.from_numpy(np.asarray(f, dtype=np.float32)) for f in feats]

    def __len__(self):
        return len(self.feats)

    def __getitem__(self, i):
        return self.feats[i]


def pad_batch(items: list[torch.Tensor], *, pad_db: float = PAPER_FEATURES.pad_db, length: int | None = None):
    """(x, y, mask): x padded with ``pad_db`` frames to ``length`` (default: the longest item),
    y[:, t] = x[:, t + 1] (the last step's target is a pad frame), mask[:, t] = t < len."""
    T = length or max(len(f) for f in items)
    B, F = len(items), items[0].shape[1]
    x = torch.full((B, T + 1, F), pad_db)
    mask = torch.zeros(B, T)
    for b, f in enumerate(items):
        if len(f) > T:
            raise ValueError(f"utterance of {len(f)} frames is longer than the padded length {T}")
        x[b, :len(f)] = f
        mask[b, :len(f)] = 1.0
    return x[:, :-1].contiguous(), x[:, 1:].contiguous(), mask


def masked_mse(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(paper, valid): Σ mask·(out - y)² over the padded batch size (B·T·F, Wisdom's and the
    scuRNN paper's convention) and over the valid entries only (Σ mask · F, expRNN's)."""
    err = ((out - y) ** 2 * mask.unsqueeze(-1)).sum()
    return err / out.numel(), err / (mask.sum() * out.shape[-1]).clamp_min(1)


class SpectrogramDataModule(ResumableDataModule):
    """Shuffled training batches padded to their longest utterance; validation and test in a
    fixed order, padded to ``eval_length`` frames (the paper's normalisation length)."""

    def __init__(self, splits: dict[str, list[np.ndarray]], batch_size: int, seed: int, *,
                 eval_batch_size: dict[str, int], eval_length: int, pad_db: float):
        super().__init__()
        self.data = {k: Utterances(v) for k, v in splits.items()}
        self.batch_size, self.seed = batch_size, seed
        self.eval_batch_size, self.eval_length, self.pad_db = eval_batch_size, eval_length, pad_db

    def train_dataloader(self):
        return self.train_loader(self.data["train"], batch_size=self.batch_size, shuffle=True, seed=self.seed,
                                 collate_fn=partial(pad_batch, pad_db=self.pad_db))

    def _eval(self, split):
        return DataLoader(self.data[split], batch_size=self.eval_batch_size[split], shuffle=False,
                          collate_fn=partial(pad_batch, pad_db=self.pad_db, length=self.eval_length))

    def val_loader(self):
        return self._eval("val")

    def test_dataloader(self):
        return self._eval("test")


def repeat_frame_mse(feats: list[np.ndarray], length: int, pad_db: float) -> dict[str, float]:
    """Both MSE conventions of the trivial predictor y_hat[t] = x[t], for reference."""
    total = frames = 0.0
    for f in feats:
        x, y, mask = pad_batch([torch.from_numpy(f)], pad_db=pad_db, length=length)
        err, _ = masked_mse(x, y, mask)
        total += float(err) * x.numel()
        frames += float(mask.sum())
    bins = feats[0].shape[1] if feats else 1
    return {"mse": total / max(1, len(feats) * length * bins), "mse_valid": total / max(1.0, frames * bins)}


class SpeechTaskMixin:
    """Loss and metrics shared by ``timit`` and ``speech``: masked MSE on every step."""

    metric, metric_mode = "mse", "min"
    d_input = d_output = PAPER_FEATURES.n_bins
    uses_seq_len = False

    def __init__(self, seq_len: int | None = None, data_dir: str | None = None, data_seed: int = DEFAULT_DATA_SEED):
        if seq_len is not None:
            raise ConfigError(f"{self.name}: utterances have their own lengths; --seq-len {seq_len} does not apply")
        super().__init__(seq_len=None, data_dir=data_dir, data_seed=data_seed)
        self.details: dict = {}
        self.files: dict[str, list[str]] = {}     # split -> audio files, once datamodule() ran

    def loss(self, out, batch):
        _, y, mask = batch
        return masked_mse(out, y, mask)[0]

    def metrics(self, out, batch):
        _, y, mask = batch
        paper, valid = masked_mse(out, y, mask)
        return {"mse": paper, "mse_valid": valid}


def find_audio(root: str | Path) -> list[Path]:
    """Every WAV/FLAC/SPHERE file under ``root`` (any case), sorted; hidden folders skipped.

    Where a converted copy sits next to its original (``X.WAV`` and ``X.WAV.wav``, as some
    TIMIT copies have), one is kept: the original, unless it is compressed SPHERE.
    """
    root = Path(root)
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("."):
                p = Path(dirpath) / name
                stem = str(p.relative_to(root)).lower()
                while Path(stem).suffix in AUDIO_EXTENSIONS:
                    stem = stem[: -len(Path(stem).suffix)]
                found.setdefault(stem, []).append(p)
    return [v[0] if len(v) == 1 else pick_readable(sorted(v, key=lambda p: (len(p.name), p.name)))
            for _, v in sorted(found.items())]


def pick_readable(candidates: list[Path]) -> Path:
    """The first candidate that is not compressed SPHERE (else the first, whose read gives the error)."""
    for p in candidates:
        header = sphere_header(p)
        if header is None:
            return p
        try:
            check_sphere(p, header)
            return p
        except DataError:
            continue
    return candidates[0]
