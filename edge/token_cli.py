"""``edge token``: mint a signed download token (docs/tokens.md).

``add_subcommands(subparsers)`` registers ``token`` on the ``edge`` parser; its ``handler``
returns the exit status (0: the token is printed alone on stdout; 2: bad arguments, reported
on stderr). ``main(argv)`` runs the subcommand on its own.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from edge import tokens

SECRET_ENV = "EDGE_TOKEN_SECRET"

TOKEN_EPILOG = f"""\
The token is printed alone on stdout. Use it as ?token=TOKEN or Authorization: Bearer TOKEN on
a GET or HEAD of /KEY. The format is in docs/tokens.md, so a payment service can mint tokens
itself.

--secret may come from the environment ({SECRET_ENV}) instead, which keeps it out of ps.
A negative --ttl mints a token that is already expired (for tests); it is refused once
the edge's clock-skew allowance (30 s by default) has passed too.

Examples:
  edge token --secret S --key blobs/ab/cd.bin --ttl 3600
  {SECRET_ENV}=S edge token --key blobs/ab/cd.bin --ttl 86400 --bytes 734003200 --receipt pi_3NqLx
  edge token --secret S --key blobs/ab/cd.bin --ttl -3600
"""


def _size(value: str) -> int:
    from edge.config import ConfigError, parse_size

    try:
        return parse_size(value, "--bytes")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--bytes: ")) from None


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--secret", metavar="S",
                   help=f"the signing secret, as in [auth] secret (default: ${SECRET_ENV})")
    p.add_argument("--key", metavar="KEY", required=True,
                   help="object key: the URL path without its leading '/', percent-decoded")
    p.add_argument("--ttl", metavar="SECONDS", type=int, required=True,
                   help="seconds from now until the token expires (negative: already expired)")
    p.add_argument("--bytes", metavar="N", type=_size, default=None, dest="budget",
                   help="byte budget over all requests with this token, e.g. the file's size "
                        "(734003200 or 700MiB; default: unlimited)")
    p.add_argument("--receipt", metavar="ID", default="",
                   help="payment receipt id, recorded in the ledger and naming the budget "
                        "(printable ASCII, no spaces, at most 256 characters)")
    p.set_defaults(handler=token_main)


def add_subcommands(sub: Any) -> None:
    """Register ``token`` on ``sub`` (an argparse subparsers object)."""
    p = sub.add_parser(
        "token", help="mint a signed download token",
        description="Mint a signed download token for one object key: an expiry, an optional "
                    "byte budget and an optional payment receipt id, signed with HMAC-SHA256.",
        epilog=TOKEN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(p)


def token_main(args: argparse.Namespace) -> int:
    """Print the token for ``args``; 2 on a bad argument."""
    secret = args.secret if args.secret is not None else os.environ.get(SECRET_ENV)
    if not secret:
        print(f"edge token: a secret is needed: --secret S or {SECRET_ENV}", file=sys.stderr)
        return 2
    if args.key.startswith("/"):
        print("edge token: --key is the object key, the URL path without its leading '/'",
              file=sys.stderr)
        return 2
    expires = int(time.time()) + args.ttl
    try:
        token = tokens.mint(secret.encode("utf-8"), args.key, max(expires, 0), args.budget,
                            args.receipt)
    except ValueError as exc:
        print(f"edge token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``edge token`` on its own (``python -m edge.token_cli ...``)."""
    p = argparse.ArgumentParser(prog="edge token", description="Mint a signed download token.",
                                epilog=TOKEN_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _configure(p)
    args = p.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
