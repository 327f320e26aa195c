"""The shape of the code: no import cycle, nothing below the command line imports it, models and
tasks depend on no harness code, no module over ~400 lines. Read from the source with ``ast``
(every import counts, module-level or inside a function), so nothing is imported to check it."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it is installed as (pyproject.toml's package-dir)
PACKAGES = {"bench": "bench", "models": "bench.models", "tasks": "bench.tasks"}
MAX_LINES = 400
# the command-line layer: the parsers and the `bench COMMAND` functions
CLI = ("bench.cli", "bench.cmd_", "bench.sweep.cli", "bench.leaderboard.cli")
# imports of the command-line layer from below it, each with why it is not a dependency upward
CLI_ALLOWED = {
    ("bench.slurm", "bench.cli"): "a SLURM array task is `bench <argv>` run again in its own process",
    ("bench.sweep", "bench.sweep.cli"): "the package's facade re-exports its command's functions",
    ("bench.leaderboard", "bench.leaderboard.cli"): "the package's facade re-exports its command's functions",
}
# what models and tasks may use of the harness: leaf modules with no harness logic
LEAVES = ("bench.errors", "bench.columns", "bench.atomic")


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules ``name`` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _in_cli(name: str) -> bool:
    return name.startswith(CLI)


def test_the_reader_sees_the_known_edges():
    assert "bench.models.base" in GRAPH["bench.models.scurnn"] or "bench.models.complex_rnn" in GRAPH["bench.models.scurnn"]
    assert "bench.run" in GRAPH["bench.cmd_run"] and "bench.atomic" in GRAPH["bench.results"]


def test_no_import_cycle():
    """Tarjan's strongly connected components: every one of size 1 (a package importing its own
    submodules, as a facade, is no cycle when the submodules do not import the package back)."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_nothing_below_the_command_line_imports_it():
    upward = {(m, t) for m, targets in GRAPH.items() for t in targets if _in_cli(t) and not _in_cli(m)}
    assert upward <= set(CLI_ALLOWED), sorted(upward - set(CLI_ALLOWED))


def test_models_and_tasks_use_no_harness_code():
    inner = ("bench.models", "bench.tasks")
    bad = sorted((m, t) for m, targets in GRAPH.items() if m.startswith(inner)
                 for t in targets if not t.startswith(inner + LEAVES))
    assert not bad, bad


def test_no_module_over_the_limit():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long
