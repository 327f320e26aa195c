"""``bench reproduce``: the paper's tables and figures as sets of ordinary runs, run locally and
rendered beside the paper's numbers.

An artefact (Table 1, Table 2, Figure 4, Figure 5) expands into runs, one per (paper row, seed):
each a normal :func:`bench.run.run` configured from its row of bench/paper.py (hidden size,
per-group optimizers, model options). The scale decides only the training protocol (steps,
batch, validation interval, and at smoke scale a shorter sequence and a smaller evaluation):
one declaration per (task, scale) in :data:`PROTOCOLS`; ``paper`` is the task's own
``paper_scale``. Runs that already have a completed result.json with the same config hash and
seed in the runs folder are not run again; unfinished run folders with a checkpoint are resumed.
The tables are computed from the result files through the leaderboard's loader and aggregation.

Light on purpose at import time (no torch): the CLI builds its parser from this module.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import RunConfig
from bench.errors import ConfigError
from bench.results import writable_folder
from bench.paper import PaperSetting, paper_rows, paper_setting

# --------------------------------------------------------------------------------------------
# Declarations: scales, the protocol of each task at each scale, the artefacts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    name: str
    seeds: int                 # default number of seeds (0..seeds-1)
    run_scale: str             # RunConfig.scale of its runs
    about: str


SCALES: dict[str, Scale] = {s.name: s for s in (
    Scale("smoke", 1, "quick", "a pipeline check, minutes on a laptop CPU for a whole artefact: "
                               "its numbers say nothing about the models"),
    Scale("cpu", 3, "quick", "reduced training, hours on a CPU: learning has started, far from the paper's protocol"),
    Scale("paper", 3, "paper", "the paper's protocol (each task's paper_scale), for a GPU cluster"),
)}


@dataclass(frozen=True)
class Protocol:
    """How one task trains at one scale (RunConfig fields)."""

    max_steps: int
    batch_size: int
    val_every: int
    seq_len: dict[int, int] | None = None   # the paper's T -> the T run at this scale (None: the paper's T)
    eval_batches: int | None = None         # validate and test on the first K batches of each split only


# task -> scale -> protocol. "paper" is not listed: it is the task's own ``paper_scale``
# (tasks/*.py), read by :func:`protocol`. Smoke shortens sequences and evaluation; cpu keeps the
# paper's lengths and evaluation and cuts the number of steps.
PROTOCOLS: dict[str, dict[str, Protocol]] = {
    "copying": {"smoke": Protocol(50, 20, 50, seq_len={1000: 20, 2000: 40}),
                "cpu": Protocol(500, 20, 100)},                       # paper: 2,000 steps of 20
    "adding": {"smoke": Protocol(50, 50, 50, seq_len={200: 20, 750: 40}, eval_batches=4),
               "cpu": Protocol(1000, 50, 250)},                       # paper: 60,000 steps of 50 (30 epochs)
    "mnist": {"smoke": Protocol(4, 50, 4, eval_batches=1),            # 1 batch = 500 images
              "cpu": Protocol(1100, 50, 550)},                        # 1 epoch; paper: 70 epochs
    "pmnist": {"smoke": Protocol(4, 50, 4, eval_batches=1),
               "cpu": Protocol(1100, 50, 550)},
    "timit": {"smoke": Protocol(4, 28, 4, eval_batches=1),            # val and test are one batch each
              "cpu": Protocol(264, 28, 132)},                         # 2 epochs; paper: 100 epochs
}


@dataclass(frozen=True)
class Metric:
    label: str
    key: str                     # the result.json metrics key
    paper: str | None            # the PaperSetting.reported key printed beside it
    kind: str = "float"          # "step": a step count, missing = never reached
    note: str = ""


@dataclass(frozen=True)
class Panel:
    task: str
    seq_len: int | None          # the paper's T (None: the task has no length to choose)
    label: str


@dataclass(frozen=True)
class Artefact:
    name: str
    title: str
    source: str
    panels: tuple[Panel, ...]
    metrics: tuple[Metric, ...]
    track_test: bool = False     # evaluate the test split at every validation (the paper's "best test acc")
    note: str = ""

    def requires(self) -> tuple[str, ...]:
        """Metrics a completed run must have to count for this artefact (made with its settings)."""
        return ("best_test_acc",) if self.track_test else ()


FIRST_BELOW = Metric("first step < baseline", "first_step_below_baseline", "first_step_below_baseline", "step",
                     note="first logged training step whose 5-point smoothed loss is below the memoryless baseline")
ARTEFACTS: dict[str, Artefact] = {a.name: a for a in (
    Artefact("table1", "Table 1: pixel-by-pixel MNIST and permuted MNIST", "§5.1, Table 1",
             (Panel("mnist", None, "Unperm."), Panel("pmnist", None, "Perm.")),
             (Metric("test acc", "best_test_acc", "test_acc",
                     note="best test accuracy over the validations (the paper: best epoch of 70)"),),
             track_test=True,
             note="oRNN and EURNN rows are the paper's quotes of Mhammedi et al. and Jing et al."),
    Artefact("table2", "Table 2: TIMIT next-frame prediction", "§5.4, Table 2",
             (Panel("timit", None, "TIMIT"),),
             (Metric("valid MSE", "best_val_mse", "val_mse", note="best validation MSE (paper convention)"),
              Metric("eval MSE", "best_ckpt_test_mse", "eval_mse",
                     note="core test set at the best-validation checkpoint"))),
    Artefact("copying", "Figure 4: copying problem", "§5.2, Figure 4 (its numbers: Table 4, row 1)",
             (Panel("copying", 1000, "T=1000"), Panel("copying", 2000, "T=2000")),
             (FIRST_BELOW,
              Metric("final CE", "final_train_loss", "final_loss", note="mean of the last 10 logged training losses")),
             note="the paper prints numbers only for scuRNN at T=2000 (Table 4); the rest is Figure 4's curves"),
    Artefact("adding", "Figure 5: adding problem", "§5.3, Figure 5",
             (Panel("adding", 200, "T=200"), Panel("adding", 750, "T=750")),
             (FIRST_BELOW,
              Metric("test MSE", "best_ckpt_test_mse", None, note="test split at the best-validation checkpoint")),
             note="the paper shows Figure 5's curves only: no number to compare with"),
)}
# Not artefacts: the appendix's Tables 3 and 4 (other optimizer settings for scuRNN) have no rows
# in bench/paper.py beyond their first row, which is the main setting (Table 1, Figure 4).

# The paper's names and the order of its tables' rows.
PAPER_NAMES = {"scurnn": "scuRNN", "scornn": "scoRNN", "lstm": "LSTM", "urnn": "Rest. cap. uRNN",
               "fcurnn": "Full cap. uRNN", "ornn": "oRNN", "eurnn": "EURNN"}
NEW_MODEL_LABEL = "not in the paper"


def check_request(artefact: str | None, scale: str, workers: int = 1, seeds: int | None = None) -> None:
    """Refuse bad names and counts before any work (no torch needed)."""
    if artefact is not None and artefact not in ARTEFACTS:
        raise ConfigError(f"unknown artefact {artefact!r}; known artefacts: {', '.join(ARTEFACTS)}")
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; known scales: {', '.join(SCALES)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ConfigError(f"--seeds must be a positive integer, got {seeds!r}")


def protocol(task: str, scale: str) -> Protocol:
    """The protocol of ``task`` at ``scale``; ``paper`` is the task's ``paper_scale``."""
    if scale == "paper":
        from bench.tasks import get_task_class

        ps = get_task_class(task).paper_scale
        return Protocol(ps["max_steps"], ps["batch_size"], ps["val_every"])
    try:
        return PROTOCOLS[task][scale]
    except KeyError:
        raise ConfigError(f"no {scale} protocol for task {task!r}; tasks with one: {', '.join(PROTOCOLS)}") from None


def run_seq_len(panel: Panel, proto: Protocol) -> int | None:
    if panel.seq_len is None or not proto.seq_len:
        return panel.seq_len
    return proto.seq_len.get(panel.seq_len, panel.seq_len)


# --------------------------------------------------------------------------------------------
# Expansion: artefact x scale -> runs
# --------------------------------------------------------------------------------------------


@dataclass
class PlannedRun:
    artefact: str
    scale: str
    panel: Panel
    row: PaperSetting | None        # None: a model without a paper row (--with-new-models)
    model: str
    seed: int
    config: RunConfig               # what resolve() was given: the row's settings and the scale's protocol
    resolved: RunConfig
    n_params: int
    eval_batches: int | None = None
    state: str = "run"              # "done" | "resume" | "run"
    resume_dir: str | None = None

    @property
    def config_hash(self) -> str:
        return self.resolved.config_hash()

    @property
    def key(self) -> tuple:
        return (self.config_hash, self.seed, self.eval_batches)

    @property
    def setting(self) -> tuple:
        """The table row it belongs to: model, hidden size, options, and whether the paper has it."""
        return (self.model, self.resolved.n_hidden, json.dumps(self.resolved.model_options, sort_keys=True),
                self.row is None)

    def label(self) -> str:
        T = f" T={self.resolved.seq_len}" if self.panel.seq_len is not None else ""
        return f"{self.model} {self.resolved.task}{T} n={self.resolved.n_hidden} seed {self.seed}"


def panel_rows(panel: Panel) -> list[PaperSetting]:
    """The paper's rows of one panel: every (model, size) of the task, or, for a length, each
    model's row at that length (else its default row), as ``bench run`` would pick it."""
    rows = paper_rows(task=panel.task)
    if panel.seq_len is None:
        out, seen = [], set()
        for r in rows:
            key = (r.model, r.n_hidden, json.dumps(r.options, sort_keys=True))
            if key not in seen:
                seen.add(key)
                out.append(r)
        return out
    chosen = (paper_setting(m, panel.task, panel.seq_len) for m in dict.fromkeys(r.model for r in rows))
    return [r for r in chosen if r is not None]


def new_models(task: str) -> list[str]:
    """Registered models without any paper row for ``task``."""
    from bench.models import MODELS

    return [m for m in sorted(MODELS) if not paper_rows(m, task)]


def row_opts(row: PaperSetting) -> dict[str, list]:
    """The row's optimizers for the groups the model has with the row's options (as resolve() keeps them)."""
    from bench.models import get_model_class

    groups = get_model_class(row.model).groups_for(**row.options)
    return {g: list(spec) for g, spec in row.opts.items() if g in groups}


def plan(artefact: str, scale: str, seeds: int | None = None, *, with_new_models: bool = False,
         runs_dir: str = "runs", data_dir: str | None = None, wandb: str = "auto") -> list[PlannedRun]:
    """Every run of ``artefact`` at ``scale``, resolved (validated) but not run."""
    from bench.config import resolve
    from bench.models import get_model_class
    from bench.tasks import get_task_class

    check_request(artefact, scale, 1, seeds)
    art = ARTEFACTS[artefact]
    n_seeds = seeds or SCALES[scale].seeds
    out = []
    for panel in art.panels:
        proto = protocol(panel.task, scale)
        T = run_seq_len(panel, proto)
        task_cls = get_task_class(panel.task)
        settings = [(r.model, r) for r in panel_rows(panel)]
        if with_new_models:
            settings += [(m, None) for m in new_models(panel.task)]
        for model, row in settings:
            for seed in range(n_seeds):
                tags = {"reproduce": f"{artefact}/{scale}", "paper_row": row.source if row else None,
                        "paper_seq_len": panel.seq_len}
                if proto.eval_batches:
                    tags["eval_batches"] = proto.eval_batches
                cfg = RunConfig(
                    model=model, task=panel.task, seed=seed, n_hidden=row.n_hidden if row else None,
                    seq_len=T if task_cls.uses_seq_len else None, batch_size=proto.batch_size,
                    max_steps=proto.max_steps, val_every=proto.val_every, opts=row_opts(row) if row else {},
                    scale=SCALES[scale].run_scale, data_dir=data_dir, model_options=dict(row.options) if row else {},
                    runs_dir=runs_dir, wandb=wandb, quiet=True, threads=1, track_test=art.track_test, tags=tags)
                resolved = resolve(RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))))
                if row is not None:
                    if resolved.n_hidden != row.n_hidden or resolved.model_options != row.options:
                        raise RuntimeError(f"{model} on {panel.task}: resolve() changed the paper row's settings "
                                           f"(n={resolved.n_hidden}, options={resolved.model_options}; row: "
                                           f"n={row.n_hidden}, options={row.options})")
                    # the row these settings came from, which resolve() cannot know at a shortened length or
                    # for the paper's second size of a model (result.json's paper_row names the default row)
                    resolved.paper_source, resolved.fallback = row.source, None
                task = task_cls(seq_len=resolved.seq_len) if task_cls.uses_seq_len else task_cls
                n_params = get_model_class(model).param_count(resolved.n_hidden, task.d_input, task.d_output,
                                                              **resolved.model_options)
                out.append(PlannedRun(artefact, scale, panel, row, model, seed, cfg, resolved, n_params,
                                      proto.eval_batches))
    return out


# --------------------------------------------------------------------------------------------
# What is done already
# --------------------------------------------------------------------------------------------


def _eval_tag(config: dict) -> int | None:
    return ((config or {}).get("tags") or {}).get("eval_batches")


def load_existing(runs_dir: str | Path) -> list[dict]:
    """Usable result records under ``runs_dir`` (none if it does not exist)."""
    from bench.leaderboard import load_results

    if not Path(runs_dir).is_dir():
        return []
    return load_results(runs_dir)[0]


def matching(runs: list[PlannedRun], results: list[dict]) -> dict[tuple, list[dict]]:
    """Results per planned run key: same config hash, seed and evaluation limit."""
    wanted = {r.key for r in runs}
    out: dict[tuple, list[dict]] = {}
    for res in results:
        key = (res["config_hash"], res["seed"], _eval_tag(res["config"]))
        if key in wanted:
            out.setdefault(key, []).append(res)
    return out


def mark_states(runs: list[PlannedRun], runs_dir: str | Path, results: list[dict] | None = None) -> None:
    """Set each run's state: "done" (a completed result with what the artefact needs), "resume"
    (an unfinished folder of the same config with a checkpoint) or "run"."""
    from bench.preemption import resume_checkpoint
    from bench.results import RESULT_FILE

    results = load_existing(runs_dir) if results is None else results
    found = matching(runs, results)
    folders: dict[tuple, str] = {}
    for cfg_path in sorted(Path(runs_dir).glob("*/*/*/config.json")) if Path(runs_dir).is_dir() else []:
        folder = cfg_path.parent
        if (folder / RESULT_FILE).exists() or resume_checkpoint(folder) is None:
            continue
        try:
            cfg = RunConfig.from_dict(json.loads(cfg_path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        folders[(cfg.config_hash(), cfg.seed, _eval_tag(cfg.to_dict()))] = str(folder)   # latest wins (sorted)
    needs = {r.artefact: ARTEFACTS[r.artefact].requires() for r in runs}
    for run in runs:
        done = [res for res in found.get(run.key, []) if res["status"] == "completed"
                and all(k in res["metrics"] for k in needs[run.artefact])]
        if done:
            run.state, run.resume_dir = "done", None
        elif run.key in folders:
            run.state, run.resume_dir = "resume", folders[run.key]
        else:
            run.state, run.resume_dir = "run", None


# --------------------------------------------------------------------------------------------
# Running: N worker processes, one torch thread each, each run through bench.run.run
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    run: PlannedRun
    status: str                 # completed | diverged | preempted | interrupted | failed
    error: str | None
    run_dir: str | None
    seconds: float


def eval_limit_callback(k: int):
    """A Lightning callback that validates and tests on the first ``k`` batches of each split
    (smoke scale only; result.json records it as ``config.tags.eval_batches``)."""
    from lightning.pytorch.callbacks import Callback

    class EvalLimit(Callback):
        def setup(self, trainer, pl_module, stage):
            trainer.limit_val_batches = k
            trainer.limit_test_batches = k

    return EvalLimit()


def _worker(wid: int, inbox, outbox, log_path: str) -> None:
    """One worker process: takes (index, config dict, resume folder) items until None."""
    import signal
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C reaches the parent, which sends SIGTERM (preemption)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    from bench.run import run

    while True:
        item = inbox.get()
        if item is None:
            return
        index, config, resume_dir, eval_batches = item
        started = time.time()
        print(f"== run {index}: {config['model']} {config['task']} seed {config['seed']} "
              f"{'(resume ' + resume_dir + ')' if resume_dir else ''}", flush=True)
        try:
            cfg = RunConfig.from_dict(config)
            callbacks = [eval_limit_callback(eval_batches)] if eval_batches else None
            result = run(cfg, callbacks=callbacks, resume_dir=resume_dir)
            msg = (wid, index, result["status"], result.get("error"), result.get("run_dir"), time.time() - started)
        except BaseException as exc:          # noqa: BLE001 - reported as this run's failure; the worker goes on
            traceback.print_exc()
            text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0] if str(exc) else type(exc).__name__
            msg = (wid, index, "failed", text, None, time.time() - started)
        sys.stdout.flush()
        sys.stderr.flush()
        outbox.put(msg)


def _say(text: str) -> None:
    print(f"bench reproduce: {text}", file=sys.stderr, flush=True)


def execute(runs: list[PlannedRun], workers: int, log_dir: Path, *, say=_say,
            grace_s: float = 120.0) -> list[Outcome]:
    """Run ``runs`` on ``workers`` processes. A failed run (exception, divergence, a worker that
    died) is reported and the others go on; a dead worker is replaced. Ctrl-C or SIGTERM sends
    SIGTERM to busy workers (each run saves its preemption checkpoint; the next invocation
    resumes it), then raises KeyboardInterrupt. Workers are spawned (not forked): a script that
    calls this needs the ``if __name__ == "__main__":`` guard."""
    import multiprocessing as mp
    import queue
    import signal
    import threading
    from collections import deque

    if not runs:
        return []
    ctx = mp.get_context("spawn")             # no fork of a process that may hold torch's threads
    outbox = ctx.Queue()
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    procs: dict[int, dict] = {}
    next_id = [0]

    def start() -> None:
        wid = next_id[0]
        next_id[0] += 1
        log = log_dir / f"{stamp}-worker{wid}.log"
        inbox = ctx.Queue()
        p = ctx.Process(target=_worker, args=(wid, inbox, outbox, str(log)), name=f"bench-reproduce-{wid}")
        p.start()
        procs[wid] = {"proc": p, "inbox": inbox, "busy": None, "log": str(log)}

    # longest first (by the --list estimate), so that a long run does not start last and hold up the end
    pending = deque(sorted(range(len(runs)), key=lambda i: -estimate_seconds(runs[i])))
    outcomes: dict[int, Outcome] = {}
    started: dict[int, float] = {}
    total = len(runs)

    def record(index: int, status: str, error, run_dir, seconds: float, log: str) -> None:
        run = runs[index]
        outcomes[index] = Outcome(run, status, error, run_dir, seconds)
        head = f"[{len(outcomes)}/{total}] {run.label()}: "
        if status == "completed":
            say(head + f"completed in {seconds:.0f} s")
        elif status in ("preempted", "interrupted"):
            say(head + f"stopped after {seconds:.0f} s, checkpoint saved in {run_dir}; the same command continues it")
        else:
            say(head + f"FAILED ({status}): {error or 'no error message'} (log: {log})")

    def handle(msg) -> None:
        wid, index, status, error, run_dir, seconds = msg
        w = procs.get(wid)
        if w is not None and w["busy"] == index:
            w["busy"] = None
        if index not in outcomes:
            record(index, status, error, run_dir, seconds, w["log"] if w else "?")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() else None
    for _ in range(min(workers, total)):
        start()
    try:
        while pending or any(w["busy"] is not None for w in procs.values()):
            for w in procs.values():
                if w["busy"] is None and pending:
                    index = pending.popleft()
                    run = runs[index]
                    config = (run.resolved.to_dict() if run.state != "resume"
                              else json.loads((Path(run.resume_dir) / "config.json").read_text()))
                    w["inbox"].put((index, config, run.resume_dir if run.state == "resume" else None,
                                    run.eval_batches))
                    w["busy"], started[index] = index, time.time()
            try:
                handle(outbox.get(timeout=1.0))
            except queue.Empty:
                pass
            for wid, w in list(procs.items()):
                if w["busy"] is not None and not w["proc"].is_alive():
                    try:                           # its last message may still be in the queue
                        while True:
                            handle(outbox.get(timeout=0.5))
                    except queue.Empty:
                        pass
                    if w["busy"] is not None:
                        code = w["proc"].exitcode
                        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                        record(w["busy"], "failed", f"worker process died ({why})", None,
                               time.time() - started[w["busy"]], w["log"])
                    del procs[wid]
                    if pending:
                        start()
    except KeyboardInterrupt:
        say("interrupted: asking running runs to checkpoint (SIGTERM); run the same command again to continue")
        for w in procs.values():
            if w["busy"] is not None:
                w["proc"].terminate()
        deadline = time.time() + grace_s
        while any(w["busy"] is not None and w["proc"].is_alive() for w in procs.values()) and time.time() < deadline:
            try:
                handle(outbox.get(timeout=1.0))
            except queue.Empty:
                pass
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for w in procs.values():
            if w["proc"].is_alive():
                w["inbox"].put(None)
        for w in procs.values():
            w["proc"].join(timeout=10)
            if w["proc"].is_alive():
                w["proc"].kill()
                w["proc"].join(timeout=5)
    return [outcomes[i] for i in sorted(outcomes)]


def preflight(runs: list[PlannedRun], runs_dir: str | Path) -> None:
    """Check what every run needs before any of them starts: a writable runs folder and each
    task's data (one data module per task and length). Raises a BenchError naming the problem."""
    from bench.tasks import build_task

    seen = set()
    for run in runs:
        c = run.resolved
        key = (c.task, c.seq_len, c.data_dir, c.data_seed)
        if key not in seen:
            seen.add(key)
            build_task(c.task, seq_len=c.seq_len, data_dir=c.data_dir, data_seed=c.data_seed).datamodule(c.batch_size)
    writable_folder(Path(runs_dir) / "reproduce", "the reproduce folder")


# --------------------------------------------------------------------------------------------
# Rendering: the paper's layout, the paper's value, ours (mean ± std over seeds), the difference
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    paper: float | None
    mean: float | None
    std: float | None
    n: int                       # completed seeds with a value
    done: int                    # completed seeds
    planned: int                 # seeds asked for
    failed: dict[str, int] = field(default_factory=dict)
    config_hash: str | None = None

    @property
    def diff(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


@dataclass
class TableRow:
    setting: tuple
    model: str
    n_hidden: int
    n_params: int
    budget: str | None           # the paper's "# params"
    new: bool
    cells: dict[tuple[str, str], Cell]      # (panel label, metric label) -> cell


def table(runs: list[PlannedRun], results: list[dict]) -> list[TableRow]:
    """The artefact's rows (paper order, then the new models) with one cell per panel and metric,
    computed from ``results`` through the leaderboard's aggregation (latest run per seed)."""
    from bench.leaderboard import aggregate, stat

    if not runs:
        return []
    art = ARTEFACTS[runs[0].artefact]
    found = matching(runs, results)
    by_setting: dict[tuple, dict[str, list[PlannedRun]]] = {}
    for r in runs:
        by_setting.setdefault(r.setting, {}).setdefault(r.panel.label, []).append(r)
    order = list(PAPER_NAMES)
    rows = []
    for setting, panels in by_setting.items():
        first = next(iter(panels.values()))[0]
        cells = {}
        for panel in art.panels:
            planned = panels.get(panel.label, [])
            if not planned:
                continue
            chosen = [res for p in planned for res in found.get(p.key, [])]
            groups = aggregate(chosen) if chosen else []
            group = max(groups, key=lambda g: (g.n, sum(g.failed.values())), default=None)
            done = group.runs if group else []
            for metric in art.metrics:
                s = stat([res["metrics"].get(metric.key) for res in done])
                paper = (planned[0].row.reported.get(metric.paper) if planned[0].row and metric.paper else None)
                cells[(panel.label, metric.label)] = Cell(paper, s.mean, s.std, s.n, len(done), len(planned),
                                                          dict(group.failed) if group else {},
                                                          planned[0].config_hash)
        row = first.row
        rows.append(TableRow(setting, first.model, first.resolved.n_hidden, first.n_params,
                             row.budget if row else None, row is None, cells))
    rows.sort(key=lambda t: (t.new, order.index(t.model) if t.model in order else len(order), t.model, t.n_hidden))
    return rows


def fmt_value(v: float | None, kind: str = "float") -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if kind == "step" else f"{v:.4g}"


def fmt_ours(c: Cell, kind: str = "float") -> str:
    """mean ± std (n seeds); "never" for a step count no seed reached; failures named."""
    if c.done == 0:
        text = "not run" if not c.failed else ""
    elif c.n == 0:
        text = "never" if kind == "step" else "—"
    else:
        text = fmt_value(c.mean, kind) + (f" ± {c.std:.2g}" if c.std is not None else "")
        text += f" ({c.n} seed{'s' if c.n != 1 else ''}" + (f", reached {c.n}/{c.done}" if kind == "step"
                                                              and c.n < c.done else "") + ")"
    if c.failed:
        text = (text + " " if text else "") + "[" + ", ".join(f"{v} {k}" for k, v in sorted(c.failed.items())) + "]"
    return text


def fmt_diff(c: Cell, kind: str = "float") -> str:
    d = c.diff
    if d is None:
        return "—"
    return f"{d:+.0f}" if kind == "step" else f"{d:+.3g}"


def model_label(t: TableRow) -> str:
    return f"{t.model} ({NEW_MODEL_LABEL})" if t.new else PAPER_NAMES.get(t.model, t.model)


def describe_protocol(artefact: str, scale: str, runs: list[PlannedRun]) -> list[str]:
    """Header lines: the scale, steps, batch, and what differs from the paper's protocol."""
    art = ARTEFACTS[artefact]
    seeds = sorted({r.seed for r in runs})
    lines = [f"Scale **{scale}**: {SCALES[scale].about}. Seeds: {len(seeds)} ({', '.join(map(str, seeds))}). "
             f"Runs from `bench reproduce {artefact} --scale {scale}`; each is a normal `bench run` "
             f"(its settings: bench/paper.py row; its protocol: bench/reproduce.py PROTOCOLS)."]
    for task in dict.fromkeys(p.task for p in art.panels):
        proto, paper = protocol(task, scale), protocol(task, "paper")
        text = (f"{task}: {proto.max_steps} steps × batch {proto.batch_size}, validation every {proto.val_every} "
                f"steps")
        diffs = []
        if scale != "paper":
            if (proto.max_steps, proto.batch_size) != (paper.max_steps, paper.batch_size):
                diffs.append(f"the paper's protocol trains {paper.max_steps} steps × batch {paper.batch_size}")
            if proto.val_every != paper.val_every:
                diffs.append(f"validation every {paper.val_every} steps there")
            if proto.seq_len:
                diffs.append("sequence lengths shortened: " + ", ".join(
                    f"T={a} run at T={b}" for a, b in proto.seq_len.items()
                    if any(p.task == task and p.seq_len == a for p in art.panels)))
            if proto.eval_batches:
                diffs.append(f"validation and test on the first {proto.eval_batches} batch(es) of each split only")
        lines.append(text + (" — differs from the paper: " + "; ".join(diffs) if diffs else
                             " (the paper's protocol)") + ".")
    if art.track_test:
        lines.append("The test split is evaluated at every validation, as the paper reports the best test accuracy "
                     "over epochs.")
    return lines


def panel_header(panel: Panel, scale: str) -> str:
    proto = protocol(panel.task, scale)
    T = run_seq_len(panel, proto)
    return panel.label + (f" (run at T={T})" if T != panel.seq_len else "")


def table_cells(art: Artefact, scale: str, rows: list[TableRow], panels) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells of one table: the rows that have a run in ``panels``; per panel
    and metric the paper's value, ours and the difference."""
    several = len(panels) > 1
    headers = ["model", "n", "# params (paper)", "params"]
    for panel in panels:
        prefix = f"{panel_header(panel, scale)} " if several else ""
        for m in art.metrics:
            headers += [f"{prefix}{m.label}: paper", f"{prefix}{m.label}: ours", f"{prefix}{m.label}: Δ"]
    body = []
    for t in rows:
        if not any((p.label, m.label) in t.cells for p in panels for m in art.metrics):
            continue
        line = [model_label(t), str(t.n_hidden), t.budget or ("matched to scuRNN" if t.new else "—"), f"{t.n_params:,}"]
        for panel in panels:
            for m in art.metrics:
                c = t.cells.get((panel.label, m.label))
                line += ([fmt_value(c.paper, m.kind), fmt_ours(c, m.kind), fmt_diff(c, m.kind)] if c
                         else ["—", "no paper row", "—"])
        body.append(line)
    return headers, body


def render(artefact: str, scale: str, runs: list[PlannedRun], results: list[dict]) -> tuple[str, str]:
    """The artefact as Markdown (header, table, notes) and as CSV (one line per cell)."""
    from bench.leaderboard import md_table

    art = ARTEFACTS[artefact]
    rows = table(runs, results)
    parts = [f"# {art.title} ({art.source}), scale {scale}", ""] + describe_protocol(artefact, scale, runs) + [""]
    # One metric: the panels side by side, as the paper's Table 1 (Unperm. | Perm.). Several
    # metrics: one table per panel (one length), as Table 2 (valid | eval) for each length.
    layouts = [(None, art.panels)] if len(art.metrics) == 1 else [(p, (p,)) for p in art.panels]
    for title, panels in layouts:
        headers, body = table_cells(art, scale, rows, panels)
        if title is not None:
            parts += [f"## {panel_header(title, scale)}", ""]
        parts += [md_table(headers, body), ""]
    notes = [f"{m.label}: {m.note} [result key: {m.key}]" for m in art.metrics]
    notes.append("paper: the paper's number for this model and size (bench/paper.py); ours: mean ± std (ddof=1) "
                 "over completed seeds; Δ = ours − paper; failed runs in brackets")
    if any(t.new for t in rows):
        notes.append(f"rows marked '{NEW_MODEL_LABEL}': models without a paper row for the task, at the hidden "
                     "size matching scuRNN's paper budget there (bench/paper.py anchor_budget), with their own "
                     "default optimizers")
    if art.note:
        notes.append(art.note)
    parts += ["- " + n for n in notes]
    md = "\n".join(parts).rstrip() + "\n"

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["artefact", "scale", "model", "n_hidden", "n_params", "paper_budget", "not_in_paper", "task",
                "paper_seq_len", "seq_len", "max_steps", "batch_size", "eval_batches", "metric", "result_key",
                "paper", "mean", "std", "n", "completed", "planned", "failed", "diff", "config_hash"])
    for t in rows:
        for panel in art.panels:
            planned = next((r for r in runs if r.setting == t.setting and r.panel.label == panel.label), None)
            if planned is None:
                continue
            c0 = planned.resolved
            for m in art.metrics:
                c = t.cells[(panel.label, m.label)]
                w.writerow([artefact, scale, t.model, t.n_hidden, t.n_params, t.budget or "", int(t.new), panel.task,
                            panel.seq_len or "", c0.seq_len or "", c0.max_steps, c0.batch_size,
                            planned.eval_batches or "", m.label, m.key, _num(c.paper), _num(c.mean), _num(c.std), c.n,
                            c.done, c.planned, sum(c.failed.values()), _num(c.diff), c.config_hash])
    return md, buf.getvalue()


def _num(v) -> str:
    return "" if v is None else repr(float(v))


def write_outputs(runs_dir: str | Path, artefact: str, scale: str, md: str, text_csv: str) -> tuple[Path, Path]:
    from bench.results import atomic_write_text

    out = Path(runs_dir) / "reproduce"
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / f"{artefact}-{scale}.md", out / f"{artefact}-{scale}.csv"
    atomic_write_text(md_path, md)
    atomic_write_text(csv_path, text_csv)
    return md_path, csv_path


# --------------------------------------------------------------------------------------------
# Cost estimate (bench reproduce --list)
# --------------------------------------------------------------------------------------------

# ms per training step (forward, backward, optimizer step) with one torch thread on this
# repository's 2-core CPU, copying T=100, batch 20, at the ≈22k budget, all models interleaved in
# one process (lstm ... urnn, timed 2026-11 before the fast paths of issue 14); the newer models
# as 11.2 ms / their train × LSTM ratio in README's `bench speed --task copying` table.
STEP_MS_REF = {"lstm": 11.2, "ornn": 28.2, "gru": 35.6, "scornn": 37.2, "scurnn": 40.2, "exprnn": 51.1,
               "fcurnn": 55.9, "eurnn": 167.6, "urnn": 311.8,
               "dtriv": 62.0, "nnrnn": 39.0, "lru": 70.0, "s4d": 39.0, "mingru": 280.0, "minlstm": 187.0}
REF_T, REF_BATCH, REF_PARAMS = 100, 20, 22_369
# Fitted to ten MNIST runs of 5 steps timed here (one per Table 1 row, whose time was mostly
# evaluation: 25,000 images of 784 steps; 6 to 560 s each; the fit is within 1.5x of each):
# one evaluated sequence costs about this share of one trained sequence, and the time of a
# step grows as (parameters)^0.7, not linearly (fixed per-step costs).
EVAL_SHARE = 0.2
PARAMS_EXPONENT = 0.7
RUN_OVERHEAD_S = 1.0            # per run in a warm worker: model, data, Lightning's trainer, result files (0-1 s here)
WORKER_START_S = 5.0            # per worker: spawning it and importing torch and Lightning
TIMIT_FRAMES = 200              # assumed mean utterance length in frames (TIMIT's data is not here)


def _eval_splits(task: str, batch: int) -> tuple[int, int, int]:
    """(validation sequences, test sequences, sequences per evaluation batch)."""
    from bench.tasks import get_task_class

    cls = get_task_class(task)
    sizes = getattr(cls, "sizes", None)
    if sizes:
        return sizes["val"], sizes["test"], batch
    if task in ("mnist", "pmnist"):
        from bench.tasks.mnist import N_VAL

        return N_VAL, 10_000, max(batch, cls.eval_batch_size)
    if task == "timit":
        from bench.tasks.timit import EXPECTED_SIZES

        return EXPECTED_SIZES["val"], EXPECTED_SIZES["test"], max(EXPECTED_SIZES.values())   # one batch per split
    return 0, 0, batch


def estimate_seconds(run: PlannedRun) -> float:
    """Single-thread CPU seconds of one run: steps × a per-step time (STEP_MS_REF scaled linearly
    by T and batch, and by the parameter count to the power PARAMS_EXPONENT), its evaluations,
    and a fixed overhead."""
    c = run.resolved
    T = c.seq_len or (784 if c.task in ("mnist", "pmnist") else TIMIT_FRAMES)
    step_s = (STEP_MS_REF.get(c.model, 100.0) / 1000 * (T / REF_T) * (c.batch_size / REF_BATCH)
              * (run.n_params / REF_PARAMS) ** PARAMS_EXPONENT)
    val, test, eval_batch = _eval_splits(c.task, c.batch_size)
    if run.eval_batches:
        val, test = min(val, run.eval_batches * eval_batch), min(test, run.eval_batches * eval_batch)
    validations = max(1, c.max_steps // c.val_every)
    evaluated = validations * (val + (test if c.track_test else 0)) + 2 * test
    return RUN_OVERHEAD_S + c.max_steps * step_s + evaluated * step_s / c.batch_size * EVAL_SHARE


ESTIMATE_NOTE = ("cost = single-thread CPU time on this repository's 2-core machine: per run, steps × a per-step "
                 "time (measured ms per step of each model at copying T=100, "
                 "batch 20, ≈22k parameters, 1 thread; scaled linearly by T and batch and by (parameters)^0.7, "
                 f"a fit to ten timed MNIST runs), plus evaluation (one evaluated sequence ≈ {EVAL_SHARE} of a "
                 f"trained one) and {RUN_OVERHEAD_S:.0f} s per run; divide by --workers and add "
                 f"{WORKER_START_S:.0f} s to start them. A rough guide (±2×); the paper scale is meant for GPUs, "
                 "where none of this was measured")


def wall_estimate(runs: list[PlannedRun], workers: int) -> float:
    """Wall seconds of ``runs`` on ``workers`` processes (perfect packing, plus starting them)."""
    return sum(estimate_seconds(r) for r in runs) / workers + WORKER_START_S


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def list_lines(with_new_models: bool = False, workers: int = 1) -> list[str]:
    lines = []
    for name, art in ARTEFACTS.items():
        lines.append(f"{name:<8} {art.title} ({art.source})")
        for scale in SCALES:
            runs = plan(name, scale, with_new_models=with_new_models)
            total = sum(estimate_seconds(r) for r in runs)
            settings = len({(r.setting, r.panel.label) for r in runs})
            per = f"{settings} settings × {SCALES[scale].seeds} seed{'s' if SCALES[scale].seeds != 1 else ''}"
            lines.append(f"  {scale:<6} {len(runs):>4} runs ({per}): ≈ {fmt_duration(total)} CPU"
                         + (f", ≈ {fmt_duration(wall_estimate(runs, workers))} with {workers} workers" if workers > 1
                            else ""))
    return lines
