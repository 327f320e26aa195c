"""bench dashboard: the server (ranking, refresh, run details, read-only, no traversal, localhost) and
the static page in a real headless browser (sorting, filtering, details, no console errors).

Oracles are computed here from the result files the test writes, never read back from the page code.
"""
import http.client
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.cli import build_parser, main
from bench.config import RunConfig
from bench.dashboard_server import make_server
from bench.flags import config_from_args

SECRET = "SECRET-OUTSIDE-RUNS-7f3a9c"
_counter = iter(range(10**6))


def write_result(root: Path, *, model="scurnn", seed=0, acc=0.5, n_hidden=32, max_steps=100, opts=None, tags=None,
                 losses=None, task="copying") -> Path:
    """A result.json shaped like bench/run.py's (written with the harness's writer), and a real
    Lightning-style metrics CSV beside it."""
    from bench.results import write_result as harness_write

    cfg = RunConfig(model=model, task=task, seed=seed, n_hidden=n_hidden, seq_len=50, batch_size=20,
                    max_steps=max_steps, val_every=50, resolved=True, opts=opts or {}, tags=tags or {})
    run_dir = root / task / model / f"run{next(_counter)}-seed{seed}"
    run_dir.mkdir(parents=True)
    steps = list(range(9, max_steps, 10))
    losses = losses or [2.0 / (1 + s / 50) + 0.01 * seed for s in steps]
    (run_dir / "csv").mkdir()
    lines = ["epoch,step,train/loss,val/acc"] + [f"0,{s},{v!r}," for s, v in zip(steps, losses)]
    lines.append(f"0,{steps[-1]},,{acc!r}")
    (run_dir / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")
    baseline = 10 * math.log(8) / 70
    result = {
        "result_version": 1, "status": "completed", "error": None, "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(), "seed": seed, "model": model, "task": task, "n_hidden": n_hidden,
        "n_params": 1000 + n_hidden, "metric": {"name": "acc", "mode": "max"},
        "task_info": {"seq_len": 50, "data_seed": 5544, "baseline": baseline},
        "metrics": {"final_train_loss": losses[-1], "best_ckpt_test_acc": acc, "first_step_below_baseline": None},
        "wall_time_s": 10.0 + seed, "finished_at": f"2026-01-01T00:00:{seed:02d}", "curves": "csv/metrics.csv",
        "hardware": {"cpu_threads": 1, "cuda": False}, "code_version": {"git_sha": "abc1234"},
        "wandb": {"mode": "offline", "requested": "auto", "id": f"w{seed}", "dir": str(run_dir / "wandb")},
        "command": f"bench run --model {model} --task {task}", "run_dir": str(run_dir),
    }
    harness_write(run_dir, result)
    (run_dir / "diagnostics.json").write_text(json.dumps({"version": 1, "snapshots": [
        {"step": 0, "unitarity_error": 1e-7,
         "grad_norm": {"t": [0, 1, 2], "norm": [0.3, 0.2, 0.1], "seq_len": 3, "log10_first_over_last": 1.5},
         "modrelu": {"singular_frac": 0.01, "dead_frac": 0.02}}]}))
    return run_dir


# (model, hidden, seed -> test acc); one config per model; a sweep of three scurnn trials (other opts)
RUNS = {"scurnn": (32, [0.90, 0.94, 0.92]), "lstm": (16, [0.70, 0.60]), "scornn": (40, [0.95]),
        "gru": (20, [0.40, 0.45])}
STUDY = "scurnn-copying-grid"
TRIALS = [(0.002, 0.80), (0.01, 0.99), (0.05, 0.85)]     # (lr of A, test acc)


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for model, (n, accs) in RUNS.items():
        for seed, acc in enumerate(accs):
            write_result(root, model=model, n_hidden=n, seed=seed, acc=acc)
    for k, (lr, acc) in enumerate(TRIALS):
        write_result(root, model="scurnn", n_hidden=30, acc=acc, opts={"A": ["rmsprop", lr]},
                     tags={"study": STUDY, "trial": k})
    outside = tmp_path / "outside"
    (outside / "run").mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET)
    evil = json.loads(next(root.rglob("result.json")).read_text())
    evil["model"] = SECRET
    (outside / "run" / "result.json").write_text(json.dumps(evil))
    (root / "evil").symlink_to(outside)                              # a folder linking outside
    (root / "copying" / "scurnn" / "leak").mkdir()
    (root / "copying" / "scurnn" / "leak" / "result.json").symlink_to(outside / "run" / "result.json")
    return root


def expected_ranking(root: Path) -> list[tuple[str, list[str]]]:
    """(config_hash of each visible row, best first, with the hashes of the trials folded under
    it): mean test accuracy over seeds per config, higher is better; a study shows its best trial."""
    groups: dict[str, list[dict]] = {}
    for path in root.rglob("result.json"):
        if not path.resolve().is_relative_to(root.resolve()):
            continue
        r = json.loads(path.read_text())
        groups.setdefault(r["config_hash"], []).append(r)
    mean = {h: statistics.fmean(r["metrics"]["best_ckpt_test_acc"] for r in rs) for h, rs in groups.items()}
    study = {h: rs[0]["config"]["tags"].get("study") for h, rs in groups.items()}
    order = sorted(groups, key=lambda h: -mean[h])
    out, done = [], set()
    for h in order:
        if study[h] is None:
            out.append((h, []))
        elif study[h] not in done:
            done.add(study[h])
            out.append((h, [t for t in order if study[t] == study[h] and t != h]))
    return out


class Rows(HTMLParser):
    """The leaderboard tables' rows: their data-* attributes and cell texts."""

    def __init__(self):
        super().__init__()
        self.rows, self._cells, self._in_lb = [], None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._in_lb = a.get("class") == "lb"
        elif tag == "tr" and self._in_lb and "data-id" in a:
            self.rows.append({**a, "cells": []})
            self._cells = self.rows[-1]["cells"]
        elif tag == "td" and self._cells is not None:
            self._cells.append("")

    def handle_endtag(self, tag):
        if tag == "tr":
            self._cells = None
        if tag == "table":
            self._in_lb = False

    def handle_data(self, data):
        if self._cells:
            self._cells[-1] += data


def page_rows(text: str) -> list[dict]:
    p = Rows()
    p.feed(text)
    return p.rows


def as_ranking(rows: list[dict]) -> list[tuple[str, list[str]]]:
    out = []
    for r in rows:
        if "data-parent" in r:
            out[-1][1].append(r["data-config"])
        else:
            out.append((r["data-config"], []))
    return out


@pytest.fixture
def server(runs):
    srv = make_server(runs, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(srv, method: str, path: str, host: str | None = None, body: bytes | None = None):
    """A raw request: the path goes on the wire exactly as given (no client-side normalisation)."""
    port = srv.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", host or f"127.0.0.1:{port}")
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def test_page_rows_are_the_ranking_and_a_new_result_appears_on_refresh(server, runs):
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    rows = page_rows(body.decode())
    assert as_ranking(rows) == expected_ranking(runs)
    visible = [r for r in rows if "hidden" not in r]
    assert [r["data-rank"] for r in visible] == [str(i) for i in range(1, len(visible) + 1)]
    assert {r["data-model"] for r in visible} == set(RUNS)           # the study's best trial stands for it
    best = next(r for r in rows if r["data-study"] == STUDY and "data-parent" not in r)
    assert "▸ 3" in best["cells"][0] and best["cells"][1].startswith("scurnn")
    assert SECRET not in body.decode()                                # the symlinked result is left out
    assert b'src="assets/plotly.min.js"' in body

    # a new, better run: on the next GET it leads the table
    write_result(runs, model="expRNN", n_hidden=24, acc=0.999)
    rows2 = page_rows(request(server, "GET", "/")[2].decode())
    assert as_ranking(rows2) == expected_ranking(runs) and rows2[0]["data-model"] == "expRNN"
    assert len(rows2) == len(rows) + 1

    status, headers, js = request(server, "GET", "/assets/plotly.min.js")
    assert status == 200 and len(js) > 1_000_000 and headers["Content-Type"].startswith("text/javascript")
    assert request(server, "HEAD", "/")[0] == 200 and request(server, "HEAD", "/")[2] == b""


def test_run_details_equal_the_result_file(server, runs):
    rows = page_rows(request(server, "GET", "/")[2].decode())
    ids = [i for r in rows for i in r["data-runs"].split()]
    files = [p for p in runs.rglob("result.json") if p.resolve().is_relative_to(runs.resolve())]
    assert len(ids) == len(set(ids)) == len(files)
    seen = set()
    parser = build_parser()
    for run_id in ids:
        status, headers, body = request(server, "GET", f"/api/run/{run_id}")
        assert status == 200 and headers["Content-Type"] == "application/json"
        d = json.loads(body)
        path = Path(d["result"]["run_dir"]) / "result.json"
        assert d["result"] == json.loads(path.read_text())             # exactly the file
        seen.add(path)
        # the command reproduces the config: parsed by bench's own parser, it has the same config hash
        argv = d["command"].split()
        assert argv[:2] == ["bench", "run"]
        cfg = config_from_args(parser.parse_args(argv[1:]))
        assert cfg.config_hash() == d["result"]["config_hash"]
        # the curves are the CSV's numbers (steps from 1)
        csv_rows = [line.split(",") for line in (path.parent / "csv" / "metrics.csv").read_text().split()[1:]]
        assert d["curves"]["train/loss"] == [[int(s) + 1, float(v)] for _, s, v, _ in csv_rows if v]
        assert d["diagnostics"]["first"]["unitarity_error"] == 1e-7
        assert d["wandb"]["mode"] == "offline" and d["wandb"]["sync"].startswith("wandb sync --yes ")
    assert seen == set(files)
    assert request(server, "GET", "/api/run/0123456789abcdef")[0] == 404


TRAVERSALS = [
    "/../outside/secret.txt", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd", "/etc/passwd", "//etc/passwd",
    "/evil/secret.txt", "/evil/run/result.json", "/copying/scurnn/leak/result.json", "/copying/", "/copying",
    "/assets/", "/assets/../../etc/passwd", "/assets/%2e%2e/secret.txt", "/api/run/", "/api/run/../../etc/passwd",
    "/api/run/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/index.html/../../etc/passwd", "/./index.html/..", "/result.json",
    "/api/run/0123456789abcdef/../../secret.txt", "/%00", "/~root", "C:\\Windows\\win.ini", "/..\\..\\secret.txt",
    "http://127.0.0.1/../../etc/passwd",
]


def test_traversal_attempts_all_404_without_leaking(server, runs, tmp_path):
    files = [p.read_bytes() for p in runs.rglob("*.json") if p.resolve().is_relative_to(runs.resolve())]
    for path in TRAVERSALS:
        status, _, body = request(server, "GET", path)
        assert status == 404, path
        assert SECRET.encode() not in body and b"root:" not in body, path
        assert not any(chunk in body for chunk in files), path
    # the id of the symlinked result (as the server would compute it) is no run of this folder either
    from bench.dashboard import run_id
    leak = {"_path": str(runs / "copying" / "scurnn" / "leak" / "result.json")}
    try:
        leaked_id = run_id(runs.resolve(), leak)
    except ValueError:
        leaked_id = None
    if leaked_id:
        assert request(server, "GET", f"/api/run/{leaked_id}")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"])
def test_other_methods_are_405(server, method):
    status, headers, _ = request(server, method, "/", body=b"x=1")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_foreign_host_header_is_refused(server):
    assert request(server, "GET", "/", host="attacker.example:80")[0] == 403     # DNS rebinding
    assert request(server, "GET", "/", host=f"localhost:{server.server_address[1]}")[0] == 200


def test_binds_localhost_by_default_and_warns_elsewhere(runs):
    args = build_parser().parse_args(["dashboard", "--runs-dir", str(runs)])
    assert (args.host, args.port) == ("127.0.0.1", 8050)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "dashboard", "--runs-dir", str(runs), "--port", "0",
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://([\d.]+):(\d+)/", line)
        assert m and m.group(1) == "127.0.0.1", line
        conn = http.client.HTTPConnection("127.0.0.1", int(m.group(2)), timeout=60)
        conn.request("GET", "/api/run/0123456789abcdef")
        assert conn.getresponse().status == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "warning" not in proc.stderr.read()
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "dashboard", "--runs-dir", str(runs), "--port", "0",
                             "--host", "0.0.0.0", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert "0.0.0.0" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "warning: binding 0.0.0.0" in proc.stderr.read()


def test_building_the_parser_imports_no_server_or_plotly():
    code = ("import sys; from bench.cli import build_parser; build_parser(); "
            "bad = [m for m in ('bench.dashboard', 'plotly', 'http.server', 'torch', 'pandas') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# --- the static page in a real browser -------------------------------------------------------------

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_static_page_in_headless_chromium_sorts_filters_and_opens_details(runs, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("BENCH_REQUIRE_BROWSER") == "1":
            pytest.fail("BENCH_REQUIRE_BROWSER=1 but no `chromium` on PATH (Debian: apt-get install -y chromium)")
        pytest.skip("no `chromium` on PATH (apt-get install -y chromium); BENCH_REQUIRE_BROWSER=1 makes this a failure")
    out = tmp_path / "out"
    assert main(["leaderboard", "--runs-dir", str(runs), "--format", "html", "--out", str(out)]) == 0
    page = (out / "leaderboard.html").read_text()
    assert "<script src=" not in page and "api/run/" in page                  # plotly inlined, details embedded
    rows = page_rows(page)
    assert as_ranking(rows) == expected_ranking(runs)
    table = re.search(r'<table class="lb" id="([^"]+)"', page).group(1)
    best = next(r for r in rows if r["data-study"] == STUDY and "data-parent" not in r)
    top = rows[0]
    actions = [["record"], ["click", table, "model"], ["record"], ["click", table, "model"], ["record"],
               ["click", table, "test acc"], ["record"], ["filter", "model", "lstm"], ["record"],
               ["filter", "model", ""], ["expand", best["data-id"]], ["record"], ["open", top["data-id"]], ["record"]]
    url = (out / "leaderboard.html").as_uri() + "#test=" + urllib.parse.quote(json.dumps(actions))
    proc = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
                           "--user-data-dir=" + str(tmp_path / "chromium"), "--virtual-time-budget=5000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="test-out">(.*?)</pre>', proc.stdout, re.S)
    assert m, proc.stdout[-2000:] + proc.stderr[-3000:]
    import html as html_mod
    result = json.loads(html_mod.unescape(m.group(1)))
    assert result["errors"] == []
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
    assert console == []
    steps = [s["state"][0]["rows"] for s in result["steps"]]
    visible = [r for r in rows if "hidden" not in r]
    model_of = lambda rs: [r["model"] for r in rs]            # noqa: E731
    # 0: as rendered (the ranking); 1/2: by model name ascending, then descending (trials stay folded)
    assert [r["config"] for r in steps[0]] == [r["data-config"] for r in visible]
    assert model_of(steps[1]) == sorted(model_of(steps[0]))
    assert model_of(steps[2]) == sorted(model_of(steps[0]), reverse=True)
    # 3: by test acc ascending: the mean accuracies in increasing order
    means = {h: statistics.fmean(a) for h, a in _accs(runs).items()}
    assert [r["config"] for r in steps[3]] == sorted((r["config"] for r in steps[0]), key=lambda h: means[h])
    # 4: filtered to lstm: only its row
    assert model_of(steps[4]) == ["lstm"]
    # 5: filter cleared, the study expanded: its other trials show right under its best
    shown = [r["config"] for r in steps[5]]
    i = shown.index(best["data-config"])
    assert shown[i + 1:i + len(TRIALS)] == dict(expected_ranking(runs))[best["data-config"]]
    # 6: the top row's details: its reproducing command and config are shown
    details = result["steps"][6]["details"]
    top_result = json.loads(next(p for p in runs.rglob("result.json")
                                 if json.loads(p.read_text())["config_hash"] == top["data-config"]).read_text())
    assert "bench run --model " + top_result["model"] in details and top_result["config_hash"] in details
    assert all(p["traces"] > 0 for p in result["steps"][0]["plots"])          # the curves were drawn


def _accs(root: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for p in root.rglob("result.json"):
        if p.resolve().is_relative_to(root.resolve()):
            r = json.loads(p.read_text())
            out.setdefault(r["config_hash"], []).append(r["metrics"]["best_ckpt_test_acc"])
    return out
