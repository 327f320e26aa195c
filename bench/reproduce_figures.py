"""The paper's figures (Figure 4: copying, Figure 5: adding) drawn from a ``bench reproduce``
artefact's runs: one panel per panel of the artefact (a sequence length), one line per model
(the mean over seeds, a ±1 std band where at least two seeds have a value), the task's
memoryless baseline dashed, the artefact's declared curve (reproduce_spec ``Curve``: a column
of the runs' CSV, bench/curves.py) against the training iteration.

The drawing is the leaderboard's (bench/leaderboard/figures.py ``curve_panel``, as ``bench
compare`` draws), and the runs are the ones the table counts (reproduce_render ``chosen_group``:
the latest completed run per seed of each planned setting).
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from bench.reproduce_plan import PlannedRun, matching
from bench.reproduce_render import chosen_group, display_name, figure_file, panel_header, row_order
from bench.reproduce_spec import ARTEFACTS, SCALES, Panel, protocol, run_seq_len

FOOT_SIZE = 7.5          # points, the footnote lines under the panels
FEW_POINTS = 20          # a panel whose curves have at most this many points marks each one
LEGEND = {"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}  # right of the panel


@dataclass
class PanelCurves:
    """What one panel shows: per drawn line its label, the seeds drawn and planned, and the
    settings with fewer seeds than planned (or none) in words."""

    panel: Panel
    title: str
    baseline: float | None
    lines: list[tuple[str, str, str, list]] = field(default_factory=list)   # (label, colour, linestyle, series)
    missing: list[str] = field(default_factory=list)


def _seeds(n: int, planned: int) -> str:
    return f"{n} seed{'s' * (n != 1)}" if n == planned else f"{n} of {planned} seeds"


def task_baseline(panel: Panel, scale: str) -> float | None:
    """The memoryless baseline of ``panel``'s task at the length its runs have at ``scale``."""
    from bench.tasks import get_task_class

    cls = get_task_class(panel.task)
    return (cls(seq_len=run_seq_len(panel, protocol(panel.task, scale))) if cls.uses_seq_len else cls()).baseline


def panel_curves(artefact: str, scale: str, runs: list[PlannedRun], results: list[dict]) -> list[PanelCurves]:
    """Per panel of ``artefact`` the lines to draw, from the runs' logged curves."""
    from bench.leaderboard.figures import LINESTYLES, default_smooth, is_baseline_of, model_colors, run_curves

    art = ARTEFACTS[artefact]
    column = art.curve.column
    smooth = default_smooth(column)
    found = matching(runs, results)
    colors = model_colors(r.model for r in runs)
    out = []
    for panel in art.panels:
        by_setting: dict[tuple, list[PlannedRun]] = {}
        for r in runs:
            if r.panel == panel:
                by_setting.setdefault(r.setting, []).append(r)
        settings = sorted(by_setting.values(), key=lambda p: row_order(p[0].model, p[0].resolved.n_hidden,
                                                                         p[0].row is None))
        baseline = task_baseline(panel, scale) if is_baseline_of(column, panel.task) else None
        pc = PanelCurves(panel, panel_header(panel, scale), baseline)
        per_model = {m: sum(p[0].model == m for p in settings) for m in {p[0].model for p in settings}}
        seen: dict[str, int] = {}
        for planned in settings:
            first = planned[0]
            name = display_name(first.model, first.row is None)
            if per_model[first.model] > 1:
                name += f" n={first.resolved.n_hidden}"
            group = chosen_group(planned, found)
            series = run_curves(group.runs, column, smooth) if group else []
            n_planned = len({p.seed for p in planned})
            if len(series) < n_planned:
                failed = ", ".join(f"{v} {k}" for k, v in sorted((group.failed if group else {}).items()))
                pc.missing.append(f"{name} at {pc.title}: {_seeds(len(series), n_planned)} with a curve"
                                  + (f" ({failed})" if failed else ""))
            if series:
                k = seen[first.model] = seen.get(first.model, -1) + 1
                pc.lines.append((f"{name} ({_seeds(len(series), n_planned)})", colors[first.model],
                                 LINESTYLES[k % len(LINESTYLES)], series))
        out.append(pc)
    return out


def _footnotes(artefact: str, scale: str, runs: list[PlannedRun], panels: list[PanelCurves]) -> list[str]:
    art = ARTEFACTS[artefact]
    curve = art.curve
    seeds = sorted({r.seed for r in runs})
    lines = [f"Ours, not the paper's figure: `bench reproduce {artefact} --scale {scale}`, seeds "
             f"{', '.join(map(str, seeds))}; line = mean over seeds, band = ±1 std (ddof=1) where ≥2 seeds. "
             f"Scale {scale}: {SCALES[scale].about}."]
    what = f"y: {curve.label}"
    if curve.column.startswith("val/"):
        tasks = dict.fromkeys(p.task for p in art.panels)
        protos = [protocol(t, scale) for t in tasks]
        what += (" at each validation (every " + ", ".join(str(p.val_every) for p in protos) + " steps"
                 + "".join(f", on the first {p.eval_batches} batch(es) of the split" for p in protos
                           if p.eval_batches) + ")")
    if curve.paper != curve.label:
        what += f"; the paper's figure plots {curve.paper}"
    lines.append(what + f". Dashed: the memoryless baseline ({curve.baseline}).")
    missing = [m for p in panels for m in p.missing]
    if missing:
        lines.append("Fewer seeds than planned: " + "; ".join(missing) + ".")
    return lines


def draw_figure(artefact: str, scale: str, runs: list[PlannedRun], results: list[dict]):
    """The artefact's figure (a matplotlib Figure, not saved) and the panels' data; None when the
    artefact declares no curve (a table)."""
    from matplotlib.figure import Figure

    from bench.leaderboard.figures import curve_panel, default_smooth

    art = ARTEFACTS[artefact]
    if art.curve is None:
        return None
    panels = panel_curves(artefact, scale, runs, results)
    smooth = default_smooth(art.curve.column)
    n = len(panels)
    size = (9.5, 3.9 * n) if art.curve.stacked else (7.6 * n, 4.4)
    foot = _footnotes(artefact, scale, runs, panels)
    wrapped = [w for line in foot for w in textwrap.wrap(line, int((size[0] - 0.3) * 72 / (FOOT_SIZE * 0.6)))]
    foot_in = (len(wrapped) * FOOT_SIZE * 1.3 + 8) / 72
    fig = Figure(figsize=(size[0], size[1] + foot_in), layout="constrained")
    fig.get_layout_engine().set(rect=(0, foot_in / (size[1] + foot_in), 1, size[1] / (size[1] + foot_in)))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0] if art.curve.stacked else fig.subplots(1, n, squeeze=False)[0]
    ylabel = art.curve.label + (f"\n(rolling mean of {smooth} logged points)" if smooth > 1 else "")
    for ax, pc in zip(axes, panels):
        few = max((len(s) for _, _, _, series in pc.lines for s in series), default=0) <= FEW_POINTS
        baselines = ([(pc.baseline, f"baseline {pc.baseline:.3g} ({art.curve.baseline})")]
                     if pc.baseline is not None else [])
        drawn = curve_panel(ax, pc.lines, baselines, pc.title, ylabel, legend=LEGEND,
                            **({"marker": "o", "markersize": 3} if few else {}))
        if not drawn:
            ax.text(0.5, 0.5, "no completed run with a curve", transform=ax.transAxes, ha="center", va="center")
    fig.suptitle(f"{art.title}: {art.curve.label}, ours at scale {scale}", fontsize=11)
    fig.text(0.01, 0.005, "\n".join(wrapped), fontsize=FOOT_SIZE, ha="left", va="bottom")
    return fig, panels


def write_figure(runs_dir: str | Path, artefact: str, scale: str, runs: list[PlannedRun],
                 results: list[dict]) -> Path | None:
    """Draw the artefact's figure into RUNS_DIR/reproduce/ beside its tables; None for a table."""
    drawn = draw_figure(artefact, scale, runs, results)
    if drawn is None:
        return None
    from bench.atomic import atomic_write

    out = Path(runs_dir) / "reproduce" / figure_file(artefact, scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: drawn[0].savefig(f, format="png", dpi=130))
    return out
