"""Command line: ``edge serve`` (and ``python -m edge``).

Flags override the config file; a bad config or flag is reported on one line naming the key
and the problem, with exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from edge import config as cfg
from edge.sim_cli import add_subcommands
from edge.token_cli import add_subcommands as add_token_subcommands

SERVE_EPILOG = """\
With no --config, the embedded default (configs/edge.toml) is used: it serves the directory
./origin (created if missing) on 127.0.0.1:8080 with a 256 MiB cache.

Sizes take units: 512MiB, 8GiB, 1.5GB; a plain number is bytes.
Examples:
  edge serve
  edge serve --origin /srv/blobs --cache-size 8GiB --listen 0.0.0.0:8080
  edge serve --config /etc/edge/edge.toml --workers 2
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge",
        description="edge: a RAM caching edge server for encrypted blobs. It keeps popular files "
        "in a memory-mapped slab arena and serves them as HTTP range downloads, pulling cold "
        "blocks from origin storage on a miss.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser(
        "serve", help="run the edge server", epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the edge server in the foreground (SIGTERM or Ctrl-C stops it gracefully).",
    )
    s.add_argument("--config", metavar="FILE",
                   help="TOML config file (default: the embedded configs/edge.toml)")
    s.add_argument("--listen", metavar="HOST:PORT", help="address to accept clients on (server.listen)")
    s.add_argument("--origin", metavar="DIR|URL", action="append",
                   help="origin storage: a directory or file:///dir; repeat for replicas, tried in order "
                        "(replaces [[origins]])")
    s.add_argument("--cache-size", metavar="SIZE", help="RAM arena size, e.g. 512MiB, 8GiB (cache.size)")
    s.add_argument("--block-size", metavar="SIZE", help="cache block size, default 1MiB (cache.block_size)")
    s.add_argument("--workers", metavar="N",
                   help='worker processes, or "auto": one per CPU (server.workers)')
    s.add_argument("--arena-path", metavar="PATH",
                   help="arena file, 'auto' (/dev/shm/edge-PORT.arena) or 'anonymous' (cache.arena_path)")
    s.add_argument("--eviction", metavar="POLICY",
                   help="eviction policy: wtinylfu (default, adaptive window), wtinylfu-static, lfu, lru")
    s.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error (log.level)")
    s.add_argument("--admin-listen", metavar="HOST:PORT",
                   help="admin API address, e.g. 127.0.0.1:9090 (admin.listen; default off)")
    s.add_argument("--admin-token", metavar="TOKEN",
                   help="bearer token of the admin API (admin.token; or EDGE_ADMIN_TOKEN)")
    add_subcommands(sub)
    add_token_subcommands(sub)
    return p


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        "server.listen": args.listen,
        "server.workers": args.workers,
        "cache.size": args.cache_size,
        "cache.block_size": args.block_size,
        "cache.arena_path": args.arena_path,
        "cache.eviction": args.eviction,
        "log.level": args.log_level,
        "admin.listen": args.admin_listen,
        "admin.token": args.admin_token,
        "origins": args.origin,
    }
    try:
        conf = cfg.load(args.config, overrides)
        _check_origins(conf, embedded=args.config is None and not args.origin)
        _make_state_dir(conf)
    except cfg.ConfigError as exc:
        print(f"edge: config error: {exc}", file=sys.stderr)
        return 2
    from edge.server.app import configure_logging, serve

    try:
        configure_logging(conf.log_level, conf.log_file)
    except OSError as exc:
        print(f"edge: config error: log.file: cannot open {conf.log_file!r}: {exc.strerror}",
              file=sys.stderr)
        return 2
    try:
        return serve(conf)
    except OSError as exc:
        print(f"edge: cannot start: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"edge: cannot start: {exc}", file=sys.stderr)
        return 1


def _make_state_dir(conf: cfg.Config) -> None:
    try:
        os.makedirs(conf.state_dir, exist_ok=True)
    except OSError as exc:
        raise cfg.ConfigError(f"server.state_dir: cannot create {conf.state_dir!r}: {exc.strerror}") from None


def _check_origins(conf: cfg.Config, *, embedded: bool) -> None:
    """Local-directory origins must exist; the embedded default creates its ./origin."""
    for path in cfg.check_origin_dirs(conf, create=embedded):
        print(f"edge: created the empty origin directory {path}: put files there", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if hasattr(args, "handler"):
        return args.handler(args)
    if args.command == "serve":
        return _serve(args)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
