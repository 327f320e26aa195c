"""Search spaces: YAML data (``sweeps/``, format in docs/sweeps.md) checked at load time, the
grid's points, and one trial's point applied to the base RunConfig."""
from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

from bench.errors import BenchError
from bench.flags import SAMPLED_FIELDS
from bench.sweep.errors import SpaceError


SAMPLERS = ("grid", "tpe")
SPACE_KEYS = ("name", "description", "source", "groups", "run", "pruner")
PRUNER_KEYS = ("n_startup_trials", "n_warmup_steps", "interval_steps")


def builtin_spaces() -> list[str]:
    from importlib.resources import files

    return sorted(p.name[:-5] for p in files("bench.sweeps").iterdir() if p.name.endswith(".yaml"))


def load_space(spec: str) -> dict:
    """A built-in space name (``appendix-a3``) or a YAML path -> the validated space dict."""
    import yaml
    from importlib.resources import files

    if spec.endswith((".yaml", ".yml")) or os.sep in spec or Path(spec).is_file():
        path = Path(spec)
        if not path.is_file():
            raise SpaceError(f"search space file {spec!r} does not exist")
        text, origin = path.read_text(), str(path)
    else:
        res = files("bench.sweeps").joinpath(f"{spec}.yaml")
        if not res.is_file():
            raise SpaceError(f"unknown search space {spec!r}; built-in spaces: {', '.join(builtin_spaces())} "
                             f"(or give the path of a YAML file)")
        text, origin = res.read_text(), spec
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpaceError(f"search space {origin}: not valid YAML: {exc}") from None
    return validate_space(data, origin)


def _number(value, where: str) -> float:
    # PyYAML reads "1e-3" (no dot) as a string; accept it as the number it means.
    if isinstance(value, bool):
        raise SpaceError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpaceError(f"{where}: expected a number, got {value!r}") from None


def _axis(spec, where: str, *, numeric: bool, positive: bool = False):
    """A list of choices, or a range ``{low, high[, log][, step]}``; returns the normalised form."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"low", "high", "log", "step"})
        if unknown or "low" not in spec or "high" not in spec:
            raise SpaceError(f"{where}: a range needs keys low and high (optional: log, step); "
                             f"got keys {sorted(spec)}")
        low, high = _number(spec["low"], f"{where}.low"), _number(spec["high"], f"{where}.high")
        log, step = spec.get("log", False), spec.get("step")
        if not isinstance(log, bool):
            raise SpaceError(f"{where}.log: expected true or false, got {log!r}")
        if not low <= high:
            raise SpaceError(f"{where}: low ({low}) must not exceed high ({high})")
        if (log or positive) and not low > 0:
            raise SpaceError(f"{where}: low must be positive{' for a log range' if log else ''}, got {low}")
        out = {"low": low, "high": high, "log": log}
        if step is not None:
            out["step"] = _number(step, f"{where}.step")
            if log:
                raise SpaceError(f"{where}: a range cannot have both log and step")
        return out
    if not isinstance(spec, list) or not spec:
        raise SpaceError(f"{where}: expected a non-empty list of values or a range {{low, high}}, got {spec!r}")
    values = []
    for i, v in enumerate(spec):
        if numeric:
            v = _number(v, f"{where}[{i}]")
            if positive and not v > 0:
                raise SpaceError(f"{where}[{i}]: must be positive, got {v!r}")
        elif not isinstance(v, (str, int, float, bool)):
            raise SpaceError(f"{where}[{i}]: expected a number or a string, got {v!r}")
        values.append(v)
    if len(set(map(repr, values))) != len(values):
        raise SpaceError(f"{where}: duplicate values in {values}")
    return values


def validate_space(data, origin: str = "space") -> dict:
    """Check every key at load time; errors name the bad key and what is allowed."""
    from bench.optim import known_optimizers

    known = known_optimizers()
    if not isinstance(data, dict):
        raise SpaceError(f"search space {origin}: expected a mapping with keys {', '.join(SPACE_KEYS)}")
    unknown = sorted(set(data) - set(SPACE_KEYS))
    if unknown:
        raise SpaceError(f"search space {origin}: unknown key(s) {unknown}; allowed keys: {', '.join(SPACE_KEYS)}")
    space = {"name": str(data.get("name") or Path(origin).stem), "description": str(data.get("description", "")),
             "groups": {}, "run": {}, "pruner": {}}
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise SpaceError(f"search space {origin}: 'groups' must map group names (or \"*\") to {{opt, lr}}")
    for g, spec in groups.items():
        where = f"{origin}: groups.{g}"
        if not isinstance(spec, dict) or sorted(spec) != ["lr", "opt"]:
            raise SpaceError(f"{where}: expected exactly the keys opt and lr, got "
                             f"{sorted(spec) if isinstance(spec, dict) else spec!r}")
        opts = _axis(spec["opt"], f"{where}.opt", numeric=False)
        if isinstance(opts, dict):
            raise SpaceError(f"{where}.opt: expected a list of optimizer names, got a range")
        for i, name in enumerate(opts):
            if str(name).lower() not in known:
                raise SpaceError(f"{where}.opt[{i}]: unknown optimizer {name!r}; known optimizers: "
                                 f"{', '.join(sorted(known))}")
        space["groups"][str(g)] = {"opt": [str(o).lower() for o in opts],
                                   "lr": _axis(spec["lr"], f"{where}.lr", numeric=True, positive=True)}
    run = data.get("run") or {}
    if not isinstance(run, dict):
        raise SpaceError(f"search space {origin}: 'run' must map run settings to lists or ranges")
    for key, spec in run.items():
        where = f"{origin}: run.{key}"
        if key not in SAMPLED_FIELDS and not (key.startswith("model_options.") and len(key) > 14):
            raise SpaceError(f"{where}: unknown run setting {key!r}; allowed: {', '.join(SAMPLED_FIELDS)}, "
                             f"model_options.KEY")
        numeric = key not in ("scale", "params") and not key.startswith("model_options.")
        space["run"][key] = _axis(spec, where, numeric=numeric)
    if "n_hidden" in space["run"] and "params" in space["run"]:
        raise SpaceError(f"search space {origin}: run.n_hidden and run.params both choose the hidden size; keep one")
    pruner = data.get("pruner") or {}
    if not isinstance(pruner, dict) or sorted(set(pruner) - set(PRUNER_KEYS)):
        raise SpaceError(f"search space {origin}: 'pruner' allows the keys {', '.join(PRUNER_KEYS)}; got "
                         f"{sorted(pruner) if isinstance(pruner, dict) else pruner!r}")
    for key, value in pruner.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SpaceError(f"{origin}: pruner.{key} must be a non-negative integer, got {value!r}")
    space["pruner"] = dict(pruner)
    if not space["groups"] and not space["run"]:
        raise SpaceError(f"search space {origin}: it has no axes (give 'groups' and/or 'run')")
    return space


def space_for_model(space: dict, model: str) -> dict:
    """Expand ``"*"`` to every group of ``model``; a named group the model lacks is an error.

    The error is deliberate: a space that names groups (``appendix-a3`` names A and D) is an
    experiment about those groups, and silently gridding fewer of them would be another one.
    """
    from bench.models import get_model_class

    model_groups = get_model_class(model).groups
    named = {g: s for g, s in space["groups"].items() if g != "*"}
    missing = [g for g in named if g not in model_groups]
    if missing:
        fits = ", ".join(fitting_spaces(model_groups)) or "none"
        raise SpaceError(f"search space {space['name']!r} names parameter group{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(repr, missing))}, but model {model} has the groups {', '.join(model_groups)}; "
                         f"built-in spaces that fit {model}: {fits} (or write a YAML naming its groups, docs/sweeps.md)")
    # "*" skips groups whose update is part of the model (fcurnn's unitary W keeps its Cayley step)
    manifold = getattr(get_model_class(model), "manifold_groups", {})
    groups = {g: named.get(g, None if g in manifold else space["groups"].get("*")) for g in model_groups}
    return {**space, "groups": {g: s for g, s in groups.items() if s is not None}}


def fitting_spaces(model_groups) -> list[str]:
    """The built-in spaces whose named groups all exist in ``model_groups``."""
    fits = []
    for name in builtin_spaces():
        try:
            named = set(load_space(name)["groups"]) - {"*"}
        except SpaceError:
            continue
        if named <= set(model_groups):
            fits.append(name)
    return fits


def fixed_text(fixed: dict) -> str:
    from bench.optim import format_spec

    return ", ".join(f"{g}={format_spec(spec)}" for g, spec in fixed.items())


def fixed_groups(space: dict, resolved) -> dict:
    """The groups a space leaves alone, with the optimizer each trial keeps for them (from
    ``--opt``, the paper's row or the model's default, as resolve() chose)."""
    return {g: list(v) for g, v in resolved.opts.items() if g not in space["groups"]}


def is_range(spec) -> bool:
    return isinstance(spec, dict)


def grid_axes(space: dict, sampler: str) -> list[tuple[str, list]]:
    """(trial parameter name, values) per axis, in a fixed order. Grid names are flat."""
    axes = []
    for g, s in space["groups"].items():
        axes.append((f"{g}.opt", s["opt"]))
        axes.append((f"{g}.lr", s["lr"]))
    axes += list(space["run"].items())
    if sampler == "grid":
        for name, values in axes:
            if is_range(values):
                raise SpaceError(f"search space {space['name']!r}: axis {name} is a range; the grid sampler needs "
                                 f"a list of values (use --sampler tpe for ranges)")
    return axes


def grid_points(space: dict) -> list[dict]:
    axes = grid_axes(space, "grid")
    names = [n for n, _ in axes]
    return [dict(zip(names, combo)) for combo in itertools.product(*[v for _, v in axes])]


def grid_size(space: dict) -> int:
    return math.prod(len(v) for _, v in grid_axes(space, "grid"))


def point_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _suggest(trial, name: str, spec):
    if not is_range(spec):
        return trial.suggest_categorical(name, spec)
    low, high, log, step = spec["low"], spec["high"], spec["log"], spec.get("step")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step or 1)):
        return trial.suggest_int(name, low, high, step=step or 1, log=log)
    return trial.suggest_float(name, float(low), float(high), step=step, log=log)


def apply_overrides(base, values: dict, space: dict):
    """A copy of the base RunConfig with one point of the space applied."""
    from bench.config import parse_count

    changes = {"opts": {g: list(v) for g, v in base.opts.items()}, "model_options": dict(base.model_options)}
    for g in space["groups"]:
        opt = values[f"{g}.opt"]
        lr = values[f"{g}.lr"] if f"{g}.lr" in values else values[f"{g}.{opt}.lr"]
        changes["opts"][g] = [opt, float(lr)]
    for key in space["run"]:
        value = values[key]
        if key.startswith("model_options."):
            changes["model_options"][key.split(".", 1)[1]] = value
        elif key == "params":
            changes["params"] = parse_count(value)
            changes["n_hidden"] = None   # otherwise a --hidden in the base would win silently
        else:
            changes[key] = value
    return base.with_(**changes)


def sample_point(trial, space: dict, sampler: str) -> dict:
    """Ask the trial for one point. TPE learning rates are conditional on the optimizer."""
    values = {}
    for g, s in space["groups"].items():
        opt = values[f"{g}.opt"] = trial.suggest_categorical(f"{g}.opt", s["opt"])
        name = f"{g}.lr" if sampler == "grid" else f"{g}.{opt}.lr"
        values[name] = _suggest(trial, name, s["lr"])
    for key, spec in space["run"].items():
        values[key] = _suggest(trial, key, spec)
    return values


def check_run_axes(space: dict, base) -> None:
    """Resolve the base with every listed value of the run axes and every optimizer of each
    group, so a bad value (say an optimizer a manifold group refuses) fails now, not mid-sweep."""
    from bench.config import resolve

    lists = [(k, v) for k, v in space["run"].items() if not is_range(v)]
    first = {f"{g}.opt": s["opt"][0] for g, s in space["groups"].items()}
    first.update({f"{g}.lr": (s["lr"][0] if not is_range(s["lr"]) else s["lr"]["low"])
                  for g, s in space["groups"].items()})
    first.update({k: (v["low"] if is_range(v) else v[0]) for k, v in space["run"].items()})

    def check(point: dict, shown: list[str]) -> None:
        try:
            resolve(apply_overrides(base, point, space))
        except BenchError as exc:
            text = ", ".join(f"{k}={point[k]!r}" for k in shown)
            raise SpaceError(f"search space {space['name']!r}: the point {text} is not a valid run: {exc}") \
                from None

    for combo in itertools.islice(itertools.product(*[v for _, v in lists]), 1000):
        check({**first, **dict(zip([k for k, _ in lists], combo))}, [k for k, _ in lists])
    for g, s in space["groups"].items():
        for opt in s["opt"][1:]:
            check({**first, f"{g}.opt": opt}, [f"{g}.opt"])
