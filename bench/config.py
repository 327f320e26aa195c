"""The run configuration: one validated object per run, resolved from defaults, the paper's
settings table and user overrides (in that order), before any work starts."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from bench.errors import ConfigError, UnknownNameError
from bench.paper import anchor_budget, paper_setting

# The model, task and optimizer registries (torch, Lightning) are imported where a config is
# resolved, not here: every command's parser reads this module's choices, and `bench --help`
# must not wait seconds for torch.

SCALES = ("quick", "paper")
WANDB_MODES = ("auto", "online", "offline", "disabled")
DEVICES = ("auto", "cpu", "gpu", "cuda", "mps")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. ``None`` means "resolve from the defaults".

    Immutable: ``resolve`` returns a new, resolved config and a changed copy is made with
    ``dataclasses.replace`` (``cfg.with_(...)``), so no caller's config changes under it."""

    model: str
    task: str
    seed: int = 0
    n_hidden: int | None = None
    params: int | None = None               # parameter budget; picks n_hidden if n_hidden is None
    seq_len: int | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    max_epochs: int | None = None
    val_every: int | None = None            # validate every this many training steps
    opts: dict[str, list] = field(default_factory=dict)   # group -> [optimizer, lr] or [optimizer, lr, {options}]
    grad_clip: float | None = None          # one global norm; the references use none
    scale: str = "quick"                    # "quick" (CPU minutes) or "paper" (the paper's protocol)
    data_dir: str | None = None
    # = tasks.base.DEFAULT_DATA_SEED (a test checks; importing it here would pull in torch)
    data_seed: int = 5544
    model_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    runs_dir: str = "runs"
    wandb: str = "auto"
    quiet: bool = False
    threads: int | None = None              # torch intra-op threads; None = torch's default
    track_test: bool | None = None          # evaluate the test split at every validation (paper's MNIST number)
    tags: dict[str, Any] = field(default_factory=dict)    # e.g. sweep study and trial number
    # filled in by resolve()
    resolved: bool = False
    paper_source: str | None = None
    fallback: str | None = None             # what stood in for a missing paper row, said on stderr too
    optimizers: dict[str, dict] = field(default_factory=dict)   # group -> every hyperparameter (optim.describe)

    def with_(self, **changes) -> "RunConfig":
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # -- identity ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def group_key(self) -> dict:
        """The fields that define *what* was run: everything but seed and bookkeeping."""
        skip = {"seed", "device", "runs_dir", "wandb", "quiet", "threads", "track_test", "tags", "resolved", "paper_source",
                "data_dir", "fallback", "optimizers"}
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def config_hash(self) -> str:
        blob = json.dumps(self.group_key(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**data)


def parse_count(text: str | int) -> int:
    """``"16k"`` -> 16000, ``"1.2M"`` -> 1200000, ``"16000"`` -> 16000."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise ConfigError(f"malformed parameter budget {text!r}: expected a number like 16000, 16k or 1.2M")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]
    if value < 1:
        raise ConfigError(f"parameter budget must be positive, got {text!r}")
    return int(round(value))


def _positive(cfg: RunConfig, name: str, allow_zero: bool = False):
    value = getattr(cfg, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")


def resolve(cfg: RunConfig) -> RunConfig:
    """A new config with every ``None`` field validated and filled (``cfg`` is left as it was).
    Raises a ``BenchError`` naming the bad value."""
    from bench.models import get_model_class
    from bench.tasks import get_task_class

    model_cls = get_model_class(cfg.model)
    task_cls = get_task_class(cfg.task)
    if cfg.scale not in SCALES:
        raise ConfigError(f"unknown scale {cfg.scale!r}; known scales: {', '.join(SCALES)}")
    if cfg.wandb not in WANDB_MODES:
        raise ConfigError(f"unknown W&B mode {cfg.wandb!r}; known modes: {', '.join(WANDB_MODES)}")
    if cfg.device not in DEVICES:
        raise ConfigError(f"unknown device {cfg.device!r}; known devices: {', '.join(DEVICES)}")
    for name in ("n_hidden", "params", "seq_len", "batch_size", "max_steps", "max_epochs", "val_every", "threads"):
        _positive(cfg, name)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {cfg.seed!r}")
    if cfg.grad_clip is not None and not cfg.grad_clip > 0:
        raise ConfigError(f"--grad-clip must be positive, got {cfg.grad_clip!r}")

    new = dataclasses.asdict(cfg)          # a deep copy: filled in here, frozen at the end
    scale_defaults = task_cls.paper_scale if cfg.scale == "paper" else task_cls.defaults
    if new["seq_len"] is None and task_cls.uses_seq_len:
        new["seq_len"] = scale_defaults.get("seq_len")
    task = task_cls(seq_len=new["seq_len"], data_dir=cfg.data_dir, data_seed=cfg.data_seed)
    for key in ("batch_size", "val_every"):
        if new[key] is None:
            new[key] = scale_defaults.get(key)
    if cfg.max_steps is None and cfg.max_epochs is None:
        new["max_steps"] = scale_defaults.get("max_steps")
        new["max_epochs"] = scale_defaults.get("max_epochs")

    if cfg.track_test is None:
        new["track_test"] = task_cls.reports_best_test and cfg.scale == "paper"
    row = paper_setting(cfg.model, cfg.task, new["seq_len"])
    new["paper_source"] = row.source if row else None
    model_cls.validate_options(**cfg.model_options)
    options = new["model_options"] = {**(row.options if row else {}), **cfg.model_options}
    if cfg.n_hidden is None:
        if cfg.params is not None:
            new["n_hidden"] = _hidden_within_budget(model_cls, cfg.params, task, options)
        elif row is not None:
            new["n_hidden"] = row.n_hidden
        else:
            new["n_hidden"], new["fallback"] = _matched_hidden(model_cls, cfg.task, new["seq_len"], task, options)
    if row is None and new["fallback"] is None:
        new["fallback"] = (f"no paper row for {cfg.model} on {cfg.task}{_at_length(new['seq_len'])}: "
                           f"hidden size from the command line, optimizers from the model's defaults")
    model_cls.check_hidden(new["n_hidden"], **options)

    new["opts"], new["optimizers"] = _resolve_opts(cfg, model_cls, row, options)
    new["resolved"] = True
    return RunConfig(**new)


# --params N trains the valid size closest to N; further off than this, it is another experiment
BUDGET_TOLERANCE = 0.10


def _hidden_within_budget(model_cls, budget: int, task, options: dict) -> int:
    n = model_cls.hidden_for_budget(budget, task.d_input, task.d_output, **options)
    count = model_cls.param_count(n, task.d_input, task.d_output, **options)
    if abs(count - budget) > BUDGET_TOLERANCE * budget:
        raise ConfigError(f"--params {budget}: the closest {model_cls.name} on {task.name} has {count} parameters "
                          f"(n={n}), {abs(count - budget) / budget:.0%} off; give a budget within "
                          f"{BUDGET_TOLERANCE:.0%} of a size it can have (see `bench params --task {task.name}`) "
                          f"or --hidden")
    return n


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(options.items()))


def _at_length(seq_len) -> str:
    return f" at T={seq_len}" if seq_len is not None else ""


def _matched_hidden(model_cls, task_name, seq_len, task, options) -> tuple[int, str]:
    """No paper row for this model: match the parameter count of scuRNN's paper setting.
    Returns the hidden size and the sentence that says so."""
    missing = f"no paper row for {model_cls.name} on {task_name}{_at_length(seq_len)}"
    matched = anchor_budget(task_name, seq_len, task.d_input, task.d_output)
    if matched is None:
        return model_cls.default_hidden, f"{missing}: the model's default hidden size n={model_cls.default_hidden}"
    budget, anchor = matched
    n = model_cls.hidden_for_budget(budget, task.d_input, task.d_output, **options)
    return n, (f"{missing}: n={n} matched to scuRNN's paper budget ({budget} parameters, {anchor.source}); "
               f"optimizers from the model's defaults")


def _resolve_opts(cfg: RunConfig, model_cls, row, model_options: dict) -> tuple[dict, dict]:
    """Per group: the paper row's spec (else the model's default), overridden by the user's;
    generic names resolved to the model's reference rules. Returns (specs, descriptions)."""
    from bench.optim import describe, make_spec, resolve_name, split_spec

    groups = model_cls.groups_for(**model_options)
    specs = {g: list(v) for g, v in (row.opts.items() if row else model_cls.default_opts.items()) if g in groups}
    for group, spec in cfg.opts.items():
        if group not in groups:
            built = "" if groups == model_cls.groups else f" built with {_options_text(model_options)}"
            raise UnknownNameError(
                f"unknown parameter group {group!r} for model {cfg.model}{built}; its groups are: {', '.join(groups)}"
            )
        specs[group] = make_spec(*split_spec(spec))     # split_spec refuses a non-positive rate
    for group in groups:
        specs.setdefault(group, list(model_cls.default_opts.get(group, ("adam", 1e-3))))
    resolved, described = {}, {}
    for group in groups:
        family = model_cls.semantics_for(group)
        name, lr, options = split_spec(specs[group])
        described[group] = describe(specs[group], family)
        resolved[group] = make_spec(resolve_name(name, family), lr, options)
    for group, allowed in model_cls.manifold_groups.items():
        if resolved[group][0] not in allowed:
            raise ConfigError(f"group {group!r} of {cfg.model} is updated on its manifold: its optimizer must be "
                              f"one of {', '.join(allowed)}, got {specs[group][0]!r}")
    return resolved, described
