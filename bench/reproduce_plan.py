"""``bench reproduce``'s run set: an artefact at a scale expanded into resolved runs, one per
(paper row, seed), and which of them a runs folder already holds (done, or resumable).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.config import RunConfig
from bench.errors import ConfigError
from bench.paper import PaperSetting, paper_rows, paper_setting
from bench.paper_appendix import appendix_rows
from bench.reproduce_spec import ARTEFACTS, SCALES, Panel, check_request, protocol, run_seq_len


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
        """The table row it belongs to: model, hidden size, options, whether the paper has it, and in
        an appendix table (rows differing by optimizers only) the paper's row."""
        return (self.model, self.resolved.n_hidden, json.dumps(self.resolved.model_options, sort_keys=True),
                self.row is None, self.row.source if self.panel.appendix and self.row else None)

    def label(self) -> str:
        T = f" T={self.resolved.seq_len}" if self.panel.seq_len is not None else ""
        which = f" ({self.row.source.removeprefix('Appendix A.3, ')})" if self.panel.appendix and self.row else ""
        return f"{self.model} {self.resolved.task}{T} n={self.resolved.n_hidden}{which} seed {self.seed}"


def panel_rows(panel: Panel) -> list[PaperSetting]:
    """The paper's rows of one panel: every (model, size) of the task, or, for a length, each
    model's row at that length (else its default row), as ``bench run`` would pick it; for an
    appendix panel, that table's rows."""
    if panel.appendix:
        return appendix_rows(panel.appendix, panel.task)
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
    if with_new_models and any(p.appendix for p in art.panels):
        raise ConfigError(f"--with-new-models does not apply to {artefact}: it compares scuRNN's optimizer "
                          f"settings (Appendix A.3), not models; use it with table1, table2, copying or adding")
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
                    resolved = resolved.with_(paper_source=row.source, fallback=None)
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
