"""``edge sim`` and ``edge mrc`` end to end, as an operator runs them (subprocess, real files)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eviction import POLICIES, synth, traces

ROOT = Path(__file__).resolve().parents[2]


def edge(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "edge", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("traces")
    t = synth.generate("cdn", 6000, seed=8)
    out = {"csv": d / "t.csv", "log": d / "access.log", "oracle": d / "t.oracleGeneral"}
    with open(out["csv"], "w") as f:
        traces.write_csv(f, t)
    out["log"].write_text("\n".join(traces.access_log_lines(t)) + "\n")
    whole = t.size <= 64 << 20
    traces.write_oracle_general(str(out["oracle"]), t.time[whole], t.obj[whole], t.size[whole])
    return out


def test_sim_table_from_csv(files):
    p = edge("sim", "--trace", str(files["csv"]), "--cache-size", "2GiB,5%")
    out = p.stdout
    assert "6,000 requests" in out and "footprint" in out
    for name in [*POLICIES, "clairvoyant (bound)", "unbounded (bound)"]:
        assert name in out
    lines = [line for line in out.splitlines() if "wtinylfu " in line or line.strip().startswith("2.0GiB")]
    assert lines and "miss ratio" in out and "byte miss" in out
    first = [line for line in out.splitlines() if line.strip() and line.split()[0][0].isdigit()][0]
    assert "wtinylfu" in first                      # the default policy first


def test_sim_json_schema_all_formats(files):
    results = {}
    for fmt, path in files.items():
        p = edge("sim", "--trace", str(path), "--cache-size", "5%", "--json", "--block-size", "1MiB")
        rows = json.loads(p.stdout)
        assert rows[0]["policy"] == "wtinylfu"
        assert [r["policy"] for r in rows] == [*POLICIES, "clairvoyant", "unbounded"]
        for r in rows:
            for k in ("policy", "cache_size", "miss_ratio", "byte_miss_ratio", "block_miss_ratio"):
                assert k in r
            assert 0 <= r["miss_ratio"] <= 1 and 0 <= r["byte_miss_ratio"] <= 1
            assert r["bound"] == (r["policy"] in ("clairvoyant", "unbounded"))
        results[fmt] = {r["policy"]: r["byte_miss_ratio"] for r in rows}
    # the CSV and the access log carry the same requests: the same numbers
    assert results["csv"] == results["log"]
    for res in results.values():
        assert res["unbounded"] <= res["clairvoyant"] <= res["lru"]


def test_sim_policy_choice_and_synthetic():
    p = edge("sim", "--synthetic", "zipf", "--requests", "3000", "--seed", "3", "--cache-size", "1%",
             "--policy", "lru", "--no-bounds", "--json")
    rows = json.loads(p.stdout)
    assert [r["policy"] for r in rows] == ["lru"]
    again = json.loads(edge("sim", "--synthetic", "zipf", "--requests", "3000", "--seed", "3",
                            "--cache-size", "1%", "--policy", "lru", "--no-bounds", "--json").stdout)
    assert again[0]["byte_miss_ratio"] == rows[0]["byte_miss_ratio"]


def test_sim_errors_exit_2(files, tmp_path):
    cases = [
        ["--trace", str(tmp_path / "missing.csv"), "--cache-size", "1GiB"],
        ["--trace", str(files["csv"]), "--cache-size", "lots"],
        ["--trace", str(files["csv"]), "--cache-size", "1GiB", "--policy", "arc"],
        ["--synthetic", "nope", "--cache-size", "1GiB"],
    ]
    for args in cases:
        p = edge("sim", *args, check=False)
        assert p.returncode == 2 and p.stderr.startswith("edge sim: ") and p.stderr.count("\n") == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,key\n1,a\n")
    p = edge("sim", "--trace", str(bad), "--cache-size", "1GiB", check=False)
    assert p.returncode == 2 and "lacks size" in p.stderr


def test_mrc_table_png_and_config(files, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curve.png"
    conf = tmp_path / "edge.toml"
    conf.write_text('[cache]\nsize = "3GiB"\nblock_size = "1MiB"\neviction = "wtinylfu"\n'
                    f'[[origins]]\nurl = "{tmp_path}"\n')
    p = edge("mrc", "--trace", str(files["log"]), "--config", str(conf), "--png", str(png),
             "--points", "8")
    assert "<- configured" in p.stdout and "3.0GiB" in p.stdout and "origin/day" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p = edge("mrc", "--trace", str(files["csv"]), "--cache-size", "1GiB", "--json", "--png", "")
    d = json.loads(p.stdout)
    assert d["configured_size"] == 1 << 30 and d["policy"] == "wtinylfu" and d["png"] is None
    assert d["sample_rate"] == 1.0                     # a small trace: the rate is raised
    pts = d["points"]
    assert any(pt["cache_size"] == 1 << 30 for pt in pts)
    hits = np.array([pt["byte_hit_ratio"] for pt in pts])
    assert hits[-1] >= hits[0] and all(0 <= h <= 1 for h in hits)


def test_mrc_errors_exit_2(files):
    for args in (["--sample-rate", "0"], ["--policy", "arc"], ["--points", "1"]):
        p = edge("mrc", "--trace", str(files["csv"]), *args, check=False)
        assert p.returncode == 2 and p.stderr.startswith("edge mrc: ")
