"""The leaderboard's figures (matplotlib, imported on use): each task's learning curves, like
the paper's Figures 2-5, and its three-panel diagnostics figure; mean and ±1 std over seeds.
"""
from __future__ import annotations

from pathlib import Path

from .aggregate import Row
from .facts import baseline_metrics, curve_for
from .load import load_diagnostics, run_dir


LINESTYLES = ("-", "--", ":", "-.")


def model_colors(models) -> dict[str, str]:
    """One colour per model name, the same for the same set of models (sorted)."""
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
               "tab:gray", "tab:olive", "tab:cyan"]
    return {m: palette[i % len(palette)] for i, m in enumerate(sorted(set(models)))}


def _colors(rows: list[Row]) -> dict[str, str]:
    return model_colors(r.model for r in rows)


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


def run_curves(runs: list[dict], column: str, smooth: int) -> list:
    """The logged curve ``column`` of each run that has one (index: training iterations done)."""
    return [s for s in (_curve(r, column, smooth) for r in runs) if s is not None and len(s)]


def default_smooth(column: str) -> int:
    """Logged points in the rolling mean of a curve: 5 for a training curve (one batch each), else 1."""
    return 5 if column.startswith("train/") else 1


def _band(ax, series: list, color: str, label: str, **kw):
    """The mean over ``series`` (aligned on the index) as a line, and a ±1 std (ddof=1) band where
    at least two have a value. Returns (mean, std, count), as drawn."""
    import pandas as pd

    df = pd.concat(series, axis=1)
    mean, std, count = df.mean(axis=1), df.std(axis=1, ddof=1), df.count(axis=1)
    ax.plot(df.index, mean, color=color, label=label, linewidth=1.4, **kw)
    ok = count >= 2
    if ok.any():
        ax.fill_between(df.index[ok], (mean - std)[ok], (mean + std)[ok], color=color, alpha=0.2, linewidth=0)
    return mean, std, count


def curve_panel(ax, lines: list[tuple], baselines: list[tuple[float, str]], title: str, ylabel: str,
                legend: dict | None = None, **kw) -> bool:
    """One panel of learning curves against training iteration: each of ``lines`` (label, colour,
    linestyle, series over seeds) as :func:`_band` draws it, each of ``baselines`` (value, label)
    dashed black. ``legend``: the legend's options (default: small, placed by matplotlib); ``kw``
    goes to every line (e.g. a marker). Returns whether a curve was drawn."""
    for label, color, linestyle, series in lines:
        _band(ax, series, color, label, linestyle=linestyle, **kw)
    for value, label in baselines:
        ax.axhline(value, color="black", linestyle="--", linewidth=1, label=label)
    ax.set_title(title)
    ax.set_xlabel("training iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**(legend or {"fontsize": 7}))
    return bool(lines)


def _row_label(row: Row, rows: list[Row]) -> str:
    params = "/".join(map(str, row.n_params))
    label = f"{row.model} n={row.n_hidden} ({params} params), {row.n} seed{'s' * (row.n != 1)}"
    if sum(r.model == row.model for r in rows) > 1:
        label += f", {row.budget}, {row.config_hash[:6]}"
    return label


def is_baseline_of(column: str, task: str) -> bool:
    """Whether ``task``'s memoryless baseline is a value of the curve ``column`` (the loss, ...)."""
    return any(column.endswith("/" + m) for m in baseline_metrics(task))


def curves_figure(task: str, rows: list[Row], out_png: Path, metric: str | None = None,
                  smooth: int | None = None) -> Path | None:
    """Learning curves of every config of ``task``, one panel per sequence length, mean and a
    ±1 std band over seeds, the memoryless baseline dashed. Returns the PNG path or None."""
    from matplotlib.figure import Figure

    if metric is None:
        names = {(r.get("metric") or {}).get("name") for row in rows for r in row.runs}
        metric = curve_for(task) or (f"val/{names.pop()}" if len(names) == 1 and None not in names else "train/loss")
    smooth = smooth if smooth is not None else default_smooth(metric)
    lengths = sorted({r.seq_len for r in rows}, key=lambda v: v or 0)
    colors = _colors(rows)
    fig = Figure(figsize=(6.4 * len(lengths), 4.2), layout="constrained")
    axes = fig.subplots(1, len(lengths), squeeze=False)[0]
    plotted = False
    for ax, T in zip(axes, lengths):
        panel = [r for r in rows if r.seq_len == T]
        seen: dict[str, int] = {}
        lines = []
        for row in panel:
            series = run_curves(row.runs, metric, smooth)
            if series:
                k = seen[row.model] = seen.get(row.model, -1) + 1   # a model's further configs: other dashes
                lines.append((_row_label(row, panel), colors[row.model], LINESTYLES[k % 4], series))
        # the baseline is a value of the task's baseline_metrics (the loss, ...): no line on an accuracy curve
        baselines = {r.baseline for r in panel if r.baseline is not None} if is_baseline_of(metric, task) else set()
        plotted |= curve_panel(ax, lines, [(b, f"baseline {b:.3g}") for b in baselines],
                               f"{task}" + (f", T={T}" if T else ""),
                               metric + (f" (rolling mean of {smooth} logged points)" if smooth > 1 else ""))
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
