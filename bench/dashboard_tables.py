"""The ranked tables of ``bench dashboard``: per task and protocol the rows best first by the task's
metric, a sweep's trials under its best one, as HTML, and the rows' learning curves (mean ± std
over seeds) for the page's plot.
"""
from __future__ import annotations

import html
import math
import re

from bench.dashboard_data import MAX_CURVE_POINTS, _rolling, _run_file, mean_std, read_csv_columns


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


def _curve_metric(task: str, rows: list) -> str:
    from bench.leaderboard.facts import curve_for

    names = {(r.get("metric") or {}).get("name") for row in rows for r in row.runs}
    return curve_for(task) or (f"val/{names.pop()}" if len(names) == 1 and None not in names else "train/loss")


def _num(text: str) -> str | None:
    m = re.match(r"\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)", text)
    return m.group(1) if m else None


def _attr(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


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
