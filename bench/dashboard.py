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

The page is assembled here from bench/dashboard_tables.py (the ranked tables and curve traces)
and bench/dashboard_data.py (the results and each run's details).

Why no web framework: the server has three GET routes and no state; ``http.server`` in the
standard library does that with nothing to install or pin, and a framework's static-file and
routing machinery is exactly the surface (path mapping) this server must not have.
Why table sorting and filtering are our own ~80 lines of JS: plotly draws charts, not tables, and
a table library would be a second bundled asset to pin and ship for a click-to-sort.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

from bench.dashboard_assets import CSS, JS, _plotly_js
from bench.dashboard_data import (MAX_CURVE_POINTS, W_AND_B_FILE, _clean, _inside, diagnostics_summary, load,
                                  mean_std, read_csv_columns, reproduce_command, run_details, run_id)
from bench.dashboard_tables import _attr, _protocol, _table, rank_column, rank_rows, study_of
from bench.leaderboard.load import Problem

RUN_ID = re.compile(r"[0-9a-f]{16}")
PLOTLY_ASSET = "assets/plotly.min.js"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

__all__ = ["LOOPBACK", "MAX_CURVE_POINTS", "PLOTLY_ASSET", "RUN_ID", "W_AND_B_FILE", "diagnostics_summary", "load",
           "mean_std", "rank_column", "rank_rows", "read_csv_columns", "render_page", "reproduce_command",
           "run_details", "run_id", "study_of"]


def _json_script(element_id: str, data) -> str:
    text = json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


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
