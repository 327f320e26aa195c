"""Reading the runs folder: every usable ``result.json``, what was skipped and why, and the
``diagnostics.json`` beside a result.

A corrupt or partial ``result.json`` and stray ``.tmp-*`` files are reported and skipped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.errors import ConfigError
from bench.results import RESULT_FILE

REQUIRED_KEYS = ("config", "status", "task", "model", "config_hash", "seed", "metrics")
DIAGNOSTICS_FILE = "diagnostics.json"


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


def check_result(data) -> str | None:
    """Why ``data`` is not a usable result record, or None."""
    if not isinstance(data, dict):
        return f"not a JSON object (got {type(data).__name__})"
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        return f"partial record: missing {', '.join(missing)}"
    for key in ("config", "metrics"):
        if not isinstance(data[key], dict):
            return f"malformed record: {key!r} is {type(data[key]).__name__}, expected an object"
    return None


def load_results(runs_dir: str | Path) -> tuple[list[dict], list[Problem]]:
    """Every usable result under ``runs_dir`` (each with ``_path`` added), and what was skipped."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ConfigError(f"runs directory {str(runs_dir)!r} does not exist; give the folder `bench run --runs-dir` "
                          f"wrote to (default: runs)")
    results, problems = [], []
    for path in sorted(runs_dir.rglob(RESULT_FILE)):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(Problem(str(path), f"unreadable ({type(exc).__name__}: {exc})"))
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
        return [s for s in json.loads(path.read_text()).get("snapshots", []) if "error" not in s]
    except (OSError, ValueError, AttributeError):
        return []
