"""``bench reproduce ... --storage``: an artefact's runs as a study that workers on several nodes
take. Checked against the same runs made directly by ``run()`` (same numbers), by SIGKILLing a
worker in the middle of a run (nothing lost, nothing run twice, no folder left behind), and by
joining the study with another plan (refused)."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from bench import reproduce as rp
from bench.cli import main
from bench.reproduce_cluster import build_sweep, default_study
from bench.run import run
from bench.sweep import SweepError, prepare, work
from test_sweep import assert_results_whole, load
from test_secrets import PASSWORD, _assert_nowhere, _with_password
from test_sweep_postgres import pg_study, pg_url  # noqa: F401 - fixtures

TIMING = ("seconds", "time", "per_step", "duration")


def _args(storage: str, runs_dir: Path) -> argparse.Namespace:
    return argparse.Namespace(study=None, storage=storage, runs_dir=str(runs_dir), heartbeat=60, wait=False)


def _tiny_runs(runs_dir: Path, seeds: int = 1) -> list[rp.PlannedRun]:
    """lstm and oRNN at T=20 from the adding artefact's smoke plan, cut to 4 steps."""
    runs = [r for r in rp.plan("adding", "smoke", seeds, runs_dir=str(runs_dir))
            if r.model in ("lstm", "ornn") and r.resolved.seq_len == 20]
    for r in runs:
        r.resolved = r.resolved.with_(max_steps=4, val_every=2, wandb="disabled")
    rp.mark_states(runs, runs_dir)
    return runs


def _results(runs_dir: Path) -> dict[tuple, dict]:
    out = {}
    for r in assert_results_whole(runs_dir):
        key = (r["config_hash"], r["seed"])
        assert key not in out, f"{key} ran twice"
        out[key] = r
    return out


def _numbers(result: dict) -> dict:
    return {k: v for k, v in result["metrics"].items() if not any(t in k for t in TIMING)}


def test_a_study_runs_each_planned_run_once_and_gives_the_direct_runs_numbers(tmp_path, capsys):
    runs_dir, storage = tmp_path / "runs", str(tmp_path / "j.journal")
    runs = _tiny_runs(runs_dir)
    sweep = build_sweep("adding", "smoke", runs, _args(storage, runs_dir))
    prepare(sweep)
    assert work(sweep) == len(runs) == 2
    study = load(default_study("adding", "smoke"), runs_dir, storage)
    assert sorted(t.params["run"] for t in study.trials) == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)

    found = _results(runs_dir)
    assert set(found) == {(r.config_hash, r.seed) for r in runs}
    direct_dir = tmp_path / "direct"
    for r in runs:
        got = found[(r.config_hash, r.seed)]
        # the planned run's own tags stay beside the study's (eval_batches is part of what was run)
        assert got["config"]["tags"]["eval_batches"] == 4 and got["config"]["tags"]["study"] == sweep.name
        cfg = r.resolved.with_(runs_dir=str(direct_dir))
        direct = run(cfg, callbacks=rp.eval_limit_callbacks(cfg))
        assert _numbers(got) == _numbers(direct), r.label()
    rp.mark_states(runs, runs_dir)
    assert [r.state for r in runs] == ["done", "done"]        # the local command finds them

    # the same command again (another node, later): nothing enqueued or run twice
    again = build_sweep("adding", "smoke", runs, _args(storage, runs_dir))
    prepare(again)
    assert work(again) == 0 and len(load(sweep.name, runs_dir, storage).trials) == 2

    # a node with another plan (here a second seed) must not take this study's runs by index
    other = _tiny_runs(runs_dir, seeds=2)
    with pytest.raises(SweepError, match="already exists with different settings"):
        prepare(build_sweep("adding", "smoke", other, _args(storage, runs_dir)))

    capsys.readouterr()
    assert main(["sweep", "status", "--study", sweep.name, "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "bench reproduce adding/smoke: 2 runs of lstm, ornn on adding" in out and "2 complete" in out
    assert "best:" not in out
    assert main(["sweep", "best", "--study", sweep.name, "--storage", storage]) == 2
    assert "no best trial" in capsys.readouterr().err


def _cli(*args, cwd) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "reproduce", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_nodes_share_the_study_and_a_sigkilled_node_loses_nothing(tmp_path, pg_url, pg_study):  # noqa: F811
    """Two `bench reproduce adding --storage postgresql://...` processes (two nodes); one is
    SIGKILLed while a run of it trains. The other finishes every run exactly once; the killed run
    is re-run with the numbers of an uninterrupted run; stdout is the table, the same one the
    local command prints from the same results. The database password is nowhere."""
    runs_dir = tmp_path / "runs"
    argv = ["adding", "--scale", "smoke", "--runs-dir", str(runs_dir), "--storage", _with_password(pg_url),
            "--study", pg_study, "--heartbeat", "2"]
    procs = {p.pid: p for p in (_cli(*argv, cwd=tmp_path) for _ in range(2))}
    killed, deadline = None, time.time() + 300
    try:
        while killed is None and time.time() < deadline and all(p.poll() is None for p in procs.values()):
            time.sleep(0.1)
            try:
                study = load(pg_study, runs_dir, pg_url)
            except Exception:            # not created yet
                continue
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                pid = (t.user_attrs.get("owner") or {}).get("pid")
                if pid in procs and t.user_attrs.get("run_dir"):      # training has started
                    time.sleep(0.5)
                    os.kill(pid, signal.SIGKILL)
                    killed, victim = t.number, pid
                    break
        outs = {pid: p.communicate(timeout=max(10, deadline - time.time())) for pid, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    assert killed is not None, "no run of either node started training:\n" + "\n".join(e for _, e in outs.values())
    survivor = next(pid for pid in procs if pid != victim)
    out, err = outs[survivor]
    assert procs[victim].returncode == -signal.SIGKILL and procs[survivor].returncode == 0, err[-3000:]

    study = load(pg_study, runs_dir, pg_url)
    dead = study.trials[killed]
    retry = [t for t in study.trials if t.user_attrs.get("retried_from") == killed]
    assert dead.state == TrialState.FAIL and len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params == dead.params
    planned = rp.plan("adding", "smoke", runs_dir=str(runs_dir))
    found = _results(runs_dir)
    assert set(found) == {(r.config_hash, r.seed) for r in planned} and len(found) == 14
    folders = {p.parent for p in runs_dir.glob("adding/*/*/config.json")}
    assert len(folders) == 14, "a folder without a result was left behind"

    victim_run = planned[dead.params["run"]]
    cfg = victim_run.resolved.with_(runs_dir=str(tmp_path / "direct"), wandb="disabled")
    direct = run(cfg, callbacks=rp.eval_limit_callbacks(cfg))
    assert _numbers(found[(victim_run.config_hash, victim_run.seed)]) == _numbers(direct)

    assert out.startswith("# Figure 5: adding problem") and "] trial " not in out and "Traceback" not in err
    assert "14 of 14 runs done" in err
    local = subprocess.run([sys.executable, "-m", "bench.cli", "reproduce", "adding", "--scale", "smoke",
                            "--runs-dir", str(runs_dir)], cwd=tmp_path, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}, timeout=300)
    assert local.returncode == 0 and "all 14 runs already done" in local.stderr and local.stdout == out
    assert study.user_attrs["bench"]["reproduce"] == "adding/smoke"
    _assert_nowhere(PASSWORD, [tmp_path], [text for pair in outs.values() for text in pair], pg_url)


@pytest.mark.slow
def test_a_submitit_array_runs_the_artefact_and_the_submitter_prints_the_table(tmp_path):
    """`--launcher submitit-local --workers 2 --wait`: the job array (local processes, as on SLURM)
    takes the runs from the journal study; the submitting command waits and prints the table."""
    runs_dir, storage = tmp_path / "runs", tmp_path / "j.journal"
    submitter = _cli("table4", "--runs-dir", str(runs_dir), "--storage", str(storage), "--launcher", "submitit-local",
                     "--workers", "2", "--wait", cwd=tmp_path)
    out, err = submitter.communicate(timeout=600)
    assert submitter.returncode == 0, err[-3000:]
    planned = rp.plan("table4", "smoke", runs_dir=str(runs_dir))
    assert set(_results(runs_dir)) == {(r.config_hash, r.seed) for r in planned}
    study = load(default_study("table4", "smoke"), runs_dir, str(storage))
    assert sorted(t.params["run"] for t in study.trials) == list(range(5))
    assert {t.state for t in study.trials} == {TrialState.COMPLETE}
    assert submitter.pid not in {t.user_attrs["owner"]["pid"] for t in study.trials}    # the array ran them
    assert out.startswith("# Table 4: scuRNN") and "5 of 5 runs done" in err
    assert (runs_dir / "slurm" / default_study("table4", "smoke")).is_dir()


def test_sigterm_gives_the_running_run_back_with_its_checkpoint(tmp_path):
    """SIGTERM (a preempted node) while a cpu-scale run trains: exit 130 with one line saying how to
    continue and no traceback; the run's trial is re-queued with the absolute path of its folder,
    which holds the preemption checkpoint the next worker resumes from."""
    storage = tmp_path / "j.journal"
    node = _cli("table4", "--scale", "cpu", "--runs-dir", "runs", "--storage", str(storage), cwd=tmp_path)
    study, deadline = None, time.time() + 120
    try:
        while time.time() < deadline and node.poll() is None:
            time.sleep(0.2)
            with contextlib.suppress(Exception):         # not created yet
                study = load(default_study("table4", "cpu"), tmp_path / "runs", str(storage))
                if any(t.user_attrs.get("run_dir") for t in study.get_trials(states=(TrialState.RUNNING,))):
                    break
        time.sleep(2)                                                     # in the training loop by now
        node.send_signal(signal.SIGTERM)
        out, err = node.communicate(timeout=120)
    finally:
        if node.poll() is None:
            node.kill()
    assert node.returncode == 130 and out == "" and "Traceback" not in err, err[-3000:]
    assert "the same command continues them" in err
    study = load(default_study("table4", "cpu"), tmp_path / "runs", str(storage))
    stopped = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(stopped) == 1 and stopped[0].user_attrs["outcome"] == "preempted"      # SIGTERM, as a cluster sends
    retry = [t for t in study.trials if t.user_attrs.get("retried_from") == stopped[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    folder = Path(retry[0].user_attrs["resume_dir"])
    assert folder.is_absolute() and folder == Path(stopped[0].user_attrs["run_dir"])
    assert (folder / "checkpoints" / "preempt.ckpt").is_file() and not (folder / "result.json").exists()
