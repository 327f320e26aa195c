"""Leaderboard: aggregation from synthetic result.json files, rendering, figures, W&B, diagnostics."""
import base64
import csv
import io
import json
import math
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.config import RunConfig
from bench.leaderboard import aggregate, fmt_stat, load_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_counter = iter(range(10**6))


def write_result(root: Path, *, task="copying", model="scurnn", seed=0, max_steps=100, seq_len=50, n_hidden=32,
                 metrics=None, status="completed", config_hash=None, task_info=None, finished_at="2026-01-01T00:00:00",
                 data_seed=5544, curve=None, diagnostics=None, fallback=None, n_params=2377, opts=None,
                 tags=None) -> Path:
    """One result.json shaped like bench/run.py's, in runs/<task>/<model>/<dir>/."""
    cfg = RunConfig(model=model, task=task, seed=seed, n_hidden=n_hidden, seq_len=seq_len, batch_size=20,
                    max_steps=max_steps, val_every=50, data_seed=data_seed, resolved=True, opts=opts or {},
                    tags=tags or {})
    run_dir = root / task / model / f"run{next(_counter)}-seed{seed}"
    run_dir.mkdir(parents=True)
    baseline = 10 * math.log(8) / (seq_len + 20) if task == "copying" else 1 / 6
    result = {
        "result_version": 1, "status": status, "error": None, "config": cfg.to_dict(),
        "config_hash": config_hash or cfg.config_hash(), "seed": seed, "model": model, "task": task,
        "n_hidden": n_hidden, "n_params": n_params, "metric": {"name": "acc", "mode": "max"},
        "task_info": task_info or {"seq_len": seq_len, "data_seed": data_seed, "baseline": baseline},
        "metrics": metrics or {}, "wall_time_s": 10.0, "finished_at": finished_at,
        "hardware": {"cpu_threads": 2, "cuda": False}, "code_version": {"git_sha": "abc1234"},
        "curves": None, "fallback": fallback,
    }
    if curve is not None:   # (steps, losses): a Lightning-style CSV
        (run_dir / "csv").mkdir()
        lines = ["step,train/loss,val/acc,baseline"]
        lines += [f"{s},{v},," for s, v in zip(*curve)]
        lines += [f"{curve[0][-1]},,0.5,{baseline}"]
        (run_dir / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
        result["curves"] = "csv/metrics.csv"
    if diagnostics is not None:
        (run_dir / "diagnostics.json").write_text(json.dumps({"version": 1, "snapshots": diagnostics}))
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


def _rows_by(rows):
    return {(r.task, r.model, r.seq_len, r.config.get("max_steps"), r.config.get("data_seed")): r for r in rows}


def test_groups_means_stds_counts(tmp_path):
    for seed, loss, first in ((0, 0.3, 40), (1, 0.5, None), (2, 0.7, 60)):
        write_result(tmp_path, seed=seed, finished_at=f"2026-01-02T00:00:0{seed}",
                     metrics={"final_train_loss": loss, "first_step_below_baseline": first, "best_ckpt_test_acc": 0.9})
    # an older run of seed 0 with the same config: superseded by the later one, not counted twice
    write_result(tmp_path, seed=0, finished_at="2026-01-01T00:00:00", metrics={"final_train_loss": 9.9})
    # a diverged run of the same config: counted as failed, not in the statistics
    write_result(tmp_path, seed=3, status="diverged", metrics={"final_train_loss": float("nan")})
    write_result(tmp_path, seed=0, max_steps=200, metrics={"final_train_loss": 0.1})
    write_result(tmp_path, seed=1, max_steps=200, metrics={"final_train_loss": 0.2})
    write_result(tmp_path, task="adding", seed=0, metrics={"final_train_loss": 0.15, "best_ckpt_test_mse": 0.1})

    results, problems = load_results(tmp_path)
    assert problems == []
    rows = aggregate(results)
    assert len(rows) == 3
    by = _rows_by(rows)
    a = by[("copying", "scurnn", 50, 100, 5544)]
    assert a.seeds == [0, 1, 2] and a.n == 3 and a.failed == {"diverged": 1} and a.superseded == 1
    loss = a.cells["final train loss"]
    assert (loss.n, loss.total) == (3, 3)
    assert loss.mean == pytest.approx(0.5) and loss.std == pytest.approx(0.2)
    first = a.cells["first step < baseline"]
    assert (first.n, first.total) == (2, 3)
    assert first.mean == pytest.approx(50) and first.std == pytest.approx(statistics.stdev([40, 60]))
    assert fmt_stat(first, "step") == "50 ± 14 (reached 2/3)"
    b = by[("copying", "scurnn", 50, 200, 5544)]
    assert b.n == 2 and b.cells["final train loss"].mean == pytest.approx(0.15)
    assert b.cells["final train loss"].std == pytest.approx(statistics.stdev([0.1, 0.2]))
    c = by[("adding", "scurnn", 50, 100, 5544)]
    assert c.n == 1 and c.cells["final train loss"].std is None and c.cells["test MSE"].mean == pytest.approx(0.1)
    assert fmt_stat(c.cells["final train loss"]) == "0.15"


def test_budgets_lengths_and_splits_never_merge_even_with_one_hash(tmp_path):
    same = "000000000000"   # forged: as if the hash had been computed by code that forgot a field
    write_result(tmp_path, seed=0, config_hash=same, metrics={"final_train_loss": 1.0})
    write_result(tmp_path, seed=1, config_hash=same, metrics={"final_train_loss": 1.0})
    write_result(tmp_path, seed=0, config_hash=same, max_steps=999, metrics={"final_train_loss": 2.0})
    write_result(tmp_path, seed=0, config_hash=same, seq_len=60, metrics={"final_train_loss": 3.0})
    write_result(tmp_path, seed=0, config_hash=same, data_seed=1, metrics={"final_train_loss": 4.0})
    write_result(tmp_path, seed=0, config_hash=same, metrics={"final_train_loss": 5.0},
                 task_info={"seq_len": 50, "data_seed": 5544, "split": "other"})
    rows = aggregate(load_results(tmp_path)[0])
    assert sorted((r.n, r.cells["final train loss"].mean) for r in rows) == [
        (1, 2.0), (1, 3.0), (1, 4.0), (1, 5.0), (2, 1.0)]


MNIST_SPLIT = {"train": 55000, "val": 5000, "test": 10000}     # tasks/mnist.py info(), the paper's split
PIXELS = "/255, row-major, no normalisation"


def test_mnist_columns_paper_value_and_data_location_vs_split(tmp_path):
    info = lambda files, split: {"split": split, "files": files, "md5_verified": True, "pixels": PIXELS}   # noqa: E731
    m = {"best_ckpt_test_acc": 0.9, "test_acc": 0.8}
    full60k = {"train": 60000, "val": 0, "test": 10000}                 # expRNN's: no validation split
    write_result(tmp_path, task="mnist", seq_len=None, n_hidden=116, seed=0, metrics=m, task_info=info("/a/x.gz", MNIST_SPLIT))
    write_result(tmp_path, task="mnist", seq_len=None, n_hidden=116, seed=1, metrics=m, task_info=info("/b/x.gz", MNIST_SPLIT))
    write_result(tmp_path, task="mnist", seq_len=None, n_hidden=116, seed=0, metrics=m, task_info=info("/a/x.gz", full60k))
    rows = aggregate(load_results(tmp_path)[0])
    assert sorted(r.n for r in rows) == [1, 2]      # same files elsewhere merge; another split does not
    row = next(r for r in rows if r.n == 2)
    assert row.protocol == "mnist/pixel/55k-train/best-test-acc" and row.paper_level == "paper"
    assert row.paper == {"best test acc": 0.976}    # the paper's Table 1 number, beside its own metric
    assert row.cells["test acc @ best val"].mean == pytest.approx(0.9)
    assert row.cells["best test acc"].n == 0 and fmt_stat(row.cells["best test acc"]) == "—"
    other = next(r for r in rows if r.n == 1)       # another split is another protocol: no paper value
    assert other.protocol is None and other.paper == {} and "split.train is 60000" in other.no_paper


def test_corrupt_partial_and_tmp_files_are_reported_and_skipped(tmp_path, capsys):
    write_result(tmp_path, seed=0, metrics={"final_train_loss": 0.5})
    bad = {
        "truncated": '{"status": "completed", "config": {',
        "list": "[1, 2, 3]",
        "partial": json.dumps({"status": "completed", "config": {}, "task": "copying"}),
        "badmetrics": json.dumps({"status": "completed", "config": {}, "task": "copying", "model": "scurnn",
                                  "config_hash": "x", "seed": 0, "metrics": [1]}),
    }
    for name, text in bad.items():
        d = tmp_path / "copying" / "scurnn" / name
        d.mkdir(parents=True)
        (d / "result.json").write_text(text)
    (tmp_path / "copying" / "scurnn" / "truncated" / ".tmp-result.json-abc").write_text("{")
    (tmp_path / "copying" / "scurnn" / "running").mkdir()
    (tmp_path / "copying" / "scurnn" / "running" / "config.json").write_text("{}")

    results, problems = load_results(tmp_path)
    assert len(results) == 1
    reasons = {Path(p.path).parent.name if p.path.endswith("result.json") else Path(p.path).name: p.reason
               for p in problems}
    assert "unreadable" in reasons["truncated"]
    assert "not a JSON object" in reasons["list"]
    assert "partial record: missing" in reasons["partial"] and "metrics" in reasons["partial"]
    assert "malformed" in reasons["badmetrics"]
    assert "stray temporary file" in reasons[".tmp-result.json-abc"]
    assert "without result.json" in reasons["running"]

    assert main(["leaderboard", "--runs-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "scurnn" in out and "0.5" in out
    assert err.count("skipped") == 6


@pytest.mark.parametrize("field,patch,message", [
    ("seed", lambda r: r.update(seed=[1]), "'seed' is list ([1]), expected an integer"),
    ("metrics.test_acc", lambda r: r["metrics"].update(test_acc="x"),
     "'metrics.test_acc' is str (\"x\"), expected a number or null"),
    ("config.seq_len", lambda r: r["config"].update(seq_len="long"),
     "'config.seq_len' is str (\"long\"), expected an integer or null"),
    ("status", lambda r: r.update(status=1), "'status' is int (1), expected a string"),
    ("status", lambda r: r.update(status=None), "'status' is NoneType (null), expected a string"),
    ("metric", lambda r: r.update(metric="acc"), "'metric' is str (\"acc\"), expected an object or null"),
    ("n_hidden", lambda r: r.update(n_hidden=True), "'n_hidden' is bool (true), expected an integer or null"),
    ("task_info.baseline", lambda r: r["task_info"].update(baseline="low"), "'task_info.baseline' is str"),
    ("code_version.git_sha", lambda r: r["code_version"].update(git_sha=1234567), "'code_version.git_sha' is int"),
])
def test_wrong_field_types_are_reported_and_skipped(tmp_path, capsys, field, patch, message):
    """A result.json with a field of the wrong JSON type is skipped like a corrupt one, with one
    line naming the file and the field; the good results beside it still render."""
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write_result(runs, seed=seed, metrics={"final_train_loss": 0.5, "test_acc": 0.75})
    write_result(runs, model="lstm", metrics={"final_train_loss": 0.25})
    bad = write_result(runs, seed=2, metrics={"final_train_loss": 9.0, "test_acc": 0.5}) / "result.json"
    record = json.loads(bad.read_text())
    patch(record)
    bad.write_text(json.dumps(record))

    (problem,) = load_results(runs)[1]
    assert problem.path == str(bad) and message in problem.reason
    out_dir = tmp_path / "out"
    assert main(["leaderboard", "--runs-dir", str(runs), "--format", "table,md", "--out", str(out_dir)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("bench: skipped")]
    assert len(lines) == 1 and str(bad) in lines[0] and repr(field) in lines[0], err
    text = (out_dir / "leaderboard.txt").read_text()
    assert "scurnn" in text and "lstm" in text and "skipped 1 file(s)" in text
    md = (out_dir / "leaderboard.md").read_text()
    assert "| scurnn | 32 | 2377 | 50 | 100 steps × 20 | 2 | 0.5 ± 0 |" in md     # the two good seeds only
    assert "| lstm | 32 | 2377 | 50 | 100 steps × 20 | 1 | 0.25 |" in md
    assert f"- `{bad}`: malformed record: {field!r}" in md


def test_a_sweeps_runs_dir_gives_one_row_per_config(tmp_path, capsys):
    """A sweep's runs folder: many trials of one model that differ only in their optimizers (one
    row each, told apart by a "settings" column), pruned trials, a --confirm-seeds rerun of the
    best (same config: the same row), the study's journal and a killed trial's folder."""
    runs = tmp_path / "runs"
    grid = [(a, lr) for a in ("rmsprop", "adam") for lr in (1e-2, 1e-3, 1e-4)]
    for trial, (opt, lr) in enumerate(grid):
        opts = {"A": [opt, lr], "D": ["adam", 1e-4], "other": ["rmsprop", 1e-3]}
        pruned = trial % 3 == 2
        write_result(runs, opts=opts, tags={"study": "s", "trial": trial}, status="pruned" if pruned else "completed",
                     metrics={} if pruned else {"final_train_loss": 0.1 * (trial + 1), "test_acc": 0.5})
        if trial == 0:
            write_result(runs, seed=1, opts=opts, tags={"study": "s", "confirm_of": 0},
                         metrics={"final_train_loss": 0.3, "test_acc": 0.7})
    (runs / "sweeps").mkdir()
    (runs / "sweeps" / "s.journal").write_text('{"op_code": 0}\n')
    (runs / "sweeps" / "s.journal.bench-lock").write_text("")
    killed = runs / "copying" / "scurnn" / "20260101-000000-deadbeef-seed0"
    killed.mkdir()
    (killed / "config.json").write_text("{}")

    results, problems = load_results(runs)
    assert len(results) == len(grid) + 1 and [Path(p.path).name for p in problems] == [killed.name]
    rows = aggregate(results)
    assert len(rows) == len(grid)                                   # one row per config
    first = next(r for r in rows if r.config["opts"]["A"] == ["rmsprop", 1e-2])
    assert first.seeds == [0, 1] and first.cells["final train loss"].mean == pytest.approx(0.2)
    assert sum(r.failed == {"pruned": 1} for r in rows) == 2

    assert main(["leaderboard", "--runs-dir", str(runs), "--format", "md,csv", "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    (headers, body), = _md_tables(md).values()
    assert len(body) == len(grid) and "settings" in headers
    settings = [line[headers.index("settings")] for line in body]
    assert len(set(settings)) == len(grid) and "A=rmsprop:0.01 D=adam:0.0001 other=rmsprop:0.001" in settings
    assert "0 (+pruned 1)" in [line[headers.index("seeds")] for line in body]
    assert capsys.readouterr().err.count("skipped") == 1            # the killed trial, one line


def test_paper_value_only_for_the_papers_own_setting(tmp_path):
    write_result(tmp_path, seq_len=2000, n_hidden=130, metrics={"final_train_loss": 1e-3})
    write_result(tmp_path, seq_len=50, n_hidden=130, metrics={"final_train_loss": 1e-3})
    write_result(tmp_path, seq_len=2000, n_hidden=64, metrics={"final_train_loss": 1e-3})
    rows = {(r.seq_len, r.n_hidden): r for r in aggregate(load_results(tmp_path)[0])}
    assert rows[(2000, 130)].paper == {"final train loss": 2.5e-4, "first step < baseline": 300}
    assert "Table 4" in rows[(2000, 130)].paper_source
    assert rows[(50, 130)].paper == {} and rows[(2000, 64)].paper == {}


# -- provenance of the paper's numbers: protocols and verification levels -------------------------
TIMIT_INFO = {"features": {"sample_rate": 8000, "n_fft": 256, "hop": 128, "edge_pad": 256, "floor": 1e-05,
                           "resampler": "matlab", "version": 2},
              "metric_convention": "mse = masked error / (B*T*129), paper; mse_valid = per valid entry",
              "sizes": {"train": 3696, "val": 400, "test": 192}, "complete_corpus": True, "data_seed": 5544}


def _md_tables(md: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Each bold heading of the md page -> the table under it (headers, rows of cells)."""
    out, heading, lines = {}, None, md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("**") and line.endswith("**"):
            heading = line.strip("*")
        elif line.startswith("| ") and heading and (i == 0 or not lines[i - 1].startswith("|")):
            end = next((k for k in range(i, len(lines)) if not lines[k].startswith("|")), len(lines))
            block = lines[i:end]
            cells = [[c.strip() for c in b.strip("|").split(" | ")] for b in block if not b.startswith("|---")]
            out[heading] = (cells[0], cells[1:])
            heading = None
    return out


def test_paper_column_fills_only_for_the_matching_protocol(tmp_path):
    """Two protocols of one task: the paper's copying variant against one scoring only the recalled
    symbols (another baseline), TIMIT's padded MSE against the per-valid-entry one, pMNIST's
    permutation against another, MNIST's /255 pixels against standardised ones. Only the run under the paper's protocol gets a paper value;
    each protocol is its own table, and the other table says once why it has none."""
    runs = tmp_path / "runs"
    loss = {"final_train_loss": 1e-3, "first_step_below_baseline": 250}
    write_result(runs, seq_len=2000, n_hidden=130, n_params=22_000, metrics=loss)
    write_result(runs, seq_len=2000, n_hidden=130, n_params=22_000, metrics=loss,
                 task_info={"seq_len": 2000, "data_seed": 5544, "baseline": math.log(8)})   # S4's variant
    mse = {"best_val_mse": 4.0, "best_ckpt_test_mse": 3.7}
    write_result(runs, task="timit", seq_len=None, n_hidden=128, n_params=83_122, metrics=mse, task_info=TIMIT_INFO)
    write_result(runs, task="timit", seq_len=None, n_hidden=128, n_params=83_122, metrics=mse,
                 task_info={**TIMIT_INFO, "metric_convention": "mse = per valid entry (expRNN)"})
    acc = {"best_test_acc": 0.95}
    write_result(runs, task="pmnist", seq_len=None, n_hidden=116, metrics=acc,
                 task_info={"split": MNIST_SPLIT, "pixels": PIXELS, "permutation_seed": 92916})
    write_result(runs, task="pmnist", seq_len=None, n_hidden=116, metrics=acc,
                 task_info={"split": MNIST_SPLIT, "pixels": PIXELS, "permutation_seed": 2017})
    write_result(runs, task="mnist", seq_len=None, n_hidden=250, metrics=acc, task_info={"split": MNIST_SPLIT, "pixels": PIXELS})
    write_result(runs, task="mnist", seq_len=None, n_hidden=250, metrics=acc,
                 task_info={"split": MNIST_SPLIT, "pixels": "(x/255 - 0.1307)/0.3081"})      # another normalisation

    rows = aggregate(load_results(runs)[0])
    assert len(rows) == 8
    by = {(r.task, r.protocol): r for r in rows}
    assert by["copying", "copying/T=2000/cross-entropy"].paper == {"final train loss": 2.5e-4, "first step < baseline": 300}
    assert by["timit", "timit/mse-log-magnitude/≈83k"].paper == {"val MSE": 3.94, "eval MSE": 3.56}
    assert by["pmnist", "pmnist/perm-92916/55k-train/best-test-acc"].paper == {"best test acc": 0.949}
    assert by["mnist", "mnist/pixel/55k-train/best-test-acc"].paper == {"best test acc": 0.983}
    for task, why in (("copying", "task_info baseline is 2.079, the protocol's 0.01029"),
                      ("timit", "task_info metric_convention is 'mse = per valid entry (expRNN)'"),
                      ("pmnist", "task_info permutation_seed is 2017, the protocol's 92916"),
                      ("mnist", "task_info pixels is '(x/255 - 0.1307)/0.3081'")):
        other = by[task, None]
        assert other.paper == {} and other.paper_source is None and why in other.no_paper, other.no_paper
    for r in rows:
        assert (r.paper_level == "paper") == bool(r.paper)

    out = tmp_path / "out"
    assert main(["leaderboard", "--runs-dir", str(runs), "--format", "md,csv", "--out", str(out)]) == 0
    md = (out / "leaderboard.md").read_text()
    tables = _md_tables(md)
    assert len(tables) == 8                                     # one table per (task, protocol)
    for heading, (headers, body) in tables.items():
        assert len(body) == 1
        cells = dict(zip(headers, body[0]))
        if heading.startswith("Protocol "):                    # the paper's protocol: its number, marked [1]
            assert "paper" in headers and " [1]" in " ".join(body[0]) and "No paper values" not in heading
        else:                                                   # the other: no paper column, says why once
            assert "paper" not in headers and "no paper values" in heading, heading
        assert cells["model"] == "scurnn"
    assert md.count("no paper values") == 4
    assert "[1] paper value from §5.2 (T=2000), Table 4 row 1; verification: paper" in md
    assert "[1] paper value from §5.4 (n = 128: Adam, A 1e-4, all other parameters 1e-3), Table 2; verification: paper" in md
    table = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert sorted(r["protocol"] for r in table) == sorted(
        ["", "", "", "", "copying/T=2000/cross-entropy", "pmnist/perm-92916/55k-train/best-test-acc",
         "mnist/pixel/55k-train/best-test-acc", "timit/mse-log-magnitude/≈83k"])
    assert {r["paper_level"] for r in table if r["protocol"]} == {"paper"}


def test_timit_budget_is_part_of_its_protocol(tmp_path):
    """Table 2 compares models at ≈83k and at ≈200k: a run's count picks its budget's protocol."""
    mse = {"best_val_mse": 2.0, "best_ckpt_test_mse": 1.9}
    write_result(tmp_path, task="timit", seq_len=None, n_hidden=258, n_params=199_000, metrics=mse, task_info=TIMIT_INFO)
    write_result(tmp_path, task="timit", seq_len=None, n_hidden=258, n_params=150_000, metrics=mse, task_info=TIMIT_INFO,
                 data_seed=1)
    rows = {r.n_params[0]: r for r in aggregate(load_results(tmp_path)[0])}
    assert rows[199_000].protocol == "timit/mse-log-magnitude/≈200k" and rows[199_000].paper["val MSE"] == 1.84
    assert rows[150_000].protocol is None and rows[150_000].paper == {}
    assert "150000 parameters, not within 10% of the protocol's ≈200k" in rows[150_000].no_paper


def test_adding_matches_a_protocol_without_numbers(tmp_path):
    write_result(tmp_path, task="adding", seq_len=750, n_hidden=116, metrics={"final_train_loss": 0.1})
    (row,) = aggregate(load_results(tmp_path)[0])
    assert row.protocol == "adding/T=750/mse" and row.paper == {}
    assert row.no_paper == "the paper prints no numbers under adding/T=750/mse"


def test_every_reported_number_has_a_level_and_a_known_protocol():
    from bench.leaderboard import columns_for
    from bench.paper import LEVELS, PAPER_SETTINGS, PROTOCOLS

    rows = [s for s in PAPER_SETTINGS if s.reported]
    assert len(rows) >= 30
    for s in rows:
        assert s.level in LEVELS, (s.model, s.task, s.n_hidden, s.level)
        assert s.protocol in PROTOCOLS and PROTOCOLS[s.protocol].task == s.task, (s.model, s.task, s.protocol)
        assert s.source
        shown = {c.paper for c in columns_for(s.task, None) if c.paper}
        assert set(s.reported) <= shown, (s.model, s.task, set(s.reported) - shown)   # every number has a column
        p = PROTOCOLS[s.protocol]
        assert p.seq_len in (None, s.seq_len) or s.seq_len is None, (s.model, s.task, s.seq_len, p.id)
    for s in PAPER_SETTINGS:
        assert s.protocol is None or s.protocol in PROTOCOLS, s.protocol
        assert s.level is None or s.reported, (s.model, s.task, "a level without numbers")


@pytest.mark.parametrize("task,seq_len,n_params,extra", [
    ("mnist", None, None, {}), ("pmnist", None, None, {}), ("copying", 1000, None, {}), ("copying", 2000, None, {}),
    ("adding", 200, None, {}), ("adding", 750, None, {}),
    ("timit", None, 83_000, {"sizes": {"train": 3696, "val": 400, "test": 192}}),
])
def test_the_tasks_own_records_are_under_the_papers_protocols(task, seq_len, n_params, extra):
    """What a task records in result.json (``info()``) meets the protocol bench/paper.py declares
    for it, so a run at the paper's setting gets the paper's number (and a drift in either fails here)."""
    from bench.paper import run_protocol
    from bench.tasks import build_task

    info = {**build_task(task, seq_len=seq_len).info(), **extra}      # timit records its split sizes once loaded
    info = json.loads(json.dumps(info, default=str))                  # as result.json holds it
    protocol, why = run_protocol(task, {"seq_len": seq_len}, info, n_params)
    assert protocol is not None and protocol.startswith(task), why


PAPER_TEXT = Path(__file__).resolve().parents[2] / "shared" / "papers" / "scurnn-paper.md"
# Where the paper prints each reported key: the table and its 0-based column (tab-separated rows).
WHERE = {("mnist", "test_acc"): ("Table 1", 3), ("pmnist", "test_acc"): ("Table 1", 4),
         ("timit", "val_mse"): ("Table 2", 3), ("timit", "eval_mse"): ("Table 2", 4),
         ("copying", "first_step_below_baseline"): ("Table 4", 3), ("copying", "final_loss"): ("Table 4", 4)}
PAPER_NAMES = {"scurnn": {"scuRNN"}, "scornn": {"scoRNN"}, "lstm": {"LSTM"}, "urnn": {"Rest. cap. uRNN", "R.uRNN"},
               "fcurnn": {"Full. cap. uRNN", "F.uRNN"}, "ornn": {"oRNN"}, "eurnn": {"EURNN"}}


def _paper_tables(text: str) -> dict[str, list[list[str]]]:
    tables, name = {}, None
    for line in text.splitlines():
        if line.startswith("Table "):
            name = " ".join(line.split()[:2]).rstrip(":")
            tables.setdefault(name, [])
        elif name and "\t" in line:
            tables[name].append([c.strip() for c in line.split("\t")])
    return tables


def _number(cell: str) -> float | None:
    try:
        return float(cell.rstrip("*").replace("E", "e"))
    except ValueError:
        return None


@pytest.mark.skipif(not PAPER_TEXT.exists(), reason="the paper's text (shared/papers/) is not in this checkout")
def test_numbers_marked_paper_are_printed_in_the_paper():
    """Every number with level "paper" stands in the paper's table, in its column, on the row of
    its model and hidden size (Table 4 has neither: its row is found by the numbers)."""
    from bench.paper import PAPER_SETTINGS, PROTOCOLS

    tables = _paper_tables(PAPER_TEXT.read_text())
    checked = 0
    for s in PAPER_SETTINGS:
        if s.level != "paper":
            continue
        for key, value in s.reported.items():
            table, col = WHERE[s.task, key]
            assert table in s.source, (s.model, s.task, s.source)
            lines = [c for c in tables[table] if len(c) > col and c[0] != "Model" and c[0] != "A"]
            if table != "Table 4":
                lines = [c for c in lines if c[0] in PAPER_NAMES[s.model] and c[1] == str(s.n_hidden)]
            else:
                lines = [c for c in lines if all(_number(c[WHERE[s.task, k][1]]) == v for k, v in s.reported.items())]
            assert len(lines) == 1, (s.model, s.task, s.n_hidden, key, lines)
            assert _number(lines[0][col]) == pytest.approx(value), (s.model, s.task, s.n_hidden, key, lines[0])
            # the asterisked entries are the ones the paper quotes: their protocol says so
            assert lines[0][col].endswith("*") == bool(PROTOCOLS[s.protocol].quoted_from), (s.model, s.task, lines[0])
            checked += 1
    assert checked == 44


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.links, self.headers = [], [], [], []
        self._in_th = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if key in attrs and tag != "img":
                self.links.append(attrs[key])
        self._in_th = tag == "th"

    def handle_data(self, data):
        if self._in_th:
            self.headers.append(data)

    def handle_endtag(self, tag):
        self._in_th = False


def _make_runs(root):
    steps = list(range(9, 200, 10))
    diag = lambda k: [{"step": s, "unitarity_error": 1e-7 * (1 + s), "loss": 1.0,   # noqa: E731
                       "grad_norm": {"t": list(range(70)), "norm": [0.01 * (1 + k) / (1 + t) for t in range(70)],
                                     "seq_len": 70, "log10_first_over_last": 1.8},
                       "modrelu": {"singular_frac": 0.01 * k, "eps_frac": 0.0, "dead_frac": 0.02}} for s in (0, 100, 200)]
    for seed in range(3):
        write_result(root, seed=seed, metrics={"final_train_loss": 0.1 + seed, "first_step_below_baseline": 30},
                     curve=(steps, [2.0 / (1 + s / 50) + 0.05 * seed for s in steps]), diagnostics=diag(seed))
        write_result(root, model="lstm", seed=seed, metrics={"final_train_loss": 0.3},
                     curve=(steps, [2.0 - s / 400 for s in steps]))


def test_html_md_csv_with_tables_and_embedded_figures(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _make_runs(runs)
    assert main(["leaderboard", "--runs-dir", str(runs), "--format", "md,csv,html", "--out", str(out)]) == 0
    for name in ("copying-curves.png", "copying-diagnostics.png"):
        assert (out / "figures" / name).read_bytes().startswith(PNG_MAGIC)

    page = _Page()
    page.feed((out / "leaderboard.html").read_text())
    assert page.tags[:2] == ["html", "head"] and "body" in page.tags and "section" in page.tags
    assert page.tags.count("table") == 3          # leaderboard, diagnostics, the paper's numbers
    assert {"model", "params", "seeds", "final train loss", "first step < baseline"} <= set(page.headers)
    # T=50 is no protocol the paper reports numbers under: no paper column, one line saying why;
    # the paper's own table (T=2000) gives each number's source and verification level
    assert "paper" not in page.headers and {"source", "verification"} <= set(page.headers)
    html_text = (out / "leaderboard.html").read_text()
    assert html_text.count("no paper values") == 1 and "seq_len is 50, the protocol&#x27;s 2000" in html_text
    assert len(page.imgs) == 2
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert not [link for link in page.links if link.startswith(("http:", "https:", "//"))]   # opens offline

    md = (out / "leaderboard.md").read_text()
    assert "| scurnn | 32 | 2377 | 50 | 100 steps × 20 | 3 | 1.1 ± 1 |" in md
    for target in ("figures/copying-curves.png", "figures/copying-diagnostics.png"):
        assert f"]({target})" in md and (out / target).exists()
    assert "smoke tests" in md                     # the scale is labelled

    table = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert {(r["model"], r["n_seeds"]) for r in table} == {("scurnn", "3"), ("lstm", "3")}
    sc = next(r for r in table if r["model"] == "scurnn")
    assert float(sc["final_train_loss_mean"]) == pytest.approx(1.1) and float(sc["final_train_loss_std"]) == pytest.approx(1.0)

    assert main(["compare", "--task", "copying", "--runs-dir", str(runs), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "copying-curves.png").read_bytes().startswith(PNG_MAGIC)
    assert main(["compare", "--task", "copying", "--runs-dir", str(runs), "--metric", "nope/x",
                 "--out", str(tmp_path / "cmp2")]) == 2
    assert "nope/x" in capsys.readouterr().err


def test_a_budget_matched_row_is_marked(tmp_path):
    """A run without a paper row (result.json ``fallback``) is marked in the table and explained."""
    note = "no paper row for gru on copying at T=50: n=32 matched to scuRNN's paper budget"
    for seed in (0, 1):
        write_result(tmp_path / "runs", model="gru", seed=seed, fallback=note, metrics={"final_train_loss": 0.5})
        write_result(tmp_path / "runs", seed=seed, metrics={"final_train_loss": 0.4})
    out = tmp_path / "out"
    assert main(["leaderboard", "--runs-dir", str(tmp_path / "runs"), "--format", "md,csv", "--out", str(out)]) == 0
    md = (out / "leaderboard.md").read_text()
    assert "| gru † | 32 |" in md and "| scurnn | 32 |" in md and f"- † {note}" in md
    table = {r["model"]: r for r in csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text()))}
    assert table["gru"]["fallback"] == note and table["scurnn"]["fallback"] == ""


def test_input_errors_exit_2(tmp_path, capsys):
    _make_runs(tmp_path)
    assert main(["leaderboard", "--runs-dir", str(tmp_path / "missing")]) == 2
    assert main(["leaderboard", "--runs-dir", str(tmp_path), "--format", "pdf"]) == 2
    assert main(["leaderboard", "--runs-dir", str(tmp_path), "--format", "html"]) == 2
    assert main(["leaderboard", "--runs-dir", str(tmp_path), "--task", "mnist"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "known formats: table, md, csv, html" in err
    assert "--out" in err and "tasks with results: copying" in err


def test_wandb_offline_run_has_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    _make_runs(tmp_path / "runs")
    assert main(["leaderboard", "--runs-dir", str(tmp_path / "runs"), "--wandb"]) == 0
    run_dirs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1 and list(run_dirs[0].glob("run-*.wandb"))
    tables = list(run_dirs[0].glob("files/media/table/leaderboard/copying_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert "final_train_loss_mean" in table["columns"] and len(table["data"]) == 2
    # the same tables as a versioned artifact, on one W&B run per runs folder
    from test_tracking import records

    from bench.leaderboard.wandb_table import leaderboard_run_id

    kinds = {}
    for r in records(next(run_dirs[0].glob("run-*.wandb"))):
        kinds.setdefault(r.WhichOneof("record_type"), []).append(r)
    assert kinds["run"][0].run.run_id == leaderboard_run_id(str(tmp_path / "runs"))
    (artifact,) = [r.artifact for r in kinds["artifact"] if r.artifact.type == "leaderboard"]   # beside W&B's run_table ones
    assert artifact.name == "leaderboard"
    assert {e.path for e in artifact.manifest.contents} >= {"copying.table.json"}


# -- diagnostics ------------------------------------------------------------------------------
def test_recorded_gradients_are_total_derivatives_and_the_model_is_left_as_it_was():
    from bench.diagnostics import record_recurrence
    from bench.models import scurnn

    torch.manual_seed(0)
    model = scurnn.SCURNN(d_input=3, d_output=2, n_hidden=4)
    x = torch.randn(5, 12, 3)
    with record_recurrence(model) as rec:
        out = model(x)
        assert model.recorder is rec
    assert model.recorder is None and model.fast is True      # the fused path is used again
    loss = (out[:, -1] ** 2).sum()                 # only the last step enters the loss
    grads = torch.autograd.grad(loss, rec.states)
    assert len(grads) == 12
    # last step: only the readout path
    torch.testing.assert_close(grads[-1], 2 * out[:, -1].detach() @ model.readout.weight.detach())
    # earlier steps: nonzero, so the recorded tensors carry the path through the recurrence too
    assert all(g.norm() > 0 for g in grads[:-1])
    assert rec.modrelu_summary()["n_values"] == 5 * 12 * 4


@pytest.fixture
def tiny_run(tmp_path):
    from bench.diagnostics import Diagnostics
    from bench.run import run

    cfg = RunConfig(model="scurnn", task="copying", seq_len=5, n_hidden=4, max_steps=10, val_every=5, batch_size=100,
                    runs_dir=str(tmp_path), wandb="disabled", quiet=True, device="cpu")
    return run(cfg, callbacks=[Diagnostics(), Diagnostics()]), tmp_path   # a second one stays idle


def test_diagnostics_callback_writes_file_that_the_leaderboard_reads(tiny_run):
    result, runs = tiny_run
    data = json.loads((Path(result["run_dir"]) / "diagnostics.json").read_text())
    snaps = data["snapshots"]
    assert [s["step"] for s in snaps] == [0, 5, 10]
    for s in snaps:
        assert 0 <= s["unitarity_error"] < 1e-5
        g = s["grad_norm"]
        assert g["seq_len"] == 25 and len(g["norm"]) == 25 and all(math.isfinite(v) and v > 0 for v in g["norm"])
        assert all(0 <= s["modrelu"][k] <= 1 for k in ("singular_frac", "eps_frac", "dead_frac"))
    rows = aggregate(load_results(runs)[0])
    from bench.leaderboard import diagnostics_table
    headers, body = diagnostics_table(rows)
    assert body[0][headers.index("runs with diagnostics")] == "1/1"
