"""The validated sweep every worker runs (``Sweep``) and its Optuna study: create or join it,
check that it is the same sweep, enqueue the grid once."""
from __future__ import annotations

import json
import os
import socket
import warnings
from dataclasses import dataclass, field

from bench.sweep.errors import SweepError
from bench.sweep.space import grid_points, point_key
from bench.sweep.storage import StorageSpec, open_storage, study_lock


@dataclass
class Sweep:
    """Everything a worker needs, validated once (bench.sweep.cli.build_sweep) and handed to
    each worker process as it is."""
    name: str
    storage_spec: StorageSpec
    space: dict
    sampler: str
    base: object                  # RunConfig (unresolved): the fixed part of every trial
    metric: str
    direction: str
    prune: bool
    n_trials: int | None
    heartbeat: int
    confirm_seeds: int = 0
    wait: bool = False            # stay while any trial runs anywhere (it may fail and come back)
    sampler_seed: int | None = None
    storage: object = None
    meta: dict = field(default_factory=dict)
    _study_id: int | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def pruner(self):
        import optuna

        if not self.prune:
            return optuna.pruners.NopPruner()
        from bench.config import resolve

        p = self.space["pruner"]
        max_steps = resolve(self.base).max_steps or 0
        # Early validations of memory tasks sit at the baseline for every config: warm up first.
        return optuna.pruners.MedianPruner(n_startup_trials=p.get("n_startup_trials", 5),
                                           n_warmup_steps=p.get("n_warmup_steps", max_steps // 4),
                                           interval_steps=p.get("interval_steps", 1))

    def sampler_obj(self):
        import optuna

        if self.sampler == "tpe":
            # one seed per worker (the same seed everywhere would propose the same first points)
            seed = None if self.sampler_seed is None else self.sampler_seed + worker_index()
            return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed)
        return optuna.samplers.RandomSampler()   # never asked: grid trials all come from the queue

    def load(self):
        import optuna

        return optuna.load_study(study_name=self.name, storage=self.storage, sampler=self.sampler_obj(),
                                 pruner=self.pruner())

    def lock(self):
        return study_lock(self.storage_spec, self.storage, self.name)

    def study_id(self) -> int:
        """The study's id in its storage (looked up once: workers poll for trials every few seconds)."""
        if self._study_id is None:
            self._study_id = self.storage.get_study_id_from_name(self.name)
        return self._study_id

    def close(self) -> None:
        """Give back this process's database connection (a journal holds none)."""
        engine = getattr(self.storage, "engine", None)
        if engine is not None:
            engine.dispose()

    def connect(self) -> "Sweep":
        """Open this process's storage (a spawned worker gets the sweep without one)."""
        self.storage = open_storage(self.storage_spec, self.heartbeat if self.storage_spec.kind == "rdb" else None)
        return self


def worker_index() -> int:
    """This worker's number: the SLURM array index, else the local worker number (0 for the
    first process), for per-worker seeds."""
    for var in ("SLURM_ARRAY_TASK_ID", "BENCH_WORKER_INDEX"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used with Study.optimize.*")


def as_json(x):
    return json.loads(json.dumps(x, default=str))


def prepare(sweep: Sweep):
    """Create or join the study (checking it is the same sweep) and enqueue the missing grid points."""
    import optuna

    with sweep.lock():
        try:
            study = optuna.create_study(study_name=sweep.name, storage=sweep.storage, direction=sweep.direction,
                                        sampler=sweep.sampler_obj(), pruner=sweep.pruner())
            study.set_user_attr("bench", as_json(sweep.meta))
        except optuna.exceptions.DuplicatedStudyError:
            study = sweep.load()
            _check_same_sweep(sweep, study)
            meta = study.user_attrs["bench"]
            if meta.get("n_trials") != sweep.n_trials:    # a larger --n-trials extends a TPE study
                study.set_user_attr("bench", {**meta, "n_trials": sweep.n_trials})
        if sweep.sampler == "grid":
            seen = {point_key(t.system_attrs.get("fixed_params") or t.params) for t in study.get_trials(deepcopy=False)}
            for point in grid_points(sweep.space):
                if point_key(point) not in seen:
                    study.enqueue_trial(point)
    return study


def _check_same_sweep(sweep: Sweep, study) -> None:
    old = study.user_attrs.get("bench")
    if old is None and not study.trials:    # created by a process that died before labelling it
        study.set_user_attr("bench", as_json(sweep.meta))
        return
    if old is None:
        raise SweepError(f"study {sweep.name!r} in {sweep.storage_spec.display} was not made by bench sweep; "
                         f"choose another --study")
    new = as_json(sweep.meta)
    keys = ("model", "task", "space_def", "sampler", "base", "metric", "direction")
    diff = [k for k in keys if old.get(k) != new.get(k)]
    if diff:
        details = [f"{k}: study has {old.get(k)!r}, you asked for {new.get(k)!r}" for k in diff
                   if k not in ("space_def", "base")]
        if "base" in diff:
            ob, nb = old.get("base") or {}, new.get("base") or {}
            details += [f"{k}: study has {ob.get(k)!r}, you asked for {nb.get(k)!r}"
                        for k in sorted(set(ob) | set(nb)) if ob.get(k) != nb.get(k)]
        detail = "; ".join(details)
        raise SweepError(f"study {sweep.name!r} already exists with different settings ({', '.join(diff)}"
                         f"{'; ' + detail if detail else ''}); re-run it with its original flags or choose "
                         f"another --study")
