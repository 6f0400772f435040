"""Origin storage providers behind one small async interface (see base.py)."""
from __future__ import annotations

from urllib.parse import urlsplit

from .base import NotFound, ObjectInfo, Origin, OriginError, ValidatorMismatch

__all__ = [
    "NotFound", "ObjectInfo", "Origin", "OriginError", "ValidatorMismatch",
    "parse_origin_url", "make_origin",
]


def parse_origin_url(url: str) -> tuple[str, str]:
    """Split an origin URL into (scheme, location). Raises ValueError saying what is wrong.

    ``/dir``, ``./dir``, ``~/dir`` and ``file:///dir`` are local directories.
    """
    if not url:
        raise ValueError("empty origin URL")
    if "://" not in url:
        return "file", url
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL must be file:///path, got {url!r}")
        return "file", parts.path
    raise ValueError(
        f"unsupported origin scheme {parts.scheme!r} in {url!r} (supported: a directory or file:///dir)"
    )


def make_origin(name: str, url: str) -> Origin:
    """Build the origin client for ``url``."""
    import os

    from .file import FileOrigin

    scheme, location = parse_origin_url(url)
    if scheme == "file":
        return FileOrigin(os.path.expanduser(location), name=name)
    raise ValueError(f"unsupported origin {url!r}")  # pragma: no cover - parse_origin_url refuses first
