"""Sans-IO HTTP/1.1 for the edge server: request parsing with limits, byte ranges, conditional
requests and response framing. Nothing here does I/O or reads a clock or randomness: the
current date and multipart boundaries are passed in.
"""
from __future__ import annotations

from .conditional import evaluate_preconditions, format_http_date, if_range_allows, parse_http_date
from .errors import HTTPError, RangeNotSatisfiable
from .limits import Limits
from .ranges import parse_range
from .request import Request, RequestParser
from .response import Plan, error_response, frame_head, head_end, head_parts, plan

__all__ = [
    "HTTPError",
    "Limits",
    "Plan",
    "RangeNotSatisfiable",
    "Request",
    "RequestParser",
    "error_response",
    "evaluate_preconditions",
    "format_http_date",
    "frame_head",
    "head_end",
    "head_parts",
    "if_range_allows",
    "parse_http_date",
    "parse_range",
    "plan",
]
