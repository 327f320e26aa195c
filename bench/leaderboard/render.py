"""Whole leaderboard documents: the terminal text, the Markdown page (figures linked) and the
flat CSV. The HTML page is the dashboard's (bench/dashboard.py)."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from .aggregate import Row, protocol_groups
from .tables import (DIAGNOSTICS_NOTE, column_notes, diagnostics_table, flat_rows, md_table, paper_footnotes,
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




def render_csv(rows: list[Row]) -> str:
    headers, data = flat_rows(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(headers)
    w.writerows([["" if v is None else v for v in line] for line in data])
    return buf.getvalue()
