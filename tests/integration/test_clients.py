"""Real download clients against the real server: curl, wget -c, aria2c -x8 -s8."""
from __future__ import annotations

import subprocess

import pytest

from .conftest import make_files, need, sha256

pytestmark = pytest.mark.integration
MiB = 1 << 20


@pytest.fixture
def served(edge_factory, origin):
    files = make_files(origin, {"movie.bin": 24 * MiB + 4321, "note.txt": 12345}, seed=3)
    # the cache is a third of the large file
    e = edge_factory(origin, "--cache-size", "8MiB", "--block-size", "1MiB")
    return e, files


def test_curl_ranges_and_whole(served, tmp_path):
    curl = need("curl")
    e, files = served
    out = tmp_path / "out"
    r = subprocess.run([curl, "-sS", "-f", "-o", str(out), f"{e.url}/movie.bin"], timeout=120)
    assert r.returncode == 0 and sha256(out.read_bytes()) == sha256(files["movie.bin"])
    r = subprocess.run([curl, "-sS", "-f", "-r", "1000-2999", f"{e.url}/movie.bin"],
                       capture_output=True, timeout=60)
    assert r.stdout == files["movie.bin"][1000:3000]
    r = subprocess.run([curl, "-sS", "-r", "-100", "-D", "-", "-o", "/dev/null", f"{e.url}/note.txt"],
                       capture_output=True, timeout=60, text=True)
    assert "206" in r.stdout.splitlines()[0] and "content-range: bytes 12245-12344/12345" in r.stdout.lower()


def test_wget_resume(served, tmp_path):
    wget = need("wget")
    e, files = served
    data = files["movie.bin"]
    part = tmp_path / "movie.bin"
    part.write_bytes(data[: 7 * MiB + 17])          # a broken download
    r = subprocess.run([wget, "-q", "-c", "-O", str(part), f"{e.url}/movie.bin"], timeout=120)
    assert r.returncode == 0
    assert sha256(part.read_bytes()) == sha256(data)


def test_aria2c_segmented(served, tmp_path):
    aria2c = need("aria2c")
    e, files = served
    r = subprocess.run(
        [aria2c, "-x8", "-s8", "-k1M", "--quiet=true", "--allow-overwrite=true", "--file-allocation=none",
         "-d", str(tmp_path), "-o", "dl.bin", f"{e.url}/movie.bin"],
        timeout=180,
    )
    assert r.returncode == 0
    assert sha256((tmp_path / "dl.bin").read_bytes()) == sha256(files["movie.bin"])
