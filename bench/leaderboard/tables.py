"""The leaderboard's tables as headers and string cells: a task's table, the paper's numbers,
the diagnostics summary, the flat numeric rows (CSV, W&B), the notes under a table, and the
text, Markdown and HTML layouts of any such table.
"""
from __future__ import annotations

import html
import json

from bench.columns import Column

from .aggregate import Row, Stat, stat
from .facts import paper_scale
from .load import load_diagnostics


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
    ps = paper_scale(task)
    if ps:
        text += " The paper's protocol: " + ", ".join(f"{k}={v}" for k, v in ps.items()) + "."
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
