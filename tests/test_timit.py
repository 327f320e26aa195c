"""TIMIT: a small synthetic corpus in the real LDC layout, written by the test.

Real speaker IDs of the dev and core-test sets, SA files, a training speaker whose ID contains
"sa", a lower-case copy of the tree, a big-endian SPHERE file, a RIFF file, and a
shorten-compressed header. The features of one file with ``resampler="torchaudio"`` are checked
against an independent torchaudio + torch.stft computation (the default MATLAB pipeline is
checked in test_matlab_resample.py).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from bench.errors import ConfigError, DataError
from bench.tasks import audio, build_task
from bench.tasks.timit import CORE_TEST_SPEAKERS, DEV_SPEAKERS, EXPECTED_SIZES

SR = 16000

# (part, dialect, speaker, sentence, n_samples at 16 kHz, storage)
CORPUS = [
    ("TRAIN", "DR1", "FCJF0", "SA1", 5200, "sphere"),
    ("TRAIN", "DR1", "FCJF0", "SA2", 4800, "sphere"),
    ("TRAIN", "DR1", "FCJF0", "SI1027", 6100, "sphere"),
    ("TRAIN", "DR1", "FCJF0", "SX127", 4400, "sphere"),
    ("TRAIN", "DR2", "FSAG0", "SA1", 5000, "sphere"),       # ID contains "sa": SI/SX must stay
    ("TRAIN", "DR2", "FSAG0", "SI1323", 7000, "sphere"),
    ("TRAIN", "DR2", "FSAG0", "SX63", 3900, "riff"),         # a RIFF WAV in the SPHERE tree
    ("TEST", "DR1", "FAKS0", "SA1", 5500, "sphere"),         # dev speaker
    ("TEST", "DR1", "FAKS0", "SI1573", 6400, "sphere"),
    ("TEST", "DR1", "FAKS0", "SX133", 4100, "sphere"),
    ("TEST", "DR1", "MDAB0", "SA2", 5300, "sphere"),         # core-test speaker
    ("TEST", "DR1", "MDAB0", "SI1039", 5900, "sphere_be"),   # big-endian samples
    ("TEST", "DR1", "MDAB0", "SX139", 4700, "sphere"),
    ("TEST", "DR2", "FPAS0", "SI1272", 5100, "sphere"),      # core-test speaker
    ("TEST", "DR3", "MRTK0", "SI1093", 4300, "sphere"),      # dev speaker
    ("TEST", "DR4", "FJRE0", "SA1", 12000, "sphere"),        # neither list; SA: not in the padding pool
    ("TEST", "DR4", "FJRE0", "SX1", 9000, "sphere"),         # longest non-SA TEST utterance
]
SPLITS = {
    "train": {("FCJF0", "SI1027"), ("FCJF0", "SX127"), ("FSAG0", "SI1323"), ("FSAG0", "SX63")},
    "val": {("FAKS0", "SI1573"), ("FAKS0", "SX133"), ("MRTK0", "SI1093")},
    "test": {("MDAB0", "SI1039"), ("MDAB0", "SX139"), ("FPAS0", "SI1272")},
}


def speechlike(n: int, seed: int) -> np.ndarray:
    """int16 samples: a few harmonics with a wandering pitch and envelope, plus noise."""
    rng = np.random.RandomState(seed)
    t = np.arange(n) / SR
    f0 = 120 + 40 * np.sin(2 * np.pi * 1.3 * t + rng.rand())
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    x = 0.2 * x + 0.01 * rng.randn(n)
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def write_sphere(path: Path, samples: np.ndarray, *, byte_format: str = "01", coding: str | None = None,
                 utterance: str = "si1027") -> None:
    fields = ["database_id -s5 TIMIT", "database_version -s3 1.0", f"utterance_id -s{len(utterance)} {utterance}",
              "channel_count -i 1", f"sample_count -i {len(samples)}", f"sample_rate -i {SR}",
              f"sample_min -i {int(samples.min())}", f"sample_max -i {int(samples.max())}",
              "sample_n_bytes -i 2", f"sample_byte_format -s2 {byte_format}", "sample_sig_bits -i 16"]
    if coding:
        fields.append(f"sample_coding -s{len(coding)} {coding}")
    header = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\nend_head\n").ljust(1024).encode("ascii")
    dtype = "<i2" if byte_format == "01" else ">i2"
    path.write_bytes(header + samples.astype(dtype).tobytes())


def make_corpus(root: Path, *, lower: bool = False, shorten: tuple | None = None) -> dict:
    """Write CORPUS under root/TIMIT; returns {(speaker, sentence): (path, int16 samples)}."""
    case = str.lower if lower else (lambda s: s)
    files = {}
    for k, (part, dr, spk, sent, n, kind) in enumerate(CORPUS):
        folder = root / case("TIMIT") / case(part) / case(dr) / case(spk)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / case(f"{sent}.WAV")
        samples = speechlike(n, k)
        if kind == "riff":
            sf.write(path, samples, SR, subtype="PCM_16", format="WAV")
        else:
            write_sphere(path, samples, byte_format="10" if kind == "sphere_be" else "01", utterance=sent.lower())
        (folder / case(f"{sent}.TXT")).write_text("0 46797 She had your dark suit in greasy wash water.\n")
        files[(spk, sent)] = (path, samples)
    if shorten:
        path = files[shorten][0]
        write_sphere(path, files[shorten][1], coding="pcm,embedded-shorten-v2.00")
        with open(path, "r+b") as f:      # shorten data is not PCM; scramble it like real shorten bytes
            f.seek(1024)
            f.write(np.random.RandomState(0).bytes(256))
    return files


def expected_frames(n16: int) -> int:
    return math.ceil(math.ceil(n16 / 2) / 128) + 3


def build(root: Path, batch_size: int = 2):
    task = build_task("timit", data_dir=str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "split sizes differ from the full corpus"
        dm = task.datamodule(batch_size)
    return task, dm


@pytest.fixture
def corpus(tmp_path, data_cache):
    return tmp_path / "ldc", make_corpus(tmp_path / "ldc")


def test_speaker_lists_are_the_published_ones():
    assert len(DEV_SPEAKERS) == 50 and len(CORE_TEST_SPEAKERS) == 24
    assert not DEV_SPEAKERS & CORE_TEST_SPEAKERS
    assert not any("sa" in s for s in DEV_SPEAKERS | CORE_TEST_SPEAKERS)
    # 2 male + 1 female per dialect region in the core set
    assert sum(s.startswith("m") for s in CORE_TEST_SPEAKERS) == 16
    assert EXPECTED_SIZES == {"train": 3696, "val": 400, "test": 192}


@pytest.mark.parametrize("lower", [False, True], ids=["upper-case", "lower-case"])
def test_splits_shapes_and_sa_exclusion(tmp_path, data_cache, lower):
    root = tmp_path / "ldc"
    files = make_corpus(root, lower=lower)
    task = build_task("timit", data_dir=str(root))
    with pytest.warns(UserWarning, match="differ from the full corpus"):
        dm = task.datamodule(2)
    got = {s: {(Path(p).parent.name.upper(), Path(p).name.split(".")[0].upper()) for p in task.files[s]}
           for s in ("train", "val", "test")}
    assert got == SPLITS                       # SA gone, FSAG0 kept, extra TEST speaker unused
    assert task.info()["sizes"] == {"train": 4, "val": 3, "test": 3}
    for split in ("train", "val", "test"):
        for path, feats in zip(task.files[split], dm.data[split].feats):
            key = (Path(path).parent.name.upper(), Path(path).name.split(".")[0].upper())
            assert feats.shape == (expected_frames(len(files[key][1])), 129)
            assert feats.min() >= -50.0 and feats[0].max() == -50.0 and feats[-1].max() == -50.0
    # validation and test: one batch each, padded to the longest non-SA TEST utterance (FJRE0/SX1)
    assert task.info()["eval_length"] == expected_frames(9000)
    val = list(dm.val_dataloader())
    assert len(val) == 1 and val[0][0].shape == (3, expected_frames(9000), 129)


def test_next_frame_alignment_and_mask(corpus, data_cache):
    _, dm = build(corpus[0])
    for x, y, mask in list(dm.train_dataloader()) + list(dm.val_dataloader()):
        lengths = mask.sum(1).long()
        for b, n in enumerate(lengths.tolist()):
            assert torch.equal(y[b, : n - 1], x[b, 1:n])          # target of frame t is frame t+1
            assert torch.all(y[b, n - 1:] == -50.0) and torch.all(x[b, n:] == -50.0)
            assert mask[b, :n].all() and not mask[b, n:].any()
        assert x.shape == y.shape and x.shape[:2] == mask.shape


def test_big_endian_file_matches_independent_stft(corpus, data_cache):
    root, files = corpus
    task, dm = build(root)
    path, samples = files[("MDAB0", "SI1039")]
    assert audio.sphere_header(path)["sample_byte_format"] == "10"
    ours = dm.data["test"].feats[[Path(p).name for p in task.files["test"]].index(path.name)].numpy()

    # independent computation from the int16 samples we wrote
    wave = torch.from_numpy(samples.astype(np.float32) / 32768.0)
    wave8 = torchaudio.functional.resample(wave, 16000, 8000)
    n = wave8.shape[0]
    padded = torch.cat([torch.zeros(256), wave8, torch.zeros(-(-n // 128) * 128 - n + 256)])
    spec = torch.stft(padded, n_fft=256, hop_length=128, window=torch.hann_window(256, periodic=True),
                      center=False, return_complex=True)
    ref = (10 * torch.log10(1e-5 + spec.abs() ** 2)).T.numpy()
    assert ours.shape == ref.shape == (expected_frames(len(samples)), 129)
    assert np.array_equal(ours, audio.file_features(path))          # the task's features: the default pipeline
    # the torchaudio option is this independent computation (the MATLAB default: test_matlab_resample.py)
    assert np.abs(audio.file_features(path, audio.FeatureSettings(resampler="torchaudio")) - ref).max() < 1e-4
    # the same samples stored little-endian give the same features
    le = root / "le.wav"
    write_sphere(le, samples)
    assert np.abs(audio.file_features(le) - ours).max() < 1e-6


def test_riff_file_in_the_tree_is_read(corpus, data_cache):
    root, files = corpus
    path, samples = files[("FSAG0", "SX63")]
    assert path.read_bytes()[:4] == b"RIFF"
    wave, sr = audio.read_audio(path)
    assert sr == 16000 and np.array_equal(np.round(wave * 32768).astype(np.int16), samples)


def test_shorten_compressed_file_gives_clear_error(tmp_path, data_cache):
    root = tmp_path / "ldc"
    files = make_corpus(root, shorten=("FCJF0", "SI1027"))
    with pytest.raises(DataError, match=r"(?s)SI1027\.WAV.*shorten.*sph2pipe -f wav"):
        build(root)
    # a converted RIFF copy next to it (X.WAV.wav) is used instead
    path, samples = files[("FCJF0", "SI1027")]
    sf.write(path.with_name(path.name + ".wav"), samples, SR, subtype="PCM_16", format="WAV")
    task, dm = build(root)
    assert any(p.endswith("SI1027.WAV.wav") for p in task.files["train"])
    assert len(task.files["train"]) == 4


def test_missing_or_wrong_data_dir(tmp_path, data_cache):
    with pytest.raises(DataError, match="timit needs --data-dir.*TRAIN/ and TEST/"):
        build_task("timit").datamodule(2)
    with pytest.raises(DataError, match="no TRAIN/ and TEST/ folders found"):
        build_task("timit", data_dir=str(tmp_path)).datamodule(2)
    with pytest.raises(DataError, match="is not a folder"):
        build_task("timit", data_dir=str(tmp_path / "nope")).datamodule(2)
    with pytest.raises(ConfigError, match="--seq-len"):
        build_task("timit", seq_len=100)


def test_loss_conventions():
    out = torch.zeros(2, 4, 3)
    y = torch.ones(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float32)
    paper, valid = audio.masked_mse(out, y, mask)
    assert paper.item() == pytest.approx(5 * 3 / (2 * 4 * 3))     # over the padded batch
    assert valid.item() == pytest.approx(1.0)                     # over valid entries only
    task = build_task("timit")
    metrics = task.metrics(out, (out, y, mask))
    assert metrics["mse"] == paper and metrics["mse_valid"] == valid
    assert task.loss(out, (out, y, mask)) == paper


def test_feature_cache_reused_rebuilt_and_never_half_read(corpus, data_cache, monkeypatch):
    root, _ = corpus
    task, dm = build(root)
    cache = Path(task.info()["feature_cache"])
    assert cache.is_file() and cache.parent.parent == data_cache

    def fail(*a, **k):
        raise AssertionError("features recomputed although cached")

    real = audio.file_features
    monkeypatch.setattr(audio, "file_features", fail)
    task2, dm2 = build(root)                    # second run: from the cache only
    assert task2.info()["feature_cache"] == str(cache)
    assert all(torch.equal(a, b) for a, b in zip(dm.data["train"].feats, dm2.data["train"].feats))

    calls = []
    monkeypatch.setattr(audio, "file_features", lambda p, s: calls.append(p) or real(p, s))
    paths = task.files["train"]
    other = audio.FeatureSettings(floor=1e-6)   # changed settings: a different cache, recomputed
    feats, path2 = audio.cached_features([Path(p) for p in paths], root, other, name="timit")
    assert path2 != cache and len(calls) == len(paths)
    assert min(f.min() for f in feats) == pytest.approx(-60.0)

    cache.write_bytes(cache.read_bytes()[:1000])   # a half-written cache under the real name
    calls.clear()
    task3, dm3 = build(root)
    assert len(calls) == 10 and all(torch.equal(a, b) for a, b in zip(dm.data["val"].feats, dm3.data["val"].feats))

    # a crash while writing leaves no file under the real name and no temporary file
    cache.unlink()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        build(root)
    assert not cache.exists() and not list(cache.parent.glob(".tmp-*"))


def test_bench_run_trains_on_timit(corpus, data_cache, tmp_path, one_thread):
    from bench.config import RunConfig
    from bench.run import run

    root, _ = corpus
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run(RunConfig(model="scurnn", task="timit", n_hidden=8, batch_size=2, max_steps=4, val_every=2,
                               data_dir=str(root), wandb="disabled", runs_dir=str(tmp_path / "runs"), quiet=True))
    assert result["status"] == "completed"
    m = result["metrics"]
    assert np.isfinite(m["test_mse"]) and np.isfinite(m["test_mse_valid"])
    assert m["test_mse"] < m["test_mse_valid"]          # the paper's convention divides by the padding too
    assert result["task_info"]["sizes"] == {"train": 4, "val": 3, "test": 3}
