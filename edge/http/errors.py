"""The one error type of the HTTP layer.

Everything malformed or over a limit in ``edge.http`` is reported as an :class:`HTTPError` carrying
the status the client should get; the server shell turns it into a response with
:func:`edge.http.response.error_response`. Nothing else escapes the parser.
"""
from __future__ import annotations

__all__ = ["HTTPError", "RangeNotSatisfiable"]


class HTTPError(Exception):
    """A request the server answers with an error status.

    ``status`` is the HTTP status code, ``detail`` a short human reason that goes into the
    plain-text body (e.g. ``"Range: unsupported unit 'items'"``), ``headers`` extra response
    header fields (e.g. ``Allow`` for 405, ``Content-Range`` for 416).
    """

    def __init__(self, status: int, detail: str,
                 headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.headers = headers

    def __str__(self) -> str:
        return f"{self.status} {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.detail!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HTTPError):
            return NotImplemented
        return (type(self) is type(other) and self.status == other.status
                and self.detail == other.detail and self.headers == other.headers)

    def __hash__(self) -> int:
        return hash((type(self), self.status, self.detail, self.headers))


class RangeNotSatisfiable(HTTPError):
    """416: the Range header is valid but no range overlaps the representation (RFC 9110 §15.5.17).

    Carries ``Content-Range: bytes */SIZE`` so the client learns the current length.
    """

    def __init__(self, size: int, detail: str = "no satisfiable range") -> None:
        super().__init__(416, detail, ((b"Content-Range", b"bytes */%d" % size),))
        self.size = size
