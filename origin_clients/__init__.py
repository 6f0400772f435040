"""Origin storage providers behind one small async interface (see base.py)."""
from __future__ import annotations

from urllib.parse import urlsplit

from .base import (
    NotFound,
    ObjectInfo,
    Origin,
    OriginError,
    OriginRefused,
    OriginTimeout,
    ValidatorMismatch,
)

__all__ = [
    "NotFound", "ObjectInfo", "Origin", "OriginError", "OriginRefused", "OriginTimeout",
    "ValidatorMismatch", "parse_origin_url", "make_origin",
]


S3_PARAMS = {"endpoint", "region", "addressing"}


def parse_origin_url(url: str) -> tuple[str, str]:
    """Check an origin URL and return (scheme, location). Raises ValueError saying what is wrong.

    ``/dir``, ``./dir``, ``~/dir`` and ``file:///dir`` are local directories;
    ``http(s)://host[:port]/prefix/`` is a plain HTTP store;
    ``s3://BUCKET[/PREFIX]?endpoint=http://127.0.0.1:9000&region=us-east-1&addressing=path``
    is an S3-compatible store (endpoint omitted: AWS; addressing ``path`` or ``virtual``).
    """
    if not url:
        raise ValueError("empty origin URL")
    if "://" not in url:
        return "file", url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URL must be file:///path, got {url!r}")
        return "file", parts.path
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"an HTTP origin URL takes no query or fragment: {url!r}")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"bad port in {url!r}") from None
        return scheme, url
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"no bucket in {url!r} (expected s3://BUCKET/PREFIX?endpoint=...)")
        from urllib.parse import parse_qs

        params = parse_qs(parts.query, keep_blank_values=True)
        for k, v in params.items():
            if k not in S3_PARAMS:
                known = ", ".join(sorted(S3_PARAMS))
                raise ValueError(f"unknown parameter {k!r} in {url!r} (known: {known})")
            if len(v) != 1 or not v[0]:
                raise ValueError(f"parameter {k!r} needs exactly one value in {url!r}")
        ep = params.get("endpoint", [""])[0]
        if ep and urlsplit(ep).scheme not in ("http", "https"):
            raise ValueError(f"endpoint must be an http(s) URL, got {ep!r}")
        addressing = params.get("addressing", ["path" if ep else "virtual"])[0]
        if addressing not in ("path", "virtual"):
            raise ValueError(f"addressing must be 'path' or 'virtual', got {addressing!r}")
        return "s3", url
    raise ValueError(
        f"unsupported origin scheme {parts.scheme!r} in {url!r} "
        "(supported: a directory, file:///dir, http(s)://host/prefix/, s3://bucket/prefix)"
    )


def make_origin(
    name: str,
    url: str,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
    max_connections: int = 32,
    connect_timeout: float = 3.0,
    read_timeout: float = 10.0,
) -> Origin:
    """Build the client for one origin URL (see parse_origin_url for the forms)."""
    import os

    scheme, location = parse_origin_url(url)
    if scheme == "file":
        from .file import FileOrigin

        return FileOrigin(os.path.expanduser(location), name=name, threads=min(max_connections, 64))
    if scheme in ("http", "https"):
        from .http import HTTPOrigin

        return HTTPOrigin(url, name=name, max_connections=max_connections,
                          connect_timeout=connect_timeout, read_timeout=read_timeout)
    from .s3 import S3Origin

    return S3Origin(url, name=name, access_key=access_key, secret_key=secret_key,
                    session_token=session_token, max_connections=max_connections,
                    connect_timeout=connect_timeout, read_timeout=read_timeout)
