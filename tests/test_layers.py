"""The layers of docs/architecture.md, checked on the source.

Every import between aemp's modules goes down (or sideways within a
layer), counting imports under TYPE_CHECKING and inside functions; kernel/
and net/ never import each other; no module outside kernel/, net/ or db/
uses a private name that only that package defines; and no two modules
import each other, however indirectly (a part that needs its owner declares
a Protocol for it instead).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "aemp"

# Capabilities built on the open kernel: each imports only the public faces
# below (FACES), the leaves, and other capabilities; never layers 1-4.
CAPABILITIES: set[str] = {
    "control",
    "discovery",
    "logcatch",
    "mailbox",
    "metrics",
    "names",
    "pool",
    "service",
    "streams",
    "supervisor",
}
FACES = {"__init__", "lowlevel", "testing"}

# lowest first; a module may import its own layer and the ones before it
LAYERS: list[set[str]] = [
    {
        "_errors", "_ids", "_message", "_version", "_addr", "_ifaddrs", "_pending", "_deadlines",
        "_runtime", "_targets", "_config", "tls", "wire",
    },
    {"_seam"},
    {"kernel", "net"},
    {"_call", "_spawn", "db"},
    {"_node"},
    {"__init__", "lowlevel", "testing", "_current", "_services", "_blocking"},
    CAPABILITIES,
    {"__main__", "_cli"},
]  # fmt: skip
SIBLINGS_APART = {frozenset({"kernel", "net"})}


def _unit(module: str) -> str:
    """The layer unit of a dotted module inside aemp: its package or its module."""
    head = module.split(".")[0] or "__init__"
    return "_cli" if head.startswith("_cli") else head


def _layer(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"module unit {unit!r} is in no layer: add it to LAYERS and the docs")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported aemp module) for every import in the file, wherever it stands."""
    tree = ast.parse(path.read_text(), str(path))
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    if module == "__init__":
        package = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, node.module] if node.module else base)
                if node.module is None:  # from . import x, y: modules, or names of the package
                    for alias in node.names:
                        sub = ROOT.joinpath(*base, alias.name)
                        is_module = sub.with_suffix(".py").exists() or sub.is_dir()
                        found.append(
                            (node.lineno, ".".join([*base, alias.name] if is_module else base))
                        )
                    continue
                found.append((node.lineno, target))
            elif node.module and (node.module == "aemp" or node.module.startswith("aemp.")):
                found.append((node.lineno, node.module.removeprefix("aemp").lstrip(".")))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "aemp" or alias.name.startswith("aemp."):
                    found.append((node.lineno, alias.name.removeprefix("aemp").lstrip(".")))
    return found


def _private_names(package: str) -> set[str]:
    """The private names defined in `package` and nowhere else in aemp."""
    names: set[str] = set()
    elsewhere: set[str] = set()
    for module, path in _modules():
        into = names if _unit(module) == package else elsewhere
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            else:
                continue
            if name.startswith("_") and not name.startswith("__"):
                into.add(name)
    return names - elsewhere


def _own_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def test_every_import_goes_down() -> None:
    bad = []
    for module, path in _modules():
        unit = _unit(module)
        mine = _layer(unit)
        for line, target in _imports(module, path):
            other = _unit(target)
            if other == unit:
                continue
            theirs = _layer(other)
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if theirs > mine:
                bad.append(f"{where}: {unit} (layer {mine}) imports {target} (layer {theirs})")
            elif frozenset({unit, other}) in SIBLINGS_APART:
                bad.append(f"{where}: {unit} imports its sibling {target}")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_capabilities_use_only_the_public_faces() -> None:
    """A capability sees the node through `aemp`, `aemp.lowlevel` and the leaves, nothing else."""
    allowed = FACES | CAPABILITIES | LAYERS[0]
    bad = []
    for module, path in _modules():
        if _unit(module) not in CAPABILITIES:
            continue
        for line, target in _imports(module, path):
            if _unit(target) not in allowed:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: imports {target}")
    assert not bad, "capabilities reaching below the public faces:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", ["kernel", "net", "db"])
def test_only_a_layer_uses_its_private_names(package: str) -> None:
    private = _private_names(package)
    bad = []
    for module, path in _modules():
        if _unit(module) == package:
            continue
        tree = ast.parse(path.read_text())
        own = _own_names(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in private
                and node.attr not in own
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                bad.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: .{node.attr}")
    assert not bad, f"private names of {package}/ used outside it:\n" + "\n".join(bad)


@pytest.mark.parametrize("unit", sorted({u for layer in LAYERS for u in layer}))
def test_every_layer_unit_exists(unit: str) -> None:
    assert (ROOT / f"{unit}.py").exists() or (ROOT / unit).is_dir() or unit == "_cli"


def test_no_import_circle_between_modules() -> None:
    """No circle of imports among aemp's modules, type-only and function-level ones counted."""
    graph: dict[str, set[str]] = {}
    names = {module for module, _ in _modules()}
    for module, path in _modules():
        deps = graph.setdefault(module, set())
        for _, target in _imports(module, path):
            while target and target not in names:  # a name imported from a package
                target = target.rpartition(".")[0]
            if target and target != module:
                deps.add(target)
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                circles.append(" -> ".join([*path[path.index(d) :], d]))
            elif d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_only_the_node_imports_both_kernel_and_network() -> None:
    """The kernel and the network meet in _node.py (through aemp/_seam.py), nowhere else."""
    both = []
    for module, path in _modules():
        units = {_unit(target) for _, target in _imports(module, path)}
        if {"kernel", "net"} <= units and _unit(module) != "_node":
            both.append(module)
    assert not both, f"modules importing both kernel/ and net/: {both}"
