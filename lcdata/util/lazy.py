"""Lazy package exports (PEP 562): a package's public names, each imported from its module on first use.

`lazy_exports(package, exports, namespace)` returns the package's ``__getattr__`` and ``__dir__``: a name in
``exports`` ({name: submodule}) is imported from ``package.submodule`` when first read, then cached in the
package's namespace, so importing one light module of a package (the CLI importing `scaleout.executors`) does
not import its heavy siblings (Polars, Arrow). Cost: one dictionary lookup, and the import, on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str], namespace: dict) -> tuple[Callable, Callable]:
    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
