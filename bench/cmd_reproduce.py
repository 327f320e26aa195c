"""``bench reproduce``: run one of the paper's tables or figures and print it beside the paper's
numbers. The artefacts, scales and protocols are declared in bench/reproduce_spec.py."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from bench.config import WANDB_MODES
from bench.errors import ConfigError
from bench.reproduce import ARTEFACTS, SCALES, check_request


def _say(text: str) -> None:
    print(f"bench reproduce: {text}", file=sys.stderr, flush=True)


def cmd_reproduce(args) -> int:
    from bench import reproduce as rp

    check_request(None if args.list else args.artefact, args.scale, args.workers, args.seeds)
    if args.list:
        for line in rp.list_lines(args.with_new_models, args.workers):
            print(line)
        print(f"({rp.ESTIMATE_NOTE}.)")
        return 0
    if not args.artefact:
        raise ConfigError(f"bench reproduce needs an artefact ({', '.join(ARTEFACTS)}) or --list")
    in_study = _study_request(args)
    runs = rp.plan(args.artefact, args.scale, args.seeds, with_new_models=args.with_new_models,
                   runs_dir=args.runs_dir, data_dir=args.data_dir, wandb=args.wandb)
    rp.mark_states(runs, args.runs_dir)
    todo = [r for r in runs if r.state != "done"]
    if args.dry_run:
        for r in runs:
            c = r.resolved
            line = shlex.join(_bench_run_line(r))
            print(f"{r.state:<6} {r.label():<40} {c.max_steps} steps × {c.batch_size}  {c.config_hash()}  {line}"
                  + (f"  # + validation/test on the first {r.eval_batches} batch(es) only" if r.eval_batches else ""))
        print(f"{len(runs)} runs: {len(runs) - len(todo)} done, {sum(r.state == 'resume' for r in runs)} to resume, "
              f"{sum(r.state == 'run' for r in runs)} to run; nothing was run (--dry-run)")
        return 0
    outcomes, failed_in_study = [], 0
    if in_study:
        from bench.reproduce_cluster import run_study

        if todo:
            rp.preflight(todo, args.runs_dir)
        failed_in_study, _ = run_study(args.artefact, args.scale, runs, args, _say)
        if args.launcher != "local" and not args.wait:
            return 0
        rp.mark_states(runs, args.runs_dir)
    elif todo:
        rp.preflight(todo, args.runs_dir)
        _say(f"{args.artefact} at scale {args.scale}: {len(runs)} runs, {len(runs) - len(todo)} already done, "
             f"{len(todo)} to run on {min(args.workers, len(todo))} worker(s) "
             f"(≈ {rp.fmt_duration(rp.wall_estimate(todo, min(args.workers, len(todo))))} estimated)")
        outcomes = rp.execute(todo, args.workers, Path(args.runs_dir) / "reproduce" / "logs")
    else:
        _say(f"{args.artefact} at scale {args.scale}: all {len(runs)} runs already done under {args.runs_dir}")
    results = rp.load_existing(args.runs_dir)
    md, text_csv = rp.render(args.artefact, args.scale, runs, results)
    sys.stdout.write(md)
    written = list(rp.write_outputs(args.runs_dir, args.artefact, args.scale, md, text_csv))
    written += [p for p in [rp.write_figure(args.runs_dir, args.artefact, args.scale, runs, results)] if p]
    failed = [o for o in outcomes if o.status != "completed"]
    if not in_study:
        _say(f"ran {len(outcomes)}, skipped {len(runs) - len(todo)} already done, failed {len(failed)}; "
             f"wrote {', '.join(map(str, written[:-1]))} and {written[-1]}")
    else:
        _say(f"{sum(r.state == 'done' for r in runs)} of {len(runs)} runs done; wrote "
             f"{', '.join(map(str, written[:-1]))} and {written[-1]}")
    for o in failed:
        _say(f"failed: {o.run.label()}: {o.status}: {o.error or 'no error message'}"
             + (f" ({o.run_dir})" if o.run_dir else ""))
    return 1 if failed or failed_in_study else 0


def _study_request(args) -> bool:
    """True with --storage/--storage-file (the runs go to a study); the cluster flags need one."""
    from bench.sweep import resolve_storage_args

    if args.storage or args.storage_file:
        resolve_storage_args(args)
        return True
    given = [flag for flag, dest, default in args.cluster_flags if getattr(args, dest) != default]
    if given:
        raise ConfigError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with --storage (the "
                          f"runs as a study that workers on other nodes take); add --storage PATH_OR_URL or drop "
                          f"{given[0]}")
    return False


def _bench_run_line(r) -> list[str]:
    from bench.flags import run_command

    argv = run_command(r.resolved.to_dict())
    return argv + (["--track-test"] if r.resolved.track_test and r.resolved.scale != "paper" else [])


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="run one of the paper's tables or figures and print it beside the paper's numbers",
        description="Expand one of the paper's artefacts into runs (one per paper row and seed, each a normal "
                    "`bench run` with the row's size, optimizers and options), run them with N worker processes "
                    "(skipping runs already completed in --runs-dir, resuming unfinished ones), and print the "
                    "paper's table with the paper's value, ours (mean ± std over seeds) and the difference. "
                    "Also written to RUNS_DIR/reproduce/ARTEFACT-SCALE.md and .csv; for the figures (copying, "
                    "adding) also ARTEFACT-SCALE.png, the runs' curves drawn like the paper's.")
    p.add_argument("artefact", nargs="?", metavar="ARTEFACT", help=f"one of: {', '.join(ARTEFACTS)}")
    p.add_argument("--scale", default="smoke", metavar="SCALE",
                   help="; ".join(f"{s.name}: {s.about} ({s.seeds} seed{'s' if s.seeds != 1 else ''} by default)"
                                  for s in SCALES.values()) + " (default smoke)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, one torch thread each (default 1)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..K-1 per setting (default: the scale's)")
    p.add_argument("--runs-dir", default="runs", help="where run folders go and are looked up (default runs)")
    p.add_argument("--data-dir", default=None, help="data folder for mnist/pmnist (optional) and timit (required)")
    p.add_argument("--wandb", default="auto", choices=WANDB_MODES, help="W&B mode of every run (default auto)")
    p.add_argument("--with-new-models", action="store_true",
                   help="also run the registered models without a paper row, at scuRNN's paper budget")
    p.add_argument("--dry-run", action="store_true", help="print the runs (done, to resume, to run); run nothing")
    p.add_argument("--list", action="store_true", help="every artefact with its number of runs and estimated cost")
    from bench.sweep.cli import add_cluster_arguments

    g = p.add_argument_group(
        "cluster", "With --storage the runs become a study that workers on every node take (the same command "
                   "on each node, or --launcher slurm); as fault-tolerant as `bench sweep`.")
    actions = add_cluster_arguments(g, storage_default="none: the runs are run here by --workers processes, no study",
                                    study_default="reproduce-ARTEFACT-SCALE")
    p.set_defaults(func=cmd_reproduce, cluster_flags=[(a.option_strings[0], a.dest, a.default) for a in actions
                                                      if a.dest not in ("storage", "storage_file")])
