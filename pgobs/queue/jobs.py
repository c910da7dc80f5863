"""Claimed jobs and the batched writes that end them (complete, retry, dead-letter)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgobs.db.connect import Connection, connect
from pgobs.db.sqlfiles import query
from pgobs.events import Event
from pgobs.queue.outcome import ErrorKind


@dataclass(slots=True)
class Job:
    id: int
    observer: str
    action_index: int
    attempts: int
    max_attempts: int
    event: Event | None  # None: the event is gone (purged) and no payload was kept

    @property
    def webhook_id(self) -> str:
        """Stable across retries, unique per event × observer × action (Standard Webhooks)."""
        event_id = self.event.id if self.event else 0
        return f"evt_{event_id}_{self.observer}_{self.action_index}"


@dataclass
class Outcomes:
    """Ends of jobs waiting to be written, gathered so one transaction writes many."""

    completed: list[int] = field(default_factory=list)
    retry_ids: list[int] = field(default_factory=list)
    retry_delays: list[float] = field(default_factory=list)
    retry_errors: list[str] = field(default_factory=list)
    dead: list[tuple[int, str, ErrorKind]] = field(default_factory=list)
    discarded: list[tuple[int, str, ErrorKind]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.completed) + len(self.retry_ids) + len(self.dead) + len(self.discarded)

    def ids(self) -> list[int]:
        return [
            *self.completed,
            *self.retry_ids,
            *(d[0] for d in self.dead),
            *(d[0] for d in self.discarded),
        ]

    def merge(self, other: Outcomes) -> None:
        self.completed += other.completed
        self.retry_ids += other.retry_ids
        self.retry_delays += other.retry_delays
        self.retry_errors += other.retry_errors
        self.dead += other.dead
        self.discarded += other.discarded

    def split(self) -> list[Outcomes]:
        """One Outcomes per job: to find the one row a batch write cannot take."""
        singles = [Outcomes(completed=[i]) for i in self.completed]
        singles += [
            Outcomes(retry_ids=[i], retry_delays=[d], retry_errors=[e])
            for i, d, e in zip(self.retry_ids, self.retry_delays, self.retry_errors, strict=True)
        ]
        singles += [Outcomes(dead=[d]) for d in self.dead]
        singles += [Outcomes(discarded=[d]) for d in self.discarded]
        return singles


class JobStore:
    def __init__(
        self, dsn: str, pool: AsyncConnectionPool[Connection], worker_id: str, lease_s: float
    ) -> None:
        self.dsn = dsn
        self._claim_conn: Connection | None = None
        self.pool = pool
        self.worker_id = worker_id
        self.lease_s = lease_s

    async def claim(self, limit: int) -> list[Job]:
        """Claim up to ``limit`` due jobs, on the claimer's own connection (see
        claimer_session_settings); a broken connection is replaced on the next call."""
        if self._claim_conn is None or self._claim_conn.closed:
            self._claim_conn = await connect(self.dsn, autocommit=True)
            await self._claim_conn.execute(query("claimer_session_settings"))
        try:
            cur = await self._claim_conn.execute(
                query("claim_jobs"),
                {"limit": limit, "worker": self.worker_id, "lease_s": self.lease_s},
            )
            rows = await cur.fetchall()
        except psycopg.Error:
            await self._claim_conn.close()
            raise
        return [_job(row) for row in rows]

    async def close(self) -> None:
        if self._claim_conn is not None:
            await self._claim_conn.close()

    async def write(self, out: Outcomes) -> list[str]:
        """Write every outcome in one statement; returns the observers of dead-lettered jobs."""
        params: dict[str, Any] = {
            "completed": out.completed,
            "retry_ids": out.retry_ids,
            "retry_delays": out.retry_delays,
            "retry_errors": out.retry_errors,
            "worker": self.worker_id,
        }
        for prefix, failures in (("dead", out.dead), ("drop", out.discarded)):
            params[f"{prefix}_ids"] = [f[0] for f in failures]
            params[f"{prefix}_errors"] = [f[1] for f in failures]
            params[f"{prefix}_kinds"] = [f[2] for f in failures]
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("write_outcomes"), params)
            return [row[0] for row in await cur.fetchall()]

    async def extend_leases(self, ids: list[int]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                query("extend_leases"),
                {"ids": ids, "worker": self.worker_id, "lease_s": self.lease_s},
            )

    async def release(self, ids: list[int]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(query("release_jobs"), {"ids": ids, "worker": self.worker_id})

    async def rescue_expired(self) -> tuple[int, list[str]]:
        """Make expired leases claimable again; dead-letter those that were on their last try."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(query("rescue_expired_jobs"))
            rescued = len(await cur.fetchall())
            cur = await conn.execute(query("dead_letter_expired_jobs"))
            dead = [row[0] for row in await cur.fetchall()]
        return rescued, dead


def _job(row: tuple[Any, ...]) -> Job:
    (
        job_id,
        observer,
        action_index,
        attempts,
        max_attempts,
        payload,
        event_id,
        entity_type,
        *rest,
    ) = row
    event: Event | None = None
    if entity_type is not None:
        entity_id, event_type, data, old_data, changed, tenant, actor, created_at = rest
        event = Event(
            id=event_id,
            entity_type=entity_type,
            entity_id=entity_id,
            event_type=event_type,
            data=data,
            old_data=old_data,
            changed_fields=changed,
            tenant=tenant,
            actor=actor,
            created_at=created_at,
        )
    elif isinstance(payload, dict) and "entity_type" in payload:
        event = Event(
            id=event_id,
            entity_type=payload["entity_type"],
            entity_id=payload.get("entity_id"),
            event_type=payload.get("event_type", ""),
            data=payload.get("data"),
            old_data=payload.get("old_data"),
            changed_fields=payload.get("changed_fields"),
            tenant=payload.get("tenant"),
            actor=payload.get("actor"),
        )
    return Job(job_id, observer, action_index, attempts, max_attempts, event)
