"""What ``bench list`` shows (registered models, tasks and optimizers), without importing torch.

The registries fill themselves when their modules are imported (``bench.models.MODELS``,
``bench.tasks.TASKS``, ``bench.optim.OPTIMIZERS``), and those modules import torch and Lightning:
seconds, for a listing. The facts listed are string literals in those same modules (a class's
``name``, ``description``, ``paper``; an ``OPTIMIZERS`` entry's ``semantics``), so this module reads
them from the source with ``ast``: no second list to keep in step. tests/test_cli_speed.py checks
that the source gives the registries' facts exactly. A declaration the reader cannot follow (a
value that is not a literal, a name declared twice, an entry added at run time) makes it give up,
and the registry is imported instead: slower, never wrong. A registry already imported is read
directly (it also holds classes registered at run time, e.g. by tests).
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

# kind -> (package, its registry, the registry's base class, the facts listed besides the name)
CLASS_REGISTRIES = {
    "models": ("bench.models", "MODELS", "RecurrentModel", ("description", "paper")),
    "tasks": ("bench.tasks", "TASKS", "Task", ("description",)),
}
OPTIM_MODULE = "bench.optim"
READ_ONLY = ("get", "items", "keys", "values")      # dict methods that leave OPTIMIZERS as declared


class Unreadable(Exception):
    """The source declares something the reader does not follow; import the registry instead."""


def registered(kind: str) -> dict[str, dict[str, str]]:
    """``name -> {fact: value}`` of every model (``kind="models"``), task or optimizer."""
    module = CLASS_REGISTRIES[kind][0] if kind in CLASS_REGISTRIES else OPTIM_MODULE
    if module not in sys.modules:
        try:
            return from_source(kind)
        except Unreadable:
            pass
    return from_registry(kind)


def generic_optimizers() -> tuple[str, ...]:
    """The generic optimizer names (``bench.optim.GENERIC``)."""
    if OPTIM_MODULE not in sys.modules:
        try:
            value = _literal(_assignment(_parse(_module_file(OPTIM_MODULE)), "GENERIC"))
            if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
                return value
        except Unreadable:
            pass
    from bench.optim import GENERIC

    return tuple(GENERIC)


def from_registry(kind: str) -> dict[str, dict[str, str]]:
    """The facts, from the imported registry (imports torch)."""
    if kind == "optimizers":
        from bench.optim import OPTIMIZERS

        return {name: {"semantics": getattr(entry, "semantics", "")} for name, entry in OPTIMIZERS.items()}
    package, registry, _, facts = CLASS_REGISTRIES[kind]
    classes = getattr(importlib.import_module(package), registry)
    return {name: {f: getattr(cls, f) for f in facts} for name, cls in classes.items()}


def from_source(kind: str) -> dict[str, dict[str, str]]:
    """The facts, read from the source files; raises ``Unreadable`` where it cannot follow them."""
    if kind == "optimizers":
        return _optimizers_from_source()
    package, _, root, facts = CLASS_REGISTRIES[kind]
    return _classes_from_source(package, root, ("name",) + facts)


# -- reading the source ---------------------------------------------------------------------------

def _module_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)        # imports the parent package (bench: light), not this
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise Unreadable(module)
    return Path(spec.origin)


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        raise Unreadable(str(path)) from exc


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise Unreadable(ast.dump(node)) from exc


def _assignment(tree: ast.Module, target: str) -> ast.AST:
    """The value of the one top-level ``target = ...`` (or ``target: T = ...``)."""
    values = [node.value for node in tree.body
              if (isinstance(node, ast.Assign) and [_name(t) for t in node.targets] == [target])
              or (isinstance(node, ast.AnnAssign) and node.value is not None and _name(node.target) == target)]
    if len(values) != 1:
        raise Unreadable(target)
    return values[0]


def _name(node: ast.AST) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _classes_from_source(package: str, root: str, fields: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Every subclass of ``root`` with a true ``name`` defined at the top of the package's modules:
    what ``root.__init_subclass__`` registers when the package imports each of its modules."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise Unreadable(package)
    # class name -> [(base class names, the fields its body declares)], one item per definition
    classes: dict[str, list[tuple[list[str], dict[str, ast.expr]]]] = {}
    for info in pkgutil.iter_modules(list(spec.submodule_search_locations)):
        path = Path(info.module_finder.path) / (f"{info.name}/__init__.py" if info.ispkg else f"{info.name}.py")
        for node in _parse(path).body:
            if isinstance(node, ast.ClassDef):
                declared = {}
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign):
                        targets = stmt.targets
                    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                        targets = [stmt.target]
                    else:
                        continue
                    declared.update({t.id: stmt.value for t in targets if isinstance(t, ast.Name) and t.id in fields})
                classes.setdefault(node.name, []).append(([_name(b) for b in node.bases], declared))

    def definition(cls: str) -> tuple[list[str], dict[str, ast.expr]]:
        if len(classes[cls]) > 1:
            raise Unreadable(f"two classes named {cls} in {package}")
        return classes[cls][0]

    def mro(cls: str) -> list[str]:
        """Python's method resolution order (C3) over the package's classes."""
        bases = [b for b in definition(cls)[0] if b in classes]
        pending = [mro(b) for b in bases] + [bases]
        order = [cls]
        while any(pending):
            pending = [seq for seq in pending if seq]
            head = next((seq[0] for seq in pending if not any(seq[0] in s[1:] for s in pending)), None)
            if head is None:
                raise Unreadable(f"no method resolution order for {cls}")
            order.append(head)
            pending = [seq[1:] if seq[0] == head else seq for seq in pending]
        return order

    if root not in classes:
        raise Unreadable(f"no class {root} in {package}")
    found: dict[str, dict[str, str]] = {}
    for cls in classes:
        if cls == root or not any(b in classes and root in mro(b) or b == root for b in definition(cls)[0]):
            continue
        order = mro(cls)
        nodes = {f: next((definition(c)[1][f] for c in order if f in definition(c)[1]), None) for f in fields}
        facts = {f: None if node is None else _literal(node) for f, node in nodes.items()}
        name = facts.pop("name")
        if not name:
            continue
        if name in found or not isinstance(name, str) or not all(isinstance(v, str) for v in facts.values()):
            raise Unreadable(f"{package}: {cls} ({name!r})")
        found[name] = facts
    return found


def _optimizers_from_source() -> dict[str, dict[str, str]]:
    """The ``OPTIMIZERS = {"name": Registered(..., semantics="..."), ...}`` literal of bench/optim.py."""
    tree = _parse(_module_file(OPTIM_MODULE))
    for node in ast.walk(tree):       # entries added or removed outside the literal: not followed
        if isinstance(node, ast.Subscript) and _name(node.value) == "OPTIMIZERS" and not isinstance(node.ctx, ast.Load):
            raise Unreadable("OPTIMIZERS[...] changed")
        if isinstance(node, ast.Attribute) and _name(node.value) == "OPTIMIZERS" and node.attr not in READ_ONLY:
            raise Unreadable(f"OPTIMIZERS.{node.attr}")
    table = _assignment(tree, "OPTIMIZERS")
    if not isinstance(table, ast.Dict) or None in table.keys:
        raise Unreadable("OPTIMIZERS is not a dict literal")
    found = {}
    for key, value in zip(table.keys, table.values):
        if not (isinstance(value, ast.Call) and _name(value.func) == "Registered"):
            raise Unreadable(ast.dump(value))
        semantics = [kw.value for kw in value.keywords if kw.arg == "semantics"]
        found[_literal(key)] = {"semantics": _literal(semantics[0]) if semantics else ""}
    return found
