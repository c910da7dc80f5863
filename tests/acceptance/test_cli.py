"""The CLI as a user runs it: help, one-line errors, exit codes, metrics."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from tests.support import Worker, execute, pgobs_env, run_pgobs, scalar, wait_until

COMMANDS = [
    [],
    ["migrate"],
    ["track"],
    ["worker"],
    ["validate-config"],
    ["demo"],
    ["dlq"],
    ["dlq", "list"],
    ["dlq", "show"],
    ["dlq", "retry"],
    ["dlq", "retry-all"],
    ["dlq", "stats"],
    ["dlq", "purge"],
    ["dlq", "remove"],
    ["status"],
    ["debug-event"],
    ["metrics"],
    ["circuits"],
    ["circuits", "list"],
    ["circuits", "reset"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pgobs")
def test_every_command_has_help(command: list[str]) -> None:
    result = run_pgobs(None, *command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: pgobs" in result.stdout


def test_bad_dsn_is_one_line_naming_the_first_refusal() -> None:
    result = run_pgobs("postgresql://nobody@127.0.0.1:1/none", "migrate")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pgobs: error: cannot connect to Postgres at 127.0.0.1:1/none")
    assert "Connection refused" in lines[0]  # the first attempt's answer, not a retry loop's
    assert "Traceback" not in result.stderr


def test_schema_missing_is_one_line(empty_dsn: str) -> None:
    result = run_pgobs(empty_dsn, "dlq", "list")
    assert result.returncode == 1
    assert result.stderr.strip().endswith("(run pgobs migrate)")
    assert len(result.stderr.strip().splitlines()) == 1


def test_validate_config_reports_lines_and_exits_4(tmp_path: Path) -> None:
    bad = tmp_path / "observers.yaml"
    bad.write_text("observers:\n  - name: a\n    entyty: Order\n    actions: [{type: log}]\n")
    result = run_pgobs(None, "validate-config", str(bad))
    assert result.returncode == 4
    assert f"{bad}:3: error: unknown key 'entyty'" in result.stderr
    assert "did you mean 'entity'" in result.stderr
    good = tmp_path / "good.yaml"
    good.write_text("observers:\n  - name: a\n    entity: Order\n    actions: [{type: log}]\n")
    result = run_pgobs(None, "validate-config", str(good), "--detailed")
    assert result.returncode == 0, result.stderr
    assert "1 observer(s), 1 action(s)" in result.stdout
    assert "a (line 2): Order on any event" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "--concurrency", "0"], "--concurrency must be at least 1, got 0"),
        (["worker", "--metrics-port", "70000"], "--metrics-port must be between 0 and 65535"),
        (["worker", "--lease-seconds", "0"], "--lease-seconds must be at least 1"),
        (["worker", "--batch-size", "0"], "--batch-size must be between 1 and 100000"),
        (["dlq", "list", "--limit", "0"], "--limit must be at least 1, got 0"),
        (["dlq", "purge", "--older-than", "soon"], "cannot read the age 'soon'"),
    ],
)
def test_bad_options_are_one_line(args: list[str], message: str) -> None:
    result = run_pgobs("postgresql://nobody@127.0.0.1:1/none", *args)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"pgobs: error: {message}")


def test_database_refusals_are_one_line(dsn: str, tmp_path: Path) -> None:
    execute(dsn, "CREATE TABLE plain (id int PRIMARY KEY)")
    for args, message, code in [
        (["track", "bad name!!"], "pgobs: error: cannot track 'bad name!!': ", 1),
        (["track", "pgobs.events"], "pgobs: error: cannot track 'pgobs.events': pgobs.track: ", 1),
        (["track", "nowhere"], "pgobs: error: table 'nowhere' does not exist", 5),
        (["dlq", "purge", "--older-than", "999999999d"], "pgobs: error: the age '999999999d'", 2),
    ]:
        result = run_pgobs(dsn, *args)
        assert result.returncode == code, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(message), line


def test_a_failing_migration_is_one_line_and_names_the_file(empty_dsn: str) -> None:
    execute(empty_dsn, "CREATE SCHEMA pgobs")
    execute(empty_dsn, "CREATE TABLE pgobs.events (id int)")  # in the way of 0001
    result = run_pgobs(empty_dsn, "migrate")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("pgobs: error: migration 0001 (0001_schema.sql) failed: relation")
    assert line.endswith("run pgobs migrate again)")


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = run_pgobs(None, "validate-config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_refuses_a_database_without_the_schema(empty_dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "observers.yaml"
    config.write_text("observers:\n  - name: a\n    entity: Order\n    actions: [{type: log}]\n")
    result = run_pgobs(empty_dsn, "worker", "--config", str(config), "--metrics-port", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "pgobs: error: the database has no pgobs schema (run pgobs migrate)"
    )


def test_worker_refuses_a_config_with_unset_env(dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "observers.yaml"
    config.write_text(
        "observers:\n  - name: a\n    entity: Order\n    actions:\n"
        "      - type: webhook\n        url_env: PGOBS_TEST_UNSET_URL\n"
    )
    result = run_pgobs(dsn, "worker", "--config", str(config), "--metrics-port", "0", timeout=30)
    assert result.returncode == 2
    assert "PGOBS_TEST_UNSET_URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_metrics_endpoint_and_port_in_use(dsn: str, tmp_path: Path) -> None:
    execute(dsn, "CREATE TABLE orders (id serial PRIMARY KEY)")
    execute(dsn, "SELECT pgobs.track('orders', 'Order')")
    config = tmp_path / "observers.yaml"
    config.write_text("observers:\n  - name: a\n    entity: Order\n    actions: [{type: log}]\n")
    port = free_port()
    worker = Worker(
        dsn,
        "--config",
        str(config),
        "--metrics-port",
        str(port),
        "--role",
        "listener",
        log_path=tmp_path / "w.log",
    )
    try:
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.listeners WHERE is_leader"))
        execute(dsn, "INSERT INTO orders DEFAULT VALUES")
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.jobs") == 1)

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text: str = r.read().decode()
                return text

        wait_until(lambda: 'observer_events_processed_total{listener_id="default"} 1.0' in scrape())
        assert 'observer_listener_health{listener_id="default"} 1.0' in scrape()
        assert 'observer_jobs_created_total{observer="a"} 1.0' in scrape()
        again = run_pgobs(dsn, "worker", "--config", str(config), "--metrics-port", str(port))
        assert again.returncode == 1
        assert f"metrics port {port} is already in use" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    finally:
        worker.stop()


def test_sigterm_stops_the_listener_and_frees_leadership(dsn: str, tmp_path: Path) -> None:
    config = tmp_path / "observers.yaml"
    config.write_text("observers:\n  - name: a\n    entity: Order\n    actions: [{type: log}]\n")
    worker = Worker(dsn, "--config", str(config), "--role", "listener", log_path=tmp_path / "w.log")
    try:
        wait_until(lambda: scalar(dsn, "SELECT count(*) FROM pgobs.listeners WHERE is_leader"))
        assert worker.terminate() == 0
        assert scalar(dsn, "SELECT state FROM pgobs.listeners") == "stopped"
        held = (
            "SELECT count(*) FROM pg_locks WHERE database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND locktype = 'advisory'"
        )
        assert scalar(dsn, held) == 0
    finally:
        worker.stop()


def test_track_cli(dsn: str) -> None:
    execute(dsn, "CREATE TABLE items (sku text PRIMARY KEY)")
    ok = run_pgobs(dsn, "track", "items", "--entity", "Item")
    assert ok.returncode == 0, ok.stderr
    assert "tracking items as Item" in ok.stdout
    missing = run_pgobs(dsn, "track", "nope")
    assert missing.returncode == 5  # not found
    assert "table 'nope' does not exist" in missing.stderr
    assert pgobs_env(dsn)["PGOBS_DSN"] == dsn
