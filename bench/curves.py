"""A run's logged curves (joined across resumed parts) and the final and best metrics read
from them: pure functions of the CSV files."""
from __future__ import annotations

from pathlib import Path

from bench.atomic import atomic_write_text


def read_curves(run_dir: Path):
    """The run's logged metrics, joined across resumed parts (csv/metrics.csv, csv/part1/...).

    A later part starts at its checkpoint's step; rows an earlier part logged from that step on
    (after the checkpoint, before the kill) are dropped, so every step appears once.
    """
    import pandas as pd

    run_dir = Path(run_dir)
    files = [run_dir / "csv" / "metrics.csv"] + sorted(run_dir.glob("csv/part*/metrics.csv"),
                                                       key=lambda f: int(f.parent.name[4:]))
    files = [f for f in files if f.exists() and f.stat().st_size]
    if not files:
        return None, None
    parts = [pd.read_csv(f) for f in files]
    if len(parts) == 1:
        return parts[0], files[0]
    merged = parts[0]
    for part in parts[1:]:
        start = part["step"].min() if len(part) else None
        if start is not None:
            merged = merged[merged["step"] < start]
        merged = pd.concat([merged, part], ignore_index=True)
    out = run_dir / "csv" / "curves.csv"
    atomic_write_text(out, merged.to_csv(index=False))
    return merged, out


def summarise(curves, task, metric_mode: str) -> dict:
    """Final and best metrics from the logged curves (pure function of the CSV)."""
    out: dict = {}
    if curves is None:
        return out
    train = curves.dropna(subset=["train/loss"]) if "train/loss" in curves else None
    if train is not None and len(train):
        out["final_train_loss"] = float(train["train/loss"].iloc[-10:].mean())
        out["train_steps_logged"] = int(train["step"].iloc[-1]) + 1
        if task.baseline is not None:
            # smoothed over 5 logged points (50 steps): one lucky batch is not "below baseline"
            smooth = train["train/loss"].rolling(5, min_periods=5).mean()
            below = train[smooth < task.baseline]
            out["first_step_below_baseline"] = int(below["step"].iloc[0]) + 1 if len(below) else None
    key = f"val/{task.metric}"
    if key in curves:
        val = curves.dropna(subset=[key])
        if len(val):
            best = val[key].idxmax() if metric_mode == "max" else val[key].idxmin()
            out["final_val_" + task.metric] = float(val[key].iloc[-1])
            out["best_val_" + task.metric] = float(val.loc[best, key])
            out["best_val_step"] = int(val.loc[best, "step"]) + 1
    tracked = f"tracked_test/{task.metric}"
    if tracked in curves and len(curves[tracked].dropna()):
        values = curves[tracked].dropna()
        out["best_test_" + task.metric] = float(values.max() if metric_mode == "max" else values.min())
    if "val/loss" in curves:
        val = curves.dropna(subset=["val/loss"])
        if len(val):
            out["final_val_loss"] = float(val["val/loss"].iloc[-1])
            out["best_val_loss"] = float(val["val/loss"].min())
    if "diag/unitarity_error" in curves:
        u = curves["diag/unitarity_error"].dropna()
        if len(u):
            out["max_unitarity_error"] = float(u.max())
    return out
