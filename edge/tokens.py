"""Signed download tokens: mint and verify, sans-IO (no clock, no sockets; ``now`` is passed in).

A token is ``v1.<payload>.<mac>`` (docs/tokens.md is the normative description):

- ``payload`` is base64url without padding of the UTF-8 JSON array
  ``[key, expires, budget, receipt]`` (key: the object key; expires: Unix seconds, an
  integer; budget: bytes, an integer, or null for unlimited; receipt: the payment id, "" for none);
- ``mac`` is base64url without padding of HMAC-SHA256(secret, ASCII ``"v1." + payload``).

The MAC covers the exact bytes sent (version and every field, the key included), so the
verifier never re-encodes anything and any JSON encoder can mint. ``verify`` checks, in order:
length and shape, the MAC (constant-time, ``hmac.compare_digest``), the payload's types, the key,
the expiry (with a clock-skew allowance). Every failure is a ``TokenError`` with a short reason
fit for a 403 body; nothing else is raised for any input string.
"""
from __future__ import annotations

import base64
import hmac
import json
import re
from dataclasses import dataclass

VERSION = "v1"
MAX_TOKEN_LENGTH = 2048          # bounds the work per request; longer is "malformed token"
MAX_INT = 2**63 - 1              # expires and budget fit a signed 64-bit integer (SQLite, other languages)
MAX_RECEIPT_LENGTH = 256

MISSING = "missing token"         # the server's reason when the request carries none
MALFORMED = "malformed token"
BAD_SIGNATURE = "bad signature"
EXPIRED = "expired"
WRONG_KEY = "token is for another key"

# Base64url without padding; a 32-byte MAC is exactly 43 characters.
_SHAPE = re.compile(r"v1\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")
_RECEIPT = re.compile(r"[\x21-\x7e]*")           # printable ASCII, no space


def _reject_constant(name: str) -> None:
    raise ValueError(name)                           # NaN, Infinity: not JSON


_JSON = json.JSONDecoder(parse_constant=_reject_constant)


class TokenError(Exception):
    """The token does not grant access; ``reason`` is short and safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token allows: GET/HEAD of ``key`` until ``expires`` (+ skew), up to
    ``budget`` bytes in total (None: unlimited), paid by ``receipt`` ("" when none)."""

    key: str
    expires: int
    budget: int | None
    receipt: str
    token_id: str = ""           # the first 22 characters (128 bits) of the MAC: unique per token

    @property
    def budget_id(self) -> str:
        """Identity of the byte budget: per (receipt, key), or per token when there is no receipt.

        Re-minting a token for the same receipt and key shares the budget; one receipt covering
        several files gives each file its own budget.
        """
        if self.receipt:
            return f"r:{self.receipt} {self.key}"
        return f"t:{self.token_id} {self.key}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _mac(secret: bytes, signing_input: str) -> str:
    return _b64(hmac.digest(secret, signing_input.encode("ascii"), "sha256"))


def _check_fields(key: str, expires: int, budget: int | None, receipt: str) -> str | None:
    """The problem with these fields, or None. Shared by mint (ValueError) and verify."""
    if not isinstance(key, str) or not key:
        return "key must be a non-empty string"
    if type(expires) is not int or not 0 <= expires <= MAX_INT:
        return "expires must be an integer number of seconds, 0 <= expires < 2**63"
    if budget is not None and (type(budget) is not int or not 0 <= budget <= MAX_INT):
        return "budget must be null or an integer number of bytes, 0 <= budget < 2**63"
    if (not isinstance(receipt, str) or len(receipt) > MAX_RECEIPT_LENGTH
            or not _RECEIPT.fullmatch(receipt)):
        return f"receipt must be at most {MAX_RECEIPT_LENGTH} printable ASCII characters without spaces"
    return None


def mint(secret: bytes, key: str, expires: int, budget: int | None, receipt: str) -> str:
    """Return a token granting ``key`` until ``expires`` (Unix seconds) within ``budget`` bytes.

    Raises ValueError for fields a verifier would refuse, or a token over MAX_TOKEN_LENGTH.
    """
    problem = "the secret must not be empty" if not secret else _check_fields(key, expires, budget, receipt)
    if problem:
        raise ValueError(problem)
    body = json.dumps([key, expires, budget, receipt], ensure_ascii=False, separators=(",", ":"))
    signing_input = f"{VERSION}.{_b64(body.encode('utf-8'))}"
    token = f"{signing_input}.{_mac(secret, signing_input)}"
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"token would be {len(token)} characters, over {MAX_TOKEN_LENGTH} (key too long)")
    return token


def verify(token: str, secret: bytes, key: str, now: float, skew: float = 30) -> Grant:
    """Check ``token`` for a request of ``key`` at time ``now``; return the Grant or raise TokenError.

    Expired means ``now > expires + skew``.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError(MALFORMED)
    m = _SHAPE.fullmatch(token)
    if m is None:
        raise TokenError(MALFORMED)
    payload, mac = m.group(1), m.group(2)
    expected = _mac(secret, token[: m.end(1)])
    if not hmac.compare_digest(expected, mac):          # both ASCII: the regex made sure
        raise TokenError(BAD_SIGNATURE)
    # Authentic from here on: anything wrong is the minter's bug, reported as malformed.
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        fields = _JSON.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError):                # binascii.Error, UnicodeDecodeError, JSON
        raise TokenError(MALFORMED) from None
    if not isinstance(fields, list) or len(fields) != 4:
        raise TokenError(MALFORMED)
    t_key, expires, budget, receipt = fields
    if _check_fields(t_key, expires, budget, receipt):
        raise TokenError(MALFORMED)
    if t_key != key:
        raise TokenError(WRONG_KEY)
    if now > expires + skew:
        raise TokenError(EXPIRED)
    return Grant(t_key, expires, budget, receipt, mac[:22])
