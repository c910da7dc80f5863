"""Maintenance as a pg_cron job, registered by name in the database pg_cron runs in
(``cron.database_name``) and run in this one, so no Python process has to be up for it."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.conninfo import make_conninfo

from pgobs.db.connect import Connection, connect
from pgobs.db.maintenance import maintenance_plan, set_runner
from pgobs.db.sqlfiles import query
from pgobs.errors import PgobsError

DEFAULT_SCHEDULE = "*/5 * * * *"
COMMAND = "SELECT * FROM pgobs.run_maintenance()"


class CronUnavailable(PgobsError):
    """pg_cron is not loaded on the server, or not created in its database."""


@dataclass(frozen=True, slots=True)
class CronJob:
    name: str  # the job's name in cron.job, one per pgobs database
    database: str  # where it runs: this pgobs database
    cron_database: str  # where pg_cron keeps its jobs
    schedule: str | None = None
    jobid: int | None = None


def job_name(database: str) -> str:
    return f"pgobs-maintenance-{database}"


async def schedule(conn: Connection, dsn: str, cron: str) -> CronJob:
    """Register (or re-register, replacing its schedule) the maintenance job of the database
    ``conn`` is on (``dsn``), then tell the leading listener to leave maintenance to pg_cron."""
    await maintenance_plan(conn)  # this database has the settings the job will read
    where = await _locate(conn)
    async with await _cron_session(dsn, where) as cron_conn:
        try:
            cur = await cron_conn.execute(
                query("cron_schedule"),
                {
                    "job": where.name,
                    "schedule": cron,
                    "command": COMMAND,
                    "database": where.database,
                },
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _denied(exc, where) from exc
        except psycopg.DatabaseError as exc:
            raise PgobsError(
                f"pg_cron refused the schedule {cron!r} ({exc.diag.message_primary})",
                "give five cron fields, e.g. --cron '*/5 * * * *'",
            ) from exc
        row = await cur.fetchone()
    await set_runner(conn, "pg_cron")
    assert row is not None
    return CronJob(where.name, where.database, where.cron_database, cron, int(row[0]))


async def unschedule(conn: Connection, dsn: str) -> CronJob | None:
    """Remove the job (None when there was none); the leading listener runs maintenance again."""
    where = await _locate(conn)
    async with await _cron_session(dsn, where) as cron_conn:
        try:
            cur = await cron_conn.execute(query("cron_job"), {"job": where.name})
            found = await cur.fetchone()
            if found is not None:
                await cron_conn.execute(query("cron_unschedule"), {"jobid": found[0]})
        except psycopg.errors.InsufficientPrivilege as exc:
            raise _denied(exc, where) from exc
    await set_runner(conn, "leader")
    if found is None:
        return None
    return CronJob(where.name, where.database, where.cron_database, found[1], int(found[0]))


async def _locate(conn: Connection) -> CronJob:
    cur = await conn.execute(query("cron_database"))
    row = await cur.fetchone()
    assert row is not None
    cron_database, database = row
    if not cron_database:
        raise CronUnavailable(
            "pg_cron is not installed on this server",
            "add pg_cron to shared_preload_libraries, restart Postgres and CREATE EXTENSION "
            "pg_cron in the database named by cron.database_name; until then the leading "
            "listener runs maintenance every maintenance_interval",
        )
    return CronJob(job_name(database), database, cron_database)


async def _cron_session(dsn: str, where: CronJob) -> Connection:
    """A connection to pg_cron's database, where its schema lives."""
    conn = await connect(make_conninfo(dsn, dbname=where.cron_database), autocommit=True)
    cur = await conn.execute(query("cron_installed"))
    row = await cur.fetchone()
    if not (row and row[0]):
        await conn.close()
        raise CronUnavailable(
            f"pg_cron is loaded but its extension is not created in database "
            f"{where.cron_database!r} (cron.database_name)",
            f"run CREATE EXTENSION pg_cron in database {where.cron_database!r} as a superuser",
        )
    return conn


def _denied(exc: psycopg.Error, where: CronJob) -> PgobsError:
    return PgobsError(
        f"pg_cron refused: {exc.diag.message_primary or exc}",
        f"run it as a role allowed to use the cron schema in {where.cron_database!r} and to "
        f"connect to {where.database!r}",
    )


__all__ = ["COMMAND", "DEFAULT_SCHEDULE", "CronJob", "CronUnavailable", "schedule", "unschedule"]
