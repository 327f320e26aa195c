"""`bench speed --harness`, the thread default of `bench run`, the per-step checks of the training
loop and the forward+backward memory of `bench speed`, each against an independent count or a
reference computed the slow way."""
import json
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

import bench.run as run_mod
from bench.config import RunConfig
from bench.module import SequenceModule
from bench.optim import GroupOptimizer
from bench.run import DEFAULT_CPU_THREADS, choose_threads, run


# ---- the harness mode times bench run's own loop, step for step -----------------------------------
def test_harness_loop_is_bench_runs_trainer_and_takes_exactly_the_steps_it_reports(monkeypatch):
    from bench.speed_harness import harness_row

    steps_taken, trainers = [], []
    step = GroupOptimizer.step

    def counting_step(self, closure=None):                 # every optimizer step, bare or Lightning's
        steps_taken.append(id(self))
        return step(self, closure)

    build_trainer = run_mod.build_trainer

    def spy(*args, **kwargs):
        out = build_trainer(*args, **kwargs)
        trainers.append(out[0])
        return out

    monkeypatch.setattr(GroupOptimizer, "step", counting_step)
    monkeypatch.setattr(run_mod, "build_trainer", spy)
    row = harness_row("lstm", "copying", seq_len=5, batch=4, hidden=6, threads=1, steps=7, warmup=3)

    (trainer,) = trainers                                   # built by bench.run.build_trainer, as bench run does
    names = {type(cb).__name__ for cb in trainer.callbacks}
    assert {"ModelCheckpoint", "PreemptionCheckpoint", "Diagnostics", "TQDMProgressBar"} <= names
    total = 3 + 7 + 1
    assert row["optimizer_steps"] == trainer.global_step == total
    assert row["global_steps"] == list(range(total))       # one Lightning optimizer step between two timings
    assert row["timed_steps"] == 7
    counts = {k: steps_taken.count(k) for k in set(steps_taken)}
    assert counts.pop(id(trainer.optimizers[0])) == total   # the loop's optimizer: exactly its steps
    assert list(counts.values()) == [total]                 # the bare model's own optimizer: one per batch
    assert (row["T"], row["B"], row["n"], row["threads"]) == (25, 4, 6, 1)
    assert row["ratio"] == pytest.approx(row["loop_ms"] / row["bare_ms"])


def test_bench_speed_harness_command(tmp_path, capsys):
    from bench.cli import main

    path = tmp_path / "harness.json"
    assert main(["speed", "--harness", "--model", "lstm", "--seq-len", "5", "--batch", "4", "--hidden", "6",
                 "--harness-steps", "4", "--warmup", "1", "--threads", "1", "--quiet", "--json", str(path)]) == 0
    text = capsys.readouterr().out
    assert "bench speed --harness: task copying, 1 threads" in text and "loop/bare" in text
    (row,) = json.loads(path.read_text())["rows"]
    assert row["model"] == "lstm" and row["timed_steps"] == 4 and row["threads_reason"] == "--threads"
    assert main(["speed", "--harness", "--model", "lstm", "--params", "10k"]) == 2
    assert "--harness" in capsys.readouterr().err


# ---- training metrics are logged only on the steps Lightning writes: the same files ---------------
def test_logging_only_on_written_steps_leaves_the_metrics_file_unchanged(tmp_path, monkeypatch):
    """Reference: the module's old behaviour, training metrics logged at every step."""
    def metrics_csv(folder, every_step):
        if every_step:
            monkeypatch.setattr(SequenceModule, "_logs_this_step", lambda self: True)
        else:
            monkeypatch.undo()
        result = run(RunConfig(model="lstm", task="copying", seq_len=5, n_hidden=6, batch_size=1500, max_steps=37,
                               val_every=9, runs_dir=str(tmp_path / folder), wandb="disabled", quiet=True, seed=2))
        assert result["status"] == "completed"
        return (Path(result["run_dir"]) / "csv" / "metrics.csv").read_text(), result["metrics"]

    reference = metrics_csv("every", True)
    ours = metrics_csv("written", False)
    assert ours == reference                                # 13 batches an epoch: crosses epochs off the 10-step grid
    assert pd.read_csv(Path(tmp_path / "written").rglob("metrics.csv").__next__())["train/loss"].notna().sum() == 3


# ---- the thread default --------------------------------------------------------------------------
@pytest.mark.parametrize("requested, on_cpu, env, current, usable, before, expected", [
    (3, True, "1", 1, 2, None, (3, "--threads")),                                 # the flag wins
    (None, True, "2", 2, 2, None, (2, "OMP_NUM_THREADS=2")),                      # then the environment
    (None, True, None, 4, 16, None, (4, "kept")),                                 # then a sweep worker's share
    (None, True, None, 16, 16, None, (DEFAULT_CPU_THREADS, "bench's default")),   # else 1 on CPU
    (None, True, None, 1, 16, 1, (DEFAULT_CPU_THREADS, "bench's default")),       # our own earlier choice
    (None, False, None, 16, 16, None, (16, "torch's default")),                   # a GPU run keeps torch's
])
def test_thread_default_follows_the_rule(requested, on_cpu, env, current, usable, before, expected):
    count, reason = choose_threads(requested, on_cpu=on_cpu, omp_env=env, current=current, usable=usable,
                                   chosen_before=before)
    assert count == expected[0] and reason.startswith(expected[1])


def test_run_records_the_thread_count_and_why(tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(run_mod, "_CHOSEN_THREADS", [None])
    before = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))      # torch's start-up count: nobody has chosen
    try:
        result = run(RunConfig(model="lstm", task="adding", seq_len=5, n_hidden=4, max_steps=2, val_every=2,
                               device="cpu", runs_dir=str(tmp_path), wandb="disabled", quiet=True))
        assert torch.get_num_threads() == DEFAULT_CPU_THREADS
    finally:
        torch.set_num_threads(before)
    on_disk = json.loads((Path(result["run_dir"]) / "result.json").read_text())
    assert on_disk["threads"]["count"] == DEFAULT_CPU_THREADS == on_disk["hardware"]["cpu_threads"]
    assert on_disk["threads"]["reason"].startswith("bench's default for CPU training")


# ---- memory: the forward+backward peak is part of the step's peak --------------------------------
def test_memory_probe_reports_forward_backward_within_the_step():
    from bench.speed_memory import memory_probe
    from bench.speed_models import model_specs

    (spec, _) = model_specs(["scurnn", "lstm"], "copying", None, 8, False)
    mem = memory_probe(spec, T=400, B=16, device="cpu", threads=1)
    assert "error" not in mem, mem
    assert 0 < mem["fwd_bwd_mb"] <= mem["train_mb"]         # VmHWM only grows: the same peak, measured earlier


# ---- gc.freeze() lasts only as long as training -------------------------------------------------
@pytest.mark.parametrize("lr, status", [(1e-3, "completed"), (1e30, "diverged")])
def test_training_unfreezes_the_collector_when_it_ends_or_fails(tmp_path, lr, status):
    import gc

    frozen = []

    class Probe(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            frozen.append(gc.get_freeze_count())

    result = run(RunConfig(model="lstm", task="adding", seq_len=5, n_hidden=4, max_steps=4, val_every=4,
                           opts={"other": ["sgd", lr]}, runs_dir=str(tmp_path), wandb="disabled", quiet=True),
                 callbacks=[Probe()])
    assert result["status"] == status
    assert frozen and all(n > 0 for n in frozen)            # frozen while training
    assert gc.get_freeze_count() == 0                       # and not after it, however it ended
