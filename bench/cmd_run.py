"""``bench run`` and ``bench list``."""
from __future__ import annotations

import argparse
import json

from bench.config import DEVICES, SCALES, WANDB_MODES, RunConfig, parse_count
from bench.errors import ConfigError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def add_run_arguments(p: argparse.ArgumentParser, *, model_required: bool = True, task_required: bool = True) -> None:
    """Flags shared by ``bench run`` and ``bench sweep`` (a sweep's fixed part)."""
    p.add_argument("--model", required=model_required, help="model name (see `bench list`)")
    p.add_argument("--task", required=task_required, help="task name (see `bench list`)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed for initialisation and batching (default 0)")
    p.add_argument("--hidden", type=_positive_int, help="hidden size n; overrides --params and the paper's size")
    p.add_argument("--params", help="parameter budget, e.g. 16k or 16000: picks the hidden size closest to it")
    p.add_argument("--seq-len", type=_positive_int, help="sequence length T (copying, adding)")
    p.add_argument("--batch-size", type=_positive_int, help="training batch size (default: the task's)")
    p.add_argument("--max-steps", type=_positive_int, help="number of optimizer steps (batches)")
    p.add_argument("--max-epochs", type=_positive_int, help="number of epochs (used when --max-steps is not given)")
    p.add_argument("--val-every", type=_positive_int, help="validate every this many steps")
    p.add_argument("--opt", action="append", default=[], metavar="GROUP=OPT:LR[,KEY=VALUE...]",
                   help="optimizer, learning rate and options of one parameter group (repeatable), e.g. "
                        "A=rmsprop:1e-4 or other=torch_adam:1e-3,betas=0.9/0.95 (tuples with /). "
                        "Generic names (rmsprop, adam, ...) mean the update rule of the model's reference "
                        "code (scuRNN's A: the authors' NumPy update; scoRNN, LSTM, EURNN, scuRNN's D and "
                        "other: TF1; urnn, fcurnn: Theano; others: PyTorch's); `bench list` shows every name")
    p.add_argument("--grad-clip", type=float, help="clip the global gradient norm (default: none, as the paper)")
    p.add_argument("--scale", choices=SCALES, default="quick",
                   help="quick: CPU-sized defaults (minutes); paper: the paper's length and training budget")
    p.add_argument("--data-dir", help="folder with the task's data files (mnist, pmnist, timit, speech)")
    p.add_argument("--data-seed", type=_nonneg_int, default=RunConfig.data_seed,
                   help=f"seed of the synthetic data and the data splits (default {RunConfig.data_seed})")
    p.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. rho=10 for scornn (repeatable; value parsed as JSON if it can be)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="device (default: auto, chosen by Lightning)")
    p.add_argument("--runs-dir", default="runs", help="where run folders and result.json files go (default: runs)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="auto",
                   help="W&B mode; auto = online only if you configured W&B, offline otherwise")
    p.add_argument("--quiet", action="store_true", help="no progress bar or model summary")
    p.add_argument("--track-test", action="store_true", default=None,
                   help="also evaluate the test split at every validation, for the paper's 'best test accuracy "
                        "over epochs' (default: on with --scale paper for mnist/pmnist)")
    p.add_argument("--threads", type=_positive_int,
                   help="torch CPU threads (default: torch's, or OMP_NUM_THREADS); 1 is often fastest for "
                        "small recurrent models and on shared machines")


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


def config_from_args(args) -> RunConfig:
    from bench.optim import parse_opt

    opts = dict(parse_opt(spec) for spec in args.opt)
    model_options = parse_model_options(args.model_opt)
    return RunConfig(
        model=args.model, task=args.task, seed=args.seed, n_hidden=args.hidden,
        params=parse_count(args.params) if args.params else None, seq_len=args.seq_len,
        batch_size=args.batch_size, max_steps=args.max_steps, max_epochs=args.max_epochs,
        val_every=args.val_every, opts=opts, grad_clip=args.grad_clip, scale=args.scale,
        data_dir=args.data_dir, data_seed=args.data_seed, model_options=model_options, device=args.device,
        runs_dir=args.runs_dir, wandb=args.wandb, quiet=args.quiet, threads=args.threads,
        track_test=args.track_test,
    )


def cmd_run(args) -> int:
    from bench.config import resolve
    from bench.optim import format_spec
    from bench.run import EXIT_DIVERGED, EXIT_PREEMPTED, load_resume_config, run

    if args.resume:
        cfg = load_resume_config(args.resume)
        for key, value in _resume_overrides(args).items():
            setattr(cfg, key, value)
        print(f"bench run: resuming {args.resume}")
        result = run(cfg, resume_dir=args.resume)
        return _report(result, EXIT_DIVERGED, EXIT_PREEMPTED)
    if not args.model or not args.task:
        raise ConfigError("bench run needs --model and --task (or --resume RUN_DIR); see `bench list`")
    cfg = resolve(config_from_args(args))
    if not cfg.quiet:
        opts = ", ".join(f"{g}={format_spec(spec)}" for g, spec in cfg.opts.items())
        print(f"bench run: {cfg.model} on {cfg.task} (n={cfg.n_hidden}, T={cfg.seq_len}, batch={cfg.batch_size}, "
              f"steps={cfg.max_steps}, {opts}; settings: {cfg.paper_source or 'harness defaults'})")
    result = run(cfg)
    return _report(result, EXIT_DIVERGED, EXIT_PREEMPTED)


# What a resumed run may be told anew: how and where it runs, never what it computes.
RESUME_FLAGS = ("quiet", "device", "threads", "wandb", "data_dir")


def _resume_overrides(args) -> dict:
    """The flags given with --resume that it may take; any other is refused, naming it."""
    parser = argparse.ArgumentParser(add_help=False)
    add_run_arguments(parser, model_required=False, task_required=False)
    defaults = vars(parser.parse_args([]))
    given = {k: getattr(args, k) for k in defaults if getattr(args, k) != defaults[k]}
    refused = [k for k in given if k not in RESUME_FLAGS]
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        raise ConfigError(f"--resume {args.resume} continues that run exactly as it started; {flags} would change "
                          f"what it computes. Drop {'it' if len(refused) == 1 else 'them'}, or start a new run "
                          f"(the same flags without --resume); flags a resume takes: "
                          f"{', '.join('--' + k.replace('_', '-') for k in RESUME_FLAGS)}")
    return given


def _report(result: dict, exit_diverged: int, exit_preempted: int) -> int:
    if result["status"] in ("preempted", "interrupted"):
        print(f"bench run: {result['status']} at step {result['step']}; checkpoint saved. Continue with: "
              f"{result['resume']}")
        return exit_preempted
    m = result["metrics"]
    shown = {k: m[k] for k in sorted(m) if k.startswith(("test_", "best_val", "final_train", "first_step"))}
    print(f"status: {result['status']}  params: {result['n_params']}  "
          + "  ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in shown.items()))
    print(f"result: {result['run_dir']}/result.json")
    if result["status"] == "diverged":
        print(f"bench run: {result['error']}")
        return exit_diverged
    return 0


def cmd_list(args) -> int:
    from bench.models import MODELS
    from bench.optim import GENERIC, OPTIMIZERS
    from bench.tasks import TASKS

    print("models:")
    for name in sorted(MODELS):
        cls = MODELS[name]
        print(f"  {name:<9} {cls.description}  [{cls.paper}]")
    print("tasks:")
    for name in sorted(TASKS):
        print(f"  {name:<9} {TASKS[name].description}")
    print(f"optimizers (--opt GROUP=NAME:LR; {', '.join(GENERIC)} mean the model's reference rule):")
    for name in sorted(OPTIMIZERS):
        print(f"  {name:<15} {OPTIMIZERS[name].semantics}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="train one model on one task and write result.json",
                       description="Train one model on one task, evaluate on the test split, write result.json.")
    add_run_arguments(p, model_required=False, task_required=False)
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a preempted or killed run from its checkpoint, in its own folder")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("list", help="models, tasks and optimizers, one line each")
    p.set_defaults(func=cmd_list)
