"""W&B as a view of the result files: what an offline W&B run holds, read back from W&B's own
transaction log (``run-<id>.wandb``) and compared with result.json and the CSV curves.

Every W&B run here is offline, in the test's tmp folder; nothing waits on a login.
"""
import json
import math
import os
import signal
import struct
import time
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

from bench.cli import main as bench_main
from bench.config import RunConfig
from bench.preemption import load_resume_config
from bench.results import EXIT_DIVERGED, EXIT_PREEMPTED
from bench.run import run
from bench.tracking import RUN_FILE


@pytest.fixture(autouse=True)
def wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield
    import wandb

    wandb.teardown()      # wandb keeps this test's settings (its WANDB_DIR) in a process-wide singleton


def tiny(tmp_path, **kw):
    base = dict(model="scurnn", task="copying", seq_len=10, n_hidden=8, max_steps=20, val_every=10,
                runs_dir=str(tmp_path / "runs"), wandb="offline", quiet=True, seed=3)
    base.update(kw)
    return RunConfig(**base)


# ---- W&B's offline record, read back ----------------------------------------------------------
def records(path: Path):
    """The protobuf records of a ``.wandb`` file: W&B's LevelDB-style log (a 7-byte file header,
    then 32 KiB blocks of chunks, each with a 7-byte header: checksum, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B", path
    pos, pending, block = 7, b"", 32 * 1024
    while pos + 7 <= len(data):
        if block - pos % block < 7:            # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk      # full/first, middle/last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


class OfflineRun:
    """What one offline run folder tells W&B when synced: run record, history, summary, exit.

    wandb's service writes the file after ``run.finish()`` returns (measured with wandb 0.31):
    read it once its exit record is there."""

    def __init__(self, folder: Path, wait_s: float = 30.0):
        (self.file,) = folder.glob("run-*.wandb")
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._read()
                if self.exit_code is not None or time.monotonic() > deadline:
                    break
            except Exception:           # a record half written
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
        self.id = self.run_record.run_id
        self.tags = list(self.run_record.tags)

    def _read(self):
        self.summary, self.history, self.config, self.kinds = {}, [], {}, []
        self.exit_code = self.run_record = None
        for r in records(self.file):
            kind = r.WhichOneof("record_type")
            self.kinds.append(kind)
            if kind == "run":
                self.run_record = r.run
                for item in r.run.config.update:
                    self.config[item.key] = json.loads(item.value_json)
            elif kind == "history":
                self.history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                     for item in r.history.item})
            elif kind == "summary":
                for item in r.summary.update:
                    path = [item.key] if item.key else list(item.nested_key)
                    node = self.summary
                    for key in path[:-1]:
                        node = node.setdefault(key, {})
                    node[path[-1]] = json.loads(item.value_json)
            elif kind == "exit":
                self.exit_code = r.exit.exit_code

    def rows(self):
        """The history without W&B's own bookkeeping keys."""
        return [{k: v for k, v in row.items() if not k.startswith("_")} for row in self.history]


def offline_runs(run_dir) -> list[OfflineRun]:
    return [OfflineRun(f) for f in sorted(Path(run_dir).glob("wandb/offline-run-*"))]


def csv_rows(path: Path):
    """The CSV curve's rows as W&B history rows: its values, and ``step`` as trainer/global_step."""
    out = []
    for row in pd.read_csv(path).to_dict("records"):
        step = row.pop("step")
        out.append({**{k: v for k, v in row.items() if not math.isnan(v)}, "trainer/global_step": int(step)})
    return out


def assert_summary_is_result(wb: OfflineRun, result: dict):
    """Every result.json field is in the W&B summary with the same value (the metrics under
    their result.json names), and the config is the W&B config."""
    assert "status" in wb.summary and "n_params" in wb.summary
    for key, value in result.items():
        if key == "config":
            assert {k: wb.config[k] for k in value} == value
        elif key == "metrics":
            for name, metric in value.items():
                assert wb.summary[name] == metric, name
        else:
            assert wb.summary[key] == value, key
    assert wb.summary["code_version"] == result["code_version"] and wb.summary["paper_row"] == result["paper_row"]


# ---- a run logged live ------------------------------------------------------------------------
def test_offline_run_holds_result_json_and_the_curves(tmp_path):
    result = run(tiny(tmp_path, max_steps=30, val_every=5))
    run_dir = Path(result["run_dir"])
    on_disk = json.loads((run_dir / "result.json").read_text())
    (wb,) = offline_runs(run_dir)
    assert wb.id == on_disk["wandb"]["id"] == json.loads((run_dir / RUN_FILE).read_text())["id"]
    assert_summary_is_result(wb, on_disk)
    assert wb.exit_code == 0 and "diverged" not in wb.tags and on_disk["status"] == "completed"

    # W&B's best of each validation metric is result.json's best value
    m = on_disk["metrics"]
    assert wb.summary["val/acc"] == {"max": m["best_val_acc"], "last": m["final_val_acc"]}
    assert wb.summary["val/loss"] == {"min": m["best_val_loss"], "last": m["final_val_loss"]}
    assert m["best_val_acc"] == max(r["val/acc"] for r in wb.rows() if "val/acc" in r)

    # the history is the CSV curve, row for row
    assert wb.rows() == csv_rows(run_dir / on_disk["curves"])

    # test metrics: final weights and best checkpoint logged once each, under names that map
    # onto result.json's by "/" -> "_"
    tested = {k: r[k] for r in wb.rows() for k in r if k.startswith(("test/", "best_ckpt_test/"))}
    assert sum("test/acc" in r for r in wb.rows()) == 1 and sum("best_ckpt_test/acc" in r for r in wb.rows()) == 1
    assert {k.replace("/", "_"): v for k, v in tested.items()} == \
        {k: v for k, v in m.items() if k.startswith(("test_", "best_ckpt_test_"))}
    assert set(tested) == {"test/acc", "test/loss", "best_ckpt_test/acc", "best_ckpt_test/loss"}


class PoisonAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                module.model.A_re[0] = float("nan")


def test_diverged_run_is_failed_and_tagged_in_wandb(tmp_path):
    result = run(tiny(tmp_path), callbacks=[PoisonAt(7)])
    assert result["status"] == "diverged"
    (wb,) = offline_runs(result["run_dir"])
    assert wb.exit_code == EXIT_DIVERGED != 0           # W&B: failed
    assert "diverged" in wb.tags and wb.summary["status"] == "diverged"
    assert wb.summary["error"] == result["error"] and "non-finite training loss" in wb.summary["error"]
    assert_summary_is_result(wb, json.loads((Path(result["run_dir"]) / "result.json").read_text()))


class TrialPruned(Exception):
    """Named as optuna's: run() records a pruned trial by this name."""


class RaiseAt(pl.Callback):
    def __init__(self, step, exc):
        self.step, self.exc = step, exc

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise self.exc


def test_pruned_run_is_finished_and_tagged_and_a_crash_is_failed(tmp_path):
    with pytest.raises(TrialPruned):
        run(tiny(tmp_path / "pruned"), callbacks=[RaiseAt(12, TrialPruned("pruned at step 12"))])
    (result_file,) = (tmp_path / "pruned").rglob("result.json")
    result = json.loads(result_file.read_text())
    (wb,) = offline_runs(result_file.parent)
    assert result["status"] == "pruned" and wb.exit_code == 0 and "pruned" in wb.tags   # finished, tagged
    assert_summary_is_result(wb, result)

    with pytest.raises(RuntimeError, match="boom"):
        run(tiny(tmp_path / "crash"), callbacks=[RaiseAt(3, RuntimeError("boom"))])
    (run_dir,) = (tmp_path / "crash").glob("runs/*/*/*")
    (wb,) = offline_runs(run_dir)
    assert wb.exit_code == 1 and not (run_dir / "result.json").exists()      # failed, not finished


# ---- bench sync -------------------------------------------------------------------------------
def test_sync_makes_one_wandb_run_from_the_files_of_a_disabled_run(tmp_path, capsys):
    disabled = run(tiny(tmp_path, wandb="disabled"))
    logged = run(tiny(tmp_path, seed=4))                 # already an offline W&B run: left as it is
    run_dir = Path(disabled["run_dir"])
    assert not (run_dir / "wandb").exists() and not (run_dir / RUN_FILE).exists()
    before = sorted(p.name for p in Path(logged["run_dir"]).rglob("*"))

    assert bench_main(["sync", str(tmp_path / "runs"), "--wandb", "offline"]) == 0
    out = capsys.readouterr().out
    assert f"made (from result.json and csv/metrics.csv): {run_dir}" in out
    assert f"up to date (an offline W&B run is there): {logged['run_dir']}" in out
    (wb,) = offline_runs(run_dir)
    stored = json.loads((run_dir / RUN_FILE).read_text())
    assert wb.id == stored["id"] and "offline" in stored["synced"]
    assert_summary_is_result(wb, disabled)
    assert wb.rows() == csv_rows(run_dir / "csv" / "metrics.csv")
    assert wb.summary["val/acc"]["max"] == disabled["metrics"]["best_val_acc"] and wb.exit_code == 0

    # a second sync finds both up to date: no second W&B run, the same id, nothing touched
    assert bench_main(["sync", str(tmp_path / "runs"), "--wandb", "offline"]) == 0
    assert "bench sync (offline): 2 up to date" in capsys.readouterr().out
    assert [w.id for w in offline_runs(run_dir)] == [stored["id"]]
    assert json.loads((run_dir / RUN_FILE).read_text()) == stored
    assert sorted(p.name for p in Path(logged["run_dir"]).rglob("*")) == before


def test_sync_refuses_a_disabled_wandb(tmp_path, monkeypatch, capsys):
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert bench_main(["sync", str(tmp_path / "runs")]) == 2
    assert "nothing to sync to" in capsys.readouterr().err


def test_sync_online_without_a_server_is_one_clear_error(tmp_path):
    """A key but no reachable server (a closed local port): a bounded wait, one line, exit 2,
    nothing made (asked in a fresh process: wandb keeps its login settings process-wide)."""
    import subprocess
    import sys

    (tmp_path / "runs").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY="b" * 40, WANDB_BASE_URL="http://127.0.0.1:9", BENCH_WANDB_TIMEOUT="3",
               HOME=str(tmp_path), WANDB_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "bench.cli", "sync", str(tmp_path / "runs"), "--wandb", "online"],
                          env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "bench sync: error: W&B cannot be used online" in done.stderr and "Traceback" not in done.stderr
    assert "b" * 40 not in done.stderr + done.stdout


# ---- preemption and resume --------------------------------------------------------------------
class SignalAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_resumed_run_continues_the_stored_wandb_run(tmp_path):
    first = run(tiny(tmp_path), callbacks=[SignalAt(12)])     # after the first logged rows
    assert first["status"] == "preempted"
    run_dir = Path(first["run_dir"])
    stored = json.loads((run_dir / RUN_FILE).read_text())["id"]
    (part,) = offline_runs(run_dir)
    assert part.id == stored and part.exit_code == EXIT_PREEMPTED
    assert part.summary["status"] == "preempted" and not part.run_record.resume

    resumed = run(load_resume_config(run_dir), resume_dir=run_dir)
    assert resumed["status"] == "completed" and resumed["wandb"]["id"] == stored
    parts = offline_runs(run_dir)
    assert [p.id for p in parts] == [stored, stored]     # offline: one folder per part, the same run
    assert parts[1].run_record.resume and parts[1].exit_code == 0
    assert_summary_is_result(parts[1], json.loads((run_dir / "result.json").read_text()))
    # each part's history is its own CSV part
    assert parts[0].rows() == csv_rows(run_dir / "csv" / "metrics.csv")
    assert parts[1].rows() == csv_rows(run_dir / "csv" / "part1" / "metrics.csv")
