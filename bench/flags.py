"""The flags of ``bench run`` and the RunConfig fields they set, in one table.

The table serves the parser (``bench run`` and a sweep's fixed part), the config built from the
parsed flags, the run settings a search space may sample, and the ``bench run`` line that
reproduces a config (``bench sweep best``). A flag's default is the RunConfig field's default.
Light on purpose: the CLI builds its parsers from it without importing torch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.config import DEVICES, SCALES, WANDB_MODES, RunConfig, parse_count
from bench.errors import ConfigError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def parse_model_options(items: list[str]) -> dict:
    """``["rho=10", "style=fft"]`` -> ``{"rho": 10, "style": "fft"}`` (values as JSON when they parse)."""
    options = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"malformed --model-opt {item!r}: expected KEY=VALUE, e.g. rho=10")
        key, value = item.split("=", 1)
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def _parse_opts(specs: list[str]) -> dict:
    from bench.optim import parse_opt

    return dict(parse_opt(spec) for spec in specs)


def _opts_argv(opts: dict) -> list[str]:
    from bench.optim import format_spec

    return [item for group, spec in opts.items() for item in ("--opt", f"{group}={format_spec(spec)}")]


def _model_options_argv(options: dict) -> list[str]:
    return [item for key, value in sorted(options.items()) for item in ("--model-opt", f"{key}={json.dumps(value)}")]


def _same(value):
    return value


def _value_argv(flag: str) -> Callable[[Any], list[str]]:
    return lambda value: [flag, repr(value) if isinstance(value, float) else str(value)]


@dataclass(frozen=True)
class Flag:
    flag: str                       # e.g. "--seq-len"
    field: str                      # the RunConfig field it sets
    help: str
    parse: dict = field(default_factory=dict)      # argparse keywords besides default and help
    to_config: Callable = _same     # parsed value -> field value
    sampled: bool = False           # a search space may sample the field (``run:`` in docs/sweeps.md)
    reproduce: bool = True          # in the command line that reproduces a run (``bench sweep best``)
    to_argv: Callable | None = None  # field value -> argv items (default: flag and value)

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    def default(self):
        f = next(f for f in dataclasses.fields(RunConfig) if f.name == self.field)
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default

    def argv(self, value) -> list[str]:
        return (self.to_argv or _value_argv(self.flag))(value)


OPT_HELP = ("optimizer, learning rate and options of one parameter group (repeatable), e.g. A=rmsprop:1e-4 or "
            "other=torch_adam:1e-3,betas=0.9/0.95 (tuples with /). Generic names (rmsprop, adam, ...) mean the "
            "update rule of the model's reference code (scuRNN's A: the authors' NumPy update; scoRNN, LSTM, "
            "EURNN, scuRNN's D and other: TF1; urnn, fcurnn: Theano; others: PyTorch's); `bench list` shows "
            "every name")

RUN_FLAGS = (
    Flag("--seed", "seed", "seed for initialisation and batching", {"type": nonneg_int}, sampled=True),
    Flag("--hidden", "n_hidden", "hidden size n; overrides --params and the paper's size", {"type": positive_int},
         sampled=True),
    Flag("--params", "params", "parameter budget, e.g. 16k or 16000: picks the hidden size closest to it",
         to_config=lambda v: parse_count(v) if v else None, sampled=True),
    Flag("--seq-len", "seq_len", "sequence length T (copying, adding)", {"type": positive_int}, sampled=True),
    Flag("--batch-size", "batch_size", "training batch size (default: the task's)", {"type": positive_int},
         sampled=True),
    Flag("--max-steps", "max_steps", "number of optimizer steps (batches)", {"type": positive_int}, sampled=True),
    Flag("--max-epochs", "max_epochs", "number of epochs (used when --max-steps is not given)",
         {"type": positive_int}, sampled=True),
    Flag("--val-every", "val_every", "validate every this many steps", {"type": positive_int}, sampled=True),
    Flag("--opt", "opts", OPT_HELP, {"action": "append", "metavar": "GROUP=OPT:LR[,KEY=VALUE...]"},
         to_config=_parse_opts, to_argv=_opts_argv),
    Flag("--grad-clip", "grad_clip", "clip the global gradient norm (default: none, as the paper)", {"type": float},
         sampled=True),
    Flag("--scale", "scale", "quick: CPU-sized defaults (minutes); paper: the paper's length and training budget",
         {"choices": SCALES}, sampled=True),
    Flag("--data-dir", "data_dir", "folder with the task's data files (mnist, pmnist, timit, speech)"),
    Flag("--data-seed", "data_seed", "seed of the synthetic data and the data splits", {"type": nonneg_int},
         sampled=True),
    Flag("--model-opt", "model_options", "model option, e.g. rho=10 for scornn (repeatable; value parsed as JSON "
         "if it can be)", {"action": "append", "metavar": "KEY=VALUE"}, to_config=parse_model_options,
         to_argv=_model_options_argv),
    Flag("--device", "device", "device (auto: chosen by Lightning)", {"choices": DEVICES}),
    Flag("--runs-dir", "runs_dir", "where run folders and result.json files go"),
    Flag("--wandb", "wandb", "W&B mode; auto = online only if you configured W&B, offline otherwise",
         {"choices": WANDB_MODES}, reproduce=False),
    Flag("--quiet", "quiet", "no progress bar or model summary", {"action": "store_true"}, reproduce=False),
    Flag("--track-test", "track_test", "also evaluate the test split at every validation, for the paper's 'best "
         "test accuracy over epochs' (default: on with --scale paper for mnist/pmnist)", {"action": "store_true"},
         reproduce=False),
    Flag("--threads", "threads", "torch CPU threads (default: OMP_NUM_THREADS if set, else 1 for CPU training: on "
         "2 cores, 2 threads were up to 1.6x faster only while no other process ran and 1.3-7x slower when one "
         "did; result.json records the count and why)", {"type": positive_int}, reproduce=False),
)
# RunConfig fields a search space may sample (besides per-group optimizers), plus "model_options.KEY"
SAMPLED_FIELDS = tuple(f.field for f in RUN_FLAGS if f.sampled)


def add_run_arguments(p: argparse.ArgumentParser, *, model_required: bool = True, task_required: bool = True) -> None:
    """The flags of ``bench run``, also a sweep's fixed part."""
    p.add_argument("--model", required=model_required, help="model name (see `bench list`)")
    p.add_argument("--task", required=task_required, help="task name (see `bench list`)")
    for f in RUN_FLAGS:
        default = f.default()
        if f.parse.get("action") == "append":
            default = []                        # argparse appends to the default list itself
        unset = default is None or default is False or default == []
        shown = "" if unset or "default" in f.help else f" (default {default})"
        p.add_argument(f.flag, default=default, help=f.help + shown, **f.parse)


def config_from_args(args) -> RunConfig:
    return RunConfig(model=args.model, task=args.task,
                     **{f.field: f.to_config(getattr(args, f.dest)) for f in RUN_FLAGS})


def run_command(config: dict) -> list[str]:
    """``bench run`` argv that reproduces a config (same config hash): the model, the task, the
    seed and hidden size, and every other flag of the run whose value is not its default."""
    argv = ["bench", "run", "--model", config["model"], "--task", config["task"]]
    for f in RUN_FLAGS:
        value = config.get(f.field, f.default())
        if f.reproduce and value is not None and (f.field in ("seed", "n_hidden") or value != f.default()):
            argv += f.argv(value)
    return argv
