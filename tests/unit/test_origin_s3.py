"""S3Origin: the SigV4 signer against AWS's published example, URL forms, credentials, and the
S3 error mapping against an in-process fake S3 that checks every signature it gets."""
from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Awaitable, Callable
from unittest import mock

import pytest
from aiohttp import web
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from origin_clients import make_origin
from origin_clients.base import NotFound, OriginError, OriginRefused, ValidatorMismatch
from origin_clients.s3 import S3Origin, xml_error

from .test_origin_http import DATA, Obj, Store, collect, serve

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def frozen(ts: str):
    """Freeze botocore's signing clock at ``ts`` (YYYYmmddTHHMMSSZ)."""
    when = datetime.datetime.strptime(ts, "%Y%m%dT%H%M%SZ")
    return mock.patch("botocore.auth.get_current_datetime", return_value=when)


# -- the signer ------------------------------------------------------------------------------------

def test_sigv4_matches_the_aws_get_object_example():
    """AWS docs, "Signature Calculations for the Authorization Header: Transferring Payload in a
    Single Chunk", example GET Object: GET /test.txt, Range: bytes=0-9, examplebucket."""
    origin = S3Origin("s3://examplebucket?endpoint=https://s3.amazonaws.com&addressing=virtual",
                      access_key=AK, secret_key=SK)
    url = origin.url("test.txt")
    assert url == "https://examplebucket.s3.amazonaws.com/test.txt"
    with frozen("20130524T000000Z"):
        headers = origin.prepare_headers("GET", url, {"Range": "bytes=0-9"})
    assert headers["X-Amz-Date"] == "20130524T000000Z"
    assert headers["X-Amz-Content-SHA256"] == \
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def test_each_request_is_signed_at_its_own_time():
    origin = S3Origin("s3://b?endpoint=http://127.0.0.1:9", access_key=AK, secret_key=SK)
    url = origin.url("k")
    with frozen("20240101T000000Z"):
        a = origin.prepare_headers("GET", url, {"Range": "bytes=0-9"})
    with frozen("20240101T000001Z"):
        b = origin.prepare_headers("GET", url, {"Range": "bytes=0-9"})
    assert a["X-Amz-Date"] != b["X-Amz-Date"]
    assert a["Authorization"] != b["Authorization"]


def test_range_and_if_match_are_signed_and_the_path_is_encoded_once():
    origin = S3Origin("s3://b/pre fix?endpoint=http://127.0.0.1:9", access_key=AK, secret_key=SK)
    url = origin.url("a b+c%d/é")
    assert url == "http://127.0.0.1:9/b/pre%20fix/a%20b%2Bc%25d/%C3%A9"
    with frozen("20240101T000000Z"):
        h = origin.prepare_headers("GET", url, {"Range": "bytes=0-9", "If-Match": '"e"'})
        # The generic signer would encode the path a second time (%25 -> %2525).
        req = AWSRequest(method="GET", url=url, headers={"Range": "bytes=0-9", "If-Match": '"e"'})
        S3SigV4Auth(Credentials(AK, SK), "s3", "us-east-1").add_auth(req)
        canonical = S3SigV4Auth(Credentials(AK, SK), "s3", "us-east-1").canonical_request(req)
    assert "SignedHeaders=host;if-match;range;x-amz-content-sha256;x-amz-date," in h["Authorization"]
    assert canonical.splitlines()[1] == "/b/pre%20fix/a%20b%2Bc%25d/%C3%A9"
    assert h["Authorization"] == req.headers["Authorization"]


def test_session_token_is_sent_and_signed():
    origin = S3Origin("s3://b?endpoint=http://127.0.0.1:9", access_key=AK, secret_key=SK,
                      session_token="TOKEN")
    h = origin.prepare_headers("HEAD", origin.url("k"), {})
    assert h["X-Amz-Security-Token"] == "TOKEN"
    assert "x-amz-security-token" in h["Authorization"]


# -- URL forms and credentials ------------------------------------------------------------------

@pytest.mark.parametrize("url,base,key_url", [
    ("s3://bkt", "https://bkt.s3.us-east-1.amazonaws.com/", "https://bkt.s3.us-east-1.amazonaws.com/k"),
    ("s3://bkt/videos?region=eu-west-3", "https://bkt.s3.eu-west-3.amazonaws.com/",
     "https://bkt.s3.eu-west-3.amazonaws.com/videos/k"),
    ("s3://bkt/a/b/?endpoint=http://127.0.0.1:8333", "http://127.0.0.1:8333/bkt/",
     "http://127.0.0.1:8333/bkt/a/b/k"),
    ("s3://bkt?endpoint=https://gw.example:7777/s3/&addressing=path", "https://gw.example:7777/s3/bkt/",
     "https://gw.example:7777/s3/bkt/k"),
    ("s3://bkt?endpoint=https://gw.example&addressing=virtual", "https://bkt.gw.example/",
     "https://bkt.gw.example/k"),
])
def test_url_forms(url, base, key_url):
    origin = S3Origin(url, access_key=AK, secret_key=SK)
    assert origin.base == base and origin.url("k") == key_url


def test_make_origin_builds_an_s3_origin():
    o = make_origin("s", "s3://bkt/p?endpoint=http://127.0.0.1:1&region=eu-central-1",
                    access_key=AK, secret_key=SK, max_connections=5, connect_timeout=1, read_timeout=2)
    assert isinstance(o, S3Origin) and o.name == "s" and o.region == "eu-central-1"
    assert o.signed and o.max_connections == 5 and o.connect_timeout == 1 and o.read_timeout == 2


def test_credentials_from_the_environment_or_none(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SK)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "T")
    o = S3Origin("s3://b?endpoint=http://127.0.0.1:9")
    h = o.prepare_headers("HEAD", o.url("k"), {})
    assert o.signed and AK in h["Authorization"] and h["X-Amz-Security-Token"] == "T"
    # Explicit credentials win over the environment.
    o = S3Origin("s3://b?endpoint=http://127.0.0.1:9", access_key="OTHER", secret_key="x")
    assert "Credential=OTHER/" in o.prepare_headers("HEAD", o.url("k"), {})["Authorization"]
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    o = S3Origin("s3://b?endpoint=http://127.0.0.1:9")
    assert not o.signed and o.prepare_headers("GET", o.url("k"), {"Range": "bytes=0-0"}) == \
        {"Range": "bytes=0-0"}
    with pytest.raises(ValueError, match="secret key"):
        S3Origin("s3://b?endpoint=http://127.0.0.1:9", access_key=AK)


def test_xml_error_is_scanned():
    body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code>'
            b"<Message>The request signature we calculated does not match &amp; so on</Message>"
            b"<RequestId>1</RequestId></Error>")
    assert xml_error(body) == ("SignatureDoesNotMatch",
                               "The request signature we calculated does not match & so on")
    assert xml_error(b"") == (None, "")
    assert xml_error(b"<html>nope</html>") == (None, "")


# -- against a fake S3 that verifies signatures -----------------------------------------------------

_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/aws4_request, "
                   r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})")


def s3_error(status: int, code: str, message: str) -> web.Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>' \
           f"<Message>{message}</Message><RequestId>42</RequestId></Error>"
    if status in (304, 412) or code == "HeadError":
        return web.Response(status=status)
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def verify(request: web.Request) -> str | None:
    """S3's error code for the request's signature, or None when it is valid for (AK, SK)."""
    auth = request.headers.get("Authorization")
    if auth is None:
        return "AccessDenied"
    m = _AUTH.fullmatch(auth)
    if m is None:
        return "AuthorizationHeaderMalformed"
    access_key, _, region, signed, _ = m.groups()
    if access_key != AK:
        return "InvalidAccessKeyId"
    headers = {name: request.headers[name] for name in signed.split(";")}
    req = AWSRequest(method=request.method, url=f"http://{request.host}{request.raw_path}",
                     headers=headers)
    token = request.headers.get("X-Amz-Security-Token")
    with frozen(request.headers["X-Amz-Date"]):
        S3SigV4Auth(Credentials(AK, SK, token), "s3", region).add_auth(req)
    return None if req.headers["Authorization"] == auth else "SignatureDoesNotMatch"


def run_s3(test: Callable[[Store, S3Origin], Awaitable[None]], *, secret: str = SK,
           access: str | None = AK, objects: dict[str, Obj] | None = None,
           errors: dict[str, tuple[int, str]] | None = None) -> Store:
    """``test(store, origin)`` against a fake S3 serving bucket "prefix" (the fake's root).

    ``errors`` maps a key to the (status, code) every request for it gets.
    """
    store = Store(objects=dict(objects or {"blob": Obj(DATA)}))
    errors = errors or {}

    async def gate(request: web.Request) -> web.StreamResponse | None:
        code = verify(request)
        if code is not None:
            return s3_error(403 if code != "AuthorizationHeaderMalformed" else 400, code,
                            "signature check failed")
        key = request.path.removeprefix("/prefix/")
        if key in errors:
            status, err = errors[key]
            return s3_error(status, err, f"injected {err}")
        if key not in store.objects:
            return s3_error(404, "NoSuchKey", "The specified key does not exist.")
        return None

    async def main() -> None:
        store.override = gate
        async with serve(store) as url:
            endpoint = url.removesuffix("/prefix")
            origin = S3Origin(f"s3://prefix?endpoint={endpoint}", name="weedy",
                              access_key=access, secret_key=secret if access else None,
                              read_timeout=5)
            try:
                await test(store, origin)
            finally:
                await origin.close()

    asyncio.run(main())
    return store


@pytest.mark.parametrize("key", ["blob", "a b+c%d/é.bin", "dir/sub/x~y_z-1.2", "q?x#y&z=;@:"])
def test_signed_stat_and_read_pass_a_verifying_server(key):
    async def t(store, origin):
        info = await origin.stat(key)
        assert info.size == len(DATA) and info.etag == b'"v1"'
        assert await collect(origin, key, info, 1 << 20, 2 << 20) == DATA[1 << 20:2 << 20]
        sent = store.requests[-1].headers
        assert sent["Range"] == f"bytes={1 << 20}-{(2 << 20) - 1}" and sent["If-Match"] == '"v1"'
        assert "if-match;range" in sent["Authorization"]
        assert "accept-encoding" not in sent["Authorization"]
    run_s3(t, objects={key: Obj(DATA)})


def test_wrong_secret_is_refused_with_the_s3_code():
    async def t(store, origin):
        with pytest.raises(OriginRefused) as e:
            await origin.stat("blob")
        msg = str(e.value)
        assert "'weedy'" in msg and "SignatureDoesNotMatch" in msg and "403" in msg
        assert "signature check failed" in msg
        assert [r.method for r in store.requests] == ["HEAD", "GET"]   # the GET learnt the code
        assert store.requests[1].headers["Range"] == "bytes=0-0"
    run_s3(t, secret="wrong")


def test_unknown_access_key_and_unsigned_requests_are_refused():
    async def t(store, origin):
        with pytest.raises(OriginRefused, match="InvalidAccessKeyId"):
            await origin.stat("blob")
    run_s3(t, access="AKIDUNKNOWN")

    async def unsigned(store, origin):
        assert not origin.signed
        with pytest.raises(OriginRefused, match="AccessDenied"):
            await origin.stat("blob")
        assert "Authorization" not in store.requests[0].headers
    with mock.patch.dict("os.environ", {}, clear=True):
        run_s3(unsigned, access=None)


@pytest.mark.parametrize("status,code,kind,retryable", [
    (404, "NoSuchKey", NotFound, False),
    (403, "AccessDenied", OriginRefused, True),
    (400, "ExpiredToken", OriginRefused, True),
    (412, "PreconditionFailed", ValidatorMismatch, False),
    (503, "SlowDown", OriginError, True),
    (500, "InternalError", OriginError, True),
    (404, "NoSuchBucket", OriginError, True),
    (400, "InvalidArgument", OriginError, False),
])
def test_s3_error_codes_on_read(status, code, kind, retryable):
    async def t(store, origin):
        info = await origin.stat("blob")
        store.objects["bad"] = store.objects["blob"]
        with pytest.raises(OriginError) as e:
            await collect(origin, "bad", info, 0, 10)
        assert type(e.value) is kind and e.value.retryable is retryable
        if status != 412:
            assert code in str(e.value)
    run_s3(t, errors={"bad": (status, code)})


def test_missing_key_is_not_found_without_a_second_request():
    async def t(store, origin):
        with pytest.raises(NotFound, match="404"):
            await origin.stat("missing")
        assert len(store.requests) == 1
    run_s3(t)


def test_changed_object_is_a_mismatch():
    async def t(store, origin):
        info = await origin.stat("blob")
        store.objects["blob"] = Obj(DATA[::-1], etag='"v2"')
        with pytest.raises(ValidatorMismatch):
            await collect(origin, "blob", info, 0, 10)
    run_s3(t)


def test_the_http_validation_applies_to_s3():
    async def t(store, origin):
        info = await origin.stat("blob")

        async def wrong_range(request):
            return web.Response(status=206, body=DATA[:10],
                                headers={"Content-Range": f"bytes 1-10/{len(DATA)}", "ETag": '"v1"'})
        store.override = wrong_range
        with pytest.raises(OriginError, match="Content-Range"):
            await collect(origin, "blob", info, 0, 10)
    run_s3(t)
