"""``bench leaderboard`` and ``bench compare``: the paper's tables and figures, made from results.

Everything here is computed from ``result.json`` files (DESIGN.md principle 5), never typed by
hand. :func:`aggregate` is a pure function from result dicts to rows, one row per
(task, model, config_hash): the seeds of one resolved config. What each task shows (columns,
learning curve, baseline) is the task's own (tasks/base.py), asked of the task registry.

Modules, one concern each:
    load         reading result.json (and diagnostics.json) files; what was skipped and why
    facts        what the task registry says about a task
    aggregate    rows of statistics over seeds, budget labels, paper protocols and the paper's values
    tables       a task's (one per protocol), the paper's and the diagnostics tables; text/md/html layouts
    figures      learning curves and diagnostics figures (matplotlib)
    render       whole documents: text, md, html, csv
    wandb_table  the tables as W&B tables
    cli          the commands and their arguments (``register``)

Every module keeps its heavy imports (torch, pandas, matplotlib, wandb) inside functions, so
``bench --help`` stays fast.
"""
from bench.columns import Column

from .aggregate import (Row, Stat, aggregate, budget_label, group_by_task, group_key, paper_values, protocol_groups,
                        protocol_label, stat)
from .cli import EXTENSIONS, FORMATS, cmd_compare, cmd_leaderboard, parse_formats, register
from .facts import columns_for, curve_for
from .figures import curves_figure, diagnostics_figure, make_figures
from .load import DIAGNOSTICS_FILE, Problem, check_result, load_diagnostics, load_results
from .render import render_csv, render_md, render_text
from .tables import (DIAGNOSTICS_NOTE, column_notes, diagnostics_table, distinguishing_settings, flat_rows, fmt_stat,
                     html_table, md_table, paper_footnotes, paper_tables, protocol_heading, scale_note, task_table,
                     text_table)
from .wandb_table import log_wandb

__all__ = [
    "Column", "DIAGNOSTICS_FILE", "DIAGNOSTICS_NOTE", "EXTENSIONS", "FORMATS", "Problem", "Row", "Stat", "aggregate",
    "budget_label", "check_result", "cmd_compare", "cmd_leaderboard", "column_notes", "columns_for", "curve_for",
    "curves_figure", "diagnostics_figure", "diagnostics_table", "distinguishing_settings", "flat_rows", "fmt_stat",
    "group_by_task", "group_key", "html_table", "load_diagnostics", "load_results", "log_wandb", "make_figures",
    "md_table", "paper_footnotes", "paper_tables", "paper_values", "parse_formats", "protocol_groups",
    "protocol_heading", "protocol_label", "register", "render_csv", "render_md", "render_text",
    "scale_note", "stat", "task_table", "text_table",
]
