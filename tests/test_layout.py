"""The layout rules of issue 15, kept true by a test (static: the source is parsed, nothing is imported).

* No module imports an underscore name (or an underscore module) from another lcdata module: the public
  names are the only way in.
* The import graph of lcdata and lcdata_train has no cycle, counting imports inside function bodies and
  ``if TYPE_CHECKING`` blocks, and counting that importing ``a.b.c`` runs package ``a.b``'s ``__init__``.
* Dependencies between lcdata's packages run one way: errors <- util <- corpus <- tokenizer <- stats <- sample
  <- build -> shards; scaleout, report and cli sit above (`ALLOWED`).
* The old module paths still import, with a DeprecationWarning, and give the same objects; the public API of
  issue 15's list is unchanged.
"""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

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


# package -> the packages it may import (besides itself); "lcdata" is the package's own __init__ (version)
ALLOWED = {
    "errors": set(),
    "util": {"errors"},
    "corpus": {"util", "errors"},
    "tokenizer": {"corpus", "util", "errors"},
    "stats": {"tokenizer", "corpus", "util", "errors"},
    "sample": {"stats", "tokenizer", "corpus", "util", "errors"},
    "shards": {"tokenizer", "util", "errors"},
    "build": {"shards", "sample", "stats", "tokenizer", "corpus", "util", "errors"},
    "report": {"shards", "sample", "stats", "tokenizer", "corpus", "util", "errors"},
    "scaleout": {"build", "shards", "sample", "stats", "tokenizer", "corpus", "util", "errors"},
    "cli": {"scaleout", "report", "build", "shards", "sample", "stats", "tokenizer", "corpus", "util", "errors"},
    "__main__": {"cli"},
}


def _all_modules() -> dict[str, Path]:
    out = {}
    for root in ("lcdata", "lcdata_train"):
        for p in sorted((ROOT / root).rglob("*.py")):
            rel = p.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _imports_of(mod: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, names imported, line) of every import in ``path``, function bodies included."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
    return out


MODS = _all_modules()


def _package(mod: str) -> str | None:
    parts = mod.split(".")
    if parts[0] != "lcdata" or len(parts) == 1:
        return None
    return parts[1]


def test_dependencies_run_one_way():
    bad = []
    for mod, path in MODS.items():
        src = _package(mod)
        if src is None or src in ("strategies", "sample_run", "sampling", "stats_run", "pipelines", "executors",
                                  "fast_tokenizer", "config"):  # the deprecated aliases re-export from anywhere
            continue
        for target, names, line in _imports_of(mod, path):
            if target == "lcdata":  # the package itself: only __version__
                if any(n != "__version__" for n in names) and src != "cli":
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {names} from lcdata")
                continue
            dst = _package(target)
            if dst is None or dst == src or dst == "version":  # the version string: every package may read it
                continue
            if dst not in ALLOWED.get(src, set()):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {src} -> {dst} ({target})")
    assert not bad, "imports against the layout's direction:\n" + "\n".join(bad)


OLD = {  # old module path -> (new module, a name both give)
    "lcdata.strategies": ("lcdata.sample.config", "SampleConfig"),
    "lcdata.sample_run": ("lcdata.sample.run", "run_sample"),
    "lcdata.sampling": ("lcdata.sample.solver", "solve_plan"),
    "lcdata.stats_run": ("lcdata.stats.run", "run_stats"),
    "lcdata.pipelines": ("lcdata.scaleout.pipelines", "run_stats_distributed"),
    "lcdata.executors": ("lcdata.scaleout.executors", "ExecutorConfig"),
    "lcdata.fast_tokenizer": ("lcdata.tokenizer.tiktoken_engine", "TiktokenEngine"),
    "lcdata.config": ("lcdata.corpus.config", "ReadConfig"),
}


@pytest.mark.parametrize("old", sorted(OLD))
def test_old_module_paths_warn_and_give_the_same_objects(old):
    new, name = OLD[old]
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = importlib.import_module(old)
    assert any(issubclass(x.category, DeprecationWarning) and new.rsplit(".", 1)[0] in str(x.message) for x in w)
    assert getattr(m, name) is getattr(importlib.import_module(new), name)


def test_public_api_unchanged():
    import lcdata
    import lcdata.build
    import lcdata.shards
    import lcdata.stats
    import lcdata.tokenizer

    for n in lcdata.__all__:
        assert getattr(lcdata, n) is not None
    assert lcdata.build.BuildConfig and lcdata.build.run_build
    for n in ("histogram", "merge_histograms", "summarize_sources", "summarize_buckets"):
        assert callable(getattr(lcdata.stats, n))
    for n in ("load_tokenizer", "tokenizer_info", "encode_texts", "count_tokens"):
        assert callable(getattr(lcdata.tokenizer, n))
    for n in ("open_shards", "ShardSet", "verify_shards", "inspect_sequence"):
        assert getattr(lcdata.shards, n) is not None
