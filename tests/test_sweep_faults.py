"""Faults a cluster sweep meets, caused on purpose: a node that cannot run anything, trials that
crash, a worker that died between taking a trial and claiming it, a stalled worker that wakes
after its trial was re-run, and workers with nothing left to do. Each ends with every grid point
COMPLETE exactly once and no traceback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bench import sweep as S
from bench.cli import main
from test_sweep import TINY, assert_every_point_once, assert_results_whole, grid_of, load, one_thread, \
    space_file  # noqa: F401  (one_thread: autouse fixture)

SPACE = "groups: {A: {opt: [adam], lr: [1.0e-2, 1.0e-3, 1.0e-4]}}"


def _sweep(tmp_path, *extra, runs="runs"):
    return main(["sweep", *TINY, "--runs-dir", str(tmp_path / runs), "--space", space_file(tmp_path, SPACE),
                 "--study", "s", "--storage", str(tmp_path / "s.journal"), *extra])


def _study(tmp_path):
    return optuna.load_study(study_name="s", storage=S.open_storage(S.parse_storage(str(tmp_path / "s.journal"),
                                                                                    "runs", "s"), create=False))


def test_a_node_that_cannot_write_its_runs_dir_takes_no_trial(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    assert _sweep(tmp_path, runs="a-file/runs") == 2
    err = capsys.readouterr().err
    assert "this worker cannot write its runs directory" in err and "no trial was taken" in err
    assert "Traceback" not in err
    assert {t.state for t in _study(tmp_path).trials} == {TrialState.WAITING}      # nothing spoiled
    assert _sweep(tmp_path) == 0                                                    # a good node finishes it
    assert_every_point_once(_study(tmp_path), grid_of(SPACE, tmp_path))


def test_a_node_failing_mid_sweep_gives_its_trial_back(tmp_path, capsys, monkeypatch):
    """The runs dir becomes unusable after the preflight (say a full disk): the trial goes back to
    the queue untouched and the worker stops; another run of the sweep completes every point."""
    import bench.run
    from bench.errors import ConfigError

    real = bench.run.make_run_dir
    calls = []

    def fails_second_time(cfg):
        calls.append(cfg)
        if len(calls) == 2:
            raise ConfigError("cannot create runs directory runs/copying/scurnn: No space left on device")
        return real(cfg)

    monkeypatch.setattr(bench.run, "make_run_dir", fails_second_time)
    assert _sweep(tmp_path) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "went back to the queue" in err and "Traceback" not in err
    states = sorted(t.state.name for t in _study(tmp_path).trials)
    assert states.count("COMPLETE") == 1 and states.count("WAITING") == 2     # two untouched, one given back
    monkeypatch.setattr(bench.run, "make_run_dir", real)
    assert _sweep(tmp_path) == 0
    assert_every_point_once(_study(tmp_path), grid_of(SPACE, tmp_path))
    assert len(assert_results_whole(tmp_path / "runs")) == 3


def test_a_crashing_trial_is_retried_a_bounded_number_of_times_then_retry_requeues_it(tmp_path, capsys,
                                                                                       monkeypatch):
    import bench.run

    real = bench.run.run
    crashes = {"flaky": 0}

    def faulty(cfg, **kw):
        lr = cfg.opts["A"][1]
        if lr == 1e-2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")   # always
        if lr == 1e-3 and crashes["flaky"] == 0:
            crashes["flaky"] += 1
            raise RuntimeError("NCCL timeout")                                             # once
        return real(cfg, **kw)

    monkeypatch.setattr(bench.run, "run", faulty)
    assert _sweep(tmp_path) == 0
    out = capsys.readouterr().out
    assert "Traceback" not in out and "attempt 3 of 3" in out
    study = _study(tmp_path)
    bad = [t for t in study.trials if t.params["A.lr"] == 1e-2]
    assert [t.state for t in bad] == [TrialState.FAIL] * (S.MAX_TRIAL_RETRIES + 1)
    assert "`bench sweep retry` re-queues it" in bad[-1].user_attrs["error"]
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2
    # the fault is fixed: retry re-queues the failed point, the workers run it once
    monkeypatch.setattr(bench.run, "run", real)
    assert main(["sweep", "retry", "--study", "s", "--storage", str(tmp_path / "s.journal")]) == 0
    assert "re-queued 1 failed point" in capsys.readouterr().out
    assert _sweep(tmp_path) == 0
    assert_every_point_once(_study(tmp_path), grid_of(SPACE, tmp_path))


# A `bench sweep` process that kills itself (SIGKILL) at a chosen storage call, as a node that
# dies at that moment would: METHOD is patched on both storage classes; WHEN(state, calls) says
# when; BEFORE: die before the call reaches the storage, else just after.
DIE_AT = """
import os, signal, sys
import optuna
from optuna.trial import TrialState
calls = []
def patch(cls, method, when, before):
    real = getattr(cls, method)
    def dying(self, trial_id, *args, **kwargs):
        calls.append(method)
        die = when(args[0] if args else kwargs.get("state"), len(calls))
        if die and before:
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(self, trial_id, *args, **kwargs)
        if die:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(cls, method, dying)
for cls in (optuna.storages.RDBStorage, optuna.storages.JournalStorage):
    patch(cls, METHOD, WHEN, BEFORE)
from bench.cli import main
sys.exit(main(sys.argv[1:]))
"""
MOMENTS = {
    # the claim's last step: the trial has just become RUNNING, nothing of it has run
    "claim": ("set_trial_state_values", "lambda state, n: state == TrialState.RUNNING", False),
    # mid-trial, while the trial's second validation is being reported
    "report": ("set_trial_intermediate_value", "lambda step, n: n == 2", False),
    # result.json is written; the worker dies while telling the study the trial is complete
    "tell": ("set_trial_state_values", "lambda state, n: state == TrialState.COMPLETE", True),
}


# the PostgreSQL variants are slow-marked (the default run must stay under 10 minutes); .ci/run runs them
@pytest.mark.parametrize("storage", ["journal", pytest.param("postgres", marks=[pytest.mark.postgres,
                                                                              pytest.mark.slow])])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_9_at_a_chosen_moment_loses_and_repeats_nothing(tmp_path, moment, storage, request):
    """A worker SIGKILLed at claim time, while reporting a validation, or after writing its
    result but before telling the study; a second worker then finishes the sweep. Every point is
    COMPLETE once, each has one run folder with a whole result (the killed run is continued or
    its result adopted, never trained a second time), and no traceback."""
    import uuid

    if storage == "postgres":
        url, name = request.getfixturevalue("pg_url"), f"bench-kill-{uuid.uuid4().hex[:10]}"
    else:
        url, name = str(tmp_path / "s.journal"), "s"
    method, when, before = MOMENTS[moment]
    args = ["sweep", *TINY, "--max-steps", "30", "--val-every", "10", "--runs-dir", "runs",
            "--space", space_file(tmp_path, SPACE), "--study", name, "--storage", url, "--heartbeat", "1",
            "--no-prune"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    code = DIE_AT.replace("METHOD", repr(method)).replace("WHEN", when).replace("BEFORE", str(before))
    killed = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    study = load(name, tmp_path / "runs", url)
    assert [t.state for t in study.trials].count(TrialState.RUNNING) == 1        # the dead worker's trial
    after = subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    out = after.stdout + after.stderr
    assert after.returncode == 0 and "Traceback" not in out, out
    study = load(name, tmp_path / "runs", url)
    assert_every_point_once(study, grid_of(SPACE, tmp_path))
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 1           # the killed one, re-queued
    folders = [p for p in (tmp_path / "runs" / "copying" / "scurnn").iterdir() if p.is_dir()]
    results = assert_results_whole(tmp_path / "runs")
    assert len(folders) == 3 and len(results) == 3, out                          # one per point, none orphaned
    if moment == "tell":
        assert "records its result instead of training again" in out
    if storage == "postgres":
        optuna.delete_study(study_name=name, storage=S.open_storage(S.parse_storage(url, "runs", name)))


def test_a_worker_leaves_when_only_other_workers_trials_run(tmp_path):
    """Nothing waiting, one trial running in another live worker (this test process): the worker
    leaves at once instead of idling until that trial ends; with --wait it stays."""
    assert _sweep(tmp_path) == 0
    study = _study(tmp_path)
    busy = study.ask()
    busy.set_user_attr("owner", S.owner())
    started = time.time()
    assert _sweep(tmp_path) == 0 and time.time() - started < 30
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    waiting = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", *TINY, "--runs-dir", str(tmp_path / "runs"),
                                "--space", space_file(tmp_path, SPACE), "--study", "s",
                                "--storage", str(tmp_path / "s.journal"), "--wait"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(8)
    still_there = waiting.poll() is None
    waiting.kill()
    out = waiting.communicate()[0]
    assert still_there, out


def test_an_unreachable_w_and_b_costs_one_bounded_wait_and_loses_nothing(tmp_path):
    """A W&B key but no server (a closed local port): the worker checks once before its first
    trial, warns in one line, and every trial logs offline at once (none waits out the timeout
    again); result.json records offline against the online that was asked for."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY="b" * 40, WANDB_BASE_URL="http://127.0.0.1:9", BENCH_WANDB_TIMEOUT="3",
               HOME=str(tmp_path), WANDB_DIR=str(tmp_path), OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", *TINY, "--wandb", "auto", "--runs-dir", "runs",
                             "--space", space_file(tmp_path, SPACE), "--study", "s"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = proc.communicate(timeout=240)[0]
    except subprocess.TimeoutExpired:        # hung once in CI: SIGABRT makes faulthandler print every thread's stack
        proc.send_signal(signal.SIGABRT)
        pytest.fail("the sweep hung; its stacks:\n" + proc.communicate(timeout=60)[0][-20000:])
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert out.count("W&B cannot be used online") == 1 and "W&B could not start online" not in out, out
    results = assert_results_whole(tmp_path / "runs")
    assert len(results) == 3
    assert all(r["wandb"]["mode"] == "offline" and r["wandb"]["requested"] == "online" for r in results)
    assert_every_point_once(load("s", tmp_path / "runs"), grid_of(SPACE, tmp_path))
    assert "b" * 40 not in out and not [p for p in tmp_path.rglob("*") if p.is_file() and b"b" * 40 in p.read_bytes()]


def test_a_w_and_b_login_that_never_answers_is_cut_off(monkeypatch):
    """The preflight check has a hard deadline of its own, whatever wandb's retries do."""
    import wandb

    from bench import tracking

    monkeypatch.setenv("BENCH_WANDB_TIMEOUT", "0.5")
    monkeypatch.setattr(wandb, "login", lambda **kwargs: time.sleep(30))
    started = time.monotonic()
    reason = tracking.check_online()
    assert time.monotonic() - started < 10 and "no answer from the W&B server within 6 s" in reason
    monkeypatch.setattr(tracking, "_offline_reason", None)


def test_storage_typos_are_refused(tmp_path, capsys):
    for typo in ("postgresql//db-host/sweeps", "postgres:/db-host/sweeps", "sqlite:sweeps.db"):
        assert main(["sweep", *TINY, "--runs-dir", str(tmp_path), "--storage", typo]) == 2
        err = capsys.readouterr().err
        assert "looks like a database URL with a typo" in err, err
    assert not list(tmp_path.iterdir())


def test_dry_run_touches_nothing(tmp_path, capsys):
    assert _sweep(tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "3 trial(s)" in out and "trial 0: A=scurnn_adam:0.01" in out
    assert not (tmp_path / "s.journal").exists() and not (tmp_path / "runs").exists()


def test_sampler_seed_makes_tpe_reproducible(tmp_path):
    space = "groups: {A: {opt: [adam, rmsprop], lr: {low: 1.0e-4, high: 1.0e-2, log: true}}}"
    params = []
    for name in ("one", "two"):
        assert main(["sweep", *TINY, "--runs-dir", str(tmp_path / name), "--space", space_file(tmp_path, space),
                     "--sampler", "tpe", "--n-trials", "3", "--sampler-seed", "7", "--no-prune"]) == 0
        study = load(next((tmp_path / name / "sweeps").glob("*.journal")).stem, tmp_path / name)
        params.append([t.params for t in sorted(study.trials, key=lambda t: t.number)])
    assert params[0] == params[1] and len(params[0]) == 3


@pytest.mark.slow
@pytest.mark.postgres
def test_a_stalled_worker_drops_its_retried_trial_quietly(tmp_path, pg_url):  # noqa: F811
    """SIGSTOP a worker past the heartbeat grace; another worker re-runs its trial; SIGCONT: the
    woken worker drops the trial and its half-written folder, with no traceback."""
    import uuid

    study_name = f"bench-stall-{uuid.uuid4().hex[:10]}"
    space = space_file(tmp_path, "groups: {A: {opt: [adam], lr: [1.0e-3]}}")
    args = [sys.executable, "-m", "bench.cli", "sweep", *TINY, "--max-steps", "400", "--val-every", "20",
            "--runs-dir", "runs", "--space", space, "--study", study_name, "--storage", pg_url, "--heartbeat", "1",
            "--no-prune"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    second = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                st = load(study_name, tmp_path / "runs", pg_url)
                if any(t.intermediate_values for t in st.get_trials(states=(TrialState.RUNNING,))):
                    break
            except Exception:
                pass
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGSTOP)
        time.sleep(4)                                  # past the grace (2 × 1 s)
        second = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        os.kill(first.pid, signal.SIGCONT)
        out = first.communicate(timeout=300)[0]
    finally:
        for p in (first,):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
    assert first.returncode == 0 and "Traceback" not in out and "dropped: the study re-ran it" in out, out
    st = load(study_name, tmp_path / "runs", pg_url)
    assert [t.state for t in st.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    folders = [p for p in (tmp_path / "runs" / "copying" / "scurnn").iterdir() if p.is_dir()]
    assert len(folders) == 1 and (folders[0] / "result.json").is_file()         # no orphan folder
    optuna.delete_study(study_name=study_name, storage=S.open_storage(S.parse_storage(pg_url, "runs", study_name)))


from test_sweep_postgres import pg_url  # noqa: E402,F401  (fixture)


@pytest.mark.slow
def test_a_timed_out_array_task_is_requeued_and_continues_its_trial(tmp_path, monkeypatch):
    """submitit's time-out/preemption signal (USR2) mid-trial: submitit checkpoints the worker and
    requeues the job; the trial goes back to the queue with its run folder, and the requeued job
    continues it there. Every point completes once; the job ends without an error."""
    from bench.cli import build_parser
    from bench.slurm import submit_workers

    monkeypatch.chdir(tmp_path)
    space = space_file(tmp_path, "groups: {A: {opt: [adam], lr: [1.0e-3, 1.0e-2]}}")
    argv = ["sweep", *TINY, "--max-steps", "400", "--val-every", "40", "--runs-dir", str(tmp_path / "runs"),
            "--space", space, "--study", "s", "--storage", str(tmp_path / "s.journal"), "--no-prune"]
    args = build_parser().parse_args(argv)
    S.resolve_storage_args(args)
    S.prepare(S.build_sweep(args))
    job = submit_workers(argv + ["--workers", "1"], workers=1, folder=tmp_path / "slurm", cluster="local",
                         timeout_min=60)[0]
    deadline = time.time() + 300
    interrupted = None
    while time.time() < deadline and interrupted is None:
        time.sleep(0.3)
        running = [t for t in _study(tmp_path).get_trials(states=(TrialState.RUNNING,)) if t.intermediate_values]
        if running:
            interrupted = running[0].number
            # what SLURM sends before the time limit, to the task (submitit's _interrupt() signals
            # the local controller process instead, which does not forward USR2)
            os.kill(running[0].user_attrs["owner"]["pid"], signal.SIGUSR2)
    assert interrupted is not None
    assert job.result() == 0
    study = _study(tmp_path)
    first = study.trials[interrupted]
    assert first.state == TrialState.FAIL and first.user_attrs["outcome"] == "interrupted"
    retry = next(t for t in study.trials if t.user_attrs.get("retried_from") == interrupted)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run_dir"] == first.user_attrs["run_dir"]
    assert_every_point_once(study, grid_of("groups: {A: {opt: [adam], lr: [1.0e-3, 1.0e-2]}}", tmp_path))
    assert len(assert_results_whole(tmp_path / "runs")) == 2
    # the signal saved a preemption checkpoint where training stood, and the requeued job continued
    # from it: the same losses and test numbers as the same trial run without interruption
    from bench.config import RunConfig
    from bench.run import run

    resumed = json.loads((Path(first.user_attrs["run_dir"]) / "result.json").read_text())
    cfg = RunConfig.from_dict({**resumed["config"], "runs_dir": str(tmp_path / "reference"), "tags": {}})
    reference = run(cfg)
    assert resumed["metrics"]["test_loss"] == reference["metrics"]["test_loss"]
    assert resumed["metrics"]["best_val_step"] == reference["metrics"]["best_val_step"]
    # the signal saved where training stood (not only the last validation's checkpoint)
    assert [p["ended"] for p in resumed["parts"]] == ["preempted", "completed"]
    logs = "".join(p.read_text() for p in (tmp_path / "slurm").rglob("*_log.*"))
    assert "Requeued job" in logs and "Exiting after successful completion" in logs
    assert "Traceback" not in logs


def test_only_a_lost_database_connection_is_retried_and_not_forever(monkeypatch, capsys):
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import IntegrityError, OperationalError

    from bench.sweep import storage

    monkeypatch.setattr(storage, "RECONNECT_DELAYS", (0, 0, 0))
    calls = []

    def fails(times, cause):
        def call(self):
            calls.append(1)
            if len(calls) <= times:
                raise StorageInternalError("during the commit") from cause("UPDATE trials", {}, Exception("x"))
            return "done"
        return storage._reconnecting(call)

    assert fails(2, OperationalError)(None) == "done" and len(calls) == 3       # a dropped connection: again
    assert capsys.readouterr().err.count("database connection lost") == 2
    calls.clear()
    with pytest.raises(StorageInternalError):                                   # a bad statement: at once
        fails(5, IntegrityError)(None)
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(StorageInternalError):                                   # a server that stays away
        fails(10, OperationalError)(None)
    assert len(calls) == 4


@pytest.mark.slow
@pytest.mark.postgres
def test_dropped_database_connections_lose_nothing(tmp_path, pg_url):  # noqa: F811
    """The server drops the sweep's connections twice while a trial trains, each time while the
    worker's queries are in flight (they wait on a table lock the test holds, then the server
    terminates their backends, as a restart or a fail-over would): the worker retries them on a
    new connection, and every point completes once, with no traceback."""
    import uuid

    import sqlalchemy

    study_name = f"bench-drop-{uuid.uuid4().hex[:10]}"
    args = [sys.executable, "-m", "bench.cli", "sweep", *TINY, "--max-steps", "200", "--val-every", "20",
            "--runs-dir", "runs", "--space", space_file(tmp_path, SPACE), "--study", study_name,
            "--storage", pg_url, "--heartbeat", "1", "--no-prune"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    worker = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    engine = sqlalchemy.create_engine(S.parse_storage(pg_url, "runs", "x").url)
    dropped, deadline = [], time.time() + 240
    try:
        while worker.poll() is None and time.time() < deadline and len(dropped) < 2:
            time.sleep(0.3)
            try:
                running = load(study_name, tmp_path / "runs", pg_url).get_trials(states=(TrialState.RUNNING,))
            except Exception:
                continue
            if not any(t.intermediate_values for t in running):
                continue
            with engine.connect() as holder, engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
                holder.execute(sqlalchemy.text("LOCK TABLE trials IN ACCESS EXCLUSIVE MODE"))
                time.sleep(2.5)      # the heartbeat (every second) and the trial's next write now wait on it
                waiting = admin.execute(sqlalchemy.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = "
                    "'Lock' AND pid <> pg_backend_pid()")).scalars().all()
                admin.execute(sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid NOT IN (pg_backend_pid(), :holder)"), {"holder": holder.connection.dbapi_connection
                                                                       .info.backend_pid})
                holder.rollback()
            dropped.append(len(waiting))
            time.sleep(2)
        out = worker.communicate(timeout=300)[0]
    finally:
        if worker.poll() is None:
            worker.kill()
        engine.dispose()
    assert len(dropped) == 2 and all(n >= 1 for n in dropped), dropped     # queries were cut mid-flight
    assert worker.returncode == 0 and "Traceback" not in out, out
    study = load(study_name, tmp_path / "runs", pg_url)
    assert_every_point_once(study, grid_of(SPACE, tmp_path))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3, \
        [t.user_attrs.get("error") for t in study.trials]                  # no trial failed or ran twice
    assert len(assert_results_whole(tmp_path / "runs")) == 3
    optuna.delete_study(study_name=study_name, storage=S.open_storage(S.parse_storage(pg_url, "runs", study_name)))
