"""``bench data features``: the features a task trains on, for one file; bad input is one line, exit 2."""
from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from bench.cli import main
from bench.tasks import audio, build_task


@pytest.fixture
def wav(tmp_path):
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(5000) * 3000).astype(np.int16)
    path = tmp_path / "clip.wav"
    sf.write(path, samples, 16000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("resampler", ["matlab", "torchaudio", None])
def test_writes_the_features_of_the_chosen_pipeline(wav, tmp_path, resampler, capsys):
    out = tmp_path / "f.npy"
    argv = ["data", "features", str(wav), "--out", str(out)] + (["--resampler", resampler] if resampler else [])
    assert main(argv) == 0
    feats = np.load(out)
    settings = audio.FeatureSettings(resampler=resampler or "matlab")
    assert feats.dtype == np.float32 and feats.shape == (audio.n_frames(5000, 16000), 129)
    assert np.array_equal(feats, audio.file_features(wav, settings))
    assert "resampler " + settings.resampler in capsys.readouterr().err


@pytest.mark.realdata
def test_features_are_what_the_speech_task_trains_on(speech_dir, tmp_path, data_cache):
    task = build_task("speech", data_dir=str(speech_dir))
    dm = task.datamodule(3)
    path = task.files["train"][0]
    assert main(["data", "features", path, "--out", str(tmp_path / "f.npy")]) == 0
    assert np.array_equal(np.load(tmp_path / "f.npy"), dm.data["train"].feats[0].numpy())


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_bad_input_gives_one_line_and_exit_2(wav, tmp_path, capsys):
    out = str(tmp_path / "f.npy")
    assert main(["data", "features", str(tmp_path / "missing.wav"), "--out", out]) == 2
    assert _error_line(capsys) == f"bench data: error: AUDIO_FILE {tmp_path / 'missing.wav'} does not exist"

    assert main(["data", "features", str(tmp_path), "--out", out]) == 2
    assert "is not a file" in _error_line(capsys)

    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    assert main(["data", "features", str(junk), "--out", out]) == 2
    assert "junk.wav: cannot read audio" in _error_line(capsys)

    assert main(["data", "features", str(wav), "--out", str(tmp_path / "no" / "f.npy")]) == 2
    line = _error_line(capsys)
    assert line.startswith("bench data: error: --out ") and line.endswith("does not exist")

    assert main(["data", "features", str(wav), "--out", str(tmp_path)]) == 2
    assert "is a folder" in _error_line(capsys)
    assert not os.path.exists(out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_out_folder(wav, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert main(["data", "features", str(wav), "--out", str(folder / "f.npy")]) == 2
        assert "is not writable" in _error_line(capsys)
    finally:
        folder.chmod(0o700)


def test_unknown_resampler_is_refused_before_any_work(wav, tmp_path, capsys):
    assert main(["data", "features", str(wav), "--out", str(tmp_path / "f.npy"), "--resampler", "sox"]) == 2
    assert "--resampler 'sox': known resamplers are matlab, torchaudio" in capsys.readouterr().err
    assert not (tmp_path / "f.npy").exists()
