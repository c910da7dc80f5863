"""``pgobs demo``: the README's first command, on a given server and on the embedded Postgres."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.support import run_pgobs


def check_output(stdout: str) -> None:
    assert "3 webhooks to /hooks/orders" in stdout
    assert "dead letter 1: obs-flaky after 3 attempts" in stdout
    assert "retried 1 dead letter(s)" in stdout
    assert "1 to /hooks/flaky after the retry, 0 left in the DLQ" in stdout
    assert "the database pgobs_demo stays for you to look at" in stdout


def test_demo_on_a_given_server(admin_dsn: str) -> None:
    result = run_pgobs(admin_dsn, "demo", timeout=120)
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        check_output(result.stdout)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS pgobs_demo WITH (FORCE)"))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_without_a_dsn_uses_the_embedded_postgres(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PGOBS_DSN", "DATABASE_URL")}
    env["XDG_DATA_HOME"] = str(tmp_path)
    pgdata = tmp_path / "pgobs" / "pgdata"
    try:
        result = run_pgobs(None, "demo", timeout=170, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"using the embedded Postgres in {pgdata}" in result.stderr
        check_output(result.stdout)
        # The one thing left running is named, with the command that stops it; the command works.
        last = result.stdout.strip().splitlines()[-1]
        prefix = "the embedded Postgres keeps running for later pgobs commands; stop it with: "
        assert last.startswith(prefix), last
        assert (pgdata / "postmaster.pid").exists()
        subprocess.run(shlex.split(last.removeprefix(prefix)), check=True, timeout=60)
        assert not (pgdata / "postmaster.pid").exists()
    finally:
        stop_embedded(pgdata)


def stop_embedded(pgdata: Path) -> None:
    """The embedded server outlives pgobs on purpose; the test stops it (fast shutdown)."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().splitlines()[0])
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
