"""The reliability claims as a user meets them: result files are written atomically and never
overwritten (tested through the functions that write them, with crashes caused mid-write), and
`bench run` exits 3 on divergence and 75 on preemption, then `bench run --resume` finishes the run."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.leaderboard.load import load_results
from bench.atomic import atomic_write, atomic_write_text
from bench.results import RESULT_FILE, iter_results, write_result

ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


# ---- result files -------------------------------------------------------------------------
def test_a_result_is_written_whole_and_a_second_write_is_refused(tmp_path):
    first = {"status": "completed", "config": {"seed": 1}, "metrics": {"x": 0.5}}
    path = write_result(tmp_path, first)
    assert path == tmp_path / RESULT_FILE and json.loads(path.read_text()) == first
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="immutable"):
        write_result(tmp_path, {**first, "metrics": {"x": 0.9}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [RESULT_FILE]          # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()                # readable by the group, as shared results are


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_exception_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_text(path, '{"old": true}\n')

    def half_then_fail(f):
        f.write(b'{"new": tr')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_kill_9_mid_write_leaves_no_half_file_and_readers_skip_the_stray_temporary(tmp_path):
    """A writer killed (SIGKILL) after writing half of a result: result.json does not exist, and
    the leaderboard reports the stray temporary file instead of reading it."""
    run_dir = tmp_path / "runs" / "copying" / "scurnn" / "run1"
    run_dir.mkdir(parents=True)
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from bench.atomic import atomic_write
        def slow(f):
            f.write(b'{{"status": "completed", "config": ')
            f.flush()
            print("half", flush=True)
            time.sleep(60)
        atomic_write(Path({str(run_dir / RESULT_FILE)!r}), slow)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "half"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (run_dir / RESULT_FILE).exists()
    strays = [p for p in run_dir.iterdir() if p.name.startswith(".tmp-")]
    assert len(strays) == 1
    assert list(iter_results(tmp_path / "runs")) == []
    results, problems = load_results(tmp_path / "runs")
    assert results == [] and any(".tmp-" in p.path and "temporary" in p.reason for p in problems)


def test_readers_never_see_half_a_file_while_it_is_replaced(tmp_path):
    """One process replaces a large file 200 times; this one reads it meanwhile: every read
    parses whole (the file is replaced by a rename, never written in place)."""
    path = tmp_path / "big.json"
    atomic_write_text(path, json.dumps({"v": 0, "pad": "x" * 200_000}))
    script = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from bench.atomic import atomic_write_text
        for v in range(1, 201):
            atomic_write_text(Path({str(path)!r}), json.dumps({{"v": v, "pad": "x" * 200_000}}))
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], env=_env())
    seen = set()
    while writer.poll() is None:
        seen.add(json.loads(path.read_text())["v"])      # raises on a half-written file
    assert writer.returncode == 0 and json.loads(path.read_text())["v"] == 200
    assert len(seen) > 1                                 # the reads overlapped the writes


# ---- bench run's exit codes, through the command line -------------------------------------------
def _bench(*args, timeout=300, **popen):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout, cwd=ROOT, **popen)


def test_bench_run_exits_3_on_divergence_and_records_it(tmp_path):
    done = _bench("run", "--model", "lstm", "--task", "adding", "--seq-len", "10", "--hidden", "4",
                  "--max-steps", "20", "--val-every", "10", "--opt", "other=sgd:1e30", "--quiet",
                  "--wandb", "disabled", "--runs-dir", str(tmp_path))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "non-finite training loss" in done.stdout and "Traceback" not in done.stderr
    (result,) = [r for _, r, _ in iter_results(tmp_path)]
    assert result["status"] == "diverged" and result["global_step"] == 1


def test_bench_run_exits_75_on_sigterm_and_resume_finishes_the_run(tmp_path):
    """A user's preemption: SIGTERM mid-training, exit 75 with the resume command printed, then
    that command from the command line completes the run to its last step."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "--model", "scurnn", "--task", "copying",
                             "--seq-len", "10", "--hidden", "8", "--batch-size", "20", "--max-steps", "4000",
                             "--val-every", "1000", "--wandb", "disabled", "--runs-dir", str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    deadline = time.time() + 120
    while not list(runs.rglob("csv")) and time.time() < deadline:     # training has started
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, out + err
    assert "Traceback" not in err
    resume = next(line for line in out.splitlines() if "Continue with:" in line).split("Continue with:")[1].split()
    assert resume[:2] == ["bench", "run"] and resume[2] == "--resume"
    assert list(iter_results(runs)) == []                            # unfinished: no result yet
    done = _bench(*resume[1:], "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    (result,) = [r for _, r, _ in iter_results(runs)]
    assert result["status"] == "completed" and result["global_step"] == 4000
    assert [p["ended"] for p in result["parts"]][0] == "preempted"
