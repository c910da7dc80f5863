"""Maintenance scheduled with a real pg_cron: a private cluster from the Debian binaries with
``shared_preload_libraries = 'pg_cron'``, pgobs in a database of its own and pg_cron in
``postgres``, so the job is registered with cron.schedule_in_database and runs across."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import execute, fetch, run_pgobs, scalar, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_CRON = Path("/usr/lib/postgresql/15/lib/pg_cron.so")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cron_server() -> Iterator[str]:
    """A private cluster with pg_cron preloaded (cron.database_name = postgres); stopped and
    removed at the end, whatever happened. initdb refuses root: as root it runs as postgres."""
    assert PG_CRON.exists(), "pg_cron is missing: apt-get install postgresql-15-cron (.ci/run)"
    root = Path(tempfile.mkdtemp(prefix="pgobs-cron-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    options = (
        f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
        "-c shared_preload_libraries=pg_cron -c cron.database_name=postgres -c fsync=off"
    )

    def pg(*args: str, check: bool = True) -> None:
        subprocess.run([*as_owner, *args], check=check, capture_output=True, timeout=90)

    try:
        pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
        pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
           "-o", options, "start")  # fmt: skip
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        if data.exists():
            pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop",
               check=False)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(240)
def test_pg_cron_runs_the_scheduled_maintenance(cron_server: str) -> None:
    cron_db, app = f"{cron_server}/postgres", f"{cron_server}/app"
    execute(cron_db, "CREATE DATABASE app")
    assert run_pgobs(app, "migrate").returncode == 0

    refused = run_pgobs(app, "maintenance", "schedule")
    assert refused.returncode == 1
    assert "pg_cron is loaded but its extension is not created in database 'postgres'" in (
        refused.stderr
    )
    assert len(refused.stderr.strip().splitlines()) == 1
    execute(cron_db, "CREATE EXTENSION pg_cron")

    execute(
        app,
        "INSERT INTO pgobs.events (entity_type, event_type, created_at) "
        "SELECT 'Order', 'INSERT', now() - interval '8 days' FROM generate_series(1, 40)",
    )
    execute(app, "INSERT INTO pgobs.events (entity_type, event_type) VALUES ('Order', 'INSERT')")
    execute(
        app,
        "INSERT INTO pgobs.checkpoints (listener_id, snapshot) "
        "VALUES ('default', pg_current_snapshot())",
    )

    bogus = run_pgobs(app, "maintenance", "schedule", "--cron", "every minute")
    assert bogus.returncode == 1
    assert bogus.stderr.strip() == (
        "pgobs: error: pg_cron refused the schedule 'every minute' (invalid schedule: every "
        "minute) (give five cron fields, e.g. --cron '*/5 * * * *')"
    )
    assert scalar(app, "SELECT pgobs.setting('maintenance_runner')") == "leader"

    for _ in range(2):  # scheduling again replaces the job, it does not add one
        done = run_pgobs(app, "maintenance", "schedule", "--cron", "* * * * *")
        assert done.returncode == 0, done.stderr
        assert "job 'pgobs-maintenance-app', kept in database 'postgres'" in done.stdout
    jobs = fetch(cron_db, "SELECT jobid, schedule, database, command FROM cron.job")
    assert [row[1:] for row in jobs] == [
        ("* * * * *", "app", "SELECT * FROM pgobs.run_maintenance()")
    ]
    assert scalar(app, "SELECT pgobs.setting('maintenance_runner')") == "pg_cron"

    # pg_cron starts jobs on the minute.
    wait_until(
        lambda: scalar(
            cron_db,
            "SELECT count(*) FROM cron.job_run_details WHERE jobid = %s AND status = 'succeeded'",
            (jobs[0][0],),
        ),
        timeout=150,
        interval=1,
    )
    assert scalar(app, "SELECT count(*) FROM pgobs.events") == 1  # the young one stays

    gone = run_pgobs(app, "maintenance", "unschedule")
    assert gone.returncode == 0, gone.stderr
    assert "removed pg_cron job 'pgobs-maintenance-app' ('* * * * *')" in gone.stdout
    assert scalar(cron_db, "SELECT count(*) FROM cron.job") == 0
    assert scalar(app, "SELECT pgobs.setting('maintenance_runner')") == "leader"
    again = run_pgobs(app, "maintenance", "unschedule")
    assert again.returncode == 0
    assert "no pg_cron maintenance job" in again.stdout
