"""``bench leaderboard`` and ``bench compare``: the paper's tables and figures, made from results.

Everything here is computed from ``result.json`` files (DESIGN.md principle 5), never typed by
hand. :func:`aggregate` is a pure function from result dicts to rows, one row per
(task, model, config_hash): the seeds of one resolved config. As a second guard, the key also
holds the sequence length, training budget, batch size, hidden size, data seed and a hash of
the task's recorded facts (``task_info``: data split, permutation, ...), so runs that differ
in any of those never share a row even if their config hashes were made by different code.

A corrupt or partial ``result.json`` and stray ``.tmp-*`` files are reported and skipped.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.models.errors import ConfigError
from bench.results import RESULT_FILE

FORMATS = ("table", "md", "csv", "html")
EXTENSIONS = {"table": "txt", "md": "md", "csv": "csv", "html": "html"}
REQUIRED_KEYS = ("config", "status", "task", "model", "config_hash", "seed", "metrics")
DIAGNOSTICS_FILE = "diagnostics.json"


# -- what each task's table shows ------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One metric column: the first of ``keys`` present in a group's ``result["metrics"]``.

    ``paper`` names the key of ``PaperSetting.reported`` printed beside it. ``kind="step"``
    marks a step count where a missing value means "never reached" (not "not recorded").
    """

    label: str
    keys: tuple[str, ...]
    paper: str | None = None
    kind: str = "float"
    note: str = ""


_FINAL_LOSS = Column("final train loss", ("final_train_loss",), "final_loss",
                     note="mean of the last 10 logged training-batch losses (the paper: loss at its last iteration)")
_FIRST_BELOW = Column("first step < baseline", ("first_step_below_baseline",), "first_step_below_baseline", "step",
                      note="first logged training step at which the mean of the last 5 logged batch losses is below the memoryless baseline "
                           "(resolution: the logging interval, 10 steps); 'reached k/n' when some seeds never got there")
_MSE_COLUMNS = [Column("val MSE", ("best_val_mse", "best_val_loss"), "val_mse", note="best validation MSE"),
                Column("eval MSE", ("best_ckpt_test_mse", "test_mse", "best_ckpt_test_loss"), "eval_mse",
                       note="test split at the best validation checkpoint")]
_MNIST_COLUMNS = [
    Column("best test acc", ("best_test_acc",), "test_acc",
           note="best test accuracy over epochs, as the paper reports it (needs a per-epoch test evaluation)"),
    Column("test acc @ best val", ("best_ckpt_test_acc",),
           note="test accuracy of the best-validation checkpoint: the honest number"),
    Column("test acc (final)", ("test_acc",), note="test accuracy of the final weights"),
]
TASK_COLUMNS: dict[str, list[Column]] = {
    "copying": [_FINAL_LOSS, _FIRST_BELOW,
                Column("test acc", ("best_ckpt_test_acc", "test_acc"),
                       note="accuracy on the 10 recalled symbols, test split, best-validation checkpoint")],
    "adding": [_FINAL_LOSS, _FIRST_BELOW,
               Column("test MSE", ("best_ckpt_test_mse", "test_mse"), note="test split, best-validation checkpoint")],
    "mnist": _MNIST_COLUMNS,
    "pmnist": _MNIST_COLUMNS,
    "timit": _MSE_COLUMNS,
    "speech": _MSE_COLUMNS,
}
# The learning curve each task's figure shows, like the paper's Figures 2-5.
CURVES = {"copying": "train/loss", "adding": "val/mse", "mnist": "val/acc", "pmnist": "val/acc",
          "timit": "val/mse", "speech": "val/mse"}


def columns_for(task: str, metric: str | None) -> list[Column]:
    if task in TASK_COLUMNS:
        return TASK_COLUMNS[task]
    m = metric or "loss"
    return [Column(f"best val {m}", (f"best_val_{m}",)),
            Column(f"test {m} @ best val", (f"best_ckpt_test_{m}",)),
            Column(f"test {m} (final)", (f"test_{m}",))]


# -- loading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


def check_result(data) -> str | None:
    """Why ``data`` is not a usable result record, or None."""
    if not isinstance(data, dict):
        return f"not a JSON object (got {type(data).__name__})"
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        return f"partial record: missing {', '.join(missing)}"
    for key in ("config", "metrics"):
        if not isinstance(data[key], dict):
            return f"malformed record: {key!r} is {type(data[key]).__name__}, expected an object"
    return None


def load_results(runs_dir: str | Path) -> tuple[list[dict], list[Problem]]:
    """Every usable result under ``runs_dir`` (each with ``_path`` added), and what was skipped."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ConfigError(f"runs directory {str(runs_dir)!r} does not exist; give the folder `bench run --runs-dir` "
                          f"wrote to (default: runs)")
    results, problems = [], []
    for path in sorted(runs_dir.rglob(RESULT_FILE)):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(Problem(str(path), f"unreadable ({type(exc).__name__}: {exc})"))
            continue
        reason = check_result(data)
        if reason:
            problems.append(Problem(str(path), reason))
            continue
        results.append({**data, "_path": str(path)})
    for path in sorted(runs_dir.rglob(".tmp-*")):
        problems.append(Problem(str(path), "stray temporary file from an interrupted write; ignored"))
    for path in sorted(runs_dir.rglob("config.json")):
        if not (path.parent / RESULT_FILE).exists() and path.parent.parent.parent.parent == runs_dir:
            problems.append(Problem(str(path.parent), "run folder without result.json (still running, or stopped)"))
    return results, problems


# -- aggregation (pure) --------------------------------------------------------------------
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
            hashlib.sha256(info.encode()).hexdigest()[:12])


def budget_label(c: dict) -> str:
    batch = c.get("batch_size")
    if c.get("max_steps"):
        text = f"{c['max_steps']} steps"
    elif c.get("max_epochs"):
        text = f"{c['max_epochs']} ep"
    else:
        text = "?"
    return f"{text} × {batch}" if batch else text


def paper_values(model: str, task: str, n_hidden, seq_len) -> tuple[dict, str | None]:
    """The paper's reported numbers for exactly this model, task, hidden size and length."""
    from bench.paper import paper_rows

    paper_len = None
    try:
        from bench.tasks import get_task_class
        paper_len = get_task_class(task).paper_scale.get("seq_len")
    except Exception:   # a task this checkout does not know: only explicit-length rows match
        pass
    for s in paper_rows(model, task):
        row_len = s.seq_len if s.seq_len is not None else (paper_len if seq_len is not None else None)
        if s.reported and s.n_hidden == n_hidden and row_len == seq_len:
            return dict(s.reported), s.source
    return {}, None


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
        paper, source = paper_values(first["model"], first["task"], n_hidden, c.get("seq_len"))
        rows.append(Row(
            task=first["task"], model=first["model"], config_hash=first["config_hash"], n_hidden=n_hidden,
            n_params=sorted({r.get("n_params") for r in runs if r.get("n_params") is not None}),
            seq_len=c.get("seq_len"), budget=budget_label(c), scale=c.get("scale"), config=c, runs=done,
            seeds=[r["seed"] for r in done], failed=failed, superseded=superseded, cells=cells,
            paper={col.label: paper[col.paper] for col in columns if col.paper in paper},
            paper_source=source, wall_time=stat([r.get("wall_time_s") for r in done]),
            baseline=(first.get("task_info") or {}).get("baseline"), columns=columns,
            fallback=first.get("fallback"),
        ))
    rows.sort(key=lambda r: (r.task, r.seq_len or 0, r.config.get("max_steps") or 0, r.config.get("max_epochs") or 0,
                             r.model, r.n_hidden or 0, r.config_hash))
    return rows


# -- formatting ------------------------------------------------------------------------------
def fmt_stat(s: Stat, kind: str = "float") -> str:
    if s.total == 0:
        return "—"
    if s.n == 0:
        return "never" if kind == "step" else "—"
    f = (lambda v: f"{v:.0f}") if kind == "step" else (lambda v: f"{v:.4g}")
    text = f(s.mean) if s.std is None else f"{f(s.mean)} ± {s.std:.2g}"
    if s.n < s.total:
        text += f" (reached {s.n}/{s.total})" if kind == "step" else f" ({s.n}/{s.total})"
    return text


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def seeds_label(row: Row) -> str:
    extra = [f"{k} {v}" for k, v in sorted(row.failed.items())] + ([f"rerun {row.superseded}"] if row.superseded else [])
    return str(row.n) + (" (+" + ", ".join(extra) + ")" if extra else "")


def task_table(task: str, rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells of one task's table: mean ± std over the row's seeds."""
    columns = rows[0].columns
    with_len = any(r.seq_len is not None for r in rows)
    # a "paper" column wherever the paper reports that metric for this task, even if for other settings
    with_paper = {c.label for c in columns if c.paper and (_paper_has(task, c.paper) or any(c.label in r.paper for r in rows))}
    headers = ["model", "n", "params"] + (["T"] if with_len else []) + ["budget", "seeds"]
    for col in columns:
        headers.append(col.label)
        if col.label in with_paper:
            headers.append("paper")
    headers += ["time/run (s)", "config"]
    body = []
    for r in rows:
        line = [r.model + (FALLBACK_MARK if r.fallback else ""), _fmt(r.n_hidden), "/".join(map(str, r.n_params)) or "—"]
        line += ([_fmt(r.seq_len)] if with_len else []) + [r.budget, seeds_label(r)]
        for col in columns:
            line.append(fmt_stat(r.cells[col.label], col.kind))
            if col.label in with_paper:
                line.append(_fmt(r.paper.get(col.label)))
        line += [fmt_stat(r.wall_time).split(" (")[0], r.config_hash[:8]]
        body.append(line)
    return headers, body


FALLBACK_MARK = " †"


def _paper_has(task: str, key: str) -> bool:
    from bench.paper import paper_rows

    return any(key in s.reported for s in paper_rows(task=task))


def paper_table(task: str) -> tuple[list[str], list[list[str]]] | None:
    """The paper's reported numbers for ``task`` (bench/paper.py), for reference."""
    from bench.paper import paper_rows

    rows, seen = [], set()
    # a (model, task) default row often repeats an explicit-length row: print each number once
    for s in sorted(paper_rows(task=task), key=lambda s: s.seq_len is None):
        key = (s.model, s.n_hidden, s.source, json.dumps(s.reported, sort_keys=True))
        if s.reported and key not in seen:
            seen.add(key)
            rows.append(s)
    if not rows:
        return None
    keys = sorted({k for s in rows for k in s.reported})
    headers = ["model", "n", "budget", "T"] + keys + ["source"]
    body = [[s.model, str(s.n_hidden), s.budget or "—", _fmt(s.seq_len)] + [_fmt(s.reported.get(k)) for k in keys]
            + [s.source] for s in rows]
    return headers, body


def scale_note(task: str, rows: list[Row]) -> str:
    """What scale these runs are, on what machine, against the paper's protocol."""
    runs = [r for row in rows for r in row.runs]
    scales = sorted({row.scale or "?" for row in rows})
    hw = set()
    for r in runs:
        h = r.get("hardware") or {}
        hw.add(h.get("gpu") or f"CPU, torch threads: {h.get('cpu_threads', '?')}")
    shas = sorted({((r.get("code_version") or {}).get("git_sha") or "?")[:7]
                   + ("+dirty" if (r.get("code_version") or {}).get("git_dirty") else "") for r in runs})
    text = (f"{len(runs)} completed runs in {len(rows)} configs; scale: {', '.join(scales)}; "
            f"hardware: {'; '.join(sorted(hw)) or '?'}; code: {', '.join(shas) or '?'}.")
    try:
        from bench.tasks import get_task_class
        ps = get_task_class(task).paper_scale
        if ps:
            text += " The paper's protocol: " + ", ".join(f"{k}={v}" for k, v in ps.items()) + "."
    except Exception:
        pass
    if "quick" in scales:
        text += (" Quick-scale runs are CPU-sized smoke tests of the harness, far shorter than the paper's "
                 "protocol: do not compare them with the paper's numbers.")
    return text


def column_notes(rows: list[Row]) -> list[str]:
    columns = rows[0].columns
    notes = []
    for col in columns:
        used = sorted({r.cells[col.label].key for r in rows if r.cells[col.label].key})
        notes.append(f"{col.label}: {col.note or col.label} [result key: {', '.join(used) or '—'}]")
    notes.append("cells are mean ± std (ddof=1) over seeds; 'seeds' counts completed runs, one per seed (a rerun "
                 "of a seed counts once, the latest; runs that did not complete are named in brackets); "
                 "'paper' is the paper's number for the same model, hidden size and length (bench/paper.py)")
    for text in sorted({r.fallback for r in rows if r.fallback}):
        notes.append(f"{FALLBACK_MARK.strip()} {text}")
    return notes


def text_table(headers: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def md_table(headers: list[str], body: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")   # noqa: E731
    lines = ["| " + " | ".join(map(esc, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(esc, b)) + " |" for b in body]
    return "\n".join(lines)


def html_table(headers: list[str], body: list[list[str]], cls: str = "lb") -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in b) + "</tr>\n" for b in body)
    return f'<table class="{cls}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>'


def flat_rows(rows: list[Row]) -> tuple[list[str], list[list]]:
    """One flat numeric record per row (CSV and W&B tables): mean/std/n/min/max per metric,
    named after the metric's first result key (e.g. ``final_train_loss_mean``)."""
    columns: list[Column] = []
    for r in rows:
        columns += [c for c in r.columns if c not in columns]
    headers = ["task", "model", "n_hidden", "n_params", "seq_len", "max_steps", "max_epochs", "batch_size",
               "budget", "scale", "config_hash", "n_seeds", "seeds", "n_failed"]
    for col in columns:
        k = col.keys[0]
        headers += [f"{k}_mean", f"{k}_std", f"{k}_n", f"{k}_min", f"{k}_max", f"{k}_key", f"paper_{k}"]
    headers += ["wall_time_s_mean", "paper_source", "fallback"]
    data = []
    for r in rows:
        c = r.config
        line = [r.task, r.model, r.n_hidden, "/".join(map(str, r.n_params)), r.seq_len, c.get("max_steps"),
                c.get("max_epochs"), c.get("batch_size"), r.budget, r.scale, r.config_hash, r.n,
                " ".join(map(str, r.seeds)), sum(r.failed.values())]
        for col in columns:
            s = r.cells.get(col.label) if col in r.columns else None
            line += ([s.mean, s.std, s.n, s.min, s.max, s.key] if s else [None] * 6) + [r.paper.get(col.label)]
        line += [r.wall_time.mean, r.paper_source, r.fallback]
        data.append(line)
    return headers, data


# -- diagnostics summaries -----------------------------------------------------------------
def run_dir(r: dict) -> Path:
    return Path(r["_path"]).parent


def load_diagnostics(r: dict) -> list[dict]:
    path = run_dir(r) / DIAGNOSTICS_FILE
    try:
        return [s for s in json.loads(path.read_text()).get("snapshots", []) if "error" not in s]
    except (OSError, ValueError, AttributeError):
        return []


def diagnostics_table(rows: list[Row]) -> tuple[list[str], list[list[str]]] | None:
    headers = ["model", "n", "T", "budget", "runs with diagnostics", "max ‖WᴴW−I‖",
               "log10 ‖∂L/∂h_1‖/‖∂L/∂h_T‖ (init)", "log10 ‖∂L/∂h_1‖/‖∂L/∂h_T‖ (last)",
               "modReLU singular % (max)", "modReLU dead % (last)"]
    body, any_diag = [], False
    for row in rows:
        diags = [d for d in (load_diagnostics(r) for r in row.runs) if d]
        any_diag |= bool(diags)
        uerr = [max((s["unitarity_error"] for s in d if s.get("unitarity_error") is not None), default=None)
                for d in diags]
        if not any(v is not None for v in uerr):
            uerr = [r["metrics"].get("max_unitarity_error") for r in row.runs]
        ratio = lambda s: (s.get("grad_norm") or {}).get("log10_first_over_last")   # noqa: E731
        mod = lambda s, k: 100 * s["modrelu"][k] if s.get("modrelu") else None      # noqa: E731
        body.append([row.model, _fmt(row.n_hidden), _fmt(row.seq_len), row.budget, f"{len(diags)}/{row.n}",
                     fmt_stat(stat(uerr)), fmt_stat(stat([ratio(d[0]) for d in diags])),
                     fmt_stat(stat([ratio(d[-1]) for d in diags])),
                     fmt_stat(stat([max((mod(s, "singular_frac") or 0) for s in d) if any(s.get("modrelu") for s in d)
                                    else None for d in diags])),
                     fmt_stat(stat([mod(d[-1], "dead_frac") for d in diags]))])
    return (headers, body) if any_diag else None


DIAGNOSTICS_NOTE = ("Diagnostics (bench/diagnostics.py) on one fixed validation batch at the start and after every "
                    "validation: distance of W from unitary; the total gradient ‖∂L/∂h_t‖ against t, summarised as "
                    "log10 ‖∂L/∂h_1‖/‖∂L/∂h_T‖ (well below 0: the gradient vanishes going back in time; well "
                    "above 0: it grows, or the loss itself weighs early steps, as copying's recall does); "
                    "the share of modReLU inputs in the singular zone of the paper's §4 (b > 0 and |z| < 0.1·b) "
                    "and in its dead zone (output 0).")


# -- figures ---------------------------------------------------------------------------------
LINESTYLES = ("-", "--", ":", "-.")


def _colors(rows: list[Row]) -> dict[str, str]:
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:gray", "tab:olive", "tab:cyan"]
    models = sorted({r.model for r in rows})
    return {m: palette[i % len(palette)] for i, m in enumerate(models)}


def _curve(r: dict, column: str, smooth: int):
    import pandas as pd

    if not r.get("curves"):
        return None
    try:
        df = pd.read_csv(run_dir(r) / r["curves"])
    except (OSError, ValueError):
        return None
    if column not in df or "step" not in df:
        return None
    s = df[["step", column]].dropna()
    s = s.groupby("step")[column].mean()
    s.index = s.index + 1           # Lightning's step is 0-based: plot iterations done
    return s.rolling(smooth, min_periods=1).mean() if smooth > 1 else s


def _band(ax, series: list, color: str, label: str, **kw):
    import pandas as pd

    df = pd.concat(series, axis=1)
    mean, std, count = df.mean(axis=1), df.std(axis=1, ddof=1), df.count(axis=1)
    ax.plot(df.index, mean, color=color, label=label, linewidth=1.4, **kw)
    ok = count >= 2
    if ok.any():
        ax.fill_between(df.index[ok], (mean - std)[ok], (mean + std)[ok], color=color, alpha=0.2, linewidth=0)


def _row_label(row: Row, rows: list[Row]) -> str:
    params = "/".join(map(str, row.n_params))
    label = f"{row.model} n={row.n_hidden} ({params} params), {row.n} seed{'s' * (row.n != 1)}"
    if sum(r.model == row.model for r in rows) > 1:
        label += f", {row.budget}, {row.config_hash[:6]}"
    return label


def curves_figure(task: str, rows: list[Row], out_png: Path, metric: str | None = None,
                  smooth: int | None = None) -> Path | None:
    """Learning curves of every config of ``task``, one panel per sequence length, mean and a
    ±1 std band over seeds, the memoryless baseline dashed. Returns the PNG path or None."""
    from matplotlib.figure import Figure

    if metric is None:
        names = {(r.get("metric") or {}).get("name") for row in rows for r in row.runs}
        metric = CURVES.get(task) or (f"val/{names.pop()}" if len(names) == 1 and None not in names else "train/loss")
    smooth = smooth if smooth is not None else (5 if metric.startswith("train/") else 1)
    lengths = sorted({r.seq_len for r in rows}, key=lambda v: v or 0)
    colors = _colors(rows)
    fig = Figure(figsize=(6.4 * len(lengths), 4.2), layout="constrained")
    axes = fig.subplots(1, len(lengths), squeeze=False)[0]
    plotted = False
    for ax, T in zip(axes, lengths):
        panel = [r for r in rows if r.seq_len == T]
        seen: dict[str, int] = {}
        for row in panel:
            series = [s for s in (_curve(r, metric, smooth) for r in row.runs) if s is not None and len(s)]
            if series:
                k = seen[row.model] = seen.get(row.model, -1) + 1   # a model's further configs: other dashes
                _band(ax, series, colors[row.model], _row_label(row, panel), linestyle=LINESTYLES[k % 4])
                plotted = True
        # the baselines are of the training loss (adding: MSE): no line on an accuracy curve
        loss_like = metric.endswith("/loss") or (task == "adding" and metric.endswith("/mse"))
        baselines = {r.baseline for r in panel if r.baseline is not None} if loss_like else set()
        for b in baselines:
            ax.axhline(b, color="black", linestyle="--", linewidth=1, label=f"baseline {b:.3g}")
        ax.set_title(f"{task}" + (f", T={T}" if T else ""))
        ax.set_xlabel("training iteration")
        ax.set_ylabel(metric + (f" (rolling mean of {smooth} logged points)" if smooth > 1 else ""))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not plotted:
        return None
    fig.suptitle(f"{task}: mean and ±1 std over seeds", fontsize=10)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def diagnostics_figure(task: str, rows: list[Row], out_png: Path) -> Path | None:
    """Three panels: ‖WᴴW−I‖ over training, ‖∂L/∂h_t‖ against t (init dashed, last solid),
    and the modReLU singular-zone share over training; mean over seeds."""
    import pandas as pd
    from matplotlib.figure import Figure

    colors = _colors(rows)
    fig = Figure(figsize=(16, 4.2), layout="constrained")
    ax_u, ax_g, ax_m = fig.subplots(1, 3)
    plotted = False
    for row in rows:
        diags = [d for d in (load_diagnostics(r) for r in row.runs) if d]
        if not diags:
            continue
        plotted, color, label = True, colors[row.model], _row_label(row, rows)
        if len(rows) > 1 and len({r.seq_len for r in rows}) > 1:
            label += f", T={row.seq_len}"
        u = [pd.Series({s["step"]: s["unitarity_error"] for s in d if s.get("unitarity_error") is not None},
                       dtype=float) for d in diags]
        u = [s for s in u if len(s)]
        if u:
            _band(ax_u, u, color, label)
        for idx, style in ((0, "--"), (-1, "-")):
            g = [pd.Series(d[idx]["grad_norm"]["norm"], index=d[idx]["grad_norm"]["t"]) for d in diags
                 if d[idx].get("grad_norm")]
            if g:
                _band(ax_g, g, color, label + (" (init)" if idx == 0 else " (last)"), linestyle=style)
        m = [pd.Series({s["step"]: 100 * s["modrelu"]["singular_frac"] for s in d if s.get("modrelu")}, dtype=float)
             for d in diags]
        m = [s for s in m if len(s)]
        if m:
            _band(ax_m, m, color, label)
    if not plotted:
        return None
    for ax, title, xl, yl, log in (
            (ax_u, "distance from unitary", "training iteration", "max |WᴴW − I|", True),
            (ax_g, "gradient through time (fixed batch)", "time step t", "‖∂L/∂h_t‖ (batch mean)", True),
            (ax_m, "modReLU input in the singular zone", "training iteration", "% of |z| < 0.1·b, b > 0", False)):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        if log and any(line.get_ydata().size for line in ax.get_lines()):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{task}: diagnostics, mean and ±1 std over seeds", fontsize=10)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def make_figures(by_task: dict[str, list[Row]], fig_dir: Path, metric=None, smooth=None) -> dict[str, list[Path]]:
    figures = {}
    for task, rows in by_task.items():
        paths = [curves_figure(task, rows, fig_dir / f"{task}-curves.png", metric, smooth),
                 diagnostics_figure(task, rows, fig_dir / f"{task}-diagnostics.png")]
        figures[task] = [p for p in paths if p is not None]
    return figures


# -- documents -------------------------------------------------------------------------------
def _by_task(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.task, []).append(r)
    return out


def render_text(by_task, problems, meta) -> str:
    parts = []
    for task, rows in by_task.items():
        parts += [f"== {task} ==", scale_note(task, rows), text_table(*task_table(task, rows)), ""]
    if problems:
        parts.append(f"skipped {len(problems)} file(s): see stderr")
    return "\n".join(parts).rstrip() + "\n"


def render_md(by_task, problems, meta, figures, out_dir: Path | None) -> str:
    parts = [f"# Leaderboard\n", f"Made by `{meta['command']}` on {meta['generated']} from "
             f"{meta['n_results']} result.json files under `{meta['runs_dir']}`; never edited by hand.\n"]
    for task, rows in by_task.items():
        parts += [f"## {task}\n", f"*{scale_note(task, rows)}*\n", md_table(*task_table(task, rows)), ""]
        parts += ["- " + n for n in column_notes(rows)] + [""]
        for p in figures.get(task, []):
            rel = os.path.relpath(p, out_dir) if out_dir else str(p)
            parts.append(f"![{task}: {p.stem}]({rel})\n")
        diag = diagnostics_table(rows)
        if diag:
            parts += [f"### {task}: diagnostics\n", DIAGNOSTICS_NOTE + "\n", md_table(*diag), ""]
        ref = paper_table(task)
        if ref:
            parts += [f"### {task}: the paper's reported numbers\n", md_table(*ref), ""]
    if problems:
        parts += ["## Skipped files\n"] + [f"- `{p.path}`: {p.reason}" for p in problems] + [""]
    return "\n".join(parts).rstrip() + "\n"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
.note{color:#555;font-size:0.9em}.problem{color:#a00}"""


def render_html(by_task, problems, meta, figures) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>Leaderboard</title>',
             f"<style>{CSS}</style></head><body>", "<h1>Leaderboard</h1>",
             f'<p class="note">Made by <code>{e(meta["command"])}</code> on {e(meta["generated"])} from '
             f'{meta["n_results"]} result.json files under <code>{e(meta["runs_dir"])}</code>. Self-contained: '
             f'figures are embedded, nothing is fetched.</p>']
    parts.append("<ul>" + "".join(f'<li><a href="#{e(t)}">{e(t)}</a></li>' for t in by_task) + "</ul>")
    for task, rows in by_task.items():
        parts += [f'<section id="{e(task)}"><h2>{e(task)}</h2>', f'<p class="note">{e(scale_note(task, rows))}</p>',
                  html_table(*task_table(task, rows)),
                  "<ul class=\"note\">" + "".join(f"<li>{e(n)}</li>" for n in column_notes(rows)) + "</ul>"]
        for p in figures.get(task, []):
            data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{e(task)}: {e(p.stem)}" src="data:image/png;base64,{data}">'
                         f"<figcaption class=\"note\">{e(p.name)}</figcaption></figure>")
        diag = diagnostics_table(rows)
        if diag:
            parts += [f"<h3>{e(task)}: diagnostics</h3>", f'<p class="note">{e(DIAGNOSTICS_NOTE)}</p>',
                      html_table(*diag, cls="diag")]
        ref = paper_table(task)
        if ref:
            parts += [f"<h3>{e(task)}: the paper's reported numbers</h3>", html_table(*ref, cls="paper")]
        parts.append("</section>")
    if problems:
        parts += ["<h2>Skipped files</h2>", "<ul>"] + [
            f'<li class="problem"><code>{e(p.path)}</code>: {e(p.reason)}</li>' for p in problems] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_csv(rows: list[Row]) -> str:
    headers, data = flat_rows(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(headers)
    w.writerows([["" if v is None else v for v in line] for line in data])
    return buf.getvalue()


# -- W&B -------------------------------------------------------------------------------------
def log_wandb(rows: list[Row], runs_dir: str) -> tuple[str, str]:
    """Log the leaderboard as ``wandb.Table``s (one per task) to one run, in the configured
    mode (offline unless the user set up W&B; ``WANDB_MODE`` wins). Returns (mode, run folder)."""
    import wandb

    from bench.tracking import WANDB_PROJECT, wandb_mode

    mode = wandb_mode("auto")
    os.environ.setdefault("WANDB_SILENT", "true")
    kwargs = {} if os.environ.get("WANDB_DIR") else {"dir": str(runs_dir)}
    run = wandb.init(project=WANDB_PROJECT, job_type="leaderboard", group="leaderboard", name="leaderboard",
                     mode=mode, reinit="create_new", config={"runs_dir": str(runs_dir), "n_configs": len(rows)},
                     **kwargs)
    try:
        for task, task_rows in _by_task(rows).items():
            headers, data = flat_rows(task_rows)
            run.log({f"leaderboard/{task}": wandb.Table(columns=headers, data=data)})
        folder = str(Path(run.dir).parent) if mode != "disabled" else ""
    finally:
        run.finish()
    return mode, folder


# -- CLI -------------------------------------------------------------------------------------
def _select(runs_dir: str, task: str | None):
    results, problems = load_results(runs_dir)
    for p in problems:
        print(f"bench: skipped {p.path}: {p.reason}", file=sys.stderr)
    if task:
        tasks = sorted({r["task"] for r in results})
        results = [r for r in results if r["task"] == task]
        if not results:
            raise ConfigError(f"no results for task {task!r} under {runs_dir}; tasks with results: "
                              f"{', '.join(tasks) or 'none'}")
    if not results:
        raise ConfigError(f"no usable result.json under {runs_dir}; make some with `bench run --runs-dir {runs_dir}`")
    return results, problems


def parse_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"unknown format {', '.join(bad) or text!r}; known formats: {', '.join(FORMATS)} "
                          f"(several: md,csv,html)")
    return formats


def cmd_leaderboard(args) -> int:
    formats = parse_formats(args.format)
    if "html" in formats and not args.out:
        raise ConfigError("--format html writes a page with its figures: give --out DIR")
    results, problems = _select(args.runs_dir, args.task)
    rows = aggregate(results)
    by_task = _by_task(rows)
    command = " ".join(["bench leaderboard"] + (["--task", args.task] if args.task else [])
                       + ["--runs-dir", args.runs_dir, "--format", args.format]
                       + (["--out", args.out] if args.out else []))
    meta = {"command": command, "generated": time.strftime("%Y-%m-%d %H:%M %Z"), "runs_dir": args.runs_dir,
            "n_results": len(results)}
    out = Path(args.out) if args.out else None
    figures = {}
    if out and {"md", "html"} & set(formats):
        figures = make_figures(by_task, out / "figures")
    from bench.results import atomic_write_text

    for fmt in formats:
        if fmt == "table":
            text = render_text(by_task, problems, meta)
        elif fmt == "md":
            text = render_md(by_task, problems, meta, figures, out)
        elif fmt == "csv":
            text = render_csv(rows)
        else:
            text = render_html(by_task, problems, meta, figures)
        if out:
            out.mkdir(parents=True, exist_ok=True)
            path = out / f"leaderboard.{EXTENSIONS[fmt]}"
            atomic_write_text(path, text)
            path.chmod(0o644)   # mkstemp makes 0600; these pages are meant to be shared
            print(f"wrote {path}")
        else:
            sys.stdout.write(text)
    for paths in figures.values():
        for p in paths:
            print(f"wrote {p}")
    if args.wandb:
        mode, folder = log_wandb(rows, args.runs_dir)
        if mode == "disabled":
            print("W&B: disabled (WANDB_MODE=disabled), nothing logged")
        elif mode == "offline":
            print(f"W&B (offline): tables logged to {folder}; upload with `wandb sync --yes {folder}`")
        else:
            print(f"W&B ({mode}): tables logged to the run in {folder}")
    return 0


def cmd_compare(args) -> int:
    results, _ = _select(args.runs_dir, args.task)
    rows = aggregate(results)
    out = Path(args.out) if args.out else Path(args.runs_dir) / "figures"
    curves = curves_figure(args.task, rows, out / f"{args.task}-curves.png", args.metric, args.smooth)
    if curves is None:
        raise ConfigError(f"no curves to plot for {args.task!r}: the runs' CSVs have no column "
                          f"{args.metric or CURVES.get(args.task)!r}; pick one with --metric (e.g. train/loss, "
                          f"val/loss)")
    figures = [curves] + [p for p in [diagnostics_figure(args.task, rows, out / f"{args.task}-diagnostics.png")] if p]
    for r in rows:
        print(f"{r.model:<10} n={r.n_hidden} T={r.seq_len} {r.budget}: {r.n} seed(s) "
              + "  ".join(f"{c.label}={fmt_stat(r.cells[c.label], c.kind)}" for c in r.columns))
    for p in figures:
        print(f"wrote {p}")
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        import argparse
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def register(sub) -> None:
    p = sub.add_parser("leaderboard", help="tables (and figures) from every result.json: mean ± std over seeds",
                       description="Aggregate result.json files into one table per task: mean ± std (ddof=1) over "
                                   "seeds per resolved config, with the paper's number beside ours where it has one.")
    p.add_argument("--task", help="only this task (default: every task with results)")
    p.add_argument("--runs-dir", default="runs", help="folder of run folders (default: runs)")
    p.add_argument("--format", default="table",
                   help=f"one or several of {', '.join(FORMATS)}, comma-separated (default: table)")
    p.add_argument("--out", help="write leaderboard.<ext> (and, for md/html, figures/) into this folder "
                                 "instead of printing")
    p.add_argument("--wandb", action="store_true",
                   help="also log the tables as W&B tables (offline unless W&B is configured; WANDB_MODE wins)")
    p.set_defaults(func=cmd_leaderboard)
    c = sub.add_parser("compare", help="learning curves of every model on one task, on one plot",
                       description="Plot the learning curves of every config of one task (mean and ±1 std band "
                                   "over seeds, baseline dashed) and its diagnostics, as PNG.")
    c.add_argument("--task", required=True, help="task name")
    c.add_argument("--runs-dir", default="runs", help="folder of run folders (default: runs)")
    c.add_argument("--out", help="folder for the PNGs (default: <runs-dir>/figures)")
    c.add_argument("--metric", help=f"curve column of the runs' CSV (default per task: {CURVES})")
    c.add_argument("--smooth", type=_positive_int,
                   help="rolling mean over this many logged points (default: 5 for train/*, else 1)")
    c.set_defaults(func=cmd_compare)
