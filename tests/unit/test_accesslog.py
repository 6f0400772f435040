"""The access log writes the format the simulator reads."""
from __future__ import annotations

import io
import json

from edge.accesslog import AccessLog
from eviction.traces import read_access_log


def test_lines_are_json_and_replayable(tmp_path):
    path = tmp_path / "logs" / "access.log"
    log = AccessLog(str(path), flush_bytes=1 << 20)
    log.log(time=1732300000.1234, client="127.0.0.1:5000", method="GET", key='dir/ü "q".bin',
            status=206, size=3 << 20, range="bytes=0-99", first_byte=0, last_byte=99,
            bytes_sent=100, cache_status="miss", origin_ms=1.5, total_ms=2.25)
    log.log(time=1732300001.0, client="127.0.0.1:5001", method="HEAD", key="a", status=200,
            size=10, range=None, first_byte=None, last_byte=None, bytes_sent=0,
            cache_status="hit", origin_ms=None, total_ms=0.1)
    assert not path.exists() or path.read_text() == ""       # buffered until flush
    log.flush()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {"time": 1732300000.123, "client": "127.0.0.1:5000", "method": "GET",
                     "key": 'dir/ü "q".bin', "status": 206, "size": 3 << 20, "range": "bytes=0-99",
                     "first_byte": 0, "last_byte": 99, "bytes_sent": 100, "cache_status": "miss",
                     "origin_ms": 1.5, "total_ms": 2.25}
    assert json.loads(lines[1])["range"] is None
    trace = read_access_log(io.StringIO(path.read_text()))
    assert len(trace) == 1                                    # the HEAD has no body: skipped
    log.close()


def test_reopen_after_rotation(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), flush_bytes=1)
    kw = dict(time=1.0, client="c:1", method="GET", key="k", status=200, size=1, range=None,
              first_byte=0, last_byte=0, bytes_sent=1, cache_status="hit", origin_ms=None,
              total_ms=0.1)
    log.log(**kw)
    path.rename(tmp_path / "access.log.1")
    log.reopen()
    log.log(**kw)
    log.close()
    assert len(path.read_text().splitlines()) == 1
    assert len((tmp_path / "access.log.1").read_text().splitlines()) == 1
