"""The S3 origin: objects in a bucket (below a prefix) of AWS S3 or an S3-compatible store.

``s3://BUCKET[/PREFIX]?endpoint=http://127.0.0.1:8333&region=us-east-1&addressing=path``.
Without an endpoint the store is AWS (``https://s3.REGION.amazonaws.com``, virtual-hosted
addressing ``BUCKET.s3.REGION.amazonaws.com``); with one, path-style addressing
(``ENDPOINT/BUCKET/KEY``) is the default, since that is what self-hosted stores serve.
Credentials come from the constructor, else from ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``; with none at all requests go unsigned
(public buckets).

Requests, response validation and connection handling are :class:`HTTPOrigin`'s: ``stat``
is HeadObject, ``read`` is GetObject with ``Range`` and ``If-Match``. This class only builds
the URL, signs each request and reads S3's XML error ``Code`` so that errors map to what they
mean (NoSuchKey → NotFound, AccessDenied/SignatureDoesNotMatch/InvalidAccessKeyId →
OriginRefused naming the code, PreconditionFailed → ValidatorMismatch, SlowDown/5xx →
retryable). A HEAD error has no body, so a refused HEAD is asked again as a one-byte GET to
learn the code.

Signing is botocore's ``S3SigV4Auth`` on an ``AWSRequest``, computed per request (the
signature covers a timestamp). Why botocore rather than a hand-rolled signer: SigV4 has S3
quirks that are easy to get subtly wrong and only show up on odd keys or odd services: S3's
canonical URI is the path encoded *once* (the generic ``SigV4Auth`` normalizes and encodes it
again, which breaks keys with ``%``, ``+`` or spaces), ``x-amz-content-sha256`` must be sent
and signed, session tokens add a signed header, and the header canonicalisation has its own
trimming rules. botocore is what the AWS CLI and boto3 run, is kept current with AWS's
behaviour, and is tested against AWS's own vectors; our unit tests pin it to the published
GET Object example. Every header we send for an object (``Range``, ``If-Match``,
``If-Unmodified-Since``) is signed; ``Accept-Encoding`` and ``User-Agent`` are added after
signing and left unsigned (a proxy may rewrite them).
"""
from __future__ import annotations

import html
import os
import re
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .base import NotFound, ObjectInfo, OriginError, OriginRefused, ValidatorMismatch
from .http import ERROR_BODY_LIMIT, HTTPOrigin, quote_key, read_some


def xml_error(body: bytes) -> tuple[str | None, str]:
    """(Code, Message) of an S3 XML error body; scanned, not parsed (it is untrusted input)."""
    code = re.search(rb"<Code>([^<]{1,128})</Code>", body)
    message = re.search(rb"<Message>([^<]{0,512})</Message>", body)
    return (html.unescape(code.group(1).decode("utf-8", "replace")) if code else None,
            html.unescape(message.group(1).decode("utf-8", "replace")) if message else "")


class S3Origin(HTTPOrigin):
    """Objects ``PREFIX + key`` of one bucket."""

    def __init__(self, url: str, *, name: str = "s3", access_key: str | None = None,
                 secret_key: str | None = None, session_token: str | None = None,
                 max_connections: int = 32, connect_timeout: float = 3.0,
                 read_timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"an S3 origin needs s3://BUCKET[/PREFIX], got {url!r}")
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.bucket = parts.netloc
        prefix = unquote(parts.path.lstrip("/"))
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.region = params.get("region", "us-east-1")
        endpoint = params.get("endpoint")
        addressing = params.get("addressing", "path" if endpoint else "virtual")
        if addressing not in ("path", "virtual"):
            raise ValueError(f"addressing must be 'path' or 'virtual', got {addressing!r}")
        ep = urlsplit(endpoint or f"https://s3.{self.region}.amazonaws.com")
        if ep.scheme not in ("http", "https") or not ep.netloc:
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        ep_path = ep.path.rstrip("/")
        if addressing == "path":
            base = f"{ep.scheme}://{ep.netloc}{ep_path}/{quote(self.bucket, safe='')}/"
        else:
            base = f"{ep.scheme}://{self.bucket}.{ep.netloc}{ep_path}/"
        super().__init__(base, name=name, max_connections=max_connections,
                         connect_timeout=connect_timeout, read_timeout=read_timeout)

        if access_key is None and secret_key is None:
            access_key = os.environ.get("AWS_ACCESS_KEY_ID") or None
            secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY") or None
            session_token = session_token or os.environ.get("AWS_SESSION_TOKEN") or None
        if bool(access_key) != bool(secret_key):
            raise ValueError(f"origin {name!r}: an access key needs a secret key and vice versa")
        self.signed = bool(access_key)
        self._auth = (S3SigV4Auth(Credentials(access_key, secret_key, session_token), "s3", self.region)
                      if access_key else None)

    def url(self, key: str) -> str:
        return self.base + quote_key(self.prefix + key)

    def prepare_headers(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` plus the SigV4 ones (X-Amz-Date, X-Amz-Content-SHA256, Authorization)."""
        if self._auth is None:
            return headers
        request = AWSRequest(method=method, url=url, headers=headers)
        self._auth.add_auth(request)
        return dict(request.headers.items())

    async def explain(self, resp: aiohttp.ClientResponse) -> tuple[str | None, str]:
        code = resp.headers.get("x-amz-error-code") or resp.headers.get("x-minio-error-code")
        if code:
            return code, resp.headers.get("x-amz-error-message", "")
        code, message = xml_error(await read_some(resp, ERROR_BODY_LIMIT))
        return code, message

    async def stat(self, key: str) -> ObjectInfo:
        try:
            return await super().stat(key)
        except (NotFound, ValidatorMismatch):
            raise
        except OriginError as exc:
            if not isinstance(exc, OriginRefused) and exc.retryable:
                raise
            # HeadObject errors have no body: ask for one byte to learn S3's error code.
            first = exc
        async with self._request("GET", key, {"Range": "bytes=0-0"}) as resp:
            if resp.status < 300:
                raise first
            error = await self._error(resp, "HEAD (then GET bytes=0-0)", key)
        raise error from None
