"""Aggregation (pure): result dicts to rows, one per (task, model, config_hash), with the
statistics over seeds, the budget label, the paper protocol the runs are under and the paper's
values for the same setting under that protocol (bench/paper.py ``PROTOCOLS``).

As a second guard, the key also holds the sequence length, training budget, batch size,
hidden size, data seed and a hash of the task's recorded facts (``task_info``: data split,
permutation, ...), so runs that differ in any of those never share a row even if their config
hashes were made by different code.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field

from bench.columns import Column
from bench.paper import PROTOCOLS, paper_rows, run_protocol
from bench.paper_appendix import APPENDIX_SETTINGS

from .facts import columns_for


@dataclass
class Stat:
    """mean, std (ddof=1; None for fewer than 2 values), over the ``n`` values present of ``total``."""

    mean: float | None
    std: float | None
    n: int
    total: int
    min: float | None = None
    max: float | None = None
    key: str | None = None


def stat(values: list, total: int | None = None, key: str | None = None) -> Stat:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    total = len(values) if total is None else total
    if not vals:
        return Stat(None, None, 0, total, key=key)
    std = statistics.stdev(vals) if len(vals) > 1 else None
    return Stat(statistics.fmean(vals), std, len(vals), total, min(vals), max(vals), key)


@dataclass
class Row:
    task: str
    model: str
    config_hash: str
    n_hidden: int | None
    n_params: list[int]
    seq_len: int | None
    budget: str
    scale: str | None
    config: dict
    runs: list[dict]                      # completed runs, one per seed (latest wins)
    seeds: list[int]
    failed: dict[str, int]                # status -> count of runs that did not complete
    superseded: int                       # completed runs replaced by a later run of the same seed
    cells: dict[str, Stat]
    paper: dict[str, float]
    paper_source: str | None
    wall_time: Stat
    baseline: float | None = None
    columns: list[Column] = field(default_factory=list)
    fallback: str | None = None           # result.json's sentence when no paper row gave the settings
    protocol: str | None = None           # the paper protocol the runs are under (bench/paper.py PROTOCOLS)
    no_paper: str | None = None           # why this row's protocol has no paper numbers, if it has none
    paper_level: str | None = None        # how ``paper`` was checked (bench/paper.py LEVELS)

    @property
    def n(self) -> int:
        return len(self.seeds)


# task_info keys that say where the data lives or whether it was checked, not what it is: the
# same MNIST files in two folders are the same split.
LOCATION_KEYS = ("files", "feature_cache", "md5_verified", "data_dir", "cache_dir")


def split_facts(info: dict | None) -> dict:
    return {k: v for k, v in (info or {}).items()
            if k not in LOCATION_KEYS and not k.endswith(("_dir", "_path", "_cache"))}


def group_key(r: dict) -> tuple:
    c = r["config"]
    info = json.dumps(split_facts(r.get("task_info")), sort_keys=True, default=str)
    return (r["task"], r["model"], r["config_hash"], c.get("seq_len"), c.get("max_steps"), c.get("max_epochs"),
            c.get("batch_size"), r.get("n_hidden", c.get("n_hidden")), c.get("data_seed"),
            hashlib.sha256(info.encode()).hexdigest()[:12],
            (c.get("tags") or {}).get("eval_batches"))   # bench reproduce's smoke runs evaluate on a subset


def budget_label(c: dict) -> str:
    batch = c.get("batch_size")
    if c.get("max_steps"):
        text = f"{c['max_steps']} steps"
    elif c.get("max_epochs"):
        text = f"{c['max_epochs']} ep"
    else:
        text = "?"
    return f"{text} × {batch}" if batch else text


def paper_values(model: str, task: str, n_hidden, protocol: str | None, source: str | None = None):
    """The paper's reported numbers for exactly this model, task and hidden size under ``protocol``,
    and the row they come from (its ``source``, ``level``); ``({}, None)`` if there are none. A run
    made from one of the appendix's optimizer rows (its config's ``paper_source``) gets that row's
    numbers, not those of the main setting of its size."""
    appendix = [s for s in APPENDIX_SETTINGS if source and s.source == source and (s.model, s.task) == (model, task)]
    for s in appendix + paper_rows(model, task):
        if s.reported and s.n_hidden == n_hidden and protocol is not None and s.protocol == protocol:
            return dict(s.reported), s
    return {}, None


def protocol_label(row: Row) -> str:
    """The row's protocol id, or for runs under none of the paper's, the task and length."""
    if row.protocol:
        return row.protocol
    return row.task + (f"/T={row.seq_len}" if row.seq_len is not None else "")


def protocol_groups(rows: list[Row]) -> list[list[Row]]:
    """``rows`` of one task split by protocol, so no column holds numbers of two protocols: the
    paper's protocols in their declared order, then runs under none of them, by length and reason."""
    order = list(PROTOCOLS)
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.protocol, protocol_label(r), r.no_paper), []).append(r)
    keyed = sorted(groups.items(), key=lambda kv: (kv[0][0] is None, order.index(kv[0][0]) if kv[0][0] in order else 0,
                                                   kv[1][0].seq_len or 0, kv[0][1], kv[0][2] or ""))
    return [g for _, g in keyed]


def aggregate(results: list[dict]) -> list[Row]:
    """Rows grouped by (task, model, config_hash) plus the guards of :func:`group_key`.

    Only ``status == "completed"`` runs enter the statistics; the others are counted in
    ``Row.failed``. Two completed runs of the same seed count once (the later one).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault(group_key(r), []).append(r)
    rows = []
    for key, runs in groups.items():
        first = runs[0]
        c = first["config"]
        failed: dict[str, int] = {}
        by_seed: dict = {}
        for r in sorted(runs, key=lambda r: str(r.get("finished_at", ""))):
            if r["status"] == "completed":
                by_seed[r["seed"]] = r
            else:
                failed[r["status"]] = failed.get(r["status"], 0) + 1
        done = [by_seed[s] for s in sorted(by_seed, key=str)]
        superseded = sum(r["status"] == "completed" for r in runs) - len(done)
        metric = (first.get("metric") or {}).get("name")
        columns = columns_for(first["task"], metric)
        cells = {}
        for col in columns:
            used = next((k for k in col.keys if any(r["metrics"].get(k) is not None for r in done)), col.keys[0])
            cells[col.label] = stat([r["metrics"].get(used) for r in done], len(done), used)
        n_hidden = first.get("n_hidden", c.get("n_hidden"))
        protocol, no_paper = run_protocol(first["task"], c, first.get("task_info"), first.get("n_params"))
        paper, prow = paper_values(first["model"], first["task"], n_hidden, protocol, c.get("paper_source"))
        rows.append(Row(
            task=first["task"], model=first["model"], config_hash=first["config_hash"], n_hidden=n_hidden,
            n_params=sorted({r.get("n_params") for r in runs if r.get("n_params") is not None}),
            seq_len=c.get("seq_len"), budget=budget_label(c), scale=c.get("scale"), config=c, runs=done,
            seeds=[r["seed"] for r in done], failed=failed, superseded=superseded, cells=cells,
            paper={col.label: paper[col.paper] for col in columns if col.paper in paper},
            paper_source=prow.source if prow else None, wall_time=stat([r.get("wall_time_s") for r in done]),
            baseline=(first.get("task_info") or {}).get("baseline"), columns=columns,
            fallback=first.get("fallback"), protocol=protocol, no_paper=no_paper,
            paper_level=prow.level if prow else None,
        ))
    rows.sort(key=lambda r: (r.task, r.seq_len or 0, r.config.get("max_steps") or 0, r.config.get("max_epochs") or 0,
                             r.model, r.n_hidden or 0, r.config_hash))
    return rows


def group_by_task(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.task, []).append(r)
    return out
