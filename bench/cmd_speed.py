"""``bench speed``: its flags and checks; the measuring is in :mod:`bench.speed` (imported when
the command runs, so that `bench --help` does not wait for torch)."""
from __future__ import annotations

import json
import os
import sys

from bench.config import parse_count
from bench.errors import ConfigError


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes positive integers separated by commas, e.g. 100,200; got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{flag} takes positive integers separated by commas, e.g. 100,200; got {text!r}")
    return values


def cmd_speed(args) -> int:
    import torch

    from bench.models import MODELS, get_model_class
    from bench.speed import DEFAULT_SHAPE, print_report, speed_table

    names = args.model or sorted(MODELS)
    for name in names:
        get_model_class(name)                            # unknown names fail before any work
    if args.warmup is None:
        args.warmup = 10 if args.harness else 2
    if args.task is None:
        args.task = "copying" if args.harness else "timit"
    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError(f"--repeats must be >= 1 and --warmup >= 0; got {args.repeats} and {args.warmup}")
    threads = args.threads if args.threads is not None else (os.cpu_count() or 1)
    if threads < 1:
        raise ConfigError(f"--threads must be a positive integer, got {threads}")
    if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
        raise ConfigError(f"--device must be cpu or cuda (when available); got {args.device!r}")
    if args.hidden is not None and args.hidden <= 0:
        raise ConfigError(f"--hidden must be a positive integer, got {args.hidden}")
    if args.harness:
        return _cmd_harness(args, names)
    T0, B0 = DEFAULT_SHAPE.get(args.task, (100, 32))
    seq_lens = _int_list(args.seq_len, "--seq-len") if args.seq_len else [T0]
    batches = _int_list(args.batch, "--batch") if args.batch else [B0]
    budget = parse_count(args.params) if args.params else None
    report = speed_table(names, args.task, budget=budget, hidden=args.hidden, seq_lens=seq_lens, batches=batches,
                         threads=threads, repeats=args.repeats, warmup=args.warmup, device=args.device,
                         plain=args.plain, memory=not args.no_memory, floor=not args.no_floor,
                         log=(lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr)))
    return _report(report, print_report, args.json)


def _cmd_harness(args, names: list[str]) -> int:
    """``bench speed --harness``: bench run's training loop against the bare step, per model."""
    from bench.speed_harness import harness_table, print_harness_report

    if args.device != "cpu":
        raise ConfigError("--harness times the CPU loop only; drop --device")
    if args.harness_steps < 1:
        raise ConfigError(f"--harness-steps must be >= 1, got {args.harness_steps}")
    seq_len = _int_list(args.seq_len, "--seq-len") if args.seq_len else [None]
    batch = _int_list(args.batch, "--batch") if args.batch else [None]
    if len(seq_len) > 1 or len(batch) > 1 or args.params or args.plain:
        raise ConfigError("--harness takes one --seq-len (the task's T), one --batch and at most --hidden, as "
                          "bench run does (no --params or --plain)")
    report = harness_table(names, args.task, seq_len=seq_len[0], batch=batch[0], hidden=args.hidden,
                           threads=args.threads, steps=args.harness_steps, warmup=args.warmup,
                           log=(lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr)))
    return _report(report, print_harness_report, args.json)


def _report(report: dict, printer, json_path: str | None) -> int:
    """Print ``report`` and, with --json, write it."""
    printer(report)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    return 0


def register(sub) -> None:
    p = sub.add_parser("speed", help="training/inference throughput and memory per model, as ratios to LSTM",
                       description="Throughput (forward+backward+optimizer step, and inference), peak memory and "
                                   "the ratio to the matched-budget torch.nn.LSTM, measured interleaved in one "
                                   "process on synthetic tensors of the task's shape.")
    p.add_argument("--task", help="task whose input/output sizes to use (default: timit; with --harness, copying)")
    p.add_argument("--params", help="parameter budget, e.g. 83k (default: scuRNN's paper budget for the task)")
    p.add_argument("--hidden", type=int, help="use this hidden size for every model instead of a budget")
    p.add_argument("--model", action="append", default=[],
                   help="only this model (repeatable; default: every registered model); lstm is always added")
    p.add_argument("--seq-len", help="sequence length(s), comma separated (default: 200 for timit, else 100)")
    p.add_argument("--batch", help="batch size(s), comma separated (default: 32)")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--repeats", type=int, default=7, help="timed interleaved rounds; the median is reported (default: 7)")
    p.add_argument("--warmup", type=int, help="untimed rounds first (default: 2; with --harness, 10 training "
                                              "steps)")
    p.add_argument("--plain", action="store_true", help="also time models that have a fast path with fast=False")
    p.add_argument("--no-memory", action="store_true", help="skip the per-model memory subprocesses")
    p.add_argument("--no-floor", action="store_true", help="skip the GEMM floor estimate")
    p.add_argument("--harness", action="store_true",
                   help="time bench run's own training loop (Lightning, the wrapper optimizer, callbacks, logging, "
                        "progress bar) against the bare training step, alternating step by step, and report "
                        "loop/bare per model at the run's own sizes (--seq-len is then the task's T)")
    p.add_argument("--harness-steps", type=int, default=60, help="timed training steps per model with --harness "
                                                                 "(default: 60)")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_speed)
