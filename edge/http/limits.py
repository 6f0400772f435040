"""Denial-of-service limits of the HTTP layer, passed to :class:`edge.http.RequestParser`."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one client request may make the server hold or do.

    Attributes:
        max_head_size: bytes of one request head, request line through the empty line that ends
            the header section (leading empty lines included); more is answered 431.
        max_headers: header field lines per request; more is answered 431.
        max_url_length: bytes of the request-target; more is answered 414.
        max_body: bytes of request content (Content-Length, or the sum of chunk data). Requests
            never need content here: smaller bodies are read and discarded, larger ones are
            answered 413 without being read.
        max_ranges: range-specs in one Range header; with more the header is ignored (full 200).
    """

    max_head_size: int = 16384
    max_headers: int = 100
    max_url_length: int = 8192
    max_body: int = 65536
    max_ranges: int = 16
