"""Whole leaderboard documents: the terminal text, the Markdown page (figures linked), the
self-contained HTML page (figures embedded as base64 PNGs) and the flat CSV.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import os
from pathlib import Path

from .aggregate import Row, protocol_groups
from .tables import (DIAGNOSTICS_NOTE, column_notes, diagnostics_table, flat_rows, html_table, md_table, paper_footnotes,
                     paper_tables, protocol_heading, scale_note, task_table, text_table)


def render_text(by_task, problems, meta) -> str:
    parts = []
    for task, rows in by_task.items():
        parts += [f"== {task} ==", scale_note(task, rows), ""]
        for group in protocol_groups(rows):
            parts += [protocol_heading(group), text_table(*task_table(task, group))] + paper_footnotes(group) + [""]
    if problems:
        parts.append(f"skipped {len(problems)} file(s): see stderr")
    return "\n".join(parts).rstrip() + "\n"


def render_md(by_task, problems, meta, figures, out_dir: Path | None) -> str:
    parts = ["# Leaderboard\n", f"Made by `{meta['command']}` on {meta['generated']} from "
             f"{meta['n_results']} result.json files under `{meta['runs_dir']}`; never edited by hand.\n"]
    for task, rows in by_task.items():
        parts += [f"## {task}\n", f"*{scale_note(task, rows)}*\n"]
        for group in protocol_groups(rows):
            parts += [f"**{protocol_heading(group)}**\n", md_table(*task_table(task, group)), ""]
            parts += ["- " + n for n in paper_footnotes(group)] + ([""] if paper_footnotes(group) else [])
        parts += ["- " + n for n in column_notes(rows)] + [""]
        for p in figures.get(task, []):
            rel = os.path.relpath(p, out_dir) if out_dir else str(p)
            parts.append(f"![{task}: {p.stem}]({rel})\n")
        diag = diagnostics_table(rows)
        if diag:
            parts += [f"### {task}: diagnostics\n", DIAGNOSTICS_NOTE + "\n", md_table(*diag), ""]
        for protocol, *ref in paper_tables(task):
            parts += [f"### {task}: the paper's reported numbers, protocol {protocol}\n", md_table(*ref), ""]
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
        parts += [f'<section id="{e(task)}"><h2>{e(task)}</h2>', f'<p class="note">{e(scale_note(task, rows))}</p>']
        for group in protocol_groups(rows):
            notes = paper_footnotes(group)
            parts += [f'<p class="protocol"><strong>{e(protocol_heading(group))}</strong></p>',
                      html_table(*task_table(task, group))]
            parts += ['<ul class="note">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>"] if notes else []
        parts.append("<ul class=\"note\">" + "".join(f"<li>{e(n)}</li>" for n in column_notes(rows)) + "</ul>")
        for p in figures.get(task, []):
            data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{e(task)}: {e(p.stem)}" src="data:image/png;base64,{data}">'
                         f"<figcaption class=\"note\">{e(p.name)}</figcaption></figure>")
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
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_csv(rows: list[Row]) -> str:
    headers, data = flat_rows(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(headers)
    w.writerows([["" if v is None else v for v in line] for line in data])
    return buf.getvalue()
