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
from lightning.pytorch.utilities.exceptions import SIGTERMException

from bench.config import RunConfig
from bench.errors import ConfigError
from bench.atomic import atomic_write_text
from bench.results import iter_results
from bench.preemption import load_resume_config
from bench.run import run


# Lightning's warning when a run resumes mid-epoch with a training loader it cannot restore
NOT_RESUMABLE = "dataloader is not resumable"


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
def test_preempt_then_resume_gives_identical_losses(tmp_path, signum, recwarn):
    # val_every=20 with the signal at step 27: the resume point is mid-epoch and between checkpoints
    reference = run(tiny(tmp_path / "ref"))
    first = run(tiny(tmp_path / "cut"), callbacks=[SignalAt(27, signum)])
    assert first["status"] == "preempted" and first["step"] in (27, 28)   # SIGTERM: this step; USR1: next
    run_dir = Path(first["run_dir"])
    assert (run_dir / "checkpoints" / "preempt.ckpt").is_file() and not (run_dir / "result.json").exists()
    assert json.loads((run_dir / "preempted.json").read_text())["resume"] == f"bench run --resume {run_dir}"

    # wall time sums the parts: pretend the first part took 1000 s
    state = json.loads((run_dir / "preempted.json").read_text())
    assert 0 < state["wall_time_s"] < 1000 and state["parts"][0]["ended"] == "preempted"
    state["parts"][0]["wall_time_s"] = 1000.0
    atomic_write_text(run_dir / "preempted.json", json.dumps(state))
    t0 = time.time()
    resumed = run(load_resume_config(run_dir), resume_dir=run_dir)
    assert 1000 < resumed["wall_time_s"] <= 1000 + (time.time() - t0)
    assert [p["ended"] for p in resumed["parts"]] == ["preempted", "completed"]
    assert resumed["parts"][0]["step"] == first["step"] and resumed["parts"][1]["step"] == 60
    assert resumed["seconds_per_step"] == pytest.approx(resumed["wall_time_s"] / 60, rel=1e-3)
    assert resumed["status"] == "completed" and resumed["global_step"] == 60
    assert losses(resumed) == losses(reference)
    assert resumed["metrics"]["test_loss"] == reference["metrics"]["test_loss"]
    assert not (run_dir / "preempted.json").exists() and not (run_dir / "checkpoints" / "preempt.ckpt").exists()
    assert not [w for w in recwarn if NOT_RESUMABLE in str(w.message)]


class Recorder(pl.Callback):
    """Every training loss by global step, and every validation's metrics by the step it ran at."""

    def __init__(self):
        self.train, self.val = {}, {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.train[trainer.global_step] = float(outputs["loss"])

    def on_validation_end(self, trainer, module):
        if not trainer.sanity_checking:
            self.val[trainer.global_step] = {k: float(v) for k, v in trainer.callback_metrics.items()
                                             if k.startswith("val/")}


class SignalIn(pl.Callback):
    """SIGTERM from inside one Lightning hook, once, at a given global step (and validation batch)."""

    def __init__(self, hook, step, batch=None):
        self.hook, self.step, self.batch, self.sent = hook, step, batch, False
        setattr(self, hook, self._maybe_signal)

    def _maybe_signal(self, trainer, *args):
        batch_idx = args[-1] if self.hook == "on_validation_batch_end" else None
        if not self.sent and trainer.global_step == self.step and batch_idx == self.batch:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


# 25 training batches an epoch and a validation every 10 steps, for 55 steps: epochs end at 25 and
# at 50 (on a validation), the best validation is at 40 and the last step has none. The moments
# cover every place a signal can land: (hook, global step, validation batch, max_steps).
MOMENTS = {
    "mid-step": ("on_train_batch_end", 27, None, 55),
    "step before a validation": ("on_train_batch_end", 39, None, 55),
    "step a validation follows": ("on_train_batch_end", 40, None, 55),
    "validation start": ("on_validation_start", 40, None, 55),
    "inside a validation": ("on_validation_batch_end", 40, 2, 55),
    "right after a validation": ("on_validation_end", 40, None, 55),
    "last step of an epoch": ("on_train_batch_end", 25, None, 55),
    "first step of an epoch": ("on_train_batch_start", 25, None, 55),
    "validation at an epoch end": ("on_validation_batch_end", 50, 0, 55),
    "last step": ("on_train_batch_end", 55, None, 55),
    "last validation": ("on_validation_batch_end", 50, 2, 50),
}


def exact_cfg(tmp_path, max_steps):
    return tiny(tmp_path, max_steps=max_steps, val_every=10)


@pytest.fixture(scope="module")
def short_epochs():
    from bench.tasks.copying import Copying

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Copying, "sizes", {"train": 25 * 20, "val": 5 * 20, "test": 5 * 20})
        yield


@pytest.fixture(scope="module")
def exact_reference(tmp_path_factory, short_epochs):
    """The uninterrupted run (result, Recorder) for a max_steps, made once."""
    made = {}

    def reference(max_steps):
        if max_steps not in made:
            recorder = Recorder()
            result = run(exact_cfg(tmp_path_factory.mktemp("ref"), max_steps), callbacks=[recorder])
            assert result["status"] == "completed"
            made[max_steps] = result, recorder
        return made[max_steps]

    return reference


def curves_of(result):
    curves = pd.read_csv(Path(result["run_dir"]) / result["curves"])
    val = curves.dropna(subset=["val/acc"])[["step", "val/acc", "val/loss"]].values.tolist()
    train = curves.dropna(subset=["train/loss"])[["step", "train/loss"]].values.tolist()
    return train, val


def best_checkpoint(result):
    ckpt = torch.load(Path(result["run_dir"]) / result["checkpoints"]["best"], weights_only=False)
    return ckpt["global_step"], ckpt["state_dict"]


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigterm_at_any_moment_resumes_exactly(tmp_path, exact_reference, moment, recwarn):
    hook, step, batch, max_steps = MOMENTS[moment]
    reference, ref_rec = exact_reference(max_steps)
    first_rec, second_rec = Recorder(), Recorder()
    first = run(exact_cfg(tmp_path, max_steps), callbacks=[first_rec, SignalIn(hook, step, batch)])
    assert first["status"] == "preempted"
    run_dir = Path(first["run_dir"])
    resumed = run(load_resume_config(run_dir), resume_dir=run_dir, callbacks=[second_rec])
    assert resumed["status"] == "completed" and resumed["global_step"] == max_steps

    # every step and every validation ran exactly once, with the uninterrupted run's values
    assert not set(first_rec.train) & set(second_rec.train) and not set(first_rec.val) & set(second_rec.val)
    assert {**first_rec.train, **second_rec.train} == ref_rec.train
    assert {**first_rec.val, **second_rec.val} == ref_rec.val
    # the logged curves (steps and values) and what result.json makes of them
    assert curves_of(resumed) == curves_of(reference)
    for key in ("best_val_step", "best_val_acc", "final_val_acc", "test_loss", "test_acc",
                "best_ckpt_test_loss", "best_ckpt_test_acc"):
        assert resumed["metrics"][key] == reference["metrics"][key], key
    # the same best checkpoint: taken at the same step, with the same weights
    ref_step, ref_weights = best_checkpoint(reference)
    got_step, got_weights = best_checkpoint(resumed)
    assert got_step == ref_step
    assert all(torch.equal(got_weights[k], ref_weights[k]) for k in ref_weights)
    # the training loader resumes the supported way: no "not resumable" warning from Lightning
    assert not [w for w in recwarn if NOT_RESUMABLE in str(w.message)]


class ShuffledIds(pl.LightningModule):
    """Records the sample ids of every step; the data is 30 ids shuffled per epoch, 7 batches of 4."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = {}

    def training_step(self, batch, batch_idx):
        self.seen[self.global_step + 1] = batch[0].tolist()
        return ((self.w - batch[0].float().mean()) ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def shuffled_ids_data():
    from torch.utils.data import TensorDataset

    from bench.tasks.loader import ResumableDataModule

    class Data(ResumableDataModule):
        def train_dataloader(self):
            return self.train_loader(TensorDataset(torch.arange(30)), batch_size=4, shuffle=True, seed=3)

    return Data()


def fit_ids(tmp_path, *callbacks, ckpt_path=None):
    from bench.preemption import preemption_callback

    tmp_path.mkdir(exist_ok=True)
    module, preemption = ShuffledIds(), preemption_callback(tmp_path)
    trainer = pl.Trainer(max_steps=20, logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[preemption, *callbacks])
    try:
        trainer.fit(module, datamodule=shuffled_ids_data(), ckpt_path=ckpt_path)
    except SIGTERMException:
        pass
    return module.seen, preemption.saved_step


@pytest.mark.parametrize("step", [3, 7, 8, 13, 14])
def test_shuffled_loader_resumes_at_the_same_sample_across_epochs(tmp_path, step, recwarn):
    reference, _ = fit_ids(tmp_path / "ref")
    epochs = [sum((reference[s] for s in range(1 + 7 * e, 8 + 7 * e)), []) for e in range(2)]
    assert epochs[0] != epochs[1] and all(len(set(ids)) == 28 for ids in epochs)   # reshuffled epochs
    first, saved = fit_ids(tmp_path / "cut", SignalIn("on_train_batch_end", step))
    assert saved == step and max(first) == step
    second, _ = fit_ids(tmp_path / "cut", ckpt_path=tmp_path / "cut" / "checkpoints" / "preempt.ckpt")
    assert min(second) == step + 1 and {**first, **second} == reference
    assert not [w for w in recwarn if NOT_RESUMABLE in str(w.message)]


def test_checkpoint_from_before_stateful_loaders_still_resumes_its_position():
    data = shuffled_ids_data()
    data.load_state_dict({"epoch": 1, "batches": 2})       # what the datamodule itself used to save
    resumed = [b[0].tolist() for b in data.train_dataloader()]
    fresh = data.train_dataloader()
    fresh.sampler.set_epoch(1)
    assert resumed == [b[0].tolist() for b in fresh][2:]


def test_resume_after_kill_uses_last_checkpoint(tmp_path, recwarn):
    """A killed run (no preempt checkpoint) resumes from the last validation checkpoint."""
    reference = run(tiny(tmp_path / "ref"))
    first = run(tiny(tmp_path / "cut"), callbacks=[SignalAt(27, signal.SIGTERM)])
    run_dir = Path(first["run_dir"])
    (run_dir / "checkpoints" / "preempt.ckpt").unlink()       # as if SIGKILLed after step 27
    (run_dir / "preempted.json").unlink()
    resumed = run(load_resume_config(run_dir), resume_dir=run_dir)
    assert losses(resumed) == losses(reference)
    assert not [w for w in recwarn if NOT_RESUMABLE in str(w.message)]


def test_resume_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config.json there"):
        load_resume_config(tmp_path)
    done = run(tiny(tmp_path, max_steps=10, val_every=10))
    with pytest.raises(ConfigError, match=r"the run already finished \(result.json exists\)"):
        load_resume_config(done["run_dir"])


def test_resume_from_the_command_line_refuses_flags_that_change_the_run(tmp_path, capsys):
    """`bench run --resume DIR` with flags that would change what the run computes is refused,
    naming them, and nothing is touched; with flags it may take it finishes the run exactly
    (exit 0; the preemption before it exited 75)."""
    from bench.cli import main

    reference = run(tiny(tmp_path / "ref"))
    first = run(tiny(tmp_path / "cut"), callbacks=[SignalAt(27, signal.SIGTERM)])
    run_dir = first["run_dir"]
    before = sorted(p.name for p in Path(run_dir).rglob("*"))
    assert main(["run", "--resume", run_dir, "--max-steps", "300", "--model", "lstm", "--seed", "7"]) == 2
    err = capsys.readouterr().err
    assert "--model, --seed, --max-steps would change what it computes" in err and "Traceback" not in err
    assert sorted(p.name for p in Path(run_dir).rglob("*")) == before
    assert main(["run", "--resume", run_dir, "--quiet", "--threads", "1"]) == 0
    result = json.loads((Path(run_dir) / "result.json").read_text())
    assert losses(result | {"run_dir": run_dir}) == losses(reference)
    assert result["config"]["max_steps"] == 60 and result["config"]["seed"] == 4


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


def test_sigterm_during_the_test_phase_stops_cleanly_and_resumes_to_the_same_result(tmp_path):
    """Training has finished and the test split is being evaluated when SIGTERM lands: the part
    ends as interrupted with preempted.json (no traceback; `bench run` exits 75 for it), and
    the resume only evaluates, giving the result of a run that was never stopped."""

    class SignalAtTest(pl.Callback):
        def on_test_batch_end(self, trainer, *args):
            if not getattr(self, "sent", False):
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)

    reference = run(tiny(tmp_path / "ref"))
    first = run(tiny(tmp_path / "cut"), callbacks=[SignalAtTest()])
    assert first["status"] == "interrupted" and first["step"] == 60, first
    run_dir = Path(first["run_dir"])
    assert not (run_dir / "result.json").exists()
    assert json.loads((run_dir / "preempted.json").read_text())["resume"] == f"bench run --resume {run_dir}"
    resumed = run(load_resume_config(run_dir), resume_dir=run_dir)
    assert resumed["status"] == "completed" and resumed["global_step"] == 60
    assert [p["ended"] for p in resumed["parts"]] == ["interrupted", "completed"]
    assert losses(resumed) == losses(reference)
    for key in ("test_loss", "best_ckpt_test_loss"):
        assert resumed["metrics"][key] == reference["metrics"][key], key
