"""`bench --help`, every subcommand's --help and `bench list` stay light: they import none of the
heavy libraries (torch alone takes seconds), and `bench list` still shows what the registries hold.

Each check runs in a fresh interpreter: this test process has imported torch already (conftest)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

HEAVY = ("torch", "lightning", "optuna", "wandb", "pandas", "plotly", "matplotlib")

# Builds every subcommand's parser and prints its help (bench COMMAND --help), then runs `bench list`;
# prints the heavy modules imported by then, and the commands.
LIGHT_SCRIPT = f"""
import contextlib, io, json, sys
import bench.cli

commands = list(bench.cli.build_parser()._subparsers._group_actions[0].choices)
for argv in [["--help"]] + [[c, "--help"] for c in commands]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        bench.cli.main(argv)
after_help = sorted(m for m in {HEAVY!r} if m in sys.modules)
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = bench.cli.main(["list"])
after_list = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps({{"commands": commands, "after_help": after_help, "after_list": after_list, "code": code,
                  "list": out.getvalue()}}))
"""

# `bench list` read from the source (registries not imported), then from the imported registries.
SAME_SCRIPT = """
import contextlib, io, json
from bench import catalog
from bench.cli import main

def listing():
    with contextlib.redirect_stdout(io.StringIO()) as out:
        main(["list"])
    return out.getvalue()

kinds = ("models", "tasks", "optimizers")
light = {"list": listing(), "generic": catalog.generic_optimizers(), **{k: catalog.from_source(k) for k in kinds}}
import bench.models, bench.optim, bench.tasks
real = {"list": listing(), "generic": list(bench.optim.GENERIC), **{k: catalog.from_registry(k) for k in kinds}}
print(json.dumps({"light": light, "real": real}))
"""


def _run(script: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_and_list_import_no_heavy_library():
    out = _run(LIGHT_SCRIPT)
    assert {"run", "list", "sweep", "leaderboard", "reproduce"} <= set(out["commands"])
    assert out["after_help"] == [], f"building the parsers imported {out['after_help']}"
    assert out["after_list"] == [], f"bench list imported {out['after_list']}"
    assert out["code"] == 0 and "scurnn" in out["list"] and "copying" in out["list"]


def test_list_read_from_source_equals_the_registries():
    """One declaration per fact: the names and lines `bench list` reads from the source are those of
    the imported registries, and so is its output."""
    out = _run(SAME_SCRIPT)
    light, real = out["light"], out["real"]
    for key in ("models", "tasks", "optimizers", "generic"):
        assert light[key] == real[key], key
    assert light["list"] == real["list"]
    assert "models:" in real["list"] and "scurnn" in real["models"] and "copying" in real["tasks"]


def test_help_and_list_are_quick():
    """Loose bound (loaded CI machines); the oracle is the import check above."""
    for argv in (["--help"], ["run", "--help"], ["list"]):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.cli", *argv], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert elapsed < 3.0, f"bench {' '.join(argv)} took {elapsed:.1f} s"
