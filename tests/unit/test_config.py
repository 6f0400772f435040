"""Config: defaults, the documented file, overrides, and one-line errors naming the key."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from edge import config as cfg

ROOT = Path(__file__).resolve().parents[2]


def test_documented_file_matches_defaults():
    doc = tomllib.loads((ROOT / "configs" / "edge.toml").read_text())
    for section, keys in cfg.DEFAULTS.items():
        assert doc[section] == keys, f"configs/edge.toml [{section}] drifted from edge/config.py"
    assert doc["origins"] == cfg.DEFAULT_ORIGINS
    assert set(doc) == {*cfg.DEFAULTS, "origins"}


def test_embedded_default_loads():
    c = cfg.load(None)
    assert c.listen == ("127.0.0.1", 8080)
    assert c.cache_size == 256 << 20 and c.block_size == 1 << 20
    assert c.eviction == "wtinylfu" and c.workers == max(1, min(len(os.sched_getaffinity(0)), 62))
    assert c.origins[0].url == "./origin"


def test_workers_auto_is_one_per_usable_cpu(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert cfg.build({"server": {"workers": "auto"}}).workers == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(100)))
    assert cfg.build({}).workers == 62                     # what one shared region holds
    assert cfg.build({}, overrides={"server.workers": "4"}).workers == 4     # --workers 4
    assert cfg.build({"server": {"workers": 7}}).workers == 7


@pytest.mark.parametrize("text,value", [
    ("512MiB", 512 << 20), ("8GiB", 8 << 30), ("1.5GB", 1_500_000_000), ("4096", 4096),
    (4096, 4096), ("64 KiB", 65536), ("2m", 2_000_000),
])
def test_parse_size(text, value):
    assert cfg.parse_size(text, "x") == value


@pytest.mark.parametrize("bad", ["lots", "-1", "0", "12XB", "", True, "1.5.5GiB"])
def test_parse_size_errors_name_the_key(bad):
    with pytest.raises(cfg.ConfigError, match=r"^cache\.size: "):
        cfg.parse_size(bad, "cache.size")


def test_durations():
    assert cfg.parse_duration("250ms", "k") == 0.25
    assert cfg.parse_duration("2m", "k") == 120
    assert cfg.parse_duration(3, "k") == 3
    with pytest.raises(cfg.ConfigError, match="server.idle_timeout"):
        cfg.parse_duration("soon", "server.idle_timeout")


def test_overrides_beat_the_file():
    c = cfg.build({"cache": {"size": "1GiB"}}, overrides={
        "cache.size": "64MiB", "server.listen": "[::1]:9000", "origins": ["/a", "file:///b"],
    })
    assert c.cache_size == 64 << 20
    assert c.listen == ("::1", 9000) and c.listen_str == "[::1]:9000"
    assert [o.url for o in c.origins] == ["/a", "file:///b"]


def test_size_rounds_down_to_whole_blocks():
    c = cfg.build({"cache": {"size": "10MiB", "block_size": "4MiB"}})
    assert c.cache_size == 8 << 20


@pytest.mark.parametrize("raw,key", [
    ({"cache": {"sise": 1}}, "cache.sise: unknown key"),
    ({"cache": {"mrc_sample_rate": 2}}, "cache.mrc_sample_rate: expected a rate in (0, 1]"),
    ({"cache": {"mrc_sample_rate": "1%"}}, "cache.mrc_sample_rate: expected a rate"),
    ({"cahce": {}}, "cahce: unknown section"),
    ({"server": {"workers": 0}}, "server.workers"),
    ({"server": {"workers": "two"}}, 'server.workers: expected an integer or "auto"'),
    ({"server": {"listen": "localhost"}}, "server.listen"),
    ({"server": {"listen": "h:99999"}}, "server.listen: port 99999"),
    ({"cache": {"block_size": "1000"}}, "cache.block_size"),
    ({"cache": {"size": "1MiB"}}, "cache.size: must hold at least two blocks"),
    ({"cache": {"eviction": "fifo"}}, "cache.eviction: unknown policy 'fifo'"),
    ({"log": {"level": "loud"}}, "log.level"),
    ({"origins": [{"url": "ftp://x/"}]}, "origins[0].url: unsupported origin scheme 'ftp'"),
    ({"origins": [{"name": "a"}]}, "origins[0].url: missing"),
    ({"origins": [{"url": "/a", "nme": "x"}]}, "origins[0].nme: unknown key"),
    ({"origins": [{"url": "/a", "name": "x"}, {"url": "/b", "name": "x"}]}, "origins[1].name: duplicate"),
    ({"cache": {"arena_path": "/no/such/dir/arena"}}, "cache.arena_path"),
])
def test_errors_name_key_and_problem(raw, key):
    with pytest.raises(cfg.ConfigError) as e:
        cfg.build(raw)
    assert key in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_toml_and_unreadable_file(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text("[cache\nsize=1")
    with pytest.raises(cfg.ConfigError, match="invalid TOML"):
        cfg.load(str(p))
    with pytest.raises(cfg.ConfigError, match="--config: cannot read"):
        cfg.load(str(tmp_path / "nope.toml"))


def test_sendfile_min(tmp_path):
    assert cfg.load(None).sendfile_min == 256 * 1024
    p = tmp_path / "edge.toml"
    p.write_text('[server]\nsendfile_min = "off"\n')
    assert cfg.load(str(p)).sendfile_min == 0
    p.write_text('[server]\nsendfile_min = "1MiB"\n')
    assert cfg.load(str(p)).sendfile_min == 1 << 20
    p.write_text('[server]\nsendfile_min = "lots"\n')
    with pytest.raises(cfg.ConfigError, match=r"^server\.sendfile_min: expected a size"):
        cfg.load(str(p))
