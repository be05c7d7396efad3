"""The dependency rule of the packages, checked over every import statement (module level and inside functions).

    foundation (colt_core/*.py)  imports nothing else of the project
    prune/, rundir/              the foundation
    train/                       + prune, rundir
    run/                         + train
    report/                      the foundation, prune, rundir (run records and tickets; never train or run)
    export/                      the foundation, prune, rundir, report
    commands/                    anything in colt_core; tasks only through the registry
    colt_cls/, colt_det/         colt_core, never each other
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("colt_core", "colt_cls", "colt_det")

ALLOWED = {
    "foundation": {"foundation"},
    "prune": {"foundation", "prune"},
    "rundir": {"foundation", "rundir"},
    "train": {"foundation", "prune", "rundir", "train"},
    "run": {"foundation", "prune", "rundir", "train", "run"},
    "report": {"foundation", "prune", "rundir", "report"},
    "export": {"foundation", "prune", "rundir", "report", "export"},
    "commands": {"foundation", "prune", "rundir", "train", "run", "report", "export", "commands"},
    "colt_cls": {"foundation", "prune", "rundir", "train", "run", "report", "export", "colt_cls"},
    "colt_det": {"foundation", "prune", "rundir", "train", "run", "report", "export", "colt_det"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    """The layer of a project module (None: not the project's, or the package facade `colt_core`)."""
    parts = module.split(".")
    if parts[0] in ("colt_cls", "colt_det"):
        return parts[0]
    if parts[0] != "colt_core" or len(parts) == 1:
        return None
    return parts[1] if parts[1] in ALLOWED else "foundation"


def imports(path: Path, package: str = "") -> list[tuple[int, str]]:
    """(line, module) of every import in a file; relative ones resolved against `package`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]  # a name may be a module
            found.append((node.lineno, base))
    return found


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def project_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def known_module(name: str) -> str | None:
    """`name` if it is a module or package of the project, else its parent (an imported name)."""
    for candidate in (name, name.rpartition(".")[0]):
        path = REPO / Path(*candidate.split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return candidate
    return None


def violations(path: Path, own: str, package: str) -> list[str]:
    """The imports of a file of layer `own` that the rule forbids."""
    broken = []
    for line, target in sorted({(line, known_module(name)) for line, name in imports(path, package)}, key=str):
        other = layer(target) if target else None
        if other is not None and other not in ALLOWED[own]:
            broken.append(f"{path.name}:{line} ({own}) imports {target} ({other})")
    return broken


def test_every_import_follows_the_layer_rule():
    broken = []
    for path in project_files():
        own = layer(module_name(path))
        if own is not None:  # None: colt_core/__init__.py, the public names re-exported
            broken += [f"{path.parent.relative_to(REPO)}/{v}" for v in violations(path, own, package_of(path))]
    assert not broken, "imports against the layer rule:\n" + "\n".join(broken)


def test_the_rule_sees_a_broken_import(tmp_path):
    """The checker itself: report importing train inside a function is found; importing rundir is not."""
    bad = tmp_path / "bad.py"
    bad.write_text("from colt_core.rundir import RunDir\n\n\ndef f():\n"
                   "    from colt_core.train.trainer import Trainer\n")
    assert violations(bad, "report", "colt_core.report") == [
        "bad.py:5 (report) imports colt_core.train.trainer (train)"]
    relative = tmp_path / "rel.py"
    relative.write_text("from ..run import rounds\n")
    assert violations(relative, "train", "colt_core.train") == ["rel.py:1 (train) imports colt_core.run (run)",
                                                                 "rel.py:1 (train) imports colt_core.run.rounds (run)"]


def test_the_detection_package_has_no_import_circle():
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / "colt_det").rglob("*.py")):
        here = module_name(path)
        targets = {known_module(name) for _, name in imports(path, package_of(path))}
        graph[here] = {t for t in targets if t and t.startswith("colt_det") and t not in (here, "colt_det")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
