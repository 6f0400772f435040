"""Fixtures that run the real edge server as a subprocess on a free port, stopped by its PID."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (.ci/run installs it: apt-get install {tool})")
    return path


@dataclass
class EdgeServer:
    proc: subprocess.Popen
    port: int
    origin: Path | str
    log: Path
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def start_edge(tmp: Path, origin: Path | str | list, *args: str, pure: bool = False,
               config: str | None = None, env_extra: dict[str, str] | None = None,
               timeout: float = 20) -> EdgeServer:
    """Start ``edge serve`` on 127.0.0.1:0 and wait for the banner that names its port.

    ``origin`` is a directory, an origin URL, or a list of them (replicas, in order).
    """
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if pure:
        env["EDGE_NO_EXTENSIONS"] = "1"
    else:
        env.pop("EDGE_NO_EXTENSIONS", None)
    env.update(env_extra or {})
    origins = origin if isinstance(origin, list) else [origin]
    if "--workers" not in args and not (config and "workers" in Path(config).read_text()):
        args = ("--workers", "1", *args)    # the default is one per CPU: tests say so if they want it
    cmd = [sys.executable, "-m", "edge", "serve", "--listen", "127.0.0.1:0",
           "--arena-path", "anonymous", *args]
    for o in origins:
        cmd += ["--origin", str(o)]
    if config:
        cmd += ["--config", config]
    log = tmp / f"edge-{time.monotonic_ns()}.log"
    errf = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, env=env, cwd=tmp)
    errf.close()
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(rb"serving http://127\.0\.0\.1:(\d+)/", line)
        if m:
            return EdgeServer(proc=proc, port=int(m.group(1)),
                              origin=origins[0] if origins else "", log=log)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"edge did not start: {line!r}\n{log.read_text(errors='replace')}")


def make_files(origin: Path, spec: dict[str, int], seed: int = 1) -> dict[str, bytes]:
    """Write pseudo-random files (ciphertext-like) of the given sizes; return their contents."""
    import random

    rnd = random.Random(seed)
    out = {}
    for name, size in spec.items():
        data = rnd.randbytes(size)
        p = origin / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out[name] = data
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["c", "py"], scope="module")
def impl(request):
    """Run a module's server tests against the compiled extensions and the pure-Python twins."""
    return request.param


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    d = tmp_path / "origin"
    d.mkdir()
    return d


@pytest.fixture
def edge_factory(tmp_path: Path):
    servers: list[EdgeServer] = []

    def factory(origin: Path | str | list, *args: str, **kw) -> EdgeServer:
        s = start_edge(tmp_path, origin, *args, **kw)
        servers.append(s)
        return s

    yield factory
    for s in servers:
        code = s.stop()
        text = s.stderr()
        assert "Traceback" not in text, text[-4000:]
        assert code == 0, f"edge exited with {code}\n{text[-4000:]}"
