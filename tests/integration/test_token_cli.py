"""``edge token`` as an operator or a test script runs it: a subprocess, stdout holds the token only.

Uses ``python -m edge token`` once edge/cli.py registers the subcommand, ``python -m
edge.token_cli`` until then; ``token_cli.main`` is also exercised in-process.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge import cli, token_cli
from edge.tokens import TokenError, verify

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-for-tests"


def _registered() -> bool:
    for action in cli._parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return "token" in action.choices
    return False


ENTRY = ["edge", "token"] if _registered() else ["edge.token_cli"]


def edge_token(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != token_cli.SECRET_ENV}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", *ENTRY, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=e)


def test_prints_the_token_and_nothing_else():
    before = int(time.time())
    p = edge_token("--secret", SECRET, "--key", "blobs/ab/cd.bin", "--ttl", "3600",
                   "--bytes", "734003200", "--receipt", "pi_3NqLx2eZvKYlo2C")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert p.stdout.endswith("\n") and p.stdout.count("\n") == 1
    token = p.stdout.strip()
    g = verify(token, SECRET.encode(), "blobs/ab/cd.bin", time.time())
    assert before + 3600 <= g.expires <= int(time.time()) + 3600
    assert (g.budget, g.receipt) == (734003200, "pi_3NqLx2eZvKYlo2C")


def test_secret_from_the_environment_and_units():
    p = edge_token("--key", "k", "--ttl", "60", "--bytes", "700MiB",
                   env={token_cli.SECRET_ENV: SECRET})
    assert p.returncode == 0, p.stderr
    g = verify(p.stdout.strip(), SECRET.encode(), "k", time.time())
    assert g.budget == 700 << 20 and g.receipt == ""


def test_no_budget_means_unlimited():
    p = edge_token("--secret", SECRET, "--key", "films/été.mkv", "--ttl", "60")
    assert p.returncode == 0, p.stderr
    assert verify(p.stdout.strip(), SECRET.encode(), "films/été.mkv", time.time()).budget is None


def test_negative_ttl_is_already_expired():
    p = edge_token("--secret", SECRET, "--key", "k", "--ttl", "-3600")
    assert p.returncode == 0, p.stderr
    with pytest.raises(TokenError) as exc:
        verify(p.stdout.strip(), SECRET.encode(), "k", time.time())
    assert exc.value.reason == "expired"
    # Within the skew allowance a slightly negative TTL still verifies; with skew 0 it does not.
    p = edge_token("--secret", SECRET, "--key", "k", "--ttl", "-5")
    with pytest.raises(TokenError):
        verify(p.stdout.strip(), SECRET.encode(), "k", time.time(), skew=0)


@pytest.mark.parametrize("args,env,message", [
    (["--key", "k", "--ttl", "60"], {}, "EDGE_TOKEN_SECRET"),
    (["--secret", SECRET, "--key", "/k", "--ttl", "60"], {}, "leading '/'"),
    (["--secret", SECRET, "--key", "k", "--ttl", "60", "--receipt", "a b"], {}, "receipt"),
    (["--secret", SECRET, "--key", "k", "--ttl", "60", "--bytes", "lots"], {}, "--bytes"),
    (["--secret", SECRET, "--key", "k", "--ttl", "1h"], {}, "--ttl"),
    (["--secret", SECRET, "--ttl", "60"], {}, "--key"),
])
def test_bad_arguments_exit_2_with_nothing_on_stdout(args, env, message):
    p = edge_token(*args, env=env)
    assert p.returncode == 2
    assert p.stdout == ""
    assert message in p.stderr


def test_help():
    p = edge_token("--help")
    assert p.returncode == 0
    for flag in ("--secret", "--key", "--ttl", "--bytes", "--receipt", "docs/tokens.md"):
        assert flag in p.stdout


def test_main_in_process(capsys, monkeypatch):
    monkeypatch.setenv(token_cli.SECRET_ENV, SECRET)
    assert token_cli.main(["--key", "k", "--ttl", "100", "--receipt", "r-1"]) == 0
    out = capsys.readouterr().out
    g = verify(out.strip(), SECRET.encode(), "k", time.time())
    assert g.receipt == "r-1" and g.budget is None
    # --secret wins over the environment.
    assert token_cli.main(["--secret", "other", "--key", "k", "--ttl", "100"]) == 0
    out = capsys.readouterr().out
    verify(out.strip(), b"other", "k", time.time())
