"""A forgotten PREPARE TRANSACTION (issue 8, finding 1) no longer stalls fan-out.

The shared server runs with max_prepared_transactions = 0, so this test starts a private
Postgres of its own (from the server's binaries, in a temporary folder, on a free port) and
removes it afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import psycopg
import pytest

from pgobs.db.migrate import migrate
from pgobs.db.sqlfiles import query
from tests.inprocess import InProcessListener
from tests.support import execute, fetch, scalar, wait_until

BINDIRS = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin")]


def _as_server_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    if os.geteuid() != 0:
        return argv
    if not shutil.which("runuser"):
        pytest.skip("running as root without runuser: cannot start a private Postgres")
    return ["runuser", "-u", "postgres", "--", *argv]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def private_server() -> Iterator[str]:
    bindir = next((b for b in BINDIRS if (b / "initdb").exists()), None)
    if bindir is None:
        pytest.skip("no Postgres server binaries to start a private cluster with")
    root = Path(tempfile.mkdtemp(prefix="pgobs-prepared-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = _free_port()
    try:
        subprocess.run(
            _as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A",
                             "trust", "--no-sync"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
            "-c max_prepared_transactions=4 -c fsync=off"
        )
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-w",
                             "-t", "60", "-l", str(root / "log"), "start"]),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                             "-t", "30", "stop"]),
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(120)
def test_prepared_transactions_hold_back_only_their_own_events(private_server: str) -> None:
    dsn = psycopg.conninfo.make_conninfo(private_server, dbname="pgobs_prepared")
    execute(private_server, "DROP DATABASE IF EXISTS pgobs_prepared")
    execute(private_server, "CREATE DATABASE pgobs_prepared")
    anyio.run(lambda: migrate(dsn))
    execute(dsn, "CREATE TABLE orders (id bigserial PRIMARY KEY, status text)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    execute(dsn, "CREATE UNIQUE INDEX jobs_once ON pgobs.jobs (event_id, observer, action_index)")
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT pg_current_xact_id()")  # the forgotten transaction
        conn.execute("PREPARE TRANSACTION 'forgotten'")
    with psycopg.connect(dsn) as conn:
        # Written while no listener waits (a NOTIFY would forbid the PREPARE).
        conn.execute("INSERT INTO orders (status) VALUES ('prepared')")  # event 1
        conn.execute("PREPARE TRANSACTION 'with-events'")
    jobs = "SELECT count(*) FROM pgobs.jobs"
    try:
        with InProcessListener(dsn):
            execute(dsn, "INSERT INTO orders (status) SELECT 'free' FROM generate_series(1, 5)")
            wait_until(lambda: scalar(dsn, jobs) == 5)
            # The diagnostic names the prepared transaction that holds an event back.
            writers = fetch(dsn, query("open_event_writers"))
            assert [w[0] for w in writers] == ["none (prepared as 'with-events')"]
            execute(dsn, "COMMIT PREPARED 'with-events'")
            wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs WHERE event_id = 1"))
            execute(dsn, "INSERT INTO orders (status) VALUES ('after')")
            wait_until(lambda: scalar(dsn, jobs) == 7)
    finally:
        for gid in ("forgotten", "with-events"):
            prepared = (
                "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database() "
                "AND gid = %s"
            )
            if scalar(dsn, prepared, (gid,)):
                execute(dsn, f"ROLLBACK PREPARED '{gid}'")
    assert scalar(dsn, jobs) == 7
