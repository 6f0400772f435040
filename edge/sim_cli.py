"""``edge sim`` and ``edge mrc``: replay traffic through the eviction policies, size the cache.

``add_subcommands(subparsers)`` registers both on the ``edge`` parser; each subparser's
``handler`` returns the exit status (0 ok, 2 bad arguments or unreadable trace).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

SIM_EPILOG = """\
Trace formats (--format auto picks by extension, then by content):
  csv     header timestamp,key,size[,range_start,range_end] (inclusive range; empty = whole)
  oracle  libCacheSim's oracleGeneral binary (24-byte records), whole-object requests
  log     the edge's access log (JSON lines, see docs/eviction.md)
Sizes take units (512MiB, 8GiB) or a share of the trace's footprint (5%); several sizes are
comma-separated. Every run also prints the bounds: unbounded (compulsory misses only) and
clairvoyant (Belady with bypass).

Examples:
  edge sim --trace access.log --cache-size 8GiB
  edge sim --trace trace.csv --cache-size 1%,5%,10% --policy all --json
  edge sim --synthetic cdn --requests 200000 --seed 7 --cache-size 5%
"""

MRC_EPILOG = """\
SHARDS samples about --sample-rate of the blocks (by a hash of object key and block index)
and runs a miniature cache per size, so millions of requests take seconds. The rate is raised
automatically on small traces (to about 100000 sampled block accesses).

Examples:
  edge mrc --trace access.log --config /etc/edge/edge.toml
  edge mrc --trace trace.csv --cache-size 8GiB --png mrc.png
"""


def add_subcommands(sub: Any) -> None:
    """Register ``sim`` and ``mrc`` on ``sub`` (an argparse subparsers object)."""
    s = sub.add_parser(
        "sim", help="replay a trace through the eviction policies (miss ratios, with bounds)",
        description="Replay a trace, block by block, through the eviction policies and print "
                    "each policy's object, block and byte miss ratios, with the unbounded and "
                    "clairvoyant bounds.",
        epilog=SIM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _trace_args(s)
    s.add_argument("--cache-size", metavar="SIZE", required=True,
                   help="cache size(s): bytes with units or %% of the footprint, comma-separated")
    s.add_argument("--policy", metavar="NAME|all", default=None,
                   help="a policy, a comma-separated list, or all (default: all, the default first)")
    s.add_argument("--no-bounds", action="store_true", help="skip the unbounded and clairvoyant rows")
    s.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    s.set_defaults(handler=sim_main)

    m = sub.add_parser(
        "mrc", help="miss-ratio curve: hit ratio and origin bytes per day against cache size",
        description="Build the miss-ratio curve of the eviction policy from a trace or access "
                    "log (SHARDS sampling): a table, and a PNG plot of hit ratio and origin "
                    "bytes per day against cache size, marking the configured size.",
        epilog=MRC_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _trace_args(m)
    m.add_argument("--config", metavar="FILE", help="edge config: marks its cache.size and uses "
                   "its cache.block_size and cache.eviction")
    m.add_argument("--cache-size", metavar="SIZE", help="the size to mark (overrides --config)")
    m.add_argument("--policy", metavar="NAME", help="eviction policy (default: the config's or wtinylfu)")
    m.add_argument("--sample-rate", metavar="R", type=float, default=0.01,
                   help="SHARDS sampling rate, 0 < R <= 1 (default 0.01, raised for small traces)")
    m.add_argument("--points", metavar="N", type=int, default=16,
                   help="cache sizes on the curve (default 16)")
    m.add_argument("--png", metavar="FILE", default="mrc.png",
                   help="plot file (default mrc.png; '' for none)")
    m.add_argument("--json", action="store_true", help="print the curve as JSON instead of the table")
    m.set_defaults(handler=mrc_main)


def _trace_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", metavar="FILE", help="trace file or access log")
    src.add_argument("--synthetic", metavar="KIND", help="a seeded synthetic trace: zipf, churn, "
                     "onehit, scan or cdn")
    p.add_argument("--format", default="auto", choices=["auto", "csv", "oracle", "log"],
                   help="trace format (default auto)")
    p.add_argument("--block-size", metavar="SIZE", default=None, help="cache block size (default 1MiB)")
    p.add_argument("--requests", metavar="N", type=int, default=100_000,
                   help="requests of a --synthetic trace (default 100000)")
    p.add_argument("--seed", metavar="N", type=int, default=42, help="seed of a --synthetic trace")
    p.add_argument("--save-trace", metavar="FILE", help="also write the trace as CSV (with ranges)")


class _Fail(Exception):
    """A user error: printed on one line, exit status 2."""


def _size(text: str, what: str) -> int:
    from edge.config import ConfigError, parse_size

    try:
        return parse_size(text.strip(), what)
    except ConfigError as exc:
        raise _Fail(str(exc)) from None


def _load(args: argparse.Namespace, block_size: int) -> tuple[Any, Any, str]:
    from eviction import synth, traces

    if args.synthetic:
        try:
            tr = synth.generate(args.synthetic, args.requests, seed=args.seed)
        except ValueError as exc:
            raise _Fail(str(exc)) from None
        label = f"synthetic {args.synthetic} (seed {args.seed})"
    else:
        if not os.path.isfile(args.trace):
            raise _Fail(f"--trace: no such file {args.trace!r}")
        try:
            tr = traces.read(args.trace, args.format)
        except (traces.TraceError, ValueError, OSError) as exc:
            raise _Fail(f"--trace: {exc}") from None
        label = args.trace
    if args.save_trace:
        with open(args.save_trace, "w") as f:
            traces.write_csv(f, tr)
    if len(tr) == 0:
        raise _Fail(f"{label}: no requests with a body")
    return tr, traces.to_blocks(tr, block_size), label


def _sizes(spec: str, footprint: int) -> list[int]:
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if part.endswith("%"):
            try:
                share = float(part[:-1]) / 100
            except ValueError:
                raise _Fail(f"--cache-size: bad share {part!r}") from None
            if share <= 0:
                raise _Fail(f"--cache-size: {part!r} must be positive")
            out.append(max(1, int(footprint * share)))
        else:
            out.append(_size(part, "--cache-size"))
    if not out:
        raise _Fail("--cache-size: no size given")
    return out


def _describe(label: str, bt: Any) -> str:
    from eviction.sim import human_bytes

    dur = f", {bt.duration / 3600:.1f} h" if bt.duration else ""
    return (f"trace {label}: {bt.requests:,} requests, {len(bt):,} block accesses, "
            f"{bt.n_unique:,} distinct blocks, footprint {human_bytes(bt.footprint)} "
            f"(block size {human_bytes(bt.block_size)}{dur})")


def sim_main(args: argparse.Namespace) -> int:
    """``edge sim``."""
    from eviction import sim

    try:
        block_size = _size(args.block_size, "--block-size") if args.block_size else 1 << 20
        if block_size < 1:
            raise _Fail("--block-size: must be positive")
        try:
            names = sim.policy_names(args.policy)
        except ValueError as exc:
            raise _Fail(f"--policy: {exc}") from None
        tr, bt, label = _load(args, block_size)
        sizes = _sizes(args.cache_size, bt.footprint)
    except _Fail as exc:
        print(f"edge sim: {exc}", file=sys.stderr)
        return 2
    reports = sim.run_all(bt, sizes, names, bounds=not args.no_bounds, clock=time.perf_counter)
    if args.json:
        print(json.dumps([{**r.as_dict(), "footprint": bt.footprint, "block_size": block_size}
                          for r in reports], indent=1))
        return 0
    print(_describe(label, bt))
    print()
    print(sim.format_table(reports, footprint=bt.footprint))
    print()
    print("miss ratio: requests with any block missed; block miss: block accesses missed; "
          "byte miss: origin bytes / requested block bytes. See docs/eviction.md.")
    return 0


def _config(path: str | None) -> Any:
    if not path:
        return None
    from edge import config as cfg

    try:
        return cfg.load(path)
    except cfg.ConfigError as exc:
        raise _Fail(f"--config: {exc}") from None


def mrc_main(args: argparse.Namespace) -> int:
    """``edge mrc``."""
    from eviction import POLICIES, mrc
    from eviction.registry import DEFAULT
    from eviction.sim import human_bytes

    try:
        conf = _config(args.config)
        if args.block_size:
            block_size = _size(args.block_size, "--block-size")
        else:
            block_size = conf.block_size if conf is not None else 1 << 20
        policy = args.policy or (conf.eviction if conf is not None else DEFAULT)
        if policy not in POLICIES:
            raise _Fail(f"--policy: unknown policy {policy!r} (valid: {', '.join(POLICIES)})")
        if not 0 < args.sample_rate <= 1:
            raise _Fail(f"--sample-rate: must be in (0, 1], got {args.sample_rate}")
        if args.points < 2:
            raise _Fail("--points: at least 2")
        tr, bt, label = _load(args, block_size)
        marker = None
        if args.cache_size:
            marker = _sizes(args.cache_size, bt.footprint)[0]
        elif conf is not None:
            marker = conf.cache_size
    except _Fail as exc:
        print(f"edge mrc: {exc}", file=sys.stderr)
        return 2
    rate = mrc.auto_rate(len(bt), args.sample_rate)
    sizes = mrc.default_sizes(bt.footprint, args.points)
    if marker and marker not in sizes:
        sizes = sorted({*sizes, marker})
    c = mrc.curve(tr, bt, policy=policy, sizes=sizes, rate=rate, clock=time.perf_counter)
    png = args.png or None
    png_note = ""
    if png:
        try:
            mrc.plot(c, png, marker=marker, title=f"{policy} on {os.path.basename(label)}")
        except ImportError:
            png_note = "matplotlib is not installed (pip install matplotlib): no plot written"
            png = None
    if args.json:
        print(json.dumps({
            "policy": policy, "trace": label, "sample_rate": c.rate, "scale": c.scale,
            "sampled_accesses": c.sampled_accesses, "accesses": c.accesses,
            "footprint": c.footprint, "block_size": c.block_size, "duration": c.duration,
            "configured_size": marker, "png": png,
            "points": [p.as_dict() for p in c.points],
        }, indent=1))
        if png_note:
            print(f"edge mrc: {png_note}", file=sys.stderr)
        return 0
    print(_describe(label, bt))
    print(f"policy {policy}; SHARDS rate {c.rate:.4g} ({c.sampled_accesses:,} of {c.accesses:,} "
          f"block accesses sampled, miniatures scaled by {c.scale:.4g}); {c.seconds:.1f} s")
    print()
    per_day = c.duration > 0
    head = "origin/day" if per_day else "origin"
    print(f"{'cache size':>12} {'% fp':>7} {'hit ratio':>10} {'byte hit':>10} {head:>12}")
    for p in c.points:
        origin = p.origin_bytes_per_day if per_day else p.origin_bytes
        mark = "  <- configured" if marker and p.cache_size == marker else ""
        rough = "" if p.reliable else "  (miniature < 32 blocks: rough)"
        print(f"{human_bytes(p.cache_size):>12} {100 * p.cache_size / c.footprint:6.2f}% "
              f"{p.hit_ratio:>10.4f} {p.byte_hit_ratio:>10.4f} {human_bytes(origin or 0):>12}"
              f"{mark}{rough}")
    print()
    if png:
        print(f"plot: {png}")
    elif png_note:
        print(f"edge mrc: {png_note}", file=sys.stderr)
    return 0
