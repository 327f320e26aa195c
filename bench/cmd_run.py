"""``bench run`` and ``bench list``."""
from __future__ import annotations

import argparse

from bench.errors import ConfigError
from bench.flags import add_run_arguments, config_from_args


def cmd_run(args) -> int:
    from bench.config import resolve
    from bench.optim import format_spec
    from bench.preemption import load_resume_config
    from bench.results import EXIT_DIVERGED, EXIT_PREEMPTED
    from bench.run import run

    if args.resume:
        cfg = load_resume_config(args.resume).with_(**_resume_overrides(args))
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
    from bench.catalog import generic_optimizers, registered   # the registries' facts, read without torch

    models, tasks, optimizers = registered("models"), registered("tasks"), registered("optimizers")
    print("models:")
    for name in sorted(models):
        print(f"  {name:<9} {models[name]['description']}  [{models[name]['paper']}]")
    print("tasks:")
    for name in sorted(tasks):
        print(f"  {name:<9} {tasks[name]['description']}")
    print(f"optimizers (--opt GROUP=NAME:LR; {', '.join(generic_optimizers())} mean the model's reference rule):")
    for name in sorted(optimizers):
        print(f"  {name:<15} {optimizers[name]['semantics']}")
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
