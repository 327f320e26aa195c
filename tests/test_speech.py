"""Any folder of speech: the real LibriVox clips in ../shared/data/speech through the TIMIT
pipeline, the seeded split by file, other formats (FLAC, SPHERE), and a short training run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bench.errors import ConfigError, DataError
from bench.tasks import audio, build_task
from bench.tasks.speech import split_files

realdata = pytest.mark.realdata
# frames of the five clips through the paper's pipeline (the longest: 447 x 129)
CLIP_FRAMES = {"0870": 447, "0880": 190, "0890": 335, "0920": 382, "0930": 209}


def clip_id(path) -> str:
    return Path(path).stem.rsplit("-", 1)[-1]


@realdata
def test_real_clips_give_129_bin_frames(speech_dir, data_cache):
    task = build_task("speech", data_dir=str(speech_dir))
    dm = task.datamodule(3)
    assert task.info()["sizes"] == {"train": 3, "val": 1, "test": 1}
    for split in ("train", "val", "test"):
        for path, feats in zip(task.files[split], dm.data[split].feats):
            assert feats.shape == (CLIP_FRAMES[clip_id(path)], 129)
            wave, sr = audio.read_audio(path)
            assert sr == 16000 and feats.shape[0] == audio.n_frames(len(wave), sr)
            assert feats.min() >= -50.0 and 0.0 < feats.max() < 40.0      # log-power in dB of real speech
    x, y, mask = next(iter(dm.train_dataloader()))
    assert x.shape == (3, 447, 129) and y.shape == x.shape and mask.shape == (3, 447)


@realdata
def test_split_is_seeded_by_file(speech_dir, data_cache):
    paths = audio.find_audio(speech_dir)
    assert len(paths) == 5
    a, b = split_files(paths, 5544), split_files(paths, 5544)
    assert a == b
    assert sorted(sum(a.values(), [])) == sorted(paths)                 # a partition by file
    others = [split_files(paths, s)["test"] for s in range(10)]
    assert len({tuple(t) for t in others}) > 1                          # the seed matters
    with pytest.raises(DataError, match="at least 3 audio files"):
        split_files(paths[:2], 0)


@realdata
def test_second_datamodule_uses_the_cache(speech_dir, data_cache, monkeypatch):
    first = build_task("speech", data_dir=str(speech_dir))
    dm1 = first.datamodule(3)

    def fail(*a, **k):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr(audio, "file_features", fail)
    second = build_task("speech", data_dir=str(speech_dir))
    dm2 = second.datamodule(3)
    assert second.info()["feature_cache"] == first.info()["feature_cache"]
    assert all(np.array_equal(a, b) for a, b in zip(dm1.data["train"].feats, dm2.data["train"].feats))


@realdata
def test_flac_and_sphere_copies_give_the_same_features(speech_dir, tmp_path, data_cache):
    src = sorted(speech_dir.glob("*.wav"))[1]
    samples, sr = sf.read(src, dtype="int16")
    sf.write(tmp_path / "a.flac", samples, sr, format="FLAC")
    header = ("NIST_1A\n   1024\nchannel_count -i 1\nsample_count -i %d\nsample_rate -i %d\nsample_n_bytes -i 2\n"
              "sample_byte_format -s2 10\nsample_sig_bits -i 16\nend_head\n" % (len(samples), sr)).ljust(1024)
    (tmp_path / "b.SPH").write_bytes(header.encode() + samples.astype(">i2").tobytes())
    ref = audio.file_features(src)
    for name in ("a.flac", "b.SPH"):
        assert np.abs(audio.file_features(tmp_path / name) - ref).max() < 1e-5
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "c.WAV", samples, sr)
    assert [p.name for p in audio.find_audio(tmp_path)] == ["a.flac", "b.SPH", "c.WAV"]


def test_bad_folders(tmp_path, data_cache):
    with pytest.raises(DataError, match="speech needs --data-dir"):
        build_task("speech").datamodule(2)
    with pytest.raises(DataError, match="is not a folder"):
        build_task("speech", data_dir=str(tmp_path / "nope")).datamodule(2)
    with pytest.raises(DataError, match="no audio files"):
        build_task("speech", data_dir=str(tmp_path)).datamodule(2)
    (tmp_path / "x.wav").write_bytes(b"not audio at all")
    for name in ("y.wav", "z.wav"):
        sf.write(tmp_path / name, np.zeros(800, np.int16), 16000)
    with pytest.raises(DataError, match=r"x\.wav: cannot read audio"):
        build_task("speech", data_dir=str(tmp_path)).datamodule(1)


@realdata
def test_batch_larger_than_the_training_files(speech_dir, data_cache):
    with pytest.raises(ConfigError, match="--batch-size 8 exceeds the 3 training files"):
        build_task("speech", data_dir=str(speech_dir)).datamodule(8)


@realdata
def test_bench_run_trains_on_real_speech(speech_dir, tmp_path, data_cache, one_thread):
    from bench.config import RunConfig
    from bench.run import run

    result = run(RunConfig(model="scurnn", task="speech", n_hidden=16, batch_size=3, max_steps=40, val_every=20,
                           opts={"other": ["adam", 0.05]}, data_dir=str(speech_dir), wandb="disabled",
                           runs_dir=str(tmp_path / "runs"), quiet=True))
    assert result["status"] == "completed" and result["global_step"] == 40
    curves = pd.read_csv(Path(result["run_dir"]) / result["curves"])
    train = curves.dropna(subset=["train/loss"])["train/loss"].tolist()
    assert len(train) >= 3 and train[-1] < 0.7 * train[0], train
    val = curves.dropna(subset=["val/mse"])["val/mse"].tolist()
    assert len(val) == 2 and val[-1] < val[0], val
    m = result["metrics"]
    assert m["test_mse"] <= m["test_mse_valid"] and np.isfinite(m["test_mse"])
