"""``bench check-model``: run the model conformance kit (:mod:`bench.conformance`, imported when
the command runs, so that `bench --help` does not wait for torch) and print one line per check.

    bench check-model scurnn lstm
    bench check-model --all

Exit code 0 when every check passes or does not apply ("n/a"), 1 when one fails; an unknown
model name is the usual one-line error (exit 2).
"""
from __future__ import annotations

from bench.errors import ConfigError


def format_check(model: str, check, width: int, verbose: bool = False) -> str:
    """``scurnn  unitary       ok    1.2e-07 after 100 steps``; a failure or an n/a adds its detail."""
    line = f"{model:<{width}}  {check.name:<13} {check.status:<5} {check.figure}"
    if check.detail and (verbose or check.passed is not True):
        line += f"  ({check.detail})"
    return line


def cmd_check(args) -> int:
    import torch

    from bench.conformance import check_model
    from bench.models import MODELS, get_model_class

    if args.all and args.names:
        raise ConfigError("give model names or --all, not both")
    if not args.all and not args.names:
        raise ConfigError(f"name one or more models, or --all; known models: {', '.join(sorted(MODELS))}")
    names = sorted(MODELS) if args.all else list(dict.fromkeys(args.names))
    for name in names:
        get_model_class(name)                            # unknown names fail before any work
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
    torch.set_num_threads(args.threads or 1)             # the checks' models are tiny: one thread is fastest
    width = max(len(name) for name in names)
    failed, counts = [], {"ok": 0, "n/a": 0, "FAIL": 0}
    for name in names:
        for check in check_model(name, quick=args.quick):
            print(format_check(name, check, width, args.verbose), flush=True)
            counts[check.status] += 1
            if check.passed is False:
                failed.append(f"{name} {check.name}")
    total = sum(counts.values())
    summary = (f"{len(names)} model{'s' if len(names) != 1 else ''}, {total} checks: {counts['ok']} ok, "
               f"{counts['n/a']} n/a, {counts['FAIL']} failed")
    print(summary + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


def register(sub) -> None:
    p = sub.add_parser("check-model", help="run the model conformance kit on registered models",
                       description="Cheap checks of a model against the model contract (models/base.py): "
                                   "parameter counts, groups, output shapes, unitarity under training, fast path "
                                   "against the step loop, gradients against finite differences, determinism, "
                                   "budget matching and every task's loss. Exit 0 if all pass, 1 otherwise.")
    p.add_argument("names", nargs="*", metavar="NAME", help="registered model name(s) (see `bench list`)")
    p.add_argument("--all", action="store_true", help="every registered model")
    p.add_argument("--quick", action="store_true", help="fewer sizes and finite-difference coordinates")
    p.add_argument("--verbose", "-v", action="store_true", help="print every check's detail, not only failures' "
                                                                  "and n/a reasons")
    p.add_argument("--threads", type=int, help="torch threads (default: 1; the models are tiny)")
    p.set_defaults(func=cmd_check)
