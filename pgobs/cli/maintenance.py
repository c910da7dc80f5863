"""``pgobs maintenance``: retention now, or on a pg_cron schedule."""

from __future__ import annotations

from typing import Annotated

from cyclopts import App, Parameter

from pgobs.cli.session import Dsn, with_connection
from pgobs.errors import PgobsError

app = App(
    name="maintenance",
    help="Retention: remove events every listener has fanned out, old audit rows, stopped "
    "listener rows and expired dedup and cache entries (pgobs.run_maintenance()).",
)

DEFAULT_CRON = "*/5 * * * *"


@app.command
def run(
    *,
    dry_run: bool = False,
    batch_size: Annotated[int, Parameter(help="Rows per batch of each step.")] = 10_000,
    json: bool = False,
    dsn: Dsn = None,
) -> None:
    """Run pgobs.run_maintenance() once and print what it removed.

    Parameters
    ----------
    dry_run
        Print what would be removed; change nothing.
    """
    from pgobs import jsoncodec
    from pgobs.db.maintenance import run_maintenance

    if not 1 <= batch_size <= 1_000_000:
        raise PgobsError(f"--batch-size must be between 1 and 1000000, got {batch_size}")
    report = with_connection(
        dsn, lambda conn: run_maintenance(conn, dry_run=dry_run, batch_size=batch_size)
    )
    if json:
        print(jsoncodec.encode_indented({**report.as_json(), "dry_run": dry_run}))
        return
    verb = "dry run: would remove" if dry_run else "removed"
    print(f"{verb} {report.summary()} in {report.took_s:.2f}s")


@app.command
def schedule(
    *,
    cron: Annotated[str, Parameter(help="When pg_cron runs it (five cron fields).")] = DEFAULT_CRON,
    dsn: Dsn = None,
) -> None:
    """Have pg_cron run pgobs.run_maintenance() in this database (again: replaces the schedule).

    The leading listener then stops running maintenance itself.
    """
    from pgobs.db.connect import resolve_dsn
    from pgobs.db.cron import schedule as schedule_job

    job = with_connection(dsn, lambda conn: schedule_job(conn, resolve_dsn(dsn), cron))
    print(
        f"pg_cron runs pgobs.run_maintenance() in database {job.database!r} at {cron!r} "
        f"(job {job.name!r}, kept in database {job.cron_database!r})"
    )


@app.command
def unschedule(*, dsn: Dsn = None) -> None:
    """Remove this database's pg_cron maintenance job; the leading listener runs it again."""
    from pgobs.db.connect import resolve_dsn
    from pgobs.db.cron import unschedule as unschedule_job

    job = with_connection(dsn, lambda conn: unschedule_job(conn, resolve_dsn(dsn)))
    if job is None:
        print("no pg_cron maintenance job for this database; the leading listener runs it")
        return
    print(
        f"removed pg_cron job {job.name!r} ({job.schedule!r}); the leading "
        "listener runs maintenance every maintenance_interval again"
    )
