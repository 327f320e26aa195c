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
                 data_seed=5544, curve=None, diagnostics=None, fallback=None) -> Path:
    """One result.json shaped like bench/run.py's, in runs/<task>/<model>/<dir>/."""
    cfg = RunConfig(model=model, task=task, seed=seed, n_hidden=n_hidden, seq_len=seq_len, batch_size=20,
                    max_steps=max_steps, val_every=50, data_seed=data_seed, resolved=True)
    run_dir = root / task / model / f"run{next(_counter)}-seed{seed}"
    run_dir.mkdir(parents=True)
    baseline = 10 * math.log(8) / (seq_len + 20) if task == "copying" else 1 / 6
    result = {
        "result_version": 1, "status": status, "error": None, "config": cfg.to_dict(),
        "config_hash": config_hash or cfg.config_hash(), "seed": seed, "model": model, "task": task,
        "n_hidden": n_hidden, "n_params": 2377, "metric": {"name": "acc", "mode": "max"},
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


def test_mnist_columns_paper_value_and_data_location_vs_split(tmp_path):
    info = lambda files, perm: {"split": {"train": 55000}, "files": files, "md5_verified": True,   # noqa: E731
                                "permutation_seed": perm}
    m = {"best_ckpt_test_acc": 0.9, "test_acc": 0.8}
    write_result(tmp_path, task="mnist", seq_len=None, n_hidden=116, seed=0, metrics=m, task_info=info("/a/x.gz", 1))
    write_result(tmp_path, task="mnist", seq_len=None, n_hidden=116, seed=1, metrics=m, task_info=info("/b/x.gz", 1))
    write_result(tmp_path, task="mnist", seq_len=None, n_hidden=116, seed=0, metrics=m, task_info=info("/a/x.gz", 2))
    rows = aggregate(load_results(tmp_path)[0])
    assert sorted(r.n for r in rows) == [1, 2]      # same files elsewhere merge; another permutation does not
    row = next(r for r in rows if r.n == 2)
    assert row.paper == {"best test acc": 0.976}    # the paper's Table 1 number, beside its own metric
    assert row.cells["test acc @ best val"].mean == pytest.approx(0.9)
    assert row.cells["best test acc"].n == 0 and fmt_stat(row.cells["best test acc"]) == "—"


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


def test_paper_value_only_for_the_papers_own_setting(tmp_path):
    write_result(tmp_path, seq_len=2000, n_hidden=130, metrics={"final_train_loss": 1e-3})
    write_result(tmp_path, seq_len=50, n_hidden=130, metrics={"final_train_loss": 1e-3})
    write_result(tmp_path, seq_len=2000, n_hidden=64, metrics={"final_train_loss": 1e-3})
    rows = {(r.seq_len, r.n_hidden): r for r in aggregate(load_results(tmp_path)[0])}
    assert rows[(2000, 130)].paper == {"final train loss": 2.5e-4, "first step < baseline": 300}
    assert "Table 4" in rows[(2000, 130)].paper_source
    assert rows[(50, 130)].paper == {} and rows[(2000, 64)].paper == {}


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
    assert {"model", "params", "seeds", "final train loss", "paper", "first step < baseline"} <= set(page.headers)
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


# -- diagnostics ------------------------------------------------------------------------------
def test_recorded_gradients_are_total_derivatives_and_module_is_restored():
    from bench.diagnostics import record_recurrence
    from bench.models import scurnn, unitary

    torch.manual_seed(0)
    model = scurnn.SCURNN(d_input=3, d_output=2, n_hidden=4)
    x = torch.randn(5, 12, 3)
    with record_recurrence(model) as rec:
        out = model(x)
        assert scurnn.unroll is not unitary.unroll
    assert scurnn.unroll is unitary.unroll and scurnn.modrelu_complex is unitary.modrelu_complex
    assert model.fast is True                      # the fused path is back on
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
