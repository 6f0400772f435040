"""Signed download tokens: round trips, the documented vectors, tampering, expiry, fuzzing."""
from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import tokens
from edge.tokens import Grant, TokenError, mint, verify

FUZZ = settings(max_examples=int(os.environ.get("EDGE_FUZZ_EXAMPLES", "400")),
                suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parents[2]

SECRET = b"edge-test-secret-do-not-use"
KEY = "blobs/ab/cd.bin"
EXP = 1767225600                          # 2026-01-01T00:00:00Z
VECTOR_1 = ("v1.WyJibG9icy9hYi9jZC5iaW4iLDE3NjcyMjU2MDAsNzM0MDAzMjAwLCJwaV8zTnFMeDJlWnZLWWxvMkMiXQ"
            ".jeuzk4DJMCNSjp3HDolhw2CGzbZb2cFjnW36ili7d5U")
VECTOR_2 = ("v1.WyJmaWxtcy_DqXTDqSAyMDI1Lm1rdiIsMTc2NzIyNTYwMCxudWxsLCIiXQ"
            ".3ladCdk-4BaEOE2wu3LY9sZtv5gqSCGI-LhxcvurOOY")


# The reference of docs/tokens.md, verbatim.
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def reference_mint(secret: str, key: str, expires: int, budget: int | None, receipt: str) -> str:
    body = json.dumps([key, expires, budget, receipt], ensure_ascii=False, separators=(",", ":"))
    signing_input = "v1." + b64url(body.encode("utf-8"))
    mac = hmac.new(secret.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


def sign_raw(payload: bytes, secret: bytes = SECRET, version: str = "v1") -> str:
    """An authentic token around any payload bytes (what a buggy minter could produce)."""
    si = f"{version}.{b64url(payload)}"
    return si + "." + b64url(hmac.digest(secret, si.encode(), "sha256"))


def reason(token: str, key: str = KEY, now: float = EXP - 100, skew: float = 30,
           secret: bytes = SECRET) -> str:
    with pytest.raises(TokenError) as exc:
        verify(token, secret, key, now, skew)
    return exc.value.reason


# -- format --

def test_documented_vectors():
    assert reference_mint(SECRET.decode(), KEY, EXP, 734003200, "pi_3NqLx2eZvKYlo2C") == VECTOR_1
    assert mint(SECRET, KEY, EXP, 734003200, "pi_3NqLx2eZvKYlo2C") == VECTOR_1
    assert reference_mint(SECRET.decode(), "films/été 2025.mkv", EXP, None, "") == VECTOR_2
    assert mint(SECRET, "films/été 2025.mkv", EXP, None, "") == VECTOR_2
    g = verify(VECTOR_1, SECRET, KEY, EXP)
    assert (g.key, g.expires, g.budget, g.receipt) == (KEY, EXP, 734003200, "pi_3NqLx2eZvKYlo2C")
    g = verify(VECTOR_2, SECRET, "films/été 2025.mkv", EXP)
    assert (g.budget, g.receipt) == (None, "")


def test_vectors_are_in_the_docs():
    doc = (ROOT / "docs" / "tokens.md").read_text()
    assert VECTOR_1 in doc and VECTOR_2 in doc
    # The reference snippet in the docs is the one tested here.
    snippet = 'json.dumps([key, expires, budget, receipt], ensure_ascii=False, separators=(",", ":"))'
    assert snippet in doc


def test_tokens_are_url_safe():
    t = mint(SECRET, "a b/ü?&=#%.bin", EXP, 10, "rcpt:1/2+3=")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", t)
    assert t.count(".") == 2 and t.startswith("v1.")


def test_any_json_encoding_verifies():
    # Escaped non-ASCII and spaces: the MAC covers the bytes sent, nothing is re-encoded.
    payload = json.dumps(["films/été.mkv", EXP, None, "r"], ensure_ascii=True).encode()
    g = verify(sign_raw(payload), SECRET, "films/été.mkv", EXP)
    assert g.key == "films/été.mkv" and g.budget is None and g.receipt == "r"


# -- round trip --

@pytest.mark.parametrize("budget,receipt", [(None, ""), (0, ""), (734003200, "pi_3NqLx2eZvKYlo2C"),
                                            (2**63 - 1, "x" * 256)])
def test_round_trip(budget, receipt):
    t = mint(SECRET, KEY, EXP, budget, receipt)
    g = verify(t, SECRET, KEY, EXP)
    assert g == Grant(KEY, EXP, budget, receipt, t.rsplit(".", 1)[1][:22])


@given(key=st.text(min_size=1, max_size=200),
       expires=st.integers(0, 2**63 - 1), budget=st.none() | st.integers(0, 2**63 - 1),
       receipt=st.from_regex(r"[\x21-\x7e]{0,64}", fullmatch=True))
@FUZZ
def test_round_trip_any_fields(key, expires, budget, receipt):
    t = mint(SECRET, key, expires, budget, receipt)
    g = verify(t, SECRET, key, expires)
    assert (g.key, g.expires, g.budget, g.receipt) == (key, expires, budget, receipt)


def test_budget_id():
    a = verify(mint(SECRET, KEY, EXP, 10, "r1"), SECRET, KEY, EXP)
    b = verify(mint(SECRET, KEY, EXP + 5, 10, "r1"), SECRET, KEY, EXP)     # re-minted
    c = verify(mint(SECRET, "other", EXP, 10, "r1"), SECRET, "other", EXP)
    assert a.budget_id == b.budget_id == f"r:r1 {KEY}" != c.budget_id
    d = verify(mint(SECRET, KEY, EXP, 10, ""), SECRET, KEY, EXP)
    e = verify(mint(SECRET, KEY, EXP + 1, 10, ""), SECRET, KEY, EXP)
    assert d.budget_id.startswith("t:") and d.budget_id != e.budget_id
    assert len(d.token_id) == 22


# -- refusals --

def _fields(token: str) -> list:
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


@pytest.mark.parametrize("index,value", [(0, "blobs/ab/cd.bim"), (1, EXP + 86400), (2, 10**12),
                                         (2, None), (3, "pi_someone_else")])
def test_tampering_a_field_breaks_the_signature(index, value):
    t = mint(SECRET, KEY, EXP, 734003200, "pi_3NqLx2eZvKYlo2C")
    fields = _fields(t)
    fields[index] = value
    forged = "v1." + b64url(json.dumps(fields, separators=(",", ":")).encode()) + "." + t.split(".")[2]
    assert reason(forged, key=fields[0]) == "bad signature"


def test_tampering_any_character_is_refused():
    t = mint(SECRET, KEY, EXP, 734003200, "pi_3NqLx2eZvKYlo2C")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, ch in enumerate(t):
        if ch == ".":
            continue
        for repl in {alphabet[(alphabet.find(ch) + 1) % 64], "A", "_"} - {ch}:
            forged = t[:i] + repl + t[i + 1:]
            r = reason(forged)
            assert r in ("bad signature", "malformed token"), (i, repl, r)
            if i >= 3:                     # payload or MAC: the signature check catches it
                assert r == "bad signature", (i, repl)


def test_wrong_secret():
    t = mint(SECRET, KEY, EXP, None, "")
    assert reason(t, secret=b"another secret") == "bad signature"


def test_other_key():
    t = mint(SECRET, KEY, EXP, None, "")
    assert reason(t, key="blobs/ab/cd.bin2") == "token is for another key"
    assert reason(t, key="") == "token is for another key"


def test_expiry_with_skew():
    t = mint(SECRET, KEY, EXP, None, "")
    assert verify(t, SECRET, KEY, EXP + 30).expires == EXP          # inside the default skew
    assert reason(t, now=EXP + 30.001) == "expired"
    assert verify(t, SECRET, KEY, EXP, skew=0)
    assert reason(t, now=EXP + 0.001, skew=0) == "expired"
    assert verify(t, SECRET, KEY, EXP + 299, skew=300)
    assert reason(t, now=EXP + 301, skew=300) == "expired"


def test_checks_in_order():
    t = mint(SECRET, KEY, EXP, None, "")
    # A forged and expired token for another key is reported as forged first.
    assert reason(t[:-1] + ("A" if t[-1] != "A" else "B"), key="x", now=EXP + 1e6) == "bad signature"
    assert reason(t, key="x", now=EXP + 1e6) == "token is for another key"


MALFORMED = [
    "", "v1", "v1.", "v1..", "v1.e30", "v2.e30." + "A" * 43, "V1.e30." + "A" * 43,
    "v1.e30." + "A" * 42, "v1.e30." + "A" * 44, "v1.e30=." + "A" * 43, "v1.e30." + "A" * 42 + "=",
    " v1.e30." + "A" * 43, "v1.e30." + "A" * 43 + "\n", "v1.e+0." + "A" * 43, "v1.é." + "A" * 43,
    "v1.e30.e30." + "A" * 43, "Bearer v1.e30." + "A" * 43, "v1." + "A" * 3000 + "." + "A" * 43,
]


@pytest.mark.parametrize("token", MALFORMED)
def test_malformed(token):
    assert reason(token) == "malformed token"


def test_not_a_string():
    for bad in (None, b"v1.x.y", 5):
        with pytest.raises(TokenError):
            verify(bad, SECRET, KEY, EXP)  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [
    b"", b"{}", b"[]", b"null", b'"x"', b"\xff\xfe", b"[1,2,3,4]",
    json.dumps([KEY, EXP, None]).encode(),
    json.dumps([KEY, EXP, None, "", "extra"]).encode(),
    json.dumps([KEY, float(EXP), None, ""]).encode(),
    json.dumps([KEY, True, None, ""]).encode(),
    json.dumps([KEY, EXP, False, ""]).encode(),
    json.dumps([KEY, EXP, -1, ""]).encode(),
    json.dumps([KEY, EXP, 2**63, ""]).encode(),
    json.dumps([KEY, -1, None, ""]).encode(),
    json.dumps([KEY, EXP, 1.5, ""]).encode(),
    json.dumps([KEY, EXP, None, "has space"]).encode(),
    json.dumps([KEY, EXP, None, None]).encode(),
    json.dumps([KEY, EXP, None, "x" * 257]).encode(),
    json.dumps(["", EXP, None, ""]).encode(),
    json.dumps([None, EXP, None, ""]).encode(),
    f'["{KEY}",{EXP},NaN,""]'.encode(),
    f'["{KEY}",Infinity,null,""]'.encode(),
    f'["{KEY}",{EXP},null,""] x'.encode(),
    b"[" * 1000 + b"]" * 1000,
])
def test_authentic_but_malformed_payload(payload):
    # Signed with the right secret (a minting bug): still one TokenError, "malformed token".
    t = sign_raw(payload)
    if len(t) <= tokens.MAX_TOKEN_LENGTH:
        assert reason(t) == "malformed token"


def test_mint_refuses_what_verify_would_refuse():
    for args in [(KEY, EXP, None, "a b"), (KEY, -1, None, ""), (KEY, EXP, -1, ""), ("", EXP, None, ""),
                 (KEY, EXP, True, ""), (KEY, 1.5, None, ""), (KEY, EXP, 2**63, ""),
                 ("k" * 2000, EXP, None, ""), (KEY, EXP, None, "é")]:
        with pytest.raises(ValueError):
            mint(SECRET, *args)
    with pytest.raises(ValueError):
        mint(b"", KEY, EXP, None, "")


# -- fuzzing: any input string gives a Grant or one TokenError, nothing else --

@given(st.text(max_size=300))
@FUZZ
def test_fuzz_any_text(s):
    try:
        verify(s, SECRET, KEY, EXP)
    except TokenError as exc:
        assert exc.reason in ("malformed token", "bad signature")


@given(st.from_regex(r"v1\.[A-Za-z0-9_-]{0,200}\.[A-Za-z0-9_-]{40,46}", fullmatch=True))
@FUZZ
def test_fuzz_token_shaped(s):
    try:
        verify(s, SECRET, KEY, EXP)
    except TokenError as exc:
        assert exc.reason in ("malformed token", "bad signature")


@given(st.binary(max_size=400))
@FUZZ
def test_fuzz_authentic_payloads(payload):
    t = sign_raw(payload)
    try:
        g = verify(t, SECRET, KEY, EXP)
    except TokenError:
        return
    assert g.key == KEY


@given(st.data())
@FUZZ
def test_fuzz_mutations_of_a_valid_token(data):
    t = mint(SECRET, KEY, EXP, 734003200, "r")
    i = data.draw(st.integers(0, len(t) - 1))
    s = t[:i] + data.draw(st.text(max_size=3)) + t[i + data.draw(st.integers(0, 3)):]
    try:
        g = verify(s, SECRET, KEY, EXP)
    except TokenError:
        return
    assert s == t and g.budget == 734003200


# -- properties of the module --

def test_module_is_sans_io():
    tree = ast.parse(Path(tokens.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & {"asyncio", "socket", "time", "datetime", "os", "random", "secrets", "threading"}


def test_verify_cost():
    t = mint(SECRET, KEY, EXP, 734003200, "pi_3NqLx2eZvKYlo2C")
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        verify(t, SECRET, KEY, EXP)
    per = (time.perf_counter() - t0) / n * 1e6
    print(f"\nverify: {per:.1f} µs per call")
    assert per < 200
