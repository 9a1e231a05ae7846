"""The layout rules of issue 15, kept true by a test (static: the source is parsed, nothing is imported).

* No module imports an underscore name (or an underscore module) from another lcdata module: the public
  names are the only way in.
* The import graph of lcdata and lcdata_train has no cycle, counting imports inside function bodies and
  ``if TYPE_CHECKING`` blocks, and counting that importing ``a.b.c`` runs package ``a.b``'s ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lcdata", "lcdata_train")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


def _imports(mods: dict[str, Path]):
    """(module, line, imported module, imported names) for every import of an lcdata module."""
    for mod, path in mods.items():
        pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom):
                if n.level:
                    target = ".".join(pkg[: len(pkg) - n.level + 1] + ([n.module] if n.module else []))
                else:
                    target = n.module or ""
                if target.split(".")[0] in PACKAGES:
                    yield mod, n.lineno, target, [a.name for a in n.names]
            elif isinstance(n, ast.Import):
                for a in n.names:
                    if a.name.split(".")[0] in PACKAGES:
                        yield mod, n.lineno, a.name, []


def test_no_underscore_name_crosses_a_module_line():
    bad = []
    for mod, line, target, names in _imports(_modules()):
        if any(part.startswith("_") for part in target.split(".")):
            bad.append(f"{mod}:{line}: imports private module {target}")
        bad += [f"{mod}:{line}: from {target} import {n}" for n in names if n.startswith("_") and n != "__version__"]
    assert not bad, "private names used across modules (make them public):\n" + "\n".join(bad)


def test_no_import_cycle():
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, _, target, names in _imports(mods):
        for t in [target, *(f"{target}.{n}" for n in names)]:
            parts = t.split(".")
            for k in range(1, len(parts) + 1):  # the module and every package above it
                dep = ".".join(parts[:k])
                if dep in mods and dep != mod and not mod.startswith(dep + "."):
                    graph[mod].add(dep)
    graph.pop("lcdata", None)  # the package's __init__ imports lazily (module __getattr__)
    for deps in graph.values():
        deps.discard("lcdata")
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
