"""The leaderboard's figures (matplotlib, imported on use): each task's learning curves, like
the paper's Figures 2-5, and its three-panel diagnostics figure; mean and ±1 std over seeds.
"""
from __future__ import annotations

from pathlib import Path

from .aggregate import Row
from .facts import baseline_metrics, curve_for
from .load import load_diagnostics, run_dir


LINESTYLES = ("-", "--", ":", "-.")


def _colors(rows: list[Row]) -> dict[str, str]:
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:gray", "tab:olive", "tab:cyan"]
    models = sorted({r.model for r in rows})
    return {m: palette[i % len(palette)] for i, m in enumerate(models)}


def _curve(r: dict, column: str, smooth: int):
    import pandas as pd

    if not r.get("curves"):
        return None
    try:
        df = pd.read_csv(run_dir(r) / r["curves"])
    except (OSError, ValueError):
        return None
    if column not in df or "step" not in df:
        return None
    s = df[["step", column]].dropna()
    s = s.groupby("step")[column].mean()
    s.index = s.index + 1           # Lightning's step is 0-based: plot iterations done
    return s.rolling(smooth, min_periods=1).mean() if smooth > 1 else s


def _band(ax, series: list, color: str, label: str, **kw):
    import pandas as pd

    df = pd.concat(series, axis=1)
    mean, std, count = df.mean(axis=1), df.std(axis=1, ddof=1), df.count(axis=1)
    ax.plot(df.index, mean, color=color, label=label, linewidth=1.4, **kw)
    ok = count >= 2
    if ok.any():
        ax.fill_between(df.index[ok], (mean - std)[ok], (mean + std)[ok], color=color, alpha=0.2, linewidth=0)


def _row_label(row: Row, rows: list[Row]) -> str:
    params = "/".join(map(str, row.n_params))
    label = f"{row.model} n={row.n_hidden} ({params} params), {row.n} seed{'s' * (row.n != 1)}"
    if sum(r.model == row.model for r in rows) > 1:
        label += f", {row.budget}, {row.config_hash[:6]}"
    return label


def curves_figure(task: str, rows: list[Row], out_png: Path, metric: str | None = None,
                  smooth: int | None = None) -> Path | None:
    """Learning curves of every config of ``task``, one panel per sequence length, mean and a
    ±1 std band over seeds, the memoryless baseline dashed. Returns the PNG path or None."""
    from matplotlib.figure import Figure

    if metric is None:
        names = {(r.get("metric") or {}).get("name") for row in rows for r in row.runs}
        metric = curve_for(task) or (f"val/{names.pop()}" if len(names) == 1 and None not in names else "train/loss")
    smooth = smooth if smooth is not None else (5 if metric.startswith("train/") else 1)
    lengths = sorted({r.seq_len for r in rows}, key=lambda v: v or 0)
    colors = _colors(rows)
    fig = Figure(figsize=(6.4 * len(lengths), 4.2), layout="constrained")
    axes = fig.subplots(1, len(lengths), squeeze=False)[0]
    plotted = False
    for ax, T in zip(axes, lengths):
        panel = [r for r in rows if r.seq_len == T]
        seen: dict[str, int] = {}
        for row in panel:
            series = [s for s in (_curve(r, metric, smooth) for r in row.runs) if s is not None and len(s)]
            if series:
                k = seen[row.model] = seen.get(row.model, -1) + 1   # a model's further configs: other dashes
                _band(ax, series, colors[row.model], _row_label(row, panel), linestyle=LINESTYLES[k % 4])
                plotted = True
        # the baseline is a value of the task's baseline_metrics (the loss, ...): no line on an accuracy curve
        loss_like = any(metric.endswith("/" + m) for m in baseline_metrics(task))
        baselines = {r.baseline for r in panel if r.baseline is not None} if loss_like else set()
        for b in baselines:
            ax.axhline(b, color="black", linestyle="--", linewidth=1, label=f"baseline {b:.3g}")
        ax.set_title(f"{task}" + (f", T={T}" if T else ""))
        ax.set_xlabel("training iteration")
        ax.set_ylabel(metric + (f" (rolling mean of {smooth} logged points)" if smooth > 1 else ""))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not plotted:
        return None
    fig.suptitle(f"{task}: mean and ±1 std over seeds", fontsize=10)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def diagnostics_figure(task: str, rows: list[Row], out_png: Path) -> Path | None:
    """Three panels: ‖WᴴW−I‖ over training, ‖∂L/∂h_t‖ against t (init dashed, last solid),
    and the modReLU singular-zone share over training; mean over seeds."""
    import pandas as pd
    from matplotlib.figure import Figure

    colors = _colors(rows)
    fig = Figure(figsize=(16, 4.2), layout="constrained")
    ax_u, ax_g, ax_m = fig.subplots(1, 3)
    plotted = False
    for row in rows:
        diags = [d for d in (load_diagnostics(r) for r in row.runs) if d]
        if not diags:
            continue
        plotted, color, label = True, colors[row.model], _row_label(row, rows)
        if len(rows) > 1 and len({r.seq_len for r in rows}) > 1:
            label += f", T={row.seq_len}"
        u = [pd.Series({s["step"]: s["unitarity_error"] for s in d if s.get("unitarity_error") is not None},
                       dtype=float) for d in diags]
        u = [s for s in u if len(s)]
        if u:
            _band(ax_u, u, color, label)
        for idx, style in ((0, "--"), (-1, "-")):
            g = [pd.Series(d[idx]["grad_norm"]["norm"], index=d[idx]["grad_norm"]["t"]) for d in diags
                 if d[idx].get("grad_norm")]
            if g:
                _band(ax_g, g, color, label + (" (init)" if idx == 0 else " (last)"), linestyle=style)
        m = [pd.Series({s["step"]: 100 * s["modrelu"]["singular_frac"] for s in d if s.get("modrelu")}, dtype=float)
             for d in diags]
        m = [s for s in m if len(s)]
        if m:
            _band(ax_m, m, color, label)
    if not plotted:
        return None
    for ax, title, xl, yl, log in (
            (ax_u, "distance from unitary", "training iteration", "max |WᴴW − I|", True),
            (ax_g, "gradient through time (fixed batch)", "time step t", "‖∂L/∂h_t‖ (batch mean)", True),
            (ax_m, "modReLU input in the singular zone", "training iteration", "% of |z| < 0.1·b, b > 0", False)):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        if log and any(line.get_ydata().size for line in ax.get_lines()):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{task}: diagnostics, mean and ±1 std over seeds", fontsize=10)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def make_figures(by_task: dict[str, list[Row]], fig_dir: Path, metric=None, smooth=None) -> dict[str, list[Path]]:
    figures = {}
    for task, rows in by_task.items():
        paths = [curves_figure(task, rows, fig_dir / f"{task}-curves.png", metric, smooth),
                 diagnostics_figure(task, rows, fig_dir / f"{task}-diagnostics.png")]
        figures[task] = [p for p in paths if p is not None]
    return figures
