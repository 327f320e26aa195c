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
    # bench reproduce: a fixed list of runs instead of a space over ``base``; a point is {"run": i}.
    # Each entry: {"label", "config" (resolved dict), "estimate_s", "done" (a result exists), "resume_dir"}.
    plan: list | None = None
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

    def trial_config(self, point: dict):
        """The resolved RunConfig of one point."""
        from bench.config import RunConfig, resolve
        from bench.sweep.space import apply_overrides

        if self.plan is not None:
            return RunConfig.from_dict(self.plan[point["run"]]["config"])
        return resolve(apply_overrides(self.base, point, self.space))

    def describe(self, point: dict) -> str:
        if self.plan is not None:
            return self.plan[point["run"]]["label"]
        return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())

    def node_configs(self) -> list:
        """One resolved config per distinct task and data this sweep's trials need (preflight)."""
        from bench.config import RunConfig, resolve

        if self.plan is None:
            return [resolve(self.base)]
        seen = {}
        for entry in self.plan:
            c = RunConfig.from_dict(entry["config"])
            seen.setdefault((c.task, c.seq_len, c.data_dir, c.data_seed, c.model), c)
        return list(seen.values())

    def points(self) -> list[tuple[dict, dict]]:
        """The points to enqueue once, each with the user attributes its trial starts with: the
        whole grid, or the plan's runs that have no result yet (an unfinished one continues in its
        folder), longest first (workers claim in this order: a long run must not start last)."""
        if self.plan is None:
            return [(p, {}) for p in grid_points(self.space)]
        todo = sorted((i for i, e in enumerate(self.plan) if not e.get("done")),
                      key=lambda i: -self.plan[i].get("estimate_s", 0))
        return [({"run": i}, {"resume_dir": self.plan[i]["resume_dir"]} if self.plan[i].get("resume_dir") else {})
                for i in todo]

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
            for point, attrs in sweep.points():
                if point_key(point) not in seen:
                    study.enqueue_trial(point, user_attrs=attrs or None)
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
        ob, nb = old.get("base") or {}, new.get("base") or {}
        if "base" in diff and isinstance(ob, dict) and isinstance(nb, dict):
            details += [f"{k}: study has {ob.get(k)!r}, you asked for {nb.get(k)!r}"
                        for k in sorted(set(ob) | set(nb)) if ob.get(k) != nb.get(k)]
        elif "base" in diff:      # a reproduce study: its list of (config hash, seed, evaluation)
            changed = sum(a != b for a, b in zip(ob, nb)) + abs(len(ob) - len(nb))
            details.append(f"planned runs: the study has {len(ob)}, you asked for {len(nb)}, {changed} differ "
                           f"(other --seeds, --with-new-models or another version of the harness)")
        detail = "; ".join(details)
        raise SweepError(f"study {sweep.name!r} already exists with different settings ({', '.join(diff)}"
                         f"{'; ' + detail if detail else ''}); re-run it with its original flags or choose "
                         f"another --study")
