"""Shared fixtures. ``twin`` runs a test against both implementations of a cext component."""
from __future__ import annotations

import os

import pytest

import cext

TWINS = ["c", "py"]
if os.environ.get("EDGE_NO_EXTENSIONS", "").lower() in ("1", "true", "yes"):
    TWINS = ["py"]


@pytest.fixture(params=TWINS)
def twin(request):
    """A function ``name -> module`` bound to one twin: compiled ("c") or pure Python ("py")."""
    pure = request.param == "py"
    return lambda name: cext.load(name, pure=pure)
