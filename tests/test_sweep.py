"""``bench sweep``: spaces, the exhaustive grid with parallel workers, TPE, pruning, resume,
``sweep best`` and errors, on the default journal storage (PostgreSQL: test_sweep_postgres.py).

Trials are tiny (copying T=10, hidden 8, batch 100, 10 steps, W&B disabled).
"""
from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from bench import sweep as S
from bench.cli import main

TINY = ["--model", "scurnn", "--task", "copying", "--seq-len", "10", "--hidden", "8", "--batch-size", "100",
        "--max-steps", "10", "--val-every", "5", "--wandb", "disabled"]
# for the multi-process grids: the fewest batches (evaluation dominates these tiny runs)
FAST = ["--batch-size", "250", "--max-steps", "5", "--val-every", "5"]
SMALL_SPACE = """
name: small
groups:
  A: {opt: [rmsprop, adam], lr: [1.0e-2, 1.0e-3]}
  other: {opt: [adam, rmsprop], lr: [1e-2, 1e-3]}
"""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    # 2 shared cores: oversubscribed torch threads make these tiny runs 10x slower
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def space_file(tmp_path, text: str, name: str = "space.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(study: str, runs_dir, storage: str | None = None):
    spec = S.parse_storage(storage, str(runs_dir), study)
    return optuna.load_study(study_name=study, storage=S.open_storage(spec, create=False))


def grid_of(space_text: str, tmp_path) -> list[dict]:
    return S.grid_points(S.space_for_model(S.load_space(space_file(tmp_path, space_text, "g.yaml")), "scurnn"))


def concrete(group: str, name: str, model: str = "scurnn") -> str:
    """The update rule a generic optimizer name in a space means for this model's group."""
    from bench.models import get_model_class
    from bench.optim import resolve_name

    return resolve_name(name, get_model_class(model).semantics_for(group))


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def assert_every_point_once(study, points: list[dict]) -> None:
    done = [key(t.params) for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(done) == sorted(key(p) for p in points), "every combination exactly once"
    assert len(done) == len(set(done))


def assert_results_whole(runs_dir) -> list[dict]:
    results = []
    for path in Path(runs_dir).rglob("result.json"):
        results.append(json.loads(path.read_text()))      # a half-written file would not parse
    assert not list(Path(runs_dir).rglob(".tmp-result.json-*"))
    return results


def cli_sweep(*args, cwd, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "bench.cli", "sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------
# Spaces
# --------------------------------------------------------------------------------------------
A3_OPTS, A3_LRS = {"rmsprop", "adam", "adagrad"}, {1e-3, 1e-4, 1e-5}


def test_appendix_a3_is_the_papers_grid_a_and_d_only():
    """Appendix A.3 tuned A and D over 3 optimizers x 3 rates: 9 x 9 = 81 points, other fixed."""
    space = S.space_for_model(S.load_space("appendix-a3"), "scurnn")
    points = S.grid_points(space)
    assert len(points) == 81 == S.grid_size(space)
    assert all(set(p) == {"A.opt", "A.lr", "D.opt", "D.lr"} for p in points), "no point sets other"
    assert len({(p["A.opt"], p["A.lr"], p["D.opt"], p["D.lr"]) for p in points}) == 81
    for g in ("A", "D"):
        assert {p[f"{g}.opt"] for p in points} == A3_OPTS and {p[f"{g}.lr"] for p in points} == A3_LRS


def test_appendix_a3_all_groups_is_the_729_point_extension():
    space = S.load_space("appendix-a3-all-groups")
    assert "not the paper's grid" in space["description"]
    points = S.grid_points(S.space_for_model(space, "scurnn"))
    assert len(points) == 729 == len({key(p) for p in points})
    assert {p["other.opt"] for p in points} == A3_OPTS and {p["D.lr"] for p in points} == A3_LRS
    assert S.grid_size(S.space_for_model(space, "scornn")) == 81
    assert S.grid_size(S.space_for_model(space, "lstm")) == 9


@pytest.mark.parametrize("model, missing, groups", [
    ("lstm", "groups 'A', 'D'", "other"),
    ("scornn", "group 'D'", "A, other"),
    ("urnn", "group 'A'", "W, D, other"),
])
def test_appendix_a3_refuses_a_model_without_a_and_d(tmp_path, capsys, model, missing, groups):
    with pytest.raises(S.SpaceError) as exc:
        S.space_for_model(S.load_space("appendix-a3"), model)
    assert f"names parameter {missing}, but model {model} has the groups {groups}" in str(exc.value)
    assert "appendix-a3-all-groups" in str(exc.value) and "lr-ranges" in str(exc.value)
    args = [a if a != "scurnn" else model for a in TINY]
    assert main(["sweep", *args, "--runs-dir", str(tmp_path / "runs"), "--space", "appendix-a3"]) == 2
    err = capsys.readouterr().err
    assert "built-in spaces that fit" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists(), "refused before any work"


def test_groups_the_space_leaves_out_come_from_the_paper_row(tmp_path):
    """resolve() fills "other" for every appendix-a3 trial as for a plain run: from the paper's
    row (copying: §5.2, T = 2000, other RMSProp 1e-3); the study records it."""
    from bench.cli import build_parser
    from bench.config import RunConfig, resolve
    from bench.paper import paper_setting

    def plain(**opts):       # the optimizers `bench run` with the same flags resolves
        return resolve(RunConfig(model="scurnn", task="copying", seq_len=10, n_hidden=8, opts=opts)).opts

    def sweep_of(*extra):
        return S.build_sweep(build_parser().parse_args(["sweep", *TINY, "--runs-dir", str(tmp_path),
                                                        "--space", "appendix-a3", *extra]))

    row = paper_setting("scurnn", "copying", 10)
    assert row is not None and list(row.opts["other"]) == ["rmsprop", 1e-3]
    other = plain()["other"]
    assert other[1] == 1e-3
    sweep = sweep_of()
    assert sweep.meta["fixed_groups"] == {"other": other}
    for point in S.grid_points(sweep.space)[::10]:
        chosen = {g: [point[f"{g}.opt"], point[f"{g}.lr"]] for g in ("A", "D")}
        assert resolve(S.apply_overrides(sweep.base, point, sweep.space)).opts == {**plain(**chosen), "other": other}
    # an explicit --opt still wins over the paper row, and is what the study records
    assert sweep_of("--opt", "other=adam:1e-2").meta["fixed_groups"] == {"other": plain(other=["adam", 1e-2])["other"]}


def test_every_optimizer_of_a_group_is_checked_before_any_work(tmp_path, capsys):
    text = "groups: {W: {opt: [cayley, rmsprop], lr: [1.0e-3]}}"
    args = [a if a != "scurnn" else "fcurnn" for a in TINY]
    assert main(["sweep", *args, "--runs-dir", str(tmp_path / "runs"), "--space", space_file(tmp_path, text)]) == 2
    err = capsys.readouterr().err
    assert "the point W.opt='rmsprop' is not a valid run" in err and "updated on its manifold" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_shipped_spaces_load_and_name_only_known_optimizers():
    from bench.optim import known_optimizers

    names = S.builtin_spaces()
    assert {"appendix-a3", "appendix-a3-all-groups", "lr-ranges"} <= set(names)
    for name in names:
        space = S.load_space(name)
        assert space["name"] == name
        for g, spec in space["groups"].items():
            assert set(spec["opt"]) <= set(known_optimizers()), (name, g)


def test_best_command_accepts_opts_with_keyword_options():
    from bench.optim import parse_opt

    config = {"model": "scurnn", "task": "copying", "seed": 0, "n_hidden": 8, "scale": "quick", "data_seed": 5544,
              "opts": {"A": ["rmsprop", 1e-4, {}], "D": ["adagrad", 1e-3],
                       "other": ["torch_adam", 1e-3, {"betas": [0.9, 0.95], "amsgrad": True}]}}
    argv = shlex.split(S.best_command(config))
    specs = [argv[i + 1] for i, a in enumerate(argv) if a == "--opt"]
    assert specs[:2] == ["A=rmsprop:0.0001", "D=adagrad:0.001"]
    assert parse_opt(specs[2]) == ("other", ["torch_adam", 1e-3, {"betas": (0.9, 0.95), "amsgrad": True}])


@pytest.mark.parametrize("text, message", [
    ("grups: {}", "unknown key(s) ['grups']"),
    ("groups: {A: {opt: [adam]}}", "groups.A: expected exactly the keys opt and lr"),
    ("groups: {A: {opt: [adamw], lr: [1e-3]}}", "groups.A.opt[0]: unknown optimizer 'adamw'"),
    ("groups: {A: {opt: [adam], lr: [-1e-3]}}", "groups.A.lr[0]: must be positive"),
    ("groups: {A: {opt: [adam], lr: [fast]}}", "groups.A.lr[0]: expected a number, got 'fast'"),
    ("groups: {A: {opt: [adam], lr: {low: 1e-4}}}", "groups.A.lr: a range needs keys low and high"),
    ("run: {hiden: [8]}", "run.hiden: unknown run setting 'hiden'"),
    ("run: {n_hidden: [8], params: [1000]}", "run.n_hidden and run.params both"),
    ("groups: {A: {opt: [adam], lr: [1e-3]}}\npruner: {patience: 3}", "'pruner' allows the keys"),
    ("name: empty", "it has no axes"),
])
def test_malformed_space_errors_name_the_bad_key(tmp_path, capsys, text, message):
    rc = main(["sweep", *TINY, "--runs-dir", str(tmp_path / "runs"), "--space", space_file(tmp_path, text)])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists(), "errors come before any work"


@pytest.mark.parametrize("args, message", [
    (["--space", "nope"], "unknown search space 'nope'; built-in spaces: appendix-a3"),
    (["--space", "SPACE_GROUP_B"], "names parameter group 'B', but model scurnn has the groups A, D, other"),
    (["--space", "lr-ranges"], "axis A.lr is a range; the grid sampler needs a list"),
    (["--space", "SPACE_BAD_HIDDEN"], "the point n_hidden=0 is not a valid run"),
    (["--n-trials", "3"], "--n-trials is for --sampler tpe"),
    (["--storage", "mysql://u@h/db"], "unsupported storage URL 'mysql://u@h/db'"),
    (["--storage", "postgresql://u@127.0.0.1:1/db"], "cannot open storage postgresql+psycopg2://u@127.0.0.1:1/db"),
    (["--storage", "postgresql://u:secret@127.0.0.1:1/db"], "u:***@127.0.0.1:1/db"),
])
def test_bad_input_gets_one_clear_line(tmp_path, capsys, args, message):
    args = [a.replace("SPACE_GROUP_B", space_file(tmp_path, "groups: {B: {opt: [adam], lr: [1e-3]}}", "b.yaml"))
            .replace("SPACE_BAD_HIDDEN", space_file(tmp_path, "run: {n_hidden: [8, 0]}", "h.yaml")) for a in args]
    rc = main(["sweep", *TINY, "--runs-dir", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "secret" not in err


def test_status_and_best_of_a_missing_study(tmp_path, capsys):
    assert main(["sweep", "status", "--study", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "no sweep journal at" in capsys.readouterr().err
    assert main(["sweep", "best", "--runs-dir", str(tmp_path)]) == 2
    assert "needs --study" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The grid with parallel workers
# --------------------------------------------------------------------------------------------
def test_grid_with_three_workers_runs_every_combination_exactly_once(tmp_path, monkeypatch):
    space = space_file(tmp_path, SMALL_SPACE)
    points = grid_of(SMALL_SPACE, tmp_path)
    assert len(points) == 16                       # 2 groups x 2 optimizers x 2 rates
    # trials of a few seconds each: with shorter ones the first worker can finish all 16 before the
    # spawned ones have imported torch (60 steps took 1.1 s with the compiled recurrence loops)
    proc = cli_sweep(*TINY, *FAST, "--max-steps", "200", "--val-every", "200", "--runs-dir", "runs", "--space",
                     space, "--workers", "3", "--study", "grid3", "--no-prune", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load("grid3", tmp_path / "runs")
    assert len(study.trials) == 16, "nothing sampled outside the grid"
    assert_every_point_once(study, points)
    results = assert_results_whole(tmp_path / "runs")
    assert len(results) == 16
    for t in study.trials:   # each trial links to its own result, whose config is the trial's point
        res = json.loads(Path(t.user_attrs["result"]).read_text())
        assert res["config"]["tags"] == {"study": "grid3", "trial": t.number, "choices": t.params}
        assert res["config"]["opts"]["A"] == [concrete("A", t.params["A.opt"]), t.params["A.lr"]]
        assert res["metrics"]["best_val_acc"] == pytest.approx(t.value)
    assert "16 complete" in proc.stdout
    # the extra workers did work (a worker that crashed at start would also fail `bench sweep`'s
    # exit code, checked above); the first one starts seconds earlier, so not necessarily all 3
    pids = {t.user_attrs["owner"]["pid"] for t in study.trials}
    assert len(pids) >= 2, proc.stdout
    assert "exited with code" not in proc.stdout + proc.stderr
    # re-running the same command (here in-process, one worker) finds nothing left to do
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *TINY, *FAST, "--max-steps", "200", "--val-every", "200", "--runs-dir", "runs",
                 "--space", space, "--study", "grid3", "--no-prune"]) == 0
    assert len(load("grid3", tmp_path / "runs").trials) == 16


def test_interrupted_sweep_resumes_with_the_same_command(tmp_path, monkeypatch, capsys):
    """Ctrl-C inside a trial (through Lightning): the trial is FAILED and re-queued; the same
    command then finishes every combination, continuing the interrupted run from its checkpoint."""
    import bench.run

    text = "groups: {A: {opt: [rmsprop], lr: [1.0e-2, 1.0e-3, 1.0e-4]}}"
    space = space_file(tmp_path, text)
    args = ["sweep", *TINY, "--max-steps", "10", "--runs-dir", str(tmp_path / "runs"), "--space", space,
            "--study", "resume", "--no-prune"]
    real_run, calls = bench.run.run, []

    class CtrlC(__import__("lightning.pytorch").pytorch.Callback):
        def on_train_batch_end(self, trainer, *a):
            if trainer.global_step == 6:     # after the checkpoint of step 5
                raise KeyboardInterrupt

    def run_with_ctrl_c(cfg, callbacks=None, **kw):
        calls.append(cfg.opts["A"][1])
        extra = [CtrlC()] if len(calls) == 2 else []
        return real_run(cfg, callbacks=list(callbacks or []) + extra, **kw)

    monkeypatch.setattr(bench.run, "run", run_with_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert main(args) == 130
    finally:
        signal.signal(signal.SIGINT, handler)    # Lightning ignores SIGINT after a Ctrl-C
    study = load("resume", tmp_path / "runs")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 1 and states.count(TrialState.FAIL) == 1
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert failed.user_attrs["outcome"] == "interrupted"

    assert main(args) == 0
    study = load("resume", tmp_path / "runs")
    points = grid_of(text, tmp_path)
    assert_every_point_once(study, points)
    retry = next(t for t in study.trials if t.user_attrs.get("retried_from") == failed.number)
    assert retry.params == failed.params and retry.state == TrialState.COMPLETE
    # the retry continued in the interrupted folder, from its checkpoint of step 5
    assert Path(retry.user_attrs["result"]).parent == Path(failed.user_attrs["run_dir"])
    assert_results_whole(tmp_path / "runs")


def test_diverged_trial_fails_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    import bench.run

    def fake_run(cfg, callbacks=None, **kw):     # no training: the objective's bookkeeping only
        run_dir = tmp_path / "runs" / f"fake-{cfg.opts['A'][1]}"
        run_dir.mkdir(parents=True)
        status = "diverged" if cfg.opts["A"][1] == 1e-2 else "completed"
        result = {"status": status, "error": "non-finite loss" if status == "diverged" else None,
                  "run_dir": str(run_dir), "metrics": {"best_val_acc": 0.5 if status == "completed" else None}}
        (run_dir / "result.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(bench.run, "run", fake_run)
    text = "groups: {A: {opt: [adam], lr: [1.0e-2, 1.0e-3]}}"
    assert main(["sweep", *TINY, "--runs-dir", str(tmp_path / "runs"), "--space", space_file(tmp_path, text),
                 "--study", "div"]) == 0
    study = load("div", tmp_path / "runs")
    by_lr = {t.params["A.lr"]: t for t in study.trials}
    assert by_lr[1e-2].state == TrialState.FAIL and by_lr[1e-2].user_attrs["outcome"] == "diverged"
    assert by_lr[1e-3].state == TrialState.COMPLETE and by_lr[1e-3].value == 0.5
    assert "failed: trial" in capsys.readouterr().out


@pytest.mark.slow
def test_sigkilled_worker_trial_is_failed_rerun_with_same_params_journal(tmp_path):
    run_kill_test(tmp_path, storage=None)


def run_kill_test(tmp_path, storage: str | None, study: str = "kill") -> None:
    """Two `bench sweep` processes share a study; one is SIGKILLed mid-trial (after its first
    checkpoint). The other still completes every combination: the killed trial ends FAILED and is
    re-run with the same parameters, and no result.json is half-written."""
    text = "groups: {A: {opt: [rmsprop, adam], lr: [1.0e-3]}, other: {opt: [adam], lr: [1.0e-3, 1.0e-2]}}"
    space = space_file(tmp_path, text)
    args = [*TINY, "--max-steps", "60", "--val-every", "20", "--runs-dir", "runs", "--space", space,
            "--study", study, "--no-prune", "--heartbeat", "2"]
    if storage:
        args += ["--storage", storage]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    procs = {}
    for _ in range(2):
        p = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", *args], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs[p.pid] = p
    killed, deadline = None, time.time() + 300
    try:
        while killed is None and time.time() < deadline and all(p.poll() is None for p in procs.values()):
            time.sleep(0.1)
            try:
                st = load(study, tmp_path / "runs", storage)
            except Exception:        # not created yet
                continue
            for t in st.get_trials(states=(TrialState.RUNNING,)):
                pid = (t.user_attrs.get("owner") or {}).get("pid")
                if pid in procs and t.intermediate_values:      # past its first validation and checkpoint
                    time.sleep(0.3)
                    os.kill(pid, signal.SIGKILL)
                    killed, victim = t.number, pid
                    break
        outs = {pid: p.communicate(timeout=max(10, deadline - time.time()))[0] for pid, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    assert killed is not None, "no trial got past its first validation while both ran:\n" + "\n".join(outs.values())
    survivor = next(p for pid, p in procs.items() if pid != victim)
    assert procs[victim].returncode == -signal.SIGKILL and survivor.returncode == 0, outs[survivor.pid]
    st = load(study, tmp_path / "runs", storage)
    dead = st.trials[killed]
    assert dead.state == TrialState.FAIL and dead.user_attrs.get("outcome") is None
    retries = [t for t in st.trials if t.user_attrs.get("retried_from") == killed]
    assert len(retries) == 1 and retries[0].params == dead.params and retries[0].state == TrialState.COMPLETE
    assert_every_point_once(st, grid_of(text, tmp_path))
    assert len(assert_results_whole(tmp_path / "runs")) == 4
    print(outs[survivor.pid])


# --------------------------------------------------------------------------------------------
# TPE, pruning, best, confirm seeds
# --------------------------------------------------------------------------------------------
def test_tpe_conditional_space_gives_valid_configs_only(tmp_path, capsys):
    text = """
groups:
  A: {opt: [rmsprop, adam, adagrad], lr: {low: 1.0e-4, high: 1.0e-2, log: true}}
  other: {opt: [adam, sgd], lr: [1.0e-3, 1.0e-2]}
run:
  batch_size: [50, 100]
"""
    assert main(["sweep", *TINY, "--max-steps", "5", "--runs-dir", str(tmp_path / "runs"),
                 "--space", space_file(tmp_path, text), "--sampler", "tpe", "--n-trials", "7",
                 "--study", "tpe", "--no-prune"]) == 0
    study = load("tpe", tmp_path / "runs")
    assert len(study.trials) == 7 and all(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        p = t.params
        a, o = p["A.opt"], p["other.opt"]
        assert set(p) == {"A.opt", f"A.{a}.lr", "other.opt", f"other.{o}.lr", "batch_size"}, p
        assert 1e-4 <= p[f"A.{a}.lr"] <= 1e-2 and p[f"other.{o}.lr"] in (1e-3, 1e-2)
        config = json.loads(Path(t.user_attrs["result"]).read_text())["config"]
        assert config["opts"]["A"] == [concrete("A", a), p[f"A.{a}.lr"]]
        assert config["opts"]["other"] == [concrete("other", o), p[f"other.{o}.lr"]]
        assert config["opts"]["D"] == t.user_attrs["config"]["opts"]["D"]      # untouched group: the default
        assert config["batch_size"] == p["batch_size"]


def test_pruning_stops_a_trial_whose_loss_stays_at_the_baseline(tmp_path):
    """Five finished trials reached 90% accuracy by step 10; a trial with a learning rate of
    1e-5 stays at chance level (its loss at or above the memoryless baseline) and is pruned at
    its first validation after the warm-up (a quarter of the steps)."""
    import pandas as pd
    from optuna.distributions import FloatDistribution

    from bench.cli import build_parser

    text = "groups: {A: {opt: [sgd], lr: [1.0e-5]}, other: {opt: [sgd], lr: [1.0e-5]}}"
    argv = ["sweep", *TINY, "--max-steps", "40", "--val-every", "10", "--runs-dir", str(tmp_path / "runs"),
            "--space", space_file(tmp_path, text), "--study", "prune"]
    sweep = S.build_sweep(build_parser().parse_args(argv))
    study = S.prepare(sweep)
    for _ in range(5):
        study.add_trial(optuna.trial.create_trial(
            params={"x": 0.0}, distributions={"x": FloatDistribution(0, 1)}, value=0.95,
            intermediate_values={10: 0.9, 20: 0.93, 30: 0.95, 40: 0.95}))
    S.work(sweep)
    trial = [t for t in load("prune", tmp_path / "runs").trials if "A.opt" in t.params][0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["outcome"] == "pruned"
    assert sorted(trial.intermediate_values) == [10], "stopped at the first validation after the warm-up"
    assert trial.intermediate_values[10] < 0.35                    # chance is 1/8
    run_dir = Path(trial.user_attrs["run_dir"])
    record = json.loads((run_dir / "result.json").read_text())      # a pruned run keeps its record
    assert record["status"] == "pruned" and record["global_step"] == 10
    val = pd.read_csv(next(run_dir.glob("csv/**/metrics.csv"))).dropna(subset=["val/loss"])
    baseline = 10 * math.log(8) / (10 + 20)
    assert len(val) == 1 and val["val/loss"].iloc[0] > baseline


def test_sweep_best_prints_a_command_that_reproduces_the_best_trial(tmp_path, capsys):
    text = "groups: {A: {opt: [rmsprop, adam], lr: [1.0e-2]}, other: {opt: [adam], lr: [3.0e-3]}}"
    runs = str(tmp_path / "runs")
    assert main(["sweep", *TINY, "--runs-dir", runs, "--space", space_file(tmp_path, text), "--study", "best",
                 "--confirm-seeds", "1", "--no-prune"]) == 0
    out = capsys.readouterr().out
    assert "best over seeds:" in out and "(n = 2)" in out
    assert main(["sweep", "best", "--study", "best", "--runs-dir", runs]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    command = lines[-1]
    assert command.startswith("bench run ") and all(line.startswith("#") for line in lines[:-1])
    study = load("best", runs)
    best = json.loads(Path(study.best_trial.user_attrs["result"]).read_text())

    assert main(shlex.split(command)[1:] + ["--wandb", "disabled", "--quiet"]) == 0
    again_path = capsys.readouterr().out.strip().splitlines()[-1].split("result: ")[1]
    again = json.loads(Path(again_path).read_text())
    assert again["config_hash"] == best["config_hash"] and again["seed"] == best["seed"]
    assert again["config"]["opts"] == best["config"]["opts"]
    assert again["metrics"]["best_val_acc"] == best["metrics"]["best_val_acc"]
    assert again["metrics"]["test_loss"] == pytest.approx(best["metrics"]["test_loss"], rel=1e-6)

    # --confirm-seeds: the same config on another seed, recorded in the study and in result.json
    (record,) = S.confirm_records(study, study.best_trial.number)
    confirm = json.loads(Path(record["result"]).read_text())
    assert confirm["config_hash"] == best["config_hash"] and confirm["seed"] == best["seed"] + 1
    assert confirm["config"]["tags"] == {"study": "best", "confirm_of": study.best_trial.number}
    assert record["value"] == confirm["metrics"]["best_val_acc"]

    assert main(["sweep", "status", "--study", "best", "--runs-dir", runs]) == 0
    status = capsys.readouterr().out
    assert "2 complete" in status and f"best: trial {study.best_trial.number}" in status


def test_rerun_with_different_flags_is_refused(tmp_path, capsys):
    text = "groups: {A: {opt: [adam], lr: [1.0e-3]}}"
    space = space_file(tmp_path, text)
    base = ["sweep", *TINY, "--max-steps", "5", "--runs-dir", str(tmp_path / "runs"), "--space", space,
            "--study", "same"]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base + ["--hidden", "16"]) == 2
    assert "n_hidden: study has 8, you asked for 16" in capsys.readouterr().err


def test_storage_specs():
    assert S.parse_storage(None, "runs", "s").url == str(Path("runs/sweeps/s.journal"))
    assert S.parse_storage("x/y.journal", "runs", "s").kind == "journal"
    pg = S.parse_storage("postgresql://u:pw@h:5433/db", "runs", "s")
    assert pg.kind == "rdb" and "pw" not in pg.display and pg.url.startswith("postgresql+psycopg")
    with pytest.raises(S.StorageError, match="unsupported storage URL"):
        S.parse_storage("redis://h", "runs", "s")


def test_sigterm_preempted_trial_is_requeued_and_continued(tmp_path, monkeypatch, capsys):
    """SIGTERM (a cluster preemption) during a trial: run() checkpoints and returns "preempted";
    the trial is FAILED, queued again with its folder, and the next run continues there."""
    import bench.run
    import lightning.pytorch as pl

    text = "groups: {A: {opt: [rmsprop], lr: [1.0e-2, 1.0e-3]}}"
    args = ["sweep", *TINY, "--runs-dir", str(tmp_path / "runs"), "--space", space_file(tmp_path, text),
            "--study", "preempt", "--no-prune"]
    real_run, calls = bench.run.run, []

    class Preempt(pl.Callback):
        def on_train_batch_end(self, trainer, *a):
            if trainer.global_step == 7:
                os.kill(os.getpid(), signal.SIGTERM)

    def run_with_sigterm(cfg, callbacks=None, **kw):
        calls.append(kw)
        extra = [Preempt()] if len(calls) == 1 else []
        return real_run(cfg, callbacks=list(callbacks or []) + extra, **kw)

    monkeypatch.setattr(bench.run, "run", run_with_sigterm)
    assert main(args) == 130
    study = load("preempt", tmp_path / "runs")
    (failed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed.user_attrs["outcome"] == "preempted"
    (waiting,) = [t for t in study.trials if t.user_attrs.get("retried_from") == failed.number]
    assert waiting.state == TrialState.WAITING and waiting.params == {} and \
        waiting.system_attrs["fixed_params"] == failed.params
    assert main(args) == 0
    study = load("preempt", tmp_path / "runs")
    assert_every_point_once(study, grid_of(text, tmp_path))
    retry = study.trials[waiting.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["retried_from"] == failed.number
    assert calls.count({"resume_dir": failed.user_attrs["run_dir"]}) == 1
    result = json.loads(Path(retry.user_attrs["result"]).read_text())
    assert result["global_step"] == 10 and Path(retry.user_attrs["result"]).parent == Path(failed.user_attrs["run_dir"])


def test_star_skips_groups_updated_on_their_manifold():
    space = S.space_for_model(S.load_space("appendix-a3-all-groups"), "fcurnn")
    assert list(space["groups"]) == ["other"]          # W keeps its Cayley step
    assert len(S.grid_points(space)) == 9


def test_one_flag_table_serves_parsing_sampling_and_reproducing():
    """Every RunConfig field a user sets has one flag; parsing its own reproducing command line
    gives back the same config (hash and every field that defines the run)."""
    import dataclasses

    from bench.cli import build_parser
    from bench.config import RunConfig, resolve
    from bench.flags import RUN_FLAGS, SAMPLED_FIELDS, config_from_args, run_command

    internal = {"model", "task", "tags", "resolved", "paper_source", "fallback", "optimizers"}
    assert {f.field for f in RUN_FLAGS} == {f.name for f in dataclasses.fields(RunConfig)} - internal
    assert set(SAMPLED_FIELDS) <= {f.field for f in RUN_FLAGS}
    cfg = resolve(RunConfig(model="scornn", task="adding", seed=3, seq_len=30, batch_size=7, max_steps=9,
                            val_every=3, grad_clip=0.5, data_seed=11, model_options={"rho": 2}, wandb="disabled",
                            opts={"A": ["torch_rmsprop", 1e-4, {"alpha": 0.9}]}))
    argv = run_command(cfg.to_dict())[1:]                       # drop the program name
    again = resolve(config_from_args(build_parser().parse_args(argv + ["--wandb", "disabled"])))
    assert again.config_hash() == cfg.config_hash()
    assert again.group_key() == cfg.group_key() and again.seed == 3
