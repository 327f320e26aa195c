"""``bench dashboard``: the leaderboard as one interactive page, served read-only from a runs folder.

One page for the whole runs folder: per task and protocol a ranked table (best first by the task's
metric and ``metric_mode``; sortable by any column, filterable by scale, protocol, sweep study and
model), the paper's values beside ours (bench/leaderboard/tables.py computes them, with source and
verification level), learning curves overlaid with a mean ± std band over seeds, and for every run
its details (config, the ``bench run`` command that reproduces it, curves, diagnostics summary,
W&B run). A sweep's trials collapse into one row per study (its best trial), expandable.

The same page is written by ``bench leaderboard --format html`` (:func:`render_page` with
``static=True``): plotly.js inlined and every run's details embedded as JSON, so it opens from disk
with no network. The server (bench/dashboard_server.py) recomputes the page from the result files on every
load, so a refresh shows new runs; it serves the page on ``/``, plotly.js on
``/assets/plotly.min.js`` (from the ``plotly`` package, cached by the browser instead of 4.8 MB
inlined into every refresh) and a run's details on ``/api/run/<id>``, where ``<id>`` is looked up
among the results just loaded. No URL is ever mapped to a file path, so ``..``, ``%2e%2e``,
absolute paths and directory listings cannot reach anything: every other path is 404. Results
and curve files whose real path lies outside the runs folder (symlinks) are left out.

Why no web framework: the server has three GET routes and no state; ``http.server`` in the
standard library does that with nothing to install or pin, and a framework's static-file and
routing machinery is exactly the surface (path mapping) this server must not have.
Why table sorting and filtering are our own ~80 lines of JS: plotly draws charts, not tables, and
a table library would be a second bundled asset to pin and ship for a click-to-sort.
"""
from __future__ import annotations

import csv
import hashlib
import html
import json
import math
import re
import shlex
from pathlib import Path

from bench.dashboard_assets import CSS, JS, _plotly_js
from bench.leaderboard.load import DIAGNOSTICS_FILE, Problem, load_results

RUN_ID = re.compile(r"[0-9a-f]{16}")
PLOTLY_ASSET = "assets/plotly.min.js"
W_AND_B_FILE = "wandb_run.json"
MAX_CURVE_POINTS = 2000         # per trace on the page: a long run's CSV is thinned to this many points
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# --- data ----------------------------------------------------------------------------------------

def run_id(root: Path, result: dict) -> str:
    """A stable id for one result file: a hash of its path relative to the runs folder."""
    rel = Path(result["_path"]).resolve().relative_to(root).as_posix()
    return hashlib.sha256(rel.encode()).hexdigest()[:16]


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (ValueError, OSError):
        return False


def load(runs_dir: str | Path) -> tuple[list[dict], list[Problem]]:
    """The results under ``runs_dir`` (each with ``_id``), leaving out any whose real path is outside it."""
    root = Path(runs_dir).resolve()
    results, problems = load_results(runs_dir)
    kept = []
    for r in results:
        if _inside(Path(r["_path"]), root):
            kept.append({**r, "_id": run_id(root, r)})
        else:
            problems.append(Problem(r["_path"], "links outside the runs directory; not shown"))
    return kept, problems


def _run_file(r: dict, rel: str | None) -> Path | None:
    """A file of the run named in result.json, only if it really lies inside the run's folder."""
    if not rel or not isinstance(rel, str):
        return None
    folder = Path(r["_path"]).resolve().parent
    path = folder / rel
    return path if _inside(path, folder) and path.is_file() else None


def read_csv_columns(path: Path | None) -> dict[str, list[list[float]]]:
    """``{column: [[step, value], ...]}`` of a Lightning CSV (rows without a value skipped; one
    value per step, the mean of repeats; steps counted from 1 like the figures)."""
    if path is None:
        return {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    sums: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        try:
            step = int(float(row.get("step") or ""))
        except ValueError:
            continue
        for key, text in row.items():
            if key in (None, "step", "epoch") or text in (None, ""):
                continue
            try:
                value = float(text)
            except ValueError:
                continue
            if math.isfinite(value):
                sums.setdefault(key, {}).setdefault(step + 1, []).append(value)
    return {k: [[s, sum(v) / len(v)] for s, v in sorted(by.items())] for k, by in sums.items()}


def _thin(points: list, n: int = MAX_CURVE_POINTS) -> list:
    if len(points) <= n:
        return points
    stride = math.ceil(len(points) / n)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def _rolling(points: list, k: int) -> list:
    if k <= 1:
        return points
    out, window = [], []
    for s, v in points:
        window = (window + [v])[-k:]
        out.append([s, sum(window) / len(window)])
    return out


def mean_std(series: list[list]) -> dict:
    """Mean and std (ddof=1, where ≥ 2 seeds logged the step) over seeds, step by step."""
    at: dict[int, list[float]] = {}
    for points in series:
        for s, v in points:
            at.setdefault(s, []).append(v)
    steps = sorted(at)
    mean = [sum(at[s]) / len(at[s]) for s in steps]
    std = [math.sqrt(sum((v - m) ** 2 for v in at[s]) / (len(at[s]) - 1)) if len(at[s]) > 1 else None
           for s, m in zip(steps, mean)]
    return {"x": steps, "mean": mean, "std": std}


def rank_column(row) -> tuple[str | None, str]:
    """The column a table is ranked by and its direction: the task's metric (``result.metric``) on
    the test split at the best-validation checkpoint where the task shows it, else the nearest."""
    metric = (row.runs[0] if row.runs else {}).get("metric") or {}
    name, mode = metric.get("name"), metric.get("mode") or "min"
    if name:
        for key in (f"best_ckpt_test_{name}", f"test_{name}", f"best_test_{name}", f"best_val_{name}"):
            for col in row.columns:
                if key in col.keys:
                    return col.label, mode
    return None, mode


def rank_rows(rows: list) -> list:
    """``rows`` best first by :func:`rank_column`; rows without a value last, in their given order."""
    def key(r):
        label, mode = rank_column(r)
        v = r.cells[label].mean if label else None
        return (v is None, 0.0 if v is None else (-v if mode == "max" else v))
    return sorted(rows, key=key)


def study_of(row) -> str | None:
    tags = row.config.get("tags") or {}
    study = tags.get("study") if isinstance(tags, dict) else None
    return str(study) if study is not None else None


def _wandb(r: dict) -> dict:
    """What the page says about the run's W&B run: its URL where one is known, else id and mode."""
    info = dict(r.get("wandb") or {}) if isinstance(r.get("wandb"), dict) else {}
    path = _run_file(r, W_AND_B_FILE)
    if path:
        try:
            known = json.loads(path.read_text())
            info.update({k: known[k] for k in ("id", "project", "entity", "url") if isinstance(known.get(k), str)})
        except (OSError, ValueError):
            pass
    url = info.get("url")
    if not url and info.get("entity") and info.get("project") and info.get("id"):
        url = f"https://wandb.ai/{info['entity']}/{info['project']}/runs/{info['id']}"
    out = {k: info.get(k) for k in ("mode", "id", "project")}
    out["url"] = url if isinstance(url, str) and url.startswith("https://") else None
    if info.get("mode") == "offline" and info.get("dir"):
        out["sync"] = f"wandb sync --yes {shlex.quote(str(info['dir']))}"
    return out


def reproduce_command(result: dict) -> str | None:
    """The ``bench run`` command line that reproduces the run's config (same config hash)."""
    from bench.flags import run_command

    try:
        return shlex.join(run_command(result["config"]))
    except Exception:           # a config of other code (unknown optimizer, ...): the recorded one instead
        return None


def diagnostics_summary(r: dict) -> dict | None:
    path = _run_file(r, DIAGNOSTICS_FILE)
    if path is None:
        return None
    try:
        snaps = [s for s in json.loads(path.read_text()).get("snapshots", []) if isinstance(s, dict) and "error" not in s]
    except (OSError, ValueError, AttributeError):
        return None
    if not snaps:
        return None

    def one(s):
        grad, mod = s.get("grad_norm") or {}, s.get("modrelu") or {}
        return {"step": s.get("step"), "unitarity_error": s.get("unitarity_error"),
                "log10_grad_first_over_last": grad.get("log10_first_over_last"),
                "modrelu_singular_frac": mod.get("singular_frac"), "modrelu_dead_frac": mod.get("dead_frac")}
    return {"snapshots": len(snaps), "first": one(snaps[0]), "last": one(snaps[-1]),
            "max_unitarity_error": max((s["unitarity_error"] for s in snaps
                                        if isinstance(s.get("unitarity_error"), (int, float))), default=None)}


def run_details(r: dict) -> dict:
    """Everything the page shows for one run; ``result`` is the result file exactly as written."""
    result = {k: v for k, v in r.items() if k not in ("_path", "_id")}
    curves = {k: _thin(v) for k, v in read_csv_columns(_run_file(r, r.get("curves"))).items()}
    return {"id": r["_id"], "result": result, "command": reproduce_command(result),
            "recorded_command": result.get("command"), "curves": curves, "diagnostics": diagnostics_summary(r),
            "wandb": _wandb(r)}


def _curve_metric(task: str, rows: list) -> str:
    from bench.leaderboard.facts import curve_for

    names = {(r.get("metric") or {}).get("name") for row in rows for r in row.runs}
    return curve_for(task) or (f"val/{names.pop()}" if len(names) == 1 and None not in names else "train/loss")


# --- the page ------------------------------------------------------------------------------------

def _num(text: str) -> str | None:
    m = re.match(r"\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)", text)
    return m.group(1) if m else None


def _attr(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _json_script(element_id: str, data) -> str:
    text = json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _clean(v):
    """JSON without NaN/inf (the page's JSON.parse would reject them)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _table(task: str, group: list, gid: str, counter: list) -> tuple[str, list[dict]]:
    """The ranked table of one protocol group, and the curve traces of its rows."""
    from bench.leaderboard.tables import task_table

    label, mode = rank_column(group[0])
    ranked = rank_rows(group)
    # a sweep's trials: the best of each study stands in the ranking, the others follow it, hidden
    best_of: dict[str, object] = {}
    for r in ranked:
        s = study_of(r)
        if s is not None:
            best_of.setdefault(s, r)
    order = []
    for r in ranked:
        s = study_of(r)
        if s is None or best_of[s] is r:
            order.append(r)
            order += [t for t in ranked if s is not None and t is not r and study_of(t) == s]
    headers, body = task_table(task, order)
    by_id = {id(r): line for r, line in zip(order, body)}
    rank_title = (f"rank by {label} ({'higher' if mode == 'max' else 'lower'} is better)" if label
                  else "no ranking metric")
    head = [f'<th data-col="0" title="{_attr(rank_title)}">#</th>']
    head += [f'<th data-col="{i + 1}">{html.escape(h)}</th>' for i, h in enumerate(headers)]
    lines, rank = [], 0
    ids = {}
    for r in order:
        counter[0] += 1
        ids[id(r)] = f"row{counter[0]}"
    for r in order:
        s = study_of(r)
        is_child = s is not None and best_of[s] is not r
        if not is_child:
            rank += 1
        n_trials = sum(study_of(t) == s for t in order) if s is not None else 0
        attrs = {"data-id": ids[id(r)], "data-model": r.model, "data-scale": r.scale or "?",
                 "data-protocol": _protocol(r), "data-study": s or "", "data-config": r.config_hash,
                 "data-runs": " ".join(x["_id"] for x in r.runs), "data-rank": "" if is_child else rank}
        if is_child:
            attrs["data-parent"] = ids[id(best_of[s])]
            attrs["class"] = "trial"
            attrs["hidden"] = ""
        first = "" if is_child else str(rank)
        if s is not None and not is_child:
            first += f' <button class="expand" title="study {_attr(s)}: show its other trials">▸ {n_trials}</button>' \
                if n_trials > 1 else ""
        cells = [f'<td data-v="{rank if not is_child else ""}">{first}</td>']
        for text in by_id[id(r)]:
            v = _num(text)
            cells.append(f'<td{"" if v is None else f" data-v={chr(34)}{v}{chr(34)}"}>{html.escape(text)}</td>')
        if s is not None:
            cells[1] = cells[1].replace("</td>", f' <small class="study">{"trial of" if is_child else "best of"} '
                                                 f'{html.escape(s)}</small></td>', 1)
        lines.append("<tr " + " ".join(f'{k}="{_attr(v)}"' for k, v in attrs.items()) + ">" + "".join(cells) + "</tr>")
    table = (f'<table class="lb" id="{gid}" data-task="{_attr(task)}" data-rank-by="{_attr(label or "")}" '
             f'data-mode="{_attr(mode)}">\n<thead><tr>{"".join(head)}</tr></thead>\n<tbody>\n'
             + "\n".join(lines) + "\n</tbody>\n</table>")
    return table, _traces(task, group, ids)


def _protocol(r) -> str:
    from bench.leaderboard.aggregate import protocol_label

    return protocol_label(r)


def _traces(task: str, group: list, ids: dict) -> list[dict]:
    metric = _curve_metric(task, group)
    smooth = 5 if metric.startswith("train/") else 1
    out = []
    for r in group:
        series = []
        for run in r.runs:
            points = read_csv_columns(_run_file(run, run.get("curves"))).get(metric)
            if points:
                series.append(_rolling(points, smooth))
        if not series:
            continue
        ms = mean_std(series)
        stride = max(1, math.ceil(len(ms["x"]) / MAX_CURVE_POINTS))
        ms = {k: v[::stride] for k, v in ms.items()}
        params = "/".join(map(str, r.n_params))
        name = f"{r.model} n={r.n_hidden} ({params} params), {r.n} seed{'s' * (r.n != 1)}"
        if sum(x.model == r.model for x in group) > 1:
            name += f", {r.budget}, {r.config_hash[:6]}"
        out.append({"row": ids[id(r)], "name": name, "model": r.model, "n": len(series), **ms})
    baseline = next((r.baseline for r in group if r.baseline is not None), None)
    from bench.leaderboard.facts import baseline_metrics

    loss_like = any(metric.endswith("/" + m) for m in baseline_metrics(task))
    return [{"metric": metric, "smooth": smooth, "baseline": baseline if loss_like else None, "traces": out}]


def render_page(results: list[dict], problems: list[Problem], meta: dict, *, static: bool,
                figures: dict | None = None) -> str:
    """The dashboard page over ``results`` (from :func:`load`). ``static``: plotly.js inlined and
    every run's details embedded (opens from disk); else they come from the server's routes."""
    import base64

    from bench.leaderboard.aggregate import aggregate, group_by_task, protocol_groups
    from bench.leaderboard.tables import (DIAGNOSTICS_NOTE, column_notes, diagnostics_table, html_table,
                                          paper_footnotes, paper_tables, protocol_heading, scale_note)

    if any("_id" not in r for r in results):      # straight from load_results (bench leaderboard)
        root = Path(meta["runs_dir"]).resolve()
        results = [{**r, "_id": run_id(root, r)} for r in results if _inside(Path(r["_path"]), root)]
    e = html.escape
    by_task = group_by_task(aggregate(results))
    figures = figures or {}
    plots, counter, parts = {}, [0], []
    filters = {"scale": set(), "protocol": set(), "study": set(), "model": set()}
    for task, rows in by_task.items():
        parts += [f'<section id="task-{_attr(task)}" data-task="{_attr(task)}"><h2>{e(task)}</h2>',
                  f'<p class="note">{e(scale_note(task, rows))}</p>']
        for k, group in enumerate(protocol_groups(rows)):
            gid = f"t-{re.sub(r'[^A-Za-z0-9_-]', '_', task)}-{k}"
            table, plot = _table(task, group, gid, counter)
            plots[gid] = plot[0]
            notes = paper_footnotes(group)
            for r in group:
                filters["scale"].add(r.scale or "?")
                filters["protocol"].add(_protocol(r))
                filters["model"].add(r.model)
                if study_of(r):
                    filters["study"].add(study_of(r))
            parts += [f'<div class="group" data-group="{gid}">',
                      f'<p class="protocol"><strong>{e(protocol_heading(group))}</strong></p>', table]
            parts += ['<ul class="note">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>"] if notes else []
            parts += [f'<div class="plot" id="plot-{gid}"></div></div>']
        parts.append('<ul class="note">' + "".join(f"<li>{e(n)}</li>" for n in column_notes(rows)) + "</ul>")
        if figures.get(task):
            parts.append("<details><summary>static figures (PNG)</summary>")
            for p in figures[task]:
                data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
                parts.append(f'<figure><img alt="{e(task)}: {e(Path(p).stem)}" src="data:image/png;base64,{data}">'
                             f'<figcaption class="note">{e(Path(p).name)}</figcaption></figure>')
            parts.append("</details>")
        diag = diagnostics_table(rows)
        if diag:
            parts += [f"<h3>{e(task)}: diagnostics</h3>", f'<p class="note">{e(DIAGNOSTICS_NOTE)}</p>',
                      html_table(*diag, cls="diag")]
        for protocol, *ref in paper_tables(task):
            parts += [f"<h3>{e(task)}: the paper's reported numbers, protocol {e(protocol)}</h3>",
                      html_table(*ref, cls="paper")]
        parts.append("</section>")
    if problems:
        parts += ["<h2>Skipped files</h2>", "<ul>"] + [
            f'<li class="problem"><code>{e(p.path)}</code>: {e(p.reason)}</li>' for p in problems] + ["</ul>"]
    selects = []
    for name, values in filters.items():
        options = '<option value="">all</option>' + "".join(
            f'<option value="{_attr(v)}">{e(v)}</option>' for v in sorted(values))
        selects.append(f'<label>{name} <select id="filter-{name}" data-filter="{name}">{options}</select></label>')
    data = {"static": static, "plots": plots,
            "details": {r["_id"]: _clean(run_details(r)) for r in results} if static else None}
    if static:
        plotly = f"<script>{_plotly_js().decode().replace('</script', '<' + chr(92) + '/script')}</script>"
    else:
        plotly = f'<script src="{PLOTLY_ASSET}"></script>'
    how = ("Self-contained: plotly.js and every run's details are embedded, nothing is fetched." if static else
           "Recomputed from the result files on every load: refresh to see new runs.")
    head = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>Leaderboard</title>',
            f"<style>{CSS}</style>", plotly, "</head><body>", "<h1>Leaderboard</h1>",
            f'<p class="note">Made by <code>{e(meta["command"])}</code> on {e(meta["generated"])} from '
            f'{len(results)} result.json files under <code>{e(str(meta["runs_dir"]))}</code>. {e(how)} '
            "Click a column header to sort, a row for its runs' details.</p>",
            '<div id="filters">' + " ".join(selects) + "</div>",
            "<ul>" + "".join(f'<li><a href="#task-{_attr(t)}">{e(t)}</a></li>' for t in by_task) + "</ul>"]
    tail = ['<aside id="details" hidden></aside>', _json_script("lb-data", data), f"<script>{JS}</script>",
            "</body></html>"]
    return "\n".join(head + parts + tail) + "\n"
