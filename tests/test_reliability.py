"""Faults the harness survives: preemption and exact resume, divergence, crashes mid-write."""
import json
import os
import signal
import time
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

from bench.config import RunConfig
from bench.models.errors import ConfigError
from bench.results import atomic_write_text, iter_results
from bench.run import load_resume_config, run


def tiny(tmp_path, **kw):
    base = dict(model="scurnn", task="copying", seq_len=10, n_hidden=16, max_steps=60, val_every=20,
                runs_dir=str(tmp_path), wandb="disabled", quiet=True, seed=4)
    base.update(kw)
    return RunConfig(**base)


class SignalAt(pl.Callback):
    def __init__(self, step, signum):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def losses(result):
    curves = pd.read_csv(Path(result["run_dir"]) / result["curves"])
    return curves.dropna(subset=["train/loss"])[["step", "train/loss"]].values.tolist()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_preempt_then_resume_gives_identical_losses(tmp_path, signum):
    # val_every=20 with the signal at step 27: the resume point is mid-epoch and between checkpoints
    reference = run(tiny(tmp_path / "ref"))
    first = run(tiny(tmp_path / "cut"), callbacks=[SignalAt(27, signum)])
    assert first["status"] == "preempted" and first["step"] in (27, 28)   # SIGTERM: this step; USR1: next
    run_dir = Path(first["run_dir"])
    assert (run_dir / "checkpoints" / "preempt.ckpt").is_file() and not (run_dir / "result.json").exists()
    assert json.loads((run_dir / "preempted.json").read_text())["resume"] == f"bench run --resume {run_dir}"

    # wall time sums the parts: pretend the first part took 1000 s
    state = json.loads((run_dir / "preempted.json").read_text())
    assert 0 < state["wall_time_s"] < 1000
    atomic_write_text(run_dir / "preempted.json", json.dumps({**state, "wall_time_s": 1000.0}))
    t0 = time.time()
    resumed = run(load_resume_config(run_dir), resume_dir=run_dir)
    assert 1000 < resumed["wall_time_s"] <= 1000 + (time.time() - t0)
    assert resumed["seconds_per_step"] == pytest.approx(resumed["wall_time_s"] / 60, rel=1e-3)
    assert resumed["status"] == "completed" and resumed["global_step"] == 60
    assert losses(resumed) == losses(reference)
    assert resumed["metrics"]["test_loss"] == reference["metrics"]["test_loss"]
    assert not (run_dir / "preempted.json").exists() and not (run_dir / "checkpoints" / "preempt.ckpt").exists()


def test_resume_after_kill_uses_last_checkpoint(tmp_path):
    """A killed run (no preempt checkpoint) resumes from the last validation checkpoint."""
    reference = run(tiny(tmp_path / "ref"))
    first = run(tiny(tmp_path / "cut"), callbacks=[SignalAt(27, signal.SIGTERM)])
    run_dir = Path(first["run_dir"])
    (run_dir / "checkpoints" / "preempt.ckpt").unlink()       # as if SIGKILLed after step 27
    (run_dir / "preempted.json").unlink()
    resumed = run(load_resume_config(run_dir), resume_dir=run_dir)
    assert losses(resumed) == losses(reference)


def test_resume_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config.json there"):
        load_resume_config(tmp_path)
    done = run(tiny(tmp_path, max_steps=10, val_every=10))
    with pytest.raises(ConfigError, match=r"the run already finished \(result.json exists\)"):
        load_resume_config(done["run_dir"])


class PoisonAt(pl.Callback):
    def __init__(self, step, where):
        self.step, self.where = step, where

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step and self.where == "param":
            with torch.no_grad():
                module.model.A_re[0] = float("nan")

    def on_after_backward(self, trainer, module):
        if trainer.global_step == self.step and self.where == "grad":
            module.model.theta.grad[0] = float("inf")


def test_nan_parameter_stops_run_and_keeps_last_good_checkpoint(tmp_path):
    result = run(tiny(tmp_path, max_steps=100), callbacks=[PoisonAt(45, "param")])
    assert result["status"] == "diverged"
    assert "non-finite training loss (nan) at step 45" in result["error"]
    assert "singularity of modReLU" in result["error"]
    on_disk = json.loads((Path(result["run_dir"]) / "result.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["global_step"] == 45
    ckpt = torch.load(Path(result["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 40
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_non_finite_gradient_names_the_group(tmp_path):
    result = run(tiny(tmp_path), callbacks=[PoisonAt(12, "grad")])
    assert result["status"] == "diverged"
    assert "non-finite gradient in parameter group 'D' at step 12" in result["error"]


def test_crash_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"

    def dying_fsync(fd):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "fsync", dying_fsync)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, json.dumps({"status": "completed", "config": {}}))
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []          # the temporary file was removed too


def test_readers_ignore_stray_temporary_files(tmp_path):
    good = tmp_path / "a" / "result.json"
    good.parent.mkdir()
    good.write_text(json.dumps({"status": "completed", "config": {}}))
    (tmp_path / "a" / ".tmp-result.json-x1").write_text('{"status": "compl')     # a crash leftover
    bad = tmp_path / "b" / "result.json"
    bad.parent.mkdir()
    bad.write_text('{"status": "compl')                                         # written by hand, cut
    found = {p.parent.name: (r, e) for p, r, e in iter_results(tmp_path)}
    assert set(found) == {"a", "b"}
    assert found["a"][0]["status"] == "completed" and found["b"][0] is None and found["b"][1]


def test_runs_dir_that_cannot_be_created_is_a_clear_error(tmp_path, capsys):
    from bench.cli import main

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs directory should be")
    code = main(["run", "--model", "scurnn", "--task", "copying", "--seq-len", "10", "--hidden", "8",
                 "--max-steps", "2", "--runs-dir", str(blocker), "--wandb", "disabled", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot create runs directory {blocker}/copying/scurnn" in err and "choose another with --runs-dir" in err
