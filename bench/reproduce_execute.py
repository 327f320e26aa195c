"""Running ``bench reproduce``'s runs: N worker processes, one torch thread each, each run through
:func:`bench.run.run`, and the preflight check of what they need before any starts.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.config import RunConfig
from bench.reproduce_cost import estimate_seconds
from bench.reproduce_plan import PlannedRun
from bench.results import writable_folder


@dataclass
class Outcome:
    run: PlannedRun
    status: str                 # completed | diverged | preempted | interrupted | failed
    error: str | None
    run_dir: str | None
    seconds: float


def eval_limit_callbacks(cfg: RunConfig) -> list:
    """A Lightning callback that validates and tests on the first ``k`` batches of each split when
    the config's ``tags.eval_batches`` is k (a smoke-scale reproduce run; result.json records it
    there), else none."""
    from lightning.pytorch.callbacks import Callback

    k = (cfg.tags or {}).get("eval_batches")
    if not k:
        return []

    class EvalLimit(Callback):
        def setup(self, trainer, pl_module, stage):
            trainer.limit_val_batches = k
            trainer.limit_test_batches = k

    return [EvalLimit()]


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
        index, config, resume_dir = item
        started = time.time()
        print(f"== run {index}: {config['model']} {config['task']} seed {config['seed']} "
              f"{'(resume ' + resume_dir + ')' if resume_dir else ''}", flush=True)
        try:
            cfg = RunConfig.from_dict(config)
            result = run(cfg, callbacks=eval_limit_callbacks(cfg) or None, resume_dir=resume_dir)
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
                    w["inbox"].put((index, config, run.resume_dir if run.state == "resume" else None))
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
