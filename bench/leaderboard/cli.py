"""The commands ``bench leaderboard`` and ``bench compare``: their arguments, reading the
runs folder, and writing the chosen formats and figures.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.errors import ConfigError

from .aggregate import aggregate, group_by_task
from .facts import curve_for
from .figures import curves_figure, diagnostics_figure, make_figures
from .load import load_results
from .render import render_csv, render_md, render_text
from .tables import fmt_stat
from .wandb_table import log_wandb

FORMATS = ("table", "md", "csv", "html")
EXTENSIONS = {"table": "txt", "md": "md", "csv": "csv", "html": "html"}


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
    by_task = group_by_task(rows)
    command = " ".join(["bench leaderboard"] + (["--task", args.task] if args.task else [])
                       + ["--runs-dir", args.runs_dir, "--format", args.format]
                       + (["--out", args.out] if args.out else []))
    meta = {"command": command, "generated": time.strftime("%Y-%m-%d %H:%M %Z"), "runs_dir": args.runs_dir,
            "n_results": len(results)}
    out = Path(args.out) if args.out else None
    figures = {}
    if out and {"md", "html"} & set(formats):
        figures = make_figures(by_task, out / "figures")
    from bench.atomic import atomic_write_text

    for fmt in formats:
        if fmt == "table":
            text = render_text(by_task, problems, meta)
        elif fmt == "md":
            text = render_md(by_task, problems, meta, figures, out)
        elif fmt == "csv":
            text = render_csv(rows)
        else:   # the dashboard's page, static: plotly.js and every run's details embedded (bench/dashboard.py)
            from bench.dashboard import render_page

            text = render_page(results, problems, meta, static=True, figures=figures)
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
                          f"{args.metric or curve_for(args.task)!r}; pick one with --metric (e.g. train/loss, "
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
    c.add_argument("--metric", help="curve column of the runs' CSV (default: the task's own, "
                                    "Task.leaderboard_curve in tasks/)")
    c.add_argument("--smooth", type=_positive_int,
                   help="rolling mean over this many logged points (default: 5 for train/*, else 1)")
    c.set_defaults(func=cmd_compare)
