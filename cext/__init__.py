"""C-level components of the edge: the slab arena and the frequency sketch.

Each Cython module ``cext/NAME.pyx`` has a pure-Python twin ``cext/_NAME_py.py`` with the same
API. ``EDGE_NO_EXTENSIONS=1`` in the environment selects the twins; otherwise the compiled
modules are required (a failed build is an error, never a silent fallback).
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("EDGE_NO_EXTENSIONS", "").lower() in ("1", "true", "yes")


def load(name: str, *, pure: bool | None = None) -> ModuleType:
    """Return the implementation module of component ``name`` ("arena", "sketch").

    ``pure`` forces one twin (tests use it to run both); by default ``EDGE_NO_EXTENSIONS``
    decides.
    """
    if pure is None:
        pure = NO_EXTENSIONS
    if pure:
        return importlib.import_module(f"cext._{name}_py")
    try:
        return importlib.import_module(f"cext.{name}")
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise ImportError(
            f"the compiled extension cext.{name} is not built ({exc}); run `pip install -e .` "
            "or set EDGE_NO_EXTENSIONS=1 to use the pure-Python twin"
        ) from exc
