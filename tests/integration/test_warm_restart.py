"""Warm restart: a restarted edge re-attaches its arena and serves what it had, fail-closed."""
from __future__ import annotations

import http.client
import re
from pathlib import Path

import pytest

from .conftest import make_files, start_edge

pytestmark = pytest.mark.integration
MiB = 1 << 20


def get(port: int, path: str):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("Cache-Status"), r.read()
    finally:
        c.close()


def run_edge(tmp_path: Path, origin: Path, arena: Path, *args: str):
    conf = tmp_path / "edge.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path}/state"\n')
    e = start_edge(tmp_path, origin, "--cache-size", "16MiB", *args, config=str(conf))
    # start_edge passes --arena-path anonymous first; a later flag wins
    return e


@pytest.fixture
def setup(tmp_path, origin):
    files = make_files(origin, {"big.bin": 5 * MiB + 7, "small.bin": 3000, "mid.bin": 300_000})
    empty = tmp_path / "empty"
    empty.mkdir()
    return files, empty, tmp_path / "arena.bin"


def stop(e) -> str:
    assert e.stop() == 0
    text = e.stderr()
    assert "Traceback" not in text, text[-3000:]
    return text


def test_restart_serves_cached_objects_without_the_origin(tmp_path, origin, setup):
    files, empty, arena = setup
    e = run_edge(tmp_path, origin, arena, "--arena-path", str(arena))
    for name in files:
        assert get(e.port, "/" + name)[2] == files[name]
    port = e.port
    log = stop(e)
    assert re.search(r"saved \d+ blocks for a warm restart", log)
    # same arena file, same layout; the origin is now an empty directory
    e2 = run_edge(tmp_path, empty, arena, "--arena-path", str(arena), "--listen", f"127.0.0.1:{port}")
    try:
        for name in files:
            status, cache_status, body = get(e2.port, "/" + name)
            assert status == 200 and cache_status == "edge; hit" and body == files[name], name
        assert get(e2.port, "/not-cached.bin")[0] == 404
        assert re.search(r"warm restart: 8 blocks re-attached", e2.stderr())
    finally:
        stop(e2)


def test_a_corrupted_block_is_dropped_not_served(tmp_path, origin, setup):
    files, empty, arena = setup
    e = run_edge(tmp_path, origin, arena, "--arena-path", str(arena))
    port = e.port
    for name in files:
        get(e.port, "/" + name)
    stop(e)
    data = bytearray(arena.read_bytes())
    pos = data.find(files["mid.bin"][:64])          # flip one byte inside mid.bin's block
    assert pos >= 0
    with open(arena, "r+b") as f:
        f.seek(pos + 1000)
        f.write(bytes([data[pos + 1000] ^ 0xFF]))
    e2 = run_edge(tmp_path, origin, arena, "--arena-path", str(arena), "--listen", f"127.0.0.1:{port}")
    try:
        assert re.search(r"warm restart: 7 blocks re-attached .*, 1 dropped", e2.stderr())
        status, cache_status, body = get(e2.port, "/mid.bin")
        assert body == files["mid.bin"] and cache_status == "edge; fwd=miss"   # refetched, not served
        assert get(e2.port, "/big.bin")[1] == "edge; hit"
    finally:
        stop(e2)


def test_changed_layout_or_crash_starts_cold(tmp_path, origin, setup):
    files, empty, arena = setup
    e = run_edge(tmp_path, origin, arena, "--arena-path", str(arena))
    port = e.port
    get(e.port, "/big.bin")
    stop(e)
    # another block size: the saved index does not describe this arena
    e2 = run_edge(tmp_path, origin, arena, "--arena-path", str(arena), "--listen", f"127.0.0.1:{port}",
                  "--block-size", "512KiB")
    try:
        assert get(e2.port, "/big.bin")[1] == "edge; fwd=miss"
        assert "the layout changed" in e2.stderr()
    finally:
        stop(e2)
    # a crash (SIGKILL) leaves no index: the next start is cold, whatever the arena holds
    e3 = run_edge(tmp_path, origin, arena, "--arena-path", str(arena), "--listen", f"127.0.0.1:{port}")
    get(e3.port, "/big.bin")
    e3.proc.kill()
    e3.proc.wait()
    e4 = run_edge(tmp_path, origin, arena, "--arena-path", str(arena), "--listen", f"127.0.0.1:{port}")
    try:
        assert get(e4.port, "/big.bin")[1] == "edge; fwd=miss"
    finally:
        stop(e4)
