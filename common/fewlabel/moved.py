"""Names that moved to another module stay importable from their old one, looked up when first asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_reexports"]


def lazy_reexports(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that returns ``names[name]``'s attribute ``name`` (``{name: new module}``).

    Lazy, so the old module need not import the new one at import time (which would often be a cycle:
    the new module imports the old one). Use as ``__getattr__ = lazy_reexports(__name__, {...})``.
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
