"""Reading the runs folder: every usable ``result.json``, what was skipped and why, and the
``diagnostics.json`` beside a result.

A corrupt or partial ``result.json``, one whose fields have the wrong JSON types (``FIELDS``),
and stray ``.tmp-*`` files are reported and skipped, one line each naming the file and the field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError
from bench.results import RESULT_FILE, iter_results

REQUIRED_KEYS = ("config", "status", "task", "model", "config_hash", "seed", "metrics")
DIAGNOSTICS_FILE = "diagnostics.json"

# The JSON type of every field the leaderboard reads, and whether null is allowed. A record with
# another type in one of them is skipped like a corrupt file, with the field named.
STR, INT, NUMBER, OBJECT = (("a string", (str,)), ("an integer", (int,)), ("a number", (int, float)),
                             ("an object", (dict,)))
FIELDS = {
    "status": (STR, False), "task": (STR, False), "model": (STR, False), "config_hash": (STR, False),
    "seed": (INT, False), "config": (OBJECT, False), "metrics": (OBJECT, False),
    "n_hidden": (INT, True), "n_params": (INT, True), "task_info": (OBJECT, True), "metric": (OBJECT, True),
    "metric.name": (STR, True), "wall_time_s": (NUMBER, True), "curves": (STR, True), "fallback": (STR, True),
    "hardware": (OBJECT, True), "hardware.gpu": (STR, True), "code_version": (OBJECT, True),
    "code_version.git_sha": (STR, True), "task_info.baseline": (NUMBER, True),
    **{f"config.{k}": (INT, True)
       for k in ("seq_len", "max_steps", "max_epochs", "batch_size", "n_hidden", "data_seed")},
    "config.scale": (STR, True), "config.opts": (OBJECT, True), "config.model_options": (OBJECT, True),
}


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


def _get(data: dict, path: str):
    """(present, value) of a dotted path; a missing parent counts as absent (its own check reports a bad one)."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return False, None
        data = data[part]
    return True, data


def _type_problem(path: str, value, kind: tuple[str, tuple], nullable: bool) -> str | None:
    name, types = kind
    if value is None and nullable:
        return None
    if isinstance(value, types) and not isinstance(value, bool):
        return None
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return (f"malformed record: {path!r} is {type(value).__name__} ({shown}), expected {name}"
            + (" or null" if nullable else ""))


def check_result(data) -> str | None:
    """Why ``data`` is not a usable result record, or None. Names the first bad field."""
    if not isinstance(data, dict):
        return f"not a JSON object (got {type(data).__name__})"
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        return f"partial record: missing {', '.join(missing)}"
    for path, (kind, nullable) in FIELDS.items():
        present, value = _get(data, path)
        if present:
            problem = _type_problem(path, value, kind, nullable)
            if problem:
                return problem
    for key, value in data["metrics"].items():   # every metric is a number (NaN for a diverged run) or null
        problem = _type_problem(f"metrics.{key}", value, NUMBER, True)
        if problem:
            return problem
    return None


def load_results(runs_dir: str | Path) -> tuple[list[dict], list[Problem]]:
    """Every usable result under ``runs_dir`` (each with ``_path`` added), and what was skipped."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ConfigError(f"runs directory {str(runs_dir)!r} does not exist; give the folder `bench run --runs-dir` "
                          f"wrote to (default: runs)")
    results, problems = [], []
    for path, data, error in iter_results(runs_dir):
        if error:
            problems.append(Problem(str(path), f"unreadable ({error})"))
            continue
        reason = check_result(data)
        if reason:
            problems.append(Problem(str(path), reason))
            continue
        results.append({**data, "_path": str(path)})
    for path in sorted(runs_dir.rglob(".tmp-*")):
        problems.append(Problem(str(path), "stray temporary file from an interrupted write; ignored"))
    for path in sorted(runs_dir.rglob("config.json")):
        if not (path.parent / RESULT_FILE).exists() and path.parent.parent.parent.parent == runs_dir:
            problems.append(Problem(str(path.parent), "run folder without result.json (still running, or stopped)"))
    return results, problems


def run_dir(r: dict) -> Path:
    return Path(r["_path"]).parent


def load_diagnostics(r: dict) -> list[dict]:
    path = run_dir(r) / DIAGNOSTICS_FILE
    try:
        snapshots = json.loads(path.read_text()).get("snapshots", [])
        return [s for s in snapshots if isinstance(s, dict) and "error" not in s]
    except (OSError, ValueError, AttributeError):
        return []
