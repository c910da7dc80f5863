"""Fixtures: a real Postgres (found or started), a migrated template, a fresh database per test."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import psycopg
import pytest
from psycopg import sql

from pgobs.db.migrate import migrate
from tests.support import Neighbour, Receiver, start_receiver

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _testcontainers_dsn() -> tuple[str, object] | None:
    """A throwaway Postgres container where a Docker engine answers (optional path)."""
    if not shutil.which("docker"):
        return None
    try:
        import docker
        from testcontainers.postgres import PostgresContainer

        docker.from_env().ping()
    except Exception:
        return None
    container = PostgresContainer("postgres:16", driver=None)
    container.start()
    return container.get_connection_url(), container


def _embedded_dsn() -> str:
    import pgserver

    pgdata = Path(
        os.environ.get("PGOBS_TEST_EMBEDDED_DIR", Path.home() / ".cache/pgobs-test/pgdata")
    )
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    uri: str = pgserver.get_server(pgdata, cleanup_mode=None).get_uri()
    return uri


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    """PGOBS_TEST_DSN, else the local server, else testcontainers, else the embedded Postgres."""
    given = os.environ.get("PGOBS_TEST_DSN")
    if given:
        if not _answers(given):
            pytest.fail(f"PGOBS_TEST_DSN={given} does not answer")
        yield given
        return
    if _answers(LOCAL_DSN):
        yield LOCAL_DSN
        return
    found = _testcontainers_dsn()
    if found:
        dsn, container = found
        try:
            yield dsn
        finally:
            container.stop()  # type: ignore[attr-defined]
        return
    yield _embedded_dsn()


def _with_db(dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


@pytest.fixture(scope="session")
def template_db(admin_dsn: str) -> Iterator[str]:
    name = f"pgobs_tpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    anyio.run(lambda: migrate(_with_db(admin_dsn, name)))
    try:
        yield name
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _fresh_db(admin_dsn: str, template: str | None, prefix: str = "pgobs_t_") -> Iterator[str]:
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(create)
    try:
        yield _with_db(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session", autouse=True)
def neighbour(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Neighbour | None]:
    """A live pgobs deployment on the same server for the whole run: at the end its leader must
    still hold the same session and its events still flow, or the run fails. Every run is so the
    proof that the tests touch only their own databases. Started only when a test uses Postgres."""
    if not any("admin_dsn" in getattr(i, "fixturenames", ()) for i in request.session.items):
        yield None
        return
    admin_dsn: str = request.getfixturevalue("admin_dsn")
    databases = _fresh_db(admin_dsn, request.getfixturevalue("template_db"), "pgobs_neighbour_")
    try:
        started = Neighbour(next(databases), tmp_path_factory.mktemp("neighbour"))
        try:
            yield started
            disturbances = started.disturbances()
        finally:
            started.worker.stop()
    finally:
        databases.close()  # drops its database
    assert not disturbances, (
        f"a neighbour deployment was disturbed during the run: {disturbances} (by these tests, "
        "or by another process on this server that is not scoped to its own database); "
        f"its log ends:\n{started.worker.output()[-3000:]}"
    )


@pytest.fixture
def dsn(admin_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    yield from _fresh_db(admin_dsn, template_db)


@pytest.fixture
def empty_dsn(admin_dsn: str) -> Iterator[str]:
    """A fresh database without the pgobs schema."""
    yield from _fresh_db(admin_dsn, None)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recv, stop = start_receiver()
    try:
        yield recv
    finally:
        stop()


@pytest.fixture
def redis_url() -> str:
    """PGOBS_TEST_REDIS_URL; when it is set the server must answer (fail, never skip)."""
    url = os.environ.get("PGOBS_TEST_REDIS_URL")
    if not url:
        pytest.skip("PGOBS_TEST_REDIS_URL is not set")
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"PGOBS_TEST_REDIS_URL={url} does not answer: {exc}")
    finally:
        client.close()
    return url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Numbers tests measure but must not assert (a loaded machine stretches them): shown."""
    measured = [
        (report.nodeid, name, value)
        for report in terminalreporter.getreports("passed")
        if report.when == "call"
        for name, value in report.user_properties
    ]
    if measured:
        terminalreporter.section("measured")
        for nodeid, name, value in measured:
            terminalreporter.write_line(f"{nodeid}: {name}: {value}")
