"""The leaderboard's tables as headers and string cells: a task's table, the paper's numbers,
the diagnostics summary, the flat numeric rows (CSV, W&B), the notes under a table, and the
text, Markdown and HTML layouts of any such table.
"""
from __future__ import annotations

import html
import json

from bench.columns import Column

from bench.paper import LEVELS, PAPER_SETTINGS, PROTOCOLS, paper_rows

from .aggregate import Row, Stat, protocol_groups, protocol_label, stat
from .facts import columns_for, paper_scale
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
    """Headers and string cells of one task's table for one protocol (``protocol_groups``): mean ±
    std over the row's seeds, and the paper's number under that protocol with its footnote mark."""
    protocols = {r.protocol for r in rows}
    if len(protocols) > 1:
        raise ValueError(f"one table holds one protocol; these rows are under {sorted(map(str, protocols))}: "
                         f"split them with protocol_groups()")
    columns = rows[0].columns
    protocol = rows[0].protocol
    with_len = any(r.seq_len is not None for r in rows)
    # a "paper" column wherever the paper reports that metric under this protocol, even if for other models
    with_paper = {c.label for c in columns if c.paper and protocol and _paper_has(protocol, c.paper)}
    marks = _footnotes(rows)
    settings = distinguishing_settings(rows)
    headers = ["model", "n", "params"] + (["T"] if with_len else []) + ["budget", "seeds"]
    for col in columns:
        headers.append(col.label)
        if col.label in with_paper:
            headers.append("paper")
    headers += (["settings"] if settings else []) + ["time/run (s)", "config"]
    body = []
    for r in rows:
        line = [r.model + (FALLBACK_MARK if r.fallback else ""), _fmt(r.n_hidden), "/".join(map(str, r.n_params)) or "—"]
        line += ([_fmt(r.seq_len)] if with_len else []) + [r.budget, seeds_label(r)]
        for col in columns:
            line.append(fmt_stat(r.cells[col.label], col.kind))
            if col.label in with_paper:
                value = r.paper.get(col.label)
                line.append(_fmt(value) + (f" [{marks[_source_key(r)]}]" if value is not None else ""))
        line += ([" ".join(_setting(k, r.config.get(k)) for k in settings)] if settings else [])
        line += [fmt_stat(r.wall_time).split(" (")[0], r.config_hash[:8]]
        body.append(line)
    return headers, body


FALLBACK_MARK = " †"
# Settings that make two rows of one model differ where the table's other columns show them alike
# (a sweep's trials): shown in a "settings" column only then.
SETTING_KEYS = ("opts", "model_options", "grad_clip", "data_seed", "val_every", "params")


def distinguishing_settings(rows: list[Row]) -> list[str]:
    """The config keys that tell apart rows the other columns show alike (same model, size,
    length and budget), e.g. the optimizers of a sweep's trials; [] when none are needed."""
    alike: dict[tuple, list[Row]] = {}
    for r in rows:
        alike.setdefault((r.model, r.n_hidden, r.seq_len, r.budget), []).append(r)
    differ = lambda k, g: len({json.dumps(r.config.get(k), sort_keys=True, default=str) for r in g}) > 1   # noqa: E731
    return [k for k in SETTING_KEYS if any(differ(k, g) for g in alike.values())]


def _setting(key: str, value) -> str:
    if key == "opts" and isinstance(value, dict):
        parts = []
        for group, o in sorted(value.items()):
            if isinstance(o, (list, tuple)) and len(o) >= 2:
                extra = json.dumps(o[2], sort_keys=True) if len(o) > 2 and o[2] else ""
                parts.append(f"{group}={o[0]}:{_fmt(o[1])}{extra}")
            else:
                parts.append(f"{group}={o}")
        return " ".join(parts) or "opts={}"
    return f"{key}={json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else value}"


def _paper_has(protocol: str, key: str) -> bool:
    return any(key in s.reported for s in PAPER_SETTINGS if s.protocol == protocol)


def _source_key(r: Row) -> tuple:
    return r.paper_source, r.paper_level


def _footnotes(rows: list[Row]) -> dict[tuple, int]:
    """A footnote number per (source, level) of the paper values in ``rows``, in order of appearance."""
    marks: dict[tuple, int] = {}
    for r in rows:
        if r.paper:
            marks.setdefault(_source_key(r), len(marks) + 1)
    return marks


def protocol_heading(rows: list[Row]) -> str:
    """One line over a protocol's table: the protocol, or why these runs have no paper values."""
    r = rows[0]
    if r.protocol:
        text = f"Protocol {r.protocol}: {PROTOCOLS[r.protocol].description}."
        return text + (f" No paper values: {r.no_paper}." if r.no_paper else "")
    return f"{protocol_label(r)}: no paper values; {r.no_paper}."


def paper_footnotes(rows: list[Row]) -> list[str]:
    """What each footnote mark of the table's paper column stands for: the source and how it was checked."""
    return [f"[{i}] paper value from {source}; verification: {level or 'none'}"
            + (f", {LEVELS[level]}" if level in LEVELS else "")
            for (source, level), i in _footnotes(rows).items()]


def paper_tables(task: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """The paper's reported numbers for ``task`` (bench/paper.py), one table per protocol, each
    number once, with its source and verification level."""
    rows, seen = [], set()
    # a (model, task) default row often repeats an explicit-length row: print each number once
    for s in paper_rows(task=task):
        key = (s.model, s.n_hidden, s.protocol, json.dumps(s.reported, sort_keys=True))
        if s.reported and key not in seen:
            seen.add(key)
            rows.append(s)
    order = list(PROTOCOLS)
    shown = [c.paper for c in columns_for(task, None) if c.paper]    # keys in the order of the task's columns
    out = []
    for protocol in sorted({s.protocol for s in rows}, key=lambda p: order.index(p) if p in order else len(order)):
        group = [s for s in rows if s.protocol == protocol]
        keys = sorted({k for s in group for k in s.reported},
                      key=lambda k: (shown.index(k) if k in shown else len(shown), k))
        headers = ["model", "n", "budget"] + keys + ["source", "verification"]
        body = [[s.model, str(s.n_hidden), s.budget or "—"] + [_fmt(s.reported.get(k)) for k in keys]
                + [s.source, s.level or "none"] for s in group]
        out.append((str(protocol), headers, body))
    return out


def scale_note(task: str, rows: list[Row]) -> str:
    """What scale these runs are, on what machine, against the paper's scale."""
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
        text += " The paper's scale (--scale paper): " + ", ".join(f"{k}={v}" for k, v in ps.items()) + "."
    if "quick" in scales:
        text += (" Quick-scale runs are CPU-sized smoke tests of the harness, far shorter than the paper's "
                 "training: do not compare them with the paper's numbers.")
    return text


def column_notes(rows: list[Row]) -> list[str]:
    columns = rows[0].columns
    notes = []
    for col in columns:
        used = sorted({r.cells[col.label].key for r in rows if r.cells[col.label].key})
        notes.append(f"{col.label}: {col.note or col.label} [result key: {', '.join(used) or '—'}]")
    notes.append("cells are mean ± std (ddof=1) over seeds; 'seeds' counts completed runs, one per seed (a rerun "
                 "of a seed counts once, the latest; runs that did not complete are named in brackets); "
                 "one table per protocol, so no column mixes two; 'paper' is the paper's number for the same "
                 "model and hidden size under the table's protocol, [n] naming its source and how it was "
                 "checked (bench/paper.py)")
    if any(distinguishing_settings(g) for g in protocol_groups(rows)):
        notes.append("settings: what tells apart rows of one model that the other columns show alike "
                     "(e.g. a sweep's trials): optimizer group=name:lr, model options, ...")
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
    headers += ["wall_time_s_mean", "paper_source", "paper_level", "protocol", "no_paper", "fallback"]
    data = []
    for r in rows:
        c = r.config
        line = [r.task, r.model, r.n_hidden, "/".join(map(str, r.n_params)), r.seq_len, c.get("max_steps"),
                c.get("max_epochs"), c.get("batch_size"), r.budget, r.scale, r.config_hash, r.n,
                " ".join(map(str, r.seeds)), sum(r.failed.values())]
        for col in columns:
            s = r.cells.get(col.label) if col in r.columns else None
            line += ([s.mean, s.std, s.n, s.min, s.max, s.key] if s else [None] * 6) + [r.paper.get(col.label)]
        line += [r.wall_time.mean, r.paper_source, r.paper_level, r.protocol, r.no_paper, r.fallback]
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
