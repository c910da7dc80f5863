"""Retention: ``pgobs.run_maintenance()`` (migration 0007) called from Python, and whether the
leading listener should call it itself (pg_cron does not)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row

from pgobs.db.connect import Connection
from pgobs.db.sqlfiles import query
from pgobs.errors import PgobsError

RUNNERS = ("leader", "pg_cron")


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """What one run removed (or, in a dry run, would remove), step by step."""

    events: int
    audit: int
    listeners: int
    dlq: int
    cache: int
    dedup: int
    took_s: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.events} event(s), {self.audit} audit row(s), {self.listeners} stopped "
            f"listener row(s), {self.dlq} dead letter(s), {self.cache} cache entr"
            f"{'y' if self.cache == 1 else 'ies'}, {self.dedup} dedup fingerprint(s)"
        )


@dataclass(frozen=True, slots=True)
class MaintenancePlan:
    """Who runs maintenance (settings maintenance_runner) and how often the leader does."""

    runner: str | None
    interval_s: float | None

    @property
    def by_leader(self) -> bool:
        return self.runner == "leader" and self.interval_s is not None and self.interval_s > 0


async def run_maintenance(conn: Connection, *, dry_run: bool, batch_size: int) -> MaintenanceReport:
    """One call of the SQL function; a bad setting becomes one line naming it and its fix."""
    try:
        async with conn.cursor(row_factory=class_row(MaintenanceReport)) as cur:
            await cur.execute(
                query("run_maintenance"), {"dry_run": dry_run, "batch_size": batch_size}
            )
            row = await cur.fetchone()
    except psycopg.errors.InvalidParameterValue as exc:
        raise _setting_error(exc) from exc
    assert row is not None  # the function returns one row
    return row


async def maintenance_plan(conn: Connection) -> MaintenancePlan:
    try:
        cur = await conn.execute(query("maintenance_plan"))
        row = await cur.fetchone()
    except psycopg.errors.InvalidParameterValue as exc:
        raise _setting_error(exc) from exc
    assert row is not None
    return MaintenancePlan(runner=row[0], interval_s=row[1])


async def set_runner(conn: Connection, runner: str) -> None:
    assert runner in RUNNERS
    await conn.execute(query("set_maintenance_runner"), {"runner": runner})


def _setting_error(exc: psycopg.Error) -> PgobsError:
    return PgobsError(
        exc.diag.message_primary or str(exc).strip(), exc.diag.message_hint or "fix the value"
    )


__all__ = [
    "MaintenancePlan",
    "MaintenanceReport",
    "maintenance_plan",
    "run_maintenance",
    "set_runner",
]
