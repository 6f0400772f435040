"""Conditional requests (RFC 9110 §13) and HTTP dates (RFC 9110 §5.6.7).

Pure functions: the current time is never read here. Dates are seconds since the Unix epoch (UTC);
calendar arithmetic is done by hand (proleptic Gregorian, days-from-civil) so that no clock or
``time``/``datetime`` import is needed.

Decisions:

* Entity-tag lists (If-Match, If-None-Match) are parsed whole: ``*`` alone, or a comma-separated
  list of ``[W/]"opaque"`` tags where the opaque part may contain commas (§8.8.3). A field value
  that does not parse matches nothing. For If-None-Match that means the full response is sent; for
  If-Match it means 412, the safe side for a client that asked for a guarantee.
* Invalid dates in If-Modified-Since / If-Unmodified-Since make the header ignored (§13.1.3,
  §13.1.4). HTTP-date is case-sensitive (§5.6.7); the day name must be a valid one but is not
  cross-checked against the date.
* RFC 850 two-digit years: with ``now`` given, a year more than 50 years in the future is taken
  as the most recent past year with those digits (§5.6.7); without ``now`` the fixed pivot
  00-69 -> 20xx, 70-99 -> 19xx is used.
* A seconds value of 60 (leap second) is accepted and counts as the next minute's 0.
* If-Range (§13.1.5): only strong validators select the ranges. A weak or malformed entity-tag,
  or a date that is not exactly the Last-Modified second, sends the whole representation.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .request import Request

__all__ = [
    "evaluate_preconditions",
    "format_http_date",
    "if_range_allows",
    "parse_etag_list",
    "parse_http_date",
]

_DAY_NAMES = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_DAY_NAMES_LONG = (b"Monday", b"Tuesday", b"Wednesday", b"Thursday", b"Friday", b"Saturday",
                   b"Sunday")
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
           b"Nov", b"Dec")
_MONTH_NUMBER = {name: i + 1 for i, name in enumerate(_MONTHS)}

# RFC 9110 §5.6.7 grammars (case-sensitive).
_IMF_FIXDATE = re.compile(
    rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) ([A-Z][a-z]{2}) ([0-9]{4}) "
    rb"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT")
_RFC850_DATE = re.compile(
    rb"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    rb"([0-9]{2})-([A-Z][a-z]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT")
_ASCTIME_DATE = re.compile(
    rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) ([0-9]{2}| [0-9]) "
    rb"([0-9]{2}):([0-9]{2}):([0-9]{2}) ([0-9]{4})")

_SECONDS_PER_DAY = 86400


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of :func:`_days_from_civil`: (year, month, day)."""
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 28
    return 30 if month in (4, 6, 9, 11) else 31


@lru_cache(maxsize=4096)
def _format_seconds(seconds: int) -> bytes:
    days, rem = divmod(seconds, _SECONDS_PER_DAY)
    year, month, day = _civil_from_days(days)
    if not 0 <= year <= 9999:
        raise ValueError(f"timestamp {seconds} is outside the years 0000-9999")
    hour, rem = divmod(rem, 3600)
    minute, second = divmod(rem, 60)
    weekday = (days + 3) % 7                 # 1970-01-01 was a Thursday (index 3)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAY_NAMES[weekday], day, _MONTHS[month - 1], year, hour, minute, second)


def format_http_date(ts: float) -> bytes:
    """Format a Unix timestamp as an IMF-fixdate, e.g. ``b"Sun, 06 Nov 1994 08:49:37 GMT"``.

    Fractions of a second are dropped (rounded down). Raises ValueError outside years 0-9999.
    """
    return _format_seconds(int(ts // 1))


def _to_seconds(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int | None:
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)
            and hour <= 23 and minute <= 59 and second <= 60):
        return None
    return ((_days_from_civil(year, month, day) * 24 + hour) * 60 + minute) * 60 + second


def parse_http_date(value: bytes, now: float | None = None) -> int | None:
    """Parse an HTTP-date (IMF-fixdate, obsolete RFC 850 or asctime form) to Unix seconds.

    Returns None when ``value`` is not a valid HTTP-date. ``now`` (Unix seconds) is only used to
    resolve RFC 850 two-digit years as §5.6.7 requires; see the module docstring.
    """
    value = value.strip(b" \t")
    m = _IMF_FIXDATE.fullmatch(value)
    if m is not None:
        month = _MONTH_NUMBER.get(m.group(3))
        if month is None:
            return None
        return _to_seconds(int(m.group(4)), month, int(m.group(2)), int(m.group(5)),
                           int(m.group(6)), int(m.group(7)))
    m = _RFC850_DATE.fullmatch(value)
    if m is not None:
        month = _MONTH_NUMBER.get(m.group(3))
        if month is None:
            return None
        yy = int(m.group(4))
        if now is None:
            year = 2000 + yy if yy < 70 else 1900 + yy
        else:
            current = _civil_from_days(int(now // 1) // _SECONDS_PER_DAY)[0]
            year = current - current % 100 + yy      # the nearest year with those digits
            if year > current + 50:
                year -= 100
            elif year <= current - 50:
                year += 100
        return _to_seconds(year, month, int(m.group(2)), int(m.group(5)), int(m.group(6)),
                           int(m.group(7)))
    m = _ASCTIME_DATE.fullmatch(value)
    if m is not None:
        month = _MONTH_NUMBER.get(m.group(2))
        if month is None:
            return None
        return _to_seconds(int(m.group(7)), month, int(m.group(3)), int(m.group(4)),
                           int(m.group(5)), int(m.group(6)))
    return None


# -- entity tags (RFC 9110 §8.8.3) ----------------------------------------------------------

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE ; etagc = %x21 / %x23-7E / obs-text
_ENTITY_TAG = re.compile(rb'[ \t]*(W/)?("[\x21\x23-\x7e\x80-\xff]*")[ \t]*')


def parse_etag_list(value: bytes) -> list[tuple[bool, bytes]] | None:
    """Parse an If-Match / If-None-Match field value (``"*" / #entity-tag``).

    Returns a list of ``(weak, opaque_tag)`` pairs, the opaque tag with its quotes; ``*`` gives
    ``[(False, b"*")]``. Returns None when the value is not a valid entity-tag list (such a field
    matches nothing). Empty list elements are skipped.
    """
    if value.strip(b" \t") == b"*":
        return [(False, b"*")]
    tags: list[tuple[bool, bytes]] = []
    pos, end = 0, len(value)
    while pos < end:
        m = _ENTITY_TAG.match(value, pos)
        if m is not None:
            tags.append((m.group(1) is not None, m.group(2)))
            pos = m.end()
            if pos < end:
                if value[pos] != 0x2C:       # tags must be separated by ","
                    return None
                pos += 1
            continue
        # an empty list element: optional whitespace and then "," or the end
        rest = pos
        while rest < end and value[rest] in b" \t":
            rest += 1
        if rest == end:
            break
        if value[rest] != 0x2C:
            return None
        pos = rest + 1
    return tags or None


def _split_tag(etag: bytes) -> tuple[bool, bytes]:
    if etag.startswith(b"W/"):
        return True, etag[2:]
    return False, etag


def _strong_match(tags: list[tuple[bool, bytes]] | None, etag: bytes) -> bool:
    if tags is None:
        return False
    weak, opaque = _split_tag(etag)
    for tag_weak, tag in tags:
        if tag == b"*":
            return True
        if not weak and not tag_weak and tag == opaque:
            return True
    return False


def _weak_match(tags: list[tuple[bool, bytes]] | None, etag: bytes) -> bool:
    if tags is None:
        return False
    opaque = _split_tag(etag)[1]
    for _, tag in tags:
        if tag == b"*" or tag == opaque:
            return True
    return False


def evaluate_preconditions(req: Request, etag: bytes, last_modified: int) -> int | None:
    """Evaluate the request's preconditions against the current representation (§13.2.2).

    ``etag`` is the representation's entity-tag as sent in ETag (``b'"5f3a-1c"'``), and
    ``last_modified`` its Last-Modified in Unix seconds. Returns 412 or 304 when the request
    must be answered with that status, None to continue (with Range, if any):

    1. If-Match present: no strong match (``*`` matches) -> 412.
    2. Else If-Unmodified-Since with a valid date: Last-Modified later than it -> 412.
    3. If-None-Match present: a weak match (``*`` matches) -> 304 for GET/HEAD, else 412.
    4. Else If-Modified-Since with a valid date, GET/HEAD only: Last-Modified not later -> 304.
    """
    if req.if_match is not None:
        if not _strong_match(parse_etag_list(req.if_match), etag):
            return 412
    elif req.if_unmodified_since is not None:
        date = parse_http_date(req.if_unmodified_since)
        if date is not None and last_modified > date:
            return 412
    get_or_head = req.method == b"GET" or req.method == b"HEAD"
    if req.if_none_match is not None:
        if _weak_match(parse_etag_list(req.if_none_match), etag):
            return 304 if get_or_head else 412
    elif req.if_modified_since is not None and get_or_head:
        date = parse_http_date(req.if_modified_since)
        if date is not None and last_modified <= date:
            return 304
    return None


def if_range_allows(value: bytes, etag: bytes, last_modified: int) -> bool:
    """True when an If-Range value lets the Range header apply (§13.1.5).

    An entity-tag must be strong and strongly equal to ``etag``; a date must be a valid
    HTTP-date exactly equal to ``last_modified``. Anything else (weak tags, other dates,
    garbage) is False: the whole representation is sent.
    """
    value = value.strip(b" \t")
    if value.startswith(b'"'):
        m = _ENTITY_TAG.fullmatch(value)
        if m is None:
            return False
        weak, opaque = _split_tag(etag)
        return not weak and m.group(2) == opaque
    if value.startswith(b"W/"):
        return False
    date = parse_http_date(value)
    return date is not None and date == last_modified
