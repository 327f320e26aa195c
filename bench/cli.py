"""The ``bench`` command line. Each subcommand lives in its own module with
``register(subparsers)``; this file only wires them together and turns input errors into
one clear line and exit code 2. Building the parsers imports no torch, Lightning, Optuna or W&B
(``bench --help`` in a fraction of a second): a command imports them when it runs
(tests/test_cli_speed.py)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# (subcommand module, registers these commands); modules that are absent are skipped.
COMMAND_MODULES = ["bench.cmd_run", "bench.params", "bench.cmd_speed", "bench.sweep", "bench.leaderboard",
                   "bench.cmd_data", "bench.cmd_check", "bench.cmd_sync", "bench.cmd_dashboard",
                   "bench.cmd_reproduce"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="Benchmark harness for unitary and orthogonal RNNs (scuRNN and baselines).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from bench.errors import BenchError
    from bench.secrets import mask_text, scrub_argv

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]   # for re-launching workers (sweep)
    scrub_argv()            # whatever records sys.argv from here on (result.json, W&B) sees no password
    try:
        code = args.func(args)
    except BenchError as exc:
        print(f"bench {args.command}: error: {mask_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bench {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:       # `bench ... | head` stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 0
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
