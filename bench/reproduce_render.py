"""Rendering a ``bench reproduce`` artefact in the paper's layout: the paper's value, ours (mean ±
std over seeds) and the difference, as Markdown and CSV, computed from the result files.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from bench.reproduce_plan import PlannedRun, matching
from bench.reproduce_spec import (ARTEFACTS, NEW_MODEL_LABEL, PAPER_NAMES, SCALES, Artefact, Panel, protocol,
                                  run_seq_len)


@dataclass
class Cell:
    paper: float | None
    mean: float | None
    std: float | None
    n: int                       # completed seeds with a value
    done: int                    # completed seeds
    planned: int                 # seeds asked for
    failed: dict[str, int] = field(default_factory=dict)
    config_hash: str | None = None

    @property
    def diff(self) -> float | None:
        return None if self.mean is None or self.paper is None else self.mean - self.paper


@dataclass
class TableRow:
    setting: tuple
    model: str
    n_hidden: int
    n_params: int
    budget: str | None           # the paper's "# params"
    new: bool
    cells: dict[tuple[str, str], Cell]      # (panel label, metric label) -> cell
    optimizers: str | None = None           # an appendix table's row: what sets it apart


def table(runs: list[PlannedRun], results: list[dict]) -> list[TableRow]:
    """The artefact's rows (paper order, then the new models) with one cell per panel and metric,
    computed from ``results`` through the leaderboard's aggregation (latest run per seed)."""
    from bench.leaderboard import stat

    if not runs:
        return []
    art = ARTEFACTS[runs[0].artefact]
    found = matching(runs, results)
    by_setting: dict[tuple, dict[str, list[PlannedRun]]] = {}
    for r in runs:
        by_setting.setdefault(r.setting, {}).setdefault(r.panel.label, []).append(r)
    rows = []
    for setting, panels in by_setting.items():
        first = next(iter(panels.values()))[0]
        cells = {}
        for panel in art.panels:
            planned = panels.get(panel.label, [])
            if not planned:
                continue
            group = chosen_group(planned, found)
            done = group.runs if group else []
            for metric in art.metrics:
                s = stat([res["metrics"].get(metric.key) for res in done])
                paper = (planned[0].row.reported.get(metric.paper) if planned[0].row and metric.paper else None)
                cells[(panel.label, metric.label)] = Cell(paper, s.mean, s.std, s.n, len(done), len(planned),
                                                          dict(group.failed) if group else {},
                                                          planned[0].config_hash)
        row = first.row
        rows.append(TableRow(setting, first.model, first.resolved.n_hidden, first.n_params,
                             row.budget if row else None, row is None, cells,
                             optimizers_text(row.opts) if first.panel.appendix and row else None))
    rows.sort(key=lambda t: row_order(t.model, t.n_hidden, t.new))
    return rows


def chosen_group(planned: list[PlannedRun], found: dict[tuple, list[dict]]):
    """The leaderboard row (bench.leaderboard.Row: latest run per seed) of the results ``found``
    for ``planned`` (one setting in one panel), the group with the most seeds; None if none."""
    from bench.leaderboard import aggregate

    chosen = [res for p in planned for res in found.get(p.key, [])]
    groups = aggregate(chosen) if chosen else []
    return max(groups, key=lambda g: (g.n, sum(g.failed.values())), default=None)


def row_order(model: str, n_hidden: int, new: bool) -> tuple:
    """Sort key of a setting: the paper's rows in its order, then the new models."""
    order = list(PAPER_NAMES)
    return (new, order.index(model) if model in order else len(order), model, n_hidden)


def fmt_value(v: float | None, kind: str = "float") -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if kind == "step" else f"{v:.4g}"


def fmt_ours(c: Cell, kind: str = "float") -> str:
    """mean ± std (n seeds); "never" for a step count no seed reached; failures named."""
    if c.done == 0:
        text = "not run" if not c.failed else ""
    elif c.n == 0:
        text = "never" if kind == "step" else "—"
    else:
        text = fmt_value(c.mean, kind) + (f" ± {c.std:.2g}" if c.std is not None else "")
        text += f" ({c.n} seed{'s' if c.n != 1 else ''}" + (f", reached {c.n}/{c.done}" if kind == "step"
                                                              and c.n < c.done else "") + ")"
    if c.failed:
        text = (text + " " if text else "") + "[" + ", ".join(f"{v} {k}" for k, v in sorted(c.failed.items())) + "]"
    return text


def fmt_diff(c: Cell, kind: str = "float") -> str:
    d = c.diff
    if d is None:
        return "—"
    return f"{d:+.0f}" if kind == "step" else f"{d:+.3g}"


OPTIMIZER_NAMES = {"rmsprop": "RMSProp", "adam": "Adam", "adagrad": "Adagrad"}   # the paper's words


def optimizers_text(opts: dict) -> str:
    """A row's optimizers as the appendix tables print them: ``A RMSProp 1e-4, D Adam 1e-4, ...``."""
    return ", ".join(f"{g} {OPTIMIZER_NAMES.get(name, name)} {lr:.0e}".replace("e-0", "e-") for g, (name, lr) in opts.items())


def model_label(t: TableRow) -> str:
    return display_name(t.model, t.new)


def display_name(model: str, new: bool = False) -> str:
    """The paper's name of ``model`` (``model (not in the paper)`` for a model without a paper row)."""
    return f"{model} ({NEW_MODEL_LABEL})" if new else PAPER_NAMES.get(model, model)


def describe_protocol(artefact: str, scale: str, runs: list[PlannedRun]) -> list[str]:
    """Header lines: the scale, steps, batch, and what differs from the paper's protocol."""
    art = ARTEFACTS[artefact]
    seeds = sorted({r.seed for r in runs})
    lines = [f"Scale **{scale}**: {SCALES[scale].about}. Seeds: {len(seeds)} ({', '.join(map(str, seeds))}). "
             f"Runs from `bench reproduce {artefact} --scale {scale}`; each is a normal `bench run` "
             f"(its settings: bench/paper.py row; its protocol: bench/reproduce_spec.py PROTOCOLS)."]
    for task in dict.fromkeys(p.task for p in art.panels):
        proto, paper = protocol(task, scale), protocol(task, "paper")
        text = (f"{task}: {proto.max_steps} steps × batch {proto.batch_size}, validation every {proto.val_every} "
                f"steps")
        diffs = []
        if scale != "paper":
            if (proto.max_steps, proto.batch_size) != (paper.max_steps, paper.batch_size):
                diffs.append(f"the paper's protocol trains {paper.max_steps} steps × batch {paper.batch_size}")
            if proto.val_every != paper.val_every:
                diffs.append(f"validation every {paper.val_every} steps there")
            if proto.seq_len:
                diffs.append("sequence lengths shortened: " + ", ".join(
                    f"T={a} run at T={b}" for a, b in proto.seq_len.items()
                    if any(p.task == task and p.seq_len == a for p in art.panels)))
            if proto.eval_batches:
                diffs.append(f"validation and test on the first {proto.eval_batches} batch(es) of each split only")
        lines.append(text + (" — differs from the paper: " + "; ".join(diffs) if diffs else
                             " (the paper's protocol)") + ".")
    if art.track_test:
        lines.append("The test split is evaluated at every validation, as the paper reports the best test accuracy "
                     "over epochs.")
    return lines


def panel_header(panel: Panel, scale: str) -> str:
    proto = protocol(panel.task, scale)
    T = run_seq_len(panel, proto)
    return panel.label + (f" (run at T={T})" if T != panel.seq_len else "")


def table_cells(art: Artefact, scale: str, rows: list[TableRow], panels) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells of one table: the rows that have a run in ``panels``; per panel
    and metric the paper's value, ours and the difference."""
    several = len(panels) > 1
    variants = any(t.optimizers for t in rows)
    headers = ["model"] + (["optimizers"] if variants else []) + ["n", "# params (paper)", "params"]
    for panel in panels:
        prefix = f"{panel_header(panel, scale)} " if several else ""
        for m in art.metrics:
            headers += [f"{prefix}{m.label}: paper", f"{prefix}{m.label}: ours", f"{prefix}{m.label}: Δ"]
    body = []
    for t in rows:
        if not any((p.label, m.label) in t.cells for p in panels for m in art.metrics):
            continue
        line = ([model_label(t)] + ([t.optimizers or "—"] if variants else [])
                + [str(t.n_hidden), t.budget or ("matched to scuRNN" if t.new else "—"), f"{t.n_params:,}"])
        for panel in panels:
            for m in art.metrics:
                c = t.cells.get((panel.label, m.label))
                line += ([fmt_value(c.paper, m.kind), fmt_ours(c, m.kind), fmt_diff(c, m.kind)] if c
                         else ["—", "no paper row", "—"])
        body.append(line)
    return headers, body


def render(artefact: str, scale: str, runs: list[PlannedRun], results: list[dict]) -> tuple[str, str]:
    """The artefact as Markdown (header, table, notes) and as CSV (one line per cell)."""
    from bench.leaderboard import md_table

    art = ARTEFACTS[artefact]
    rows = table(runs, results)
    parts = [f"# {art.title} ({art.source}), scale {scale}", ""] + describe_protocol(artefact, scale, runs) + [""]
    # One metric: the panels side by side, as the paper's Table 1 (Unperm. | Perm.). Several
    # metrics: one table per panel (one length), as Table 2 (valid | eval) for each length.
    layouts = [(None, art.panels)] if len(art.metrics) == 1 else [(p, (p,)) for p in art.panels]
    for title, panels in layouts:
        headers, body = table_cells(art, scale, rows, panels)
        if title is not None:
            parts += [f"## {panel_header(title, scale)}", ""]
        parts += [md_table(headers, body), ""]
    if art.curve is not None:
        parts += [f"![{art.title}, ours at scale {scale}]({figure_file(artefact, scale)})", "",
                  f"Figure ({figure_file(artefact, scale)}, beside this file): {art.curve.label} against the training "
                  f"iteration, one panel per length, mean ± 1 std over seeds per model, the baseline dashed "
                  f"(the paper's figure plots {art.curve.paper}).", ""]
    notes = [f"{m.label}: {m.note} [result key: {m.key}]" for m in art.metrics]
    notes.append(f"paper: the paper's number for this {'row' if any(t.optimizers for t in rows) else 'model and size'} "
                 "(bench/paper.py); ours: mean ± std (ddof=1) over completed seeds; Δ = ours − paper; failed runs in "
                 "brackets")
    if any(t.new for t in rows):
        notes.append(f"rows marked '{NEW_MODEL_LABEL}': models without a paper row for the task, at the hidden "
                     "size matching scuRNN's paper budget there (bench/paper.py anchor_budget), with their own "
                     "default optimizers")
    if art.note:
        notes.append(art.note)
    parts += ["- " + n for n in notes]
    md = "\n".join(parts).rstrip() + "\n"

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["artefact", "scale", "model", "n_hidden", "n_params", "paper_budget", "not_in_paper", "task",
                "paper_seq_len", "seq_len", "max_steps", "batch_size", "eval_batches", "metric", "result_key",
                "paper", "mean", "std", "n", "completed", "planned", "failed", "diff", "config_hash", "optimizers"])
    for t in rows:
        for panel in art.panels:
            planned = next((r for r in runs if r.setting == t.setting and r.panel.label == panel.label), None)
            if planned is None:
                continue
            c0 = planned.resolved
            for m in art.metrics:
                c = t.cells[(panel.label, m.label)]
                w.writerow([artefact, scale, t.model, t.n_hidden, t.n_params, t.budget or "", int(t.new), panel.task,
                            panel.seq_len or "", c0.seq_len or "", c0.max_steps, c0.batch_size,
                            planned.eval_batches or "", m.label, m.key, _num(c.paper), _num(c.mean), _num(c.std), c.n,
                            c.done, c.planned, sum(c.failed.values()), _num(c.diff), c.config_hash,
                            t.optimizers or ""])
    return md, buf.getvalue()


def _num(v) -> str:
    return "" if v is None else repr(float(v))


def figure_file(artefact: str, scale: str) -> str:
    """The file name of the artefact's figure (bench/reproduce_figures.py), beside its tables."""
    return f"{artefact}-{scale}.png"


def write_outputs(runs_dir: str | Path, artefact: str, scale: str, md: str, text_csv: str) -> tuple[Path, Path]:
    from bench.atomic import atomic_write_text

    out = Path(runs_dir) / "reproduce"
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / f"{artefact}-{scale}.md", out / f"{artefact}-{scale}.csv"
    atomic_write_text(md_path, md)
    atomic_write_text(csv_path, text_csv)
    return md_path, csv_path
