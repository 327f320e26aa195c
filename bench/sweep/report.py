"""What ``bench sweep status`` and ``bench sweep best`` print: trials by state, the best trial,
its seeds, and a ``bench run`` line that reproduces it."""
from __future__ import annotations

import shlex
import statistics
import time

from bench.sweep.errors import SweepError
from bench.sweep.space import fixed_text
from bench.sweep.storage import open_storage, parse_storage
from bench.sweep.study import quiet_optuna


def open_existing(args):
    import optuna

    quiet_optuna()
    if not args.study:
        raise SweepError(f"bench sweep {args.action} needs --study NAME")
    spec = parse_storage(args.storage, args.runs_dir, args.study)
    storage = open_storage(spec, create=False)
    try:
        return optuna.load_study(study_name=args.study, storage=storage), spec
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise SweepError(f"no study {args.study!r} in {spec.display}; studies there: "
                         f"{', '.join(names) if names else 'none'}") from None


def best_trial(study):
    try:
        return study.best_trial
    except ValueError:
        return None


def confirm_records(study, number: int) -> list[dict]:
    prefix = f"confirm:{number}:"
    return [v for k, v in sorted(study.user_attrs.items()) if k.startswith(prefix)]


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4g} (n = 1)" if values else "-"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g} (n = {len(values)})"


def best_command(config: dict) -> str:
    """A ``bench run`` command line that reproduces a resolved config exactly (same config hash)."""
    from bench.flags import run_command

    return shlex.join(run_command(config))


def format_params(params: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def trial_text(t) -> str:
    """A trial's point, or for a reproduce run (point {"run": i}) what that run is."""
    c = t.user_attrs.get("config") or {}
    if set(t.params) == {"run"} and c:
        return f"{c['model']} {c['task']} n={c['n_hidden']} seed {c['seed']}"
    return format_params(t.params)


def cmd_status(args) -> int:
    from optuna.trial import TrialState

    study, spec = open_existing(args)
    meta = study.user_attrs.get("bench", {})
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    metric = meta.get("metric", "value")
    print(f"study {study.study_name} ({spec.display})")
    if meta.get("reproduce"):
        print(f"  bench reproduce {meta['reproduce']}: {meta['grid_size']} runs of {meta['model']} on {meta['task']}")
    elif meta:
        size = f", {meta['grid_size']} combinations" if meta.get("grid_size") else f", {meta.get('n_trials')} trials"
        print(f"  {meta['model']} on {meta['task']}, space {meta['space']}, sampler {meta['sampler']}{size}; "
              f"{meta['direction']} val {metric}")
        if meta.get("fixed_groups"):
            print("  fixed in every trial: " + fixed_text(meta["fixed_groups"]))
    print("  trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) if trials else "  trials: none")
    best = None if meta.get("reproduce") else best_trial(study)    # a reproduce study has no best: a table
    if best is not None:
        print(f"  best: trial {best.number}, val {metric} {best.value:.4g}: {format_params(best.params)}")
        conf = [r for r in confirm_records(study, best.number) if r.get("value") is not None]
        if conf:
            print(f"  best over seeds: {mean_std([best.value] + [r['value'] for r in conf])}")
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if running:
        print("  running:")
        now = time.time()
        for t in running:
            o = t.user_attrs.get("owner") or {}
            age = now - t.datetime_start.timestamp() if t.datetime_start else 0
            last = ""
            if t.intermediate_values:
                step = max(t.intermediate_values)
                last = f", last val {metric} {t.intermediate_values[step]:.4g} at step {step}"
            print(f"    trial {t.number} on {o.get('host', '?')}:{o.get('pid', '?')}, {age / 60:.1f} min{last}: "
                  f"{trial_text(t)}")
    for t in [t for t in trials if t.state == TrialState.FAIL][-5:]:
        why = t.user_attrs.get("outcome") or "worker died"
        error = (t.user_attrs.get("error") or "").splitlines()
        print(f"  failed: trial {t.number} {trial_text(t)} ({why}){': ' + error[0][:120] if error else ''}")
    return 0


def cmd_best(args) -> int:
    from optuna.trial import TrialState

    study, _ = open_existing(args)
    meta = study.user_attrs.get("bench", {})
    if meta.get("reproduce"):
        artefact, scale = meta["reproduce"].split("/")
        raise SweepError(f"study {args.study!r} holds the runs of `bench reproduce {artefact} --scale {scale}`; "
                         f"it has no best trial: that command prints its table")
    best = best_trial(study)
    if best is None:
        counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
        raise SweepError(f"study {args.study!r} has no completed trial yet ("
                         + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ")")
    metric = meta.get("metric", "value")
    print(f"# study {study.study_name}: best trial {best.number} of {len(study.trials)}, "
          f"val {metric} {best.value:.6g}")
    print(f"# params: {format_params(best.params)}")
    if best.user_attrs.get("result"):
        print(f"# result: {best.user_attrs['result']}")
    conf = [r for r in confirm_records(study, best.number) if r.get("value") is not None]
    if conf:
        print(f"# over seeds: {mean_std([best.value] + [r['value'] for r in conf])}")
    print(best_command(best.user_attrs["config"]))
    return 0
