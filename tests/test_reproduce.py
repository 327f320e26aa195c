"""``bench reproduce``: the run set of an artefact against bench/paper.py, what the scales change,
skipping what is done, the rendered cells against statistics computed here, failures, one real
artefact end to end through the CLI, and the input errors."""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench import reproduce as rp
from bench.cli import main
from bench.config import RunConfig, resolve
from bench.models import MODELS, get_model_class
from bench.optim import resolve_name
from bench.paper import anchor_budget, paper_rows, paper_setting
from bench.results import write_result
from bench.tasks import get_task_class

# fields a scale may change; every other field of a resolved config must be the same at every scale
SCALE_FIELDS = {"max_steps", "batch_size", "val_every", "seq_len", "scale", "tags", "track_test"}


def _expected_table1(seeds: int) -> set[tuple]:
    """Table 1's runs computed here from bench/paper.py: every mnist/pmnist row x seed, with the
    optimizer of each group the model has (name resolved to the model's reference rule) and lr."""
    out = set()
    for task in ("mnist", "pmnist"):
        for row in paper_rows(task=task):
            cls = get_model_class(row.model)
            groups = cls.groups_for(**row.options)
            opts = tuple(sorted((g, resolve_name(name, cls.semantics_for(g)), lr)
                                for g, (name, lr) in row.opts.items() if g in groups))
            for seed in range(seeds):
                out.add((task, row.model, row.n_hidden, opts, json.dumps(row.options, sort_keys=True), seed))
    return out


def _as_tuple(run: rp.PlannedRun) -> tuple:
    c = run.resolved
    opts = tuple(sorted((g, spec[0], spec[1]) for g, spec in c.opts.items()))
    return (c.task, c.model, c.n_hidden, opts, json.dumps(c.model_options, sort_keys=True), c.seed)


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_table1_runs_are_the_paper_rows_times_seeds(tmp_path, scale):
    runs = rp.plan("table1", scale, 2, runs_dir=str(tmp_path))
    expected = _expected_table1(2)
    assert len(expected) == 40 and len(runs) == len(expected)          # 20 rows of Table 1, 2 seeds
    assert {_as_tuple(r) for r in runs} == expected
    for r in runs:
        proto = rp.protocol(r.resolved.task, scale)
        ps = get_task_class(r.resolved.task).paper_scale
        want = ps if scale == "paper" else {"max_steps": proto.max_steps, "batch_size": proto.batch_size,
                                            "val_every": proto.val_every}
        assert {k: getattr(r.resolved, k) for k in ("max_steps", "batch_size", "val_every")} == \
               {k: want[k] for k in ("max_steps", "batch_size", "val_every")}
        assert r.resolved.track_test is True and r.resolved.quiet and r.resolved.threads == 1
        assert r.resolved.paper_source == r.row.source and r.resolved.fallback is None
        assert r.eval_batches == (rp.PROTOCOLS[r.resolved.task]["smoke"].eval_batches if scale == "smoke" else None)


def test_scales_change_only_the_declared_fields(tmp_path):
    by_scale = {s: {(r.resolved.task, r.model, r.resolved.n_hidden, r.seed): r.resolved.to_dict()
                    for r in rp.plan(a, s, 1, runs_dir=str(tmp_path))}
                for a in ("table1", "copying", "adding") for s in rp.SCALES}
    assert by_scale["smoke"].keys() == by_scale["cpu"].keys() == by_scale["paper"].keys()
    for key, smoke in by_scale["smoke"].items():
        for other in (by_scale["cpu"][key], by_scale["paper"][key]):
            changed = {k for k in smoke if smoke[k] != other[k]}
            assert changed <= SCALE_FIELDS, (key, changed - SCALE_FIELDS)


def test_paper_default_rows_share_the_config_hash_of_plain_bench_run(tmp_path):
    """Passing the row's settings explicitly gives the hash `bench run` gets from the row itself,
    so reproduce and `bench run`/`bench leaderboard` see the same runs."""
    checked = 0
    for r in rp.plan("copying", "cpu", 1, runs_dir=str(tmp_path)) + rp.plan("table1", "cpu", 1, runs_dir=str(tmp_path)):
        c = r.resolved
        if paper_setting(c.model, c.task, c.seq_len) is not r.row:
            continue
        plain = resolve(RunConfig(model=c.model, task=c.task, seed=c.seed, seq_len=c.seq_len, batch_size=c.batch_size,
                                  max_steps=c.max_steps, val_every=c.val_every))
        assert plain.config_hash() == c.config_hash(), r.label()
        checked += 1
    assert checked >= 15


def test_copying_and_adding_pick_each_models_row_at_each_length(tmp_path):
    runs = rp.plan("copying", "smoke", 1, runs_dir=str(tmp_path))
    models = sorted({r.model for r in paper_rows(task="copying")})
    assert sorted(r.model for r in runs if r.panel.seq_len == 1000) == models
    for r in runs:
        assert r.row is paper_setting(r.model, "copying", r.panel.seq_len)
        assert r.resolved.seq_len == {1000: 20, 2000: 40}[r.panel.seq_len]           # declared smoke lengths
    scurnn = {r.panel.seq_len: r.resolved.opts for r in runs if r.model == "scurnn"}
    assert scurnn[1000]["A"] == ["scurnn_adagrad", 1e-4] and scurnn[2000]["A"] == ["scurnn_rmsprop", 1e-4]  # §5.2
    paper = rp.plan("adding", "paper", 1, runs_dir=str(tmp_path))
    assert sorted({r.resolved.seq_len for r in paper}) == [200, 750]
    eurnn = {r.panel.seq_len: r.resolved.model_options for r in paper if r.model == "eurnn"}
    assert eurnn == {200: {"capacity": 4, "complex": False}, 750: {"style": "fft", "complex": False}}
    md, _ = rp.render("adding", "smoke", rp.plan("adding", "smoke", 1, runs_dir=str(tmp_path)), [])
    assert "T=200 run at T=20" in md and "## T=750 (run at T=40)" in md   # shortened lengths said in the header


def test_with_new_models_adds_the_models_without_a_row_at_the_anchor_budget(tmp_path):
    runs = rp.plan("table1", "smoke", 1, with_new_models=True, runs_dir=str(tmp_path))
    for task in ("mnist", "pmnist"):
        new = sorted(r.model for r in runs if r.row is None and r.resolved.task == task)
        assert new == sorted(m for m in MODELS if not paper_rows(m, task))
        cls = get_task_class(task)
        budget, _ = anchor_budget(task, None, cls.d_input, cls.d_output)
        for r in runs:
            if r.row is None and r.resolved.task == task:
                m = get_model_class(r.model)
                assert r.resolved.n_hidden == m.hidden_for_budget(budget, cls.d_input, cls.d_output,
                                                                  **r.resolved.model_options)
    assert "eurnn" in {r.model for r in runs if r.row is None and r.resolved.task == "mnist"}  # no mnist row
    md, _ = rp.render("table1", "smoke", runs, [])
    assert "lru (not in the paper)" in md


# ---- results on disk --------------------------------------------------------------------------

def _fake_result(runs_dir: Path, run: rp.PlannedRun, metrics: dict, status="completed", finished="2026-01-01T00:00:00",
                 eval_tag="same", curves: str | None = None) -> Path:
    """A result.json as bench/run.py writes it (bench.results.write_result), for a planned run;
    with ``curves``, that text as its csv/metrics.csv."""
    config = run.resolved.to_dict()
    if eval_tag != "same":
        config["tags"] = {**config["tags"], "eval_batches": eval_tag}
    name = f"fake-{run.config_hash[:8]}-seed{run.seed}-{time.monotonic_ns()}"
    folder = runs_dir / run.resolved.task / run.model / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if curves is not None:
        (folder / "csv").mkdir()
        (folder / "csv" / "metrics.csv").write_text(curves)
    write_result(folder, {"result_version": 1, "status": status, "error": None, "config": config,
                          "config_hash": run.config_hash, "seed": run.seed, "model": run.model,
                          "task": run.resolved.task, "n_hidden": run.resolved.n_hidden, "n_params": run.n_params,
                          "metric": {"name": "acc", "mode": "max"}, "task_info": {"data_seed": 5544},
                          "metrics": metrics, "wall_time_s": 1.0, "finished_at": finished,
                          "curves": "csv/metrics.csv" if curves is not None else None})
    return folder


def test_done_runs_are_skipped_and_corrupt_partial_or_foreign_ones_are_not(tmp_path):
    runs = rp.plan("table1", "smoke", 1, runs_dir=str(tmp_path))
    assert len(runs) == 20
    folders = [_fake_result(tmp_path, r, {"best_test_acc": 0.5}) for r in runs]
    rp.mark_states(runs, tmp_path)
    assert [r.state for r in runs] == ["done"] * 20
    (folders[0] / "result.json").write_text('{"status": "completed", "conf')            # corrupt (cut short)
    data = json.loads((folders[1] / "result.json").read_text())
    del data["metrics"]
    (folders[1] / "result.json").write_text(json.dumps(data))                            # partial record
    (folders[2] / "result.json").unlink()
    _fake_result(tmp_path, runs[2], {"best_test_acc": 0.5}, status="diverged")           # not completed
    (folders[3] / "result.json").unlink()
    _fake_result(tmp_path, runs[3], {"best_ckpt_test_acc": 0.5})                         # made without --track-test
    (folders[4] / "result.json").unlink()
    _fake_result(tmp_path, runs[4], {"best_test_acc": 0.5}, eval_tag=None)               # another evaluation
    (folders[5] / "result.json").unlink()
    (folders[5] / "checkpoints").mkdir()
    (folders[5] / "checkpoints" / "last.ckpt").write_bytes(b"x")                        # unfinished, resumable
    rp.mark_states(runs, tmp_path)
    assert [r.state for r in runs[:6]] == ["run"] * 5 + ["resume"]
    assert runs[5].resume_dir == str(folders[5])
    assert [r.state for r in runs[6:]] == ["done"] * 14


def _md_table_rows(md: str, header_start: str) -> tuple[list[str], list[list[str]]]:
    lines = md.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("| " + header_start))
    split = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]   # noqa: E731
    body = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        body.append(split(line))
    return split(lines[i]), body


def test_rendered_cells_are_mean_std_and_difference_to_the_paper(tmp_path):
    runs = rp.plan("table1", "smoke", 3, runs_dir=str(tmp_path))
    rng = np.random.default_rng(7)
    values: dict[tuple, list[float]] = {}
    for r in runs:
        if r.model == "ornn" and r.seed > 0:
            continue                                   # one seed only: no std
        v = float(rng.uniform(0.1, 0.9))
        values.setdefault((r.resolved.task, r.model, r.resolved.n_hidden), []).append(v)
        _fake_result(tmp_path, r, {"best_test_acc": v, "best_ckpt_test_acc": 0.0})
    scurnn = next(r for r in runs if r.model == "scurnn" and r.resolved.n_hidden == 116 and r.resolved.task == "mnist")
    _fake_result(tmp_path, scurnn, {"best_test_acc": 0.99}, eval_tag=None)      # full evaluation: another protocol
    _fake_result(tmp_path, scurnn, {"best_test_acc": float("nan")}, status="diverged", finished="2026-01-02T00:00:00")
    md, text_csv = rp.render("table1", "smoke", runs, rp.load_existing(tmp_path))

    headers, body = _md_table_rows(md, "model")
    col = {h: i for i, h in enumerate(headers)}
    cells = {(b[0], b[1]): b for b in body}
    names = {"scurnn": "scuRNN", "scornn": "scoRNN", "lstm": "LSTM", "urnn": "Rest. cap. uRNN",
             "fcurnn": "Full cap. uRNN", "ornn": "oRNN", "eurnn": "EURNN"}
    assert [b[0] for b in body][:2] == ["scuRNN", "scuRNN"] and len(body) == 11      # Table 1's rows, its order
    for (task, model, n), vals in values.items():
        label = {"mnist": "Unperm.", "pmnist": "Perm."}[task]
        row = cells[(names[model], str(n))]
        paper = next(s.reported["test_acc"] for s in paper_rows(model, task) if s.n_hidden == n)
        mean = statistics.fmean(vals)
        assert np.isclose(mean, np.mean(vals))
        if len(vals) > 1:
            std = statistics.stdev(vals)
            assert np.isclose(std, np.std(vals, ddof=1))
            ours = f"{mean:.4g} ± {std:.2g} ({len(vals)} seeds)"
        else:
            ours = f"{mean:.4g} (1 seed)"
        if (task, model, n) == ("mnist", "scurnn", 116):
            ours += " [1 diverged]"
        assert row[col[f"{label} test acc: ours"]] == ours
        assert row[col[f"{label} test acc: paper"]] == f"{paper:.4g}"
        assert row[col[f"{label} test acc: Δ"]] == f"{mean - paper:+.3g}"
    assert cells[("oRNN", "256")][col["Perm. test acc: ours"]] == "no paper row"     # Table 1 has no pMNIST oRNN
    assert "Scale **smoke**" in md and "4 steps × batch 50" in md and "first 1 batch(es)" in md

    lines = list(csv.DictReader(io.StringIO(text_csv)))
    assert len(lines) == 20
    for line in lines:
        vals = values[(line["task"], line["model"], int(line["n_hidden"]))]
        assert float(line["mean"]) == pytest.approx(np.mean(vals))
        assert (line["std"] == "") if len(vals) == 1 else float(line["std"]) == pytest.approx(np.std(vals, ddof=1))
        assert float(line["diff"]) == pytest.approx(np.mean(vals) - float(line["paper"]))
        assert line["eval_batches"] == "1" and line["max_steps"] == "4"


# ---- the figures (Figures 4 and 5) ------------------------------------------------------------

TRAIN_STEPS = np.arange(9, 100, 10)          # Lightning's 0-based steps of the logged training loss
VAL_STEPS = np.array([24, 49, 74, 99])       # and of the validations


def _metrics_csv(train: np.ndarray, val: np.ndarray) -> str:
    """A run's csv/metrics.csv as Lightning's CSVLogger writes it: one row per logged step and kind."""
    lines = ["epoch,step,train/loss,val/loss,val/mse"]
    lines += [f"0,{s},{float(v)!r},," for s, v in zip(TRAIN_STEPS, train)]
    lines += [f"0,{s},,{float(v)!r},{float(v)!r}" for s, v in zip(VAL_STEPS, val)]
    return "\n".join(lines) + "\n"


def _trailing_mean(v: np.ndarray, k: int) -> np.ndarray:
    return np.array([v[max(0, i - k + 1):i + 1].mean() for i in range(len(v))])


def _bands(ax, color) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(x, lower, upper) of each band drawn in ``color`` on ``ax``, read from its polygon."""
    from matplotlib.colors import same_color

    out = []
    for band in (c for c in ax.collections if same_color(c.get_facecolor()[0][:3], color)):
        xy = band.get_paths()[0].vertices
        xs = np.unique(xy[:, 0])
        out.append((xs, np.array([xy[xy[:, 0] == x, 1].min() for x in xs]),
                    np.array([xy[xy[:, 0] == x, 1].max() for x in xs])))
    return out


@pytest.mark.parametrize("artefact", ["copying", "adding"])
def test_figure_lines_are_the_seed_mean_and_std_of_the_runs_curves(tmp_path, artefact):
    """2 models x 2 seeds with constructed curves, a third model planned but never run and one
    seed diverged: each panel's line is the mean over seeds of the (smoothed) curve, the band ±1
    std (ddof=1), computed here with numpy; the baseline is the task's at the run length; the
    seeds missing are said in the label and the footnote."""
    models = ("scurnn", "lstm", "scornn")
    runs = [r for r in rp.plan(artefact, "smoke", 2, runs_dir=str(tmp_path)) if r.model in models]
    art = rp.ARTEFACTS[artefact]
    rng = np.random.default_rng(3)
    values: dict[tuple, dict[int, np.ndarray]] = {}
    for r in runs:
        if r.model == "scornn":
            continue                                                          # never run
        if r.model == "lstm" and r.panel == art.panels[1] and r.seed == 1:
            _fake_result(tmp_path, r, {}, status="diverged")                  # no curve
            continue
        train, val = rng.uniform(0.1, 1.0, len(TRAIN_STEPS)), rng.uniform(0.01, 0.3, len(VAL_STEPS))
        _fake_result(tmp_path, r, {"final_train_loss": float(train[-1])}, curves=_metrics_csv(train, val))
        values.setdefault((r.panel.label, r.model), {})[r.seed] = train if artefact == "copying" else val
    fig, _ = rp.draw_figure(artefact, "smoke", runs, rp.load_existing(tmp_path))

    axes = fig.axes
    assert len(axes) == len(art.panels) == 2
    first, second = (ax.get_position() for ax in axes)
    assert (first.y0 > second.y0 and first.x0 == second.x0) if artefact == "adding" else first.x0 < second.x0
    names = {"scurnn": "scuRNN", "lstm": "LSTM", "scornn": "scoRNN"}
    for ax, panel in zip(axes, art.panels):
        T = rp.run_seq_len(panel, rp.protocol(artefact, "smoke"))
        assert ax.get_title() == f"{panel.label} (run at T={T})" and ax.get_xlabel() == "training iteration"
        baseline = 10 * np.log(8) / (T + 20) if artefact == "copying" else 1 / 6
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--" and line.get_color() == "black"]
        assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), baseline)
        if artefact == "adding":
            assert round(dashed[0].get_ydata()[0], 3) == 0.167                 # the paper's baseline
        drawn = {line.get_label(): line for line in ax.get_lines() if line not in dashed}
        expected = {}
        for model in ("scurnn", "lstm"):
            seeds = values[(panel.label, model)]
            curves = [_trailing_mean(v, 5) if artefact == "copying" else v for v in seeds.values()]
            label = f"{names[model]} ({len(seeds)} seeds)" if len(seeds) == 2 else f"{names[model]} (1 of 2 seeds)"
            expected[label] = (curves, (TRAIN_STEPS if artefact == "copying" else VAL_STEPS) + 1)
        assert set(drawn) == set(expected)                                     # no line for scoRNN: never run
        for label, (curves, x) in expected.items():
            line = drawn[label]
            assert np.array_equal(line.get_xdata(), x)
            assert np.allclose(line.get_ydata(), np.mean(curves, axis=0), rtol=1e-12, atol=0)
            bands = _bands(ax, line.get_color())
            if len(curves) == 2:
                (xs, lower, upper), = bands
                mean, std = np.mean(curves, axis=0), np.std(curves, axis=0, ddof=1)
                assert np.array_equal(xs, x) and np.allclose(lower, mean - std) and np.allclose(upper, mean + std)
            else:
                assert bands == []                                             # one seed: no band
        assert ("rolling mean of 5" in ax.get_ylabel()) == (artefact == "copying")
        assert ax.get_ylabel().startswith(art.curve.label)
    text = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    second = rp.panel_header(art.panels[1], "smoke")
    assert f"LSTM at {second}: 1 of 2 seeds with a curve (1 diverged)" in text
    assert all(f"scoRNN at {rp.panel_header(p, 'smoke')}: 0 of 2 seeds" in text for p in art.panels)
    assert "Ours, not the paper's figure" in text and "Scale smoke" in text
    assert ("the paper's figure plots test set MSE" in text) == (artefact == "adding")
    assert "ours at scale smoke" in fig.get_suptitle()

    path = rp.write_figure(tmp_path, artefact, "smoke", runs, rp.load_existing(tmp_path))
    assert path == tmp_path / "reproduce" / f"{artefact}-smoke.png" and path.read_bytes()[:4] == b"\x89PNG"
    md, _ = rp.render(artefact, "smoke", runs, rp.load_existing(tmp_path))
    assert f"]({artefact}-smoke.png)" in md
    assert rp.write_figure(tmp_path, "table1", "smoke", [], []) is None       # a table: no figure


def test_failed_runs_and_a_killed_worker_are_reported_and_the_others_go_on(tmp_path):
    """One worker: a run whose worker is killed (SIGKILL) mid-training, a run that raises, and a
    good run. The first two are reported with why; a new worker takes over and the good run completes."""
    long, good, bad = rp.plan("adding", "smoke", 1, runs_dir=str(tmp_path))[1:4]    # lstm, scornn, fcurnn at T=20
    for r in (long, good, bad):
        r.resolved = r.resolved.with_(max_steps=2, val_every=2, seq_len=5, wandb="disabled")
    long.resolved = long.resolved.with_(max_steps=10**6, val_every=10**6)   # dispatched first (longest estimate)
    bad.resolved = bad.resolved.with_(model_options={**bad.resolved.model_options, "bogus": 1})
    logs = tmp_path / "logs"

    def kill_worker0():
        deadline = time.time() + 120
        while time.time() < deadline and not any("== run" in p.read_text() for p in logs.glob("*-worker0.log")):
            time.sleep(0.2)
        time.sleep(2)                                                      # inside the training loop by now
        for p in multiprocessing.active_children():
            if p.name == "bench-reproduce-0":
                os.kill(p.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_worker0)
    killer.start()
    said = []
    outcomes = rp.execute([long, bad, good], 1, logs, say=said.append)
    killer.join()
    status = {o.run.model: o for o in outcomes}
    assert status["lstm"].status == "failed" and status["lstm"].error == "worker process died (killed by signal 9)"
    assert status["fcurnn"].status == "failed" and "bogus" in status["fcurnn"].error
    assert status["scornn"].status == "completed" and Path(status["scornn"].run_dir, "result.json").is_file()
    assert sum("FAILED" in s for s in said) == 2 and any("bogus" in s and "fcurnn" in s for s in said)


# ---- the command ------------------------------------------------------------------------------

def _bench(*args, cwd, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, "-m", "bench.cli", "reproduce", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _results(runs_dir: Path) -> list[Path]:
    return sorted(runs_dir.rglob("result.json"))


def test_adding_smoke_end_to_end_then_nothing_to_do_then_one_corrupt_rerun(tmp_path):
    runs_dir = tmp_path / "runs"
    done = _bench("adding", "--scale", "smoke", "--workers", "2", "--runs-dir", str(runs_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    planned = rp.plan("adding", "smoke", runs_dir=str(runs_dir))
    assert len(planned) == 14
    found = _results(runs_dir)
    assert len(found) == 14
    keys = {(json.loads(p.read_text())["config_hash"], json.loads(p.read_text())["seed"]) for p in found}
    assert keys == {(r.config_hash, r.seed) for r in planned}
    for p in found:
        r = json.loads(p.read_text())
        assert r["status"] == "completed" and r["config"]["tags"]["eval_batches"] == 4
    assert "# Figure 5: adding problem" in done.stdout and "| scuRNN | 116 |" in done.stdout
    assert (runs_dir / "reproduce" / "adding-smoke.md").read_text() == done.stdout
    assert (runs_dir / "reproduce" / "adding-smoke.csv").is_file()
    assert (runs_dir / "reproduce" / "adding-smoke.png").read_bytes()[:4] == b"\x89PNG"
    assert "ran 14, skipped 0" in done.stderr and f"and {runs_dir / 'reproduce' / 'adding-smoke.png'}" in done.stderr

    again = _bench("adding", "--scale", "smoke", "--workers", "2", "--runs-dir", str(runs_dir), cwd=tmp_path)
    assert again.returncode == 0 and "ran 0, skipped 14" in again.stderr
    assert len(_results(runs_dir)) == 14 and again.stdout == done.stdout

    found[0].write_text(found[0].read_text()[:100])                    # a result cut short
    third = _bench("adding", "--scale", "smoke", "--workers", "2", "--runs-dir", str(runs_dir), cwd=tmp_path)
    assert third.returncode == 0 and "ran 1, skipped 13" in third.stderr
    assert len(_results(runs_dir)) == 15


def test_unknown_artefact_is_one_line_naming_it_and_the_known_ones(tmp_path):
    done = _bench("tabel1", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "'tabel1'" in lines[0]
    assert all(name in lines[0] for name in ("table1", "table2", "copying", "adding"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, words", [
    (["table1", "--scale", "huge"], ["'huge'", "smoke", "cpu", "paper"]),
    (["table1", "--workers", "0"], ["--workers", "0"]),
    (["table1", "--seeds", "0"], ["--seeds", "0"]),
    ([], ["table1", "--list"]),
    (["table2", "--scale", "smoke"], ["timit", "--data-dir"]),            # TIMIT's data: checked before any run
    (["adding", "--launcher", "slurm", "--wait"], ["--launcher, --wait", "--storage"]),   # cluster flags need a study
    (["adding", "--partition", "gpu"], ["--partition", "--storage"]),
])
def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, argv, words):
    runs = tmp_path / "runs"
    assert main(["reproduce", *argv, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench reproduce: error:") and all(w in err[0] for w in words), err
    assert not list(runs.rglob("config.json"))


def test_list_and_dry_run_run_nothing(tmp_path, capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in rp.ARTEFACTS:
        assert out.count(f"\n{name} ") + out.startswith(f"{name} ") == 1
    assert out.count(" runs (") == 3 * len(rp.ARTEFACTS) and "measured ms per step" in out
    assert main(["reproduce", "copying", "--scale", "cpu", "--dry-run", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("bench run --model") == 36 and "36 runs: 0 done" in out     # 12 settings x 3 seeds
    assert not any(tmp_path.iterdir())


# ---- the appendix's Tables 3 and 4 ------------------------------------------------------------

PAPER_TEXT = Path(__file__).resolve().parents[2] / "shared" / "papers" / "scurnn-paper.md"
WORDS = {"RMS.": "rmsprop", "Adg.": "adagrad", "Adam": "adam"}


def _appendix_from_the_paper(table: str) -> list[tuple]:
    """(A, D, other, numbers) per row of the paper's ``table``, read from its text here."""
    lines = PAPER_TEXT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{table}:"))
    rows = []
    for line in lines[start + 1:]:
        cells = line.split("\t")
        if cells[0] == "A" or not line.strip():
            continue
        if len(cells) < 5:
            break
        specs = []
        for cell in cells[:3]:
            name, exponent = cell.replace(" ", "").split("/10^{")
            specs.append((WORDS[name], 10.0 ** int(exponent.rstrip("}"))))
        rows.append((*specs, tuple(float(c.replace("E", "e")) for c in cells[3:5])))
    return rows


@pytest.mark.skipif(not PAPER_TEXT.exists(), reason="the paper's text (shared/papers/) is not in this checkout")
@pytest.mark.parametrize("artefact, table, tasks", [("table3", "Table 3", ["mnist", "pmnist"]),
                                                   ("table4", "Table 4", ["copying"])])
def test_appendix_tables_run_the_papers_rows_with_their_numbers(tmp_path, artefact, table, tasks):
    """Each row of the paper's Table 3/4, read from its text here, is one scuRNN run per panel with
    that row's optimizers (resolved to scuRNN's reference rules) and the row's printed numbers."""
    paper = _appendix_from_the_paper(table)
    assert len(paper) == {"Table 3": 6, "Table 4": 5}[table]
    runs = rp.plan(artefact, "paper", 1, runs_dir=str(tmp_path))
    cls = get_model_class("scurnn")
    assert len(runs) == len(paper) * len(tasks)
    for task in tasks:
        mine = [r for r in runs if r.resolved.task == task]
        for k, (r, (a, d, other, numbers)) in enumerate(zip(mine, paper), 1):
            want = {g: [resolve_name(name, cls.semantics_for(g)), lr] for g, (name, lr) in
                    zip(("A", "D", "other"), (a, d, other))}
            assert {g: list(v) for g, v in r.resolved.opts.items()} == want, (task, k)
            assert r.resolved.n_hidden == {"Table 3": 116, "Table 4": 130}[table]
            assert r.row.source == f"Appendix A.3, {table} row {k}" and r.resolved.paper_source == r.row.source
            printed = ({"test_acc": numbers[tasks.index(task)]} if table == "Table 3"     # Unperm. | Perm.
                       else {"first_step_below_baseline": numbers[0], "final_loss": numbers[1]})  # Iter. | It. MSE
            assert r.row.reported == pytest.approx(printed), (task, k)
            assert f"({table} row {k})" in r.label()
    # row 1 is the main setting: the very runs of Table 1 / Figure 4 (a done run counts for both)
    main_artefact = {"Table 3": "table1", "Table 4": "copying"}[table]
    main = {(r.resolved.task, r.resolved.seq_len, r.config_hash) for r in rp.plan(main_artefact, "paper", 1)
            if r.model == "scurnn"}
    assert all((r.resolved.task, r.resolved.seq_len, r.config_hash) in main for r in runs
               if r.row.source.endswith("row 1"))
    assert not any((r.resolved.task, r.resolved.seq_len, r.config_hash) in main for r in runs
                   if not r.row.source.endswith("row 1"))
    # these rows never become a plain run's default or the leaderboard's paper row
    from bench.paper import PAPER_SETTINGS

    assert not [s for s in PAPER_SETTINGS if s.source.startswith("Appendix")]


def test_appendix_table_renders_one_row_per_optimizer_setting(tmp_path):
    runs = rp.plan("table4", "smoke", 2, runs_dir=str(tmp_path))
    rng = np.random.default_rng(3)
    values = {}
    for r in runs:
        v = float(rng.uniform(0.1, 0.9))
        values.setdefault(r.row.source, []).append(v)
        _fake_result(tmp_path, r, {"final_train_loss": v, "first_step_below_baseline": 40.0})
    md, text_csv = rp.render("table4", "smoke", runs, rp.load_existing(tmp_path))
    headers, body = _md_table_rows(md, "model")
    col = {h: i for i, h in enumerate(headers)}
    assert len(body) == 5 and headers[:3] == ["model", "optimizers", "n"]
    assert body[0][1] == "A RMSProp 1e-4, D Adam 1e-4, other RMSProp 1e-3"
    assert body[3][1] == "A RMSProp 1e-4, D RMSProp 1e-5, other RMSProp 1e-3"
    for k, row in enumerate(body, 1):
        vals = values[f"Appendix A.3, Table 4 row {k}"]
        assert row[col["final CE: ours"]] == f"{np.mean(vals):.4g} ± {np.std(vals, ddof=1):.2g} (2 seeds)"
    assert [row[col["final CE: paper"]] for row in body] == ["0.00025", "0.00072", "0.00019", "0.001", "0.00072"]
    assert [row[col["first step < baseline: paper"]] for row in body] == ["300", "600", "300", "350", "600"]
    lines = list(csv.DictReader(io.StringIO(text_csv)))
    assert len(lines) == 10 and lines[0]["optimizers"] == body[0][1]
    assert "the paper's number for this row" in md
    with pytest.raises(Exception, match="--with-new-models does not apply to table4"):
        rp.plan("table4", "smoke", 1, with_new_models=True)


def test_the_leaderboard_puts_each_appendix_rows_own_number_beside_its_runs(tmp_path):
    """A run of Table 3 row k shows row k's printed accuracy in the leaderboard's paper column, not
    Table 1's number for the same model and size (row 1 is that setting: the same number)."""
    from bench.leaderboard import aggregate
    from bench.tasks import build_task

    info = json.loads(json.dumps(build_task("mnist").info(), default=str))     # as result.json holds it
    runs = [r for r in rp.plan("table3", "paper", 1, runs_dir=str(tmp_path)) if r.resolved.task == "mnist"]
    for r in runs:
        path = _fake_result(tmp_path, r, {"best_test_acc": 0.5, "test_acc": 0.5}) / "result.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "task_info": info}))
    by_hash = {row.config_hash: row for row in aggregate(rp.load_existing(tmp_path))}
    printed = [float(line[3]) for line in
               (row.split("\t") for row in PAPER_TEXT.read_text().split("Table 3:")[1].split("Table 4:")[0]
                .splitlines()) if len(line) == 5 and line[0] != "A"]
    assert len(printed) == 6
    for k, (r, want) in enumerate(zip(runs, printed), 1):
        row = by_hash[r.config_hash]
        assert list(row.paper.values()) == [pytest.approx(want)], (k, row.paper)
        assert row.paper_source == f"Appendix A.3, Table 3 row {k}"
