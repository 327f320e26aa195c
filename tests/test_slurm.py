"""`bench sweep --launcher`: the SLURM job-array path, run through submitit's local executor."""
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bench import sweep as S
from bench.sweep import launch
from bench.cli import main
from bench.slurm import SweepWorker

TINY = ["--model", "scurnn", "--task", "copying", "--seq-len", "10", "--hidden", "8", "--batch-size", "250",
        "--max-steps", "5", "--val-every", "5", "--wandb", "disabled", "--no-prune"]
SPACE = "name: two\ngroups:\n  A: {opt: [rmsprop, adam], lr: [1.0e-3]}\n"


def test_worker_argv_strips_launcher_flags():
    argv = ["sweep", "--model", "scurnn", "--launcher", "slurm", "--workers", "64", "--partition=gpu",
            "--gpus-per-worker", "1", "--wait", "--task", "copying"]
    assert S.worker_argv(argv) == ["sweep", "--model", "scurnn", "--task", "copying", "--workers", "1"]


def test_worker_is_requeued_with_the_same_command():
    worker = SweepWorker(["sweep", "--study", "s"])
    again = worker.checkpoint()
    assert again.function.argv == ["sweep", "--study", "s"] and again.function is not worker


def test_slurm_launcher_needs_slurm(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    space = tmp_path / "s.yaml"
    space.write_text(SPACE)
    code = main(["sweep", *TINY, "--space", str(space), "--runs-dir", str(tmp_path), "--launcher", "slurm"])
    assert code == 2
    assert "--launcher slurm: no SLURM on this machine (srun not found)" in capsys.readouterr().err


def test_submitit_array_completes_the_grid(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "s.yaml").write_text(SPACE)
    code = main(["sweep", *TINY, "--space", "s.yaml", "--runs-dir", "runs", "--study", "arr",
                 "--launcher", "submitit-local", "--workers", "2", "--wait"])
    assert code == 0
    storage = S.open_storage(S.parse_storage(None, str(tmp_path / "runs"), "arr"), create=False)
    study = optuna.load_study(study_name="arr", storage=storage)
    done = sorted(json.dumps(t.params, sort_keys=True) for t in study.trials if t.state == TrialState.COMPLETE)
    assert len(done) == 2 and len(set(done)) == 2
    assert len(list((tmp_path / "runs" / "slurm" / "arr").rglob("*_submission.sh"))) + \
        len(list((tmp_path / "runs" / "slurm" / "arr").rglob("*.pkl"))) > 0


def test_slurm_without_srun_touches_no_study(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    (tmp_path / "s.yaml").write_text(SPACE)
    assert main(["sweep", *TINY, "--space", str(tmp_path / "s.yaml"), "--runs-dir", str(tmp_path),
                 "--launcher", "slurm", "--study", "nostudy"]) == 2
    assert not (tmp_path / "sweeps").exists()          # the journal (the study) was never created


def test_slurm_resources_reach_the_executor(tmp_path, monkeypatch):
    """--account/--qos/--mem/--constraint/--setup become submitit's slurm_* parameters."""
    import submitit

    from bench.slurm import submit_workers

    seen = {}

    class Recorder:
        def __init__(self, folder, cluster=None, slurm_max_num_timeout=3):
            seen["cluster"] = cluster

        def update_parameters(self, **params):
            seen.update(params)

        def batch(self):
            import contextlib
            return contextlib.nullcontext()

        def submit(self, fn):
            return fn

    monkeypatch.setattr(submitit, "AutoExecutor", Recorder)
    jobs = submit_workers(["sweep"], workers=2, folder=tmp_path, partition="gpu", account="lab", qos="high",
                          mem="32G", constraint="a100", setup=["module load cuda"], cluster="slurm")
    assert len(jobs) == 2
    assert {k: seen[k] for k in ("slurm_partition", "slurm_account", "slurm_qos", "slurm_mem", "slurm_constraint",
                                 "slurm_setup")} == {"slurm_partition": "gpu", "slurm_account": "lab",
                                                     "slurm_qos": "high", "slurm_mem": "32G",
                                                     "slurm_constraint": "a100", "slurm_setup": ["module load cuda"]}
    assert S.worker_argv(["sweep", "--account", "lab", "--setup", "a", "--setup", "b", "--mem=32G", "--model", "x"]) \
        == ["sweep", "--model", "x", "--workers", "1"]


def test_slurm_options_without_a_launcher_are_refused(tmp_path, capsys):
    assert main(["sweep", *TINY, "--runs-dir", str(tmp_path), "--account", "lab"]) == 2
    assert "--account only apply with --launcher slurm" in capsys.readouterr().err
