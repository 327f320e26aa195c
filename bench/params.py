"""``bench params``: the hidden size that matches a parameter budget, for every model.

    bench params --task mnist --params 16k

prints, per model, the hidden size whose exact parameter count is closest to the budget (within
the model's constraints: even n, powers of two, k <= n, ...), that count, and the paper's hidden
size(s) and their exact counts where the paper gives them (bench/paper.py). The options used for
each model are those of its paper row for the task (e.g. oRNN's k), as ``bench run`` uses them.
"""
from __future__ import annotations


from bench.config import parse_count
from bench.errors import BenchError, ConfigError


def _task_dims(task_name: str, seq_len: int | None) -> tuple[int, int]:
    from bench.tasks import get_task_class

    task_cls = get_task_class(task_name)
    try:
        task = task_cls(seq_len=seq_len)
    except BenchError:
        task = task_cls
    return task.d_input, task.d_output


def param_table(task: str, budget: int | None = None, *, seq_len: int | None = None,
                models: list[str] | None = None, options: dict | None = None) -> tuple[int, list[dict]]:
    """Rows of the ``bench params`` table (also used by tests). Returns (budget, rows)."""
    from bench.models import MODELS, get_model_class
    from bench.paper import anchor_budget, paper_rows, paper_setting

    m, p = _task_dims(task, seq_len)
    if budget is None:
        matched = anchor_budget(task, seq_len, m, p)
        if matched is None:
            raise ConfigError(f"the paper gives no scuRNN size for task {task!r}; pass a budget with --params")
        budget = matched[0]
    rows = []
    for name in models or sorted(MODELS):
        cls = get_model_class(name)
        row = paper_setting(name, task, seq_len)
        opts = {**(row.options if row else {}), **(options or {})}
        entry = {"model": name, "options": opts, "n": None, "params": None, "error": None, "paper": []}
        try:
            n = cls.hidden_for_budget(budget, m, p, **opts)
            entry.update(n=n, params=cls.param_count(n, m, p, **opts))
        except BenchError as exc:
            entry["error"] = str(exc)
        for s in paper_rows(name, task):
            if seq_len is not None and s.seq_len not in (None, seq_len):
                continue
            if any(q["n"] == s.n_hidden and q["options"] == s.options for q in entry["paper"]):
                continue                                  # same size at another length
            entry["paper"].append({"n": s.n_hidden, "budget": s.budget, "seq_len": s.seq_len,
                                   "params": cls.param_count(s.n_hidden, m, p, **s.options), "options": s.options})
        rows.append(entry)
    return budget, rows


def _fmt(count) -> str:
    return "-" if count is None else f"{count:,}"


def cmd_params(args) -> int:
    from bench.flags import parse_model_options

    options = parse_model_options(args.model_opt)
    if options and not args.model:
        raise ConfigError("--model-opt needs --model (options differ between models)")
    budget = parse_count(args.params) if args.params else None
    budget, rows = param_table(args.task, budget, seq_len=args.seq_len, models=args.model or None, options=options)
    m, p = _task_dims(args.task, args.seq_len)
    print(f"task {args.task} (m={m}, p={p}), budget {budget:,} parameters "
          f"(n is the complex dimension for complex models)")
    print(f"{'model':<8} {'n':>5} {'params':>9}  {'paper n':>7} {'paper params':>12} {'paper says':>10}  options")
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        papers = r["paper"] or [None]
        for i, pr in enumerate(papers):
            head = (f"{r['model']:<8} {r['n'] if r['n'] else '-':>5} {_fmt(r['params']):>9}" if i == 0
                    else " " * 24)
            if pr is None:
                tail = f"{'-':>7} {'-':>12} {'-':>10}"
            else:
                where = f" (T={pr['seq_len']})" if pr["seq_len"] else ""
                tail = f"{pr['n']:>7} {_fmt(pr['params']):>12} {(pr['budget'] or '-'):>10}{where}"
            print(f"{head}  {tail}  {opts if i == 0 else ''}".rstrip())
        if r["error"]:
            print(f"{'':<8} error: {r['error']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("params", help="hidden size per model for a parameter budget, with the paper's sizes",
                       description="For every model: the hidden size whose exact parameter count is closest "
                                   "to the budget, that count, and the paper's size and count where given.")
    p.add_argument("--task", required=True, help="task name (sets input and output sizes; see `bench list`)")
    p.add_argument("--params", help="parameter budget, e.g. 16k or 16000 (default: scuRNN's paper budget "
                                    "for the task)")
    p.add_argument("--seq-len", type=int, help="sequence length, to pick length-specific paper rows")
    p.add_argument("--model", action="append", default=[], help="only this model (repeatable)")
    p.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="model option for --model, e.g. k=16 (repeatable)")
    p.set_defaults(func=cmd_params)
