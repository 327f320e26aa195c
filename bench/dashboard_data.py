"""The data of ``bench dashboard``: the results of a runs folder (none whose real path lies outside
it), each with a stable id, and everything the page shows for one run: its curves, the command
that reproduces it, its diagnostics summary and its W&B run.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import shlex
from pathlib import Path

from bench.leaderboard.load import DIAGNOSTICS_FILE, Problem, load_results

W_AND_B_FILE = "wandb_run.json"
MAX_CURVE_POINTS = 2000         # per trace on the page: a long run's CSV is thinned to this many points


def run_id(root: Path, result: dict) -> str:
    """A stable id for one result file: a hash of its path relative to the runs folder."""
    rel = Path(result["_path"]).resolve().relative_to(root).as_posix()
    return hashlib.sha256(rel.encode()).hexdigest()[:16]


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (ValueError, OSError):
        return False


def load(runs_dir: str | Path) -> tuple[list[dict], list[Problem]]:
    """The results under ``runs_dir`` (each with ``_id``), leaving out any whose real path is outside it."""
    root = Path(runs_dir).resolve()
    results, problems = load_results(runs_dir)
    kept = []
    for r in results:
        if _inside(Path(r["_path"]), root):
            kept.append({**r, "_id": run_id(root, r)})
        else:
            problems.append(Problem(r["_path"], "links outside the runs directory; not shown"))
    return kept, problems


def _run_file(r: dict, rel: str | None) -> Path | None:
    """A file of the run named in result.json, only if it really lies inside the run's folder."""
    if not rel or not isinstance(rel, str):
        return None
    folder = Path(r["_path"]).resolve().parent
    path = folder / rel
    return path if _inside(path, folder) and path.is_file() else None


def read_csv_columns(path: Path | None) -> dict[str, list[list[float]]]:
    """``{column: [[step, value], ...]}`` of a Lightning CSV (rows without a value skipped; one
    value per step, the mean of repeats; steps counted from 1 like the figures)."""
    if path is None:
        return {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return {}
    sums: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        try:
            step = int(float(row.get("step") or ""))
        except ValueError:
            continue
        for key, text in row.items():
            if key in (None, "step", "epoch") or text in (None, ""):
                continue
            try:
                value = float(text)
            except ValueError:
                continue
            if math.isfinite(value):
                sums.setdefault(key, {}).setdefault(step + 1, []).append(value)
    return {k: [[s, sum(v) / len(v)] for s, v in sorted(by.items())] for k, by in sums.items()}


def _thin(points: list, n: int = MAX_CURVE_POINTS) -> list:
    if len(points) <= n:
        return points
    stride = math.ceil(len(points) / n)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])


def _rolling(points: list, k: int) -> list:
    if k <= 1:
        return points
    out, window = [], []
    for s, v in points:
        window = (window + [v])[-k:]
        out.append([s, sum(window) / len(window)])
    return out


def mean_std(series: list[list]) -> dict:
    """Mean and std (ddof=1, where ≥ 2 seeds logged the step) over seeds, step by step."""
    at: dict[int, list[float]] = {}
    for points in series:
        for s, v in points:
            at.setdefault(s, []).append(v)
    steps = sorted(at)
    mean = [sum(at[s]) / len(at[s]) for s in steps]
    std = [math.sqrt(sum((v - m) ** 2 for v in at[s]) / (len(at[s]) - 1)) if len(at[s]) > 1 else None
           for s, m in zip(steps, mean)]
    return {"x": steps, "mean": mean, "std": std}


def _wandb(r: dict) -> dict:
    """What the page says about the run's W&B run: its URL where one is known, else id and mode."""
    info = dict(r.get("wandb") or {}) if isinstance(r.get("wandb"), dict) else {}
    path = _run_file(r, W_AND_B_FILE)
    if path:
        try:
            known = json.loads(path.read_text())
            info.update({k: known[k] for k in ("id", "project", "entity", "url") if isinstance(known.get(k), str)})
        except (OSError, ValueError):
            pass
    url = info.get("url")
    if not url and info.get("entity") and info.get("project") and info.get("id"):
        url = f"https://wandb.ai/{info['entity']}/{info['project']}/runs/{info['id']}"
    out = {k: info.get(k) for k in ("mode", "id", "project")}
    out["url"] = url if isinstance(url, str) and url.startswith("https://") else None
    if info.get("mode") == "offline" and info.get("dir"):
        out["sync"] = f"wandb sync --yes {shlex.quote(str(info['dir']))}"
    return out


def reproduce_command(result: dict) -> str | None:
    """The ``bench run`` command line that reproduces the run's config (same config hash)."""
    from bench.flags import run_command

    try:
        return shlex.join(run_command(result["config"]))
    except Exception:           # a config of other code (unknown optimizer, ...): the recorded one instead
        return None


def diagnostics_summary(r: dict) -> dict | None:
    path = _run_file(r, DIAGNOSTICS_FILE)
    if path is None:
        return None
    try:
        snaps = [s for s in json.loads(path.read_text()).get("snapshots", []) if isinstance(s, dict) and "error" not in s]
    except (OSError, ValueError, AttributeError):
        return None
    if not snaps:
        return None

    def one(s):
        grad, mod = s.get("grad_norm") or {}, s.get("modrelu") or {}
        return {"step": s.get("step"), "unitarity_error": s.get("unitarity_error"),
                "log10_grad_first_over_last": grad.get("log10_first_over_last"),
                "modrelu_singular_frac": mod.get("singular_frac"), "modrelu_dead_frac": mod.get("dead_frac")}
    return {"snapshots": len(snaps), "first": one(snaps[0]), "last": one(snaps[-1]),
            "max_unitarity_error": max((s["unitarity_error"] for s in snaps
                                        if isinstance(s.get("unitarity_error"), (int, float))), default=None)}


def run_details(r: dict) -> dict:
    """Everything the page shows for one run; ``result`` is the result file exactly as written."""
    result = {k: v for k, v in r.items() if k not in ("_path", "_id")}
    curves = {k: _thin(v) for k, v in read_csv_columns(_run_file(r, r.get("curves"))).items()}
    return {"id": r["_id"], "result": result, "command": reproduce_command(result),
            "recorded_command": result.get("command"), "curves": curves, "diagnostics": diagnostics_summary(r),
            "wandb": _wandb(r)}


def _clean(v):
    """JSON without NaN/inf (the page's JSON.parse would reject them)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v
