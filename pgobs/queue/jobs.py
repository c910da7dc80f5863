"""Claimed jobs, and every statement a worker runs on the jobs table.

Ownership is a SQL condition that reports back: each write touches only jobs still running under
this worker's lease and returns the ids it wrote, so the caller can tell "done" from "not mine any
more" (the lease lapsed and another worker may run the job).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import args_row
from psycopg_pool import AsyncConnectionPool

from pgobs.actions.failures import ErrorKind
from pgobs.db.connect import Connection, connect
from pgobs.db.sqlfiles import query
from pgobs.events import Event


@dataclass(slots=True)
class Job:
    """A claimed job: what the executor needs to run it (see ``ActionCall``) and to write it."""

    id: int
    event_id: int
    observer: str
    action: str  # its identity within the observer; '#n' for jobs from before names existed
    action_index: int  # the action's position when the job was created
    attempt: int  # the attempt this run is, once started
    max_attempts: int
    event: Event | None  # None: the event is gone (purged) and no payload was kept
    action_type: str = ""  # the type it was made for: checks a '#n' action still is one
    claims: int = 1  # times claimed, this claim included
    size: int = 0  # bytes of its event's data as received: what holding it costs

    @property
    def run_key(self) -> str:
        """This claim's run of the job: a thread outliving one run is told from the next."""
        return f"{self.id}:{self.claims}"

    @property
    def suspect(self) -> bool:
        """Claimed before and never started since: a worker holding it died, maybe because of
        it. Its start is written before it runs, so a job that kills its worker spends its
        attempts and ends in the DLQ (every job beside it being rescued does not)."""
        return self.claims - self.attempt >= 1

    @property
    def idempotency_key(self) -> str:
        """``webhook-id``: stable across retries, restarts and config changes, unique per
        event × observer × action (Standard Webhooks)."""
        return f"evt_{self.event_id}_{self.observer}_{self.action_index}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended, as written: completed, retried, dead-lettered, dropped, or deferred
    while its circuit is open (``attempt`` is then the attempts it has spent)."""

    job_id: int
    attempt: int
    kind: str  # completed | retry | dead | drop | defer
    error: str = ""
    error_kind: ErrorKind = "transient"
    delay_s: float = 0.0


@dataclass
class Batch:
    """Starts and outcomes waiting to be written, so one statement writes many."""

    starts: dict[int, int] = field(default_factory=dict)  # job id -> attempt
    outcomes: dict[int, Outcome] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.starts) + len(self.outcomes)

    def ids(self) -> set[int]:
        return set(self.starts) | set(self.outcomes)

    def merge(self, other: Batch) -> None:
        for job_id, attempt in other.starts.items():
            if job_id not in self.outcomes:
                self.starts[job_id] = attempt
        for job_id, outcome in other.outcomes.items():
            self.outcomes[job_id] = outcome
            self.starts.pop(job_id, None)

    def split(self) -> list[Batch]:
        """One Batch per job: to find the one row a batch write cannot take."""
        return [Batch(starts={i: a}) for i, a in self.starts.items()] + [
            Batch(outcomes={i: o}) for i, o in self.outcomes.items()
        ]

    def params(self, worker: str) -> dict[str, Any]:
        by_kind: dict[str, list[Outcome]] = {
            "completed": [],
            "retry": [],
            "dead": [],
            "drop": [],
            "defer": [],
        }
        for outcome in self.outcomes.values():
            by_kind[outcome.kind].append(outcome)
        params: dict[str, Any] = {
            "worker": worker,
            "start_ids": list(self.starts),
            "start_attempts": list(self.starts.values()),
            "completed": [o.job_id for o in by_kind["completed"]],
            "retry_ids": [o.job_id for o in by_kind["retry"]],
            "retry_delays": [o.delay_s for o in by_kind["retry"]],
            "retry_errors": [o.error for o in by_kind["retry"]],
            "retry_attempts": [o.attempt for o in by_kind["retry"]],
            "defer_ids": [o.job_id for o in by_kind["defer"]],
            "defer_delays": [o.delay_s for o in by_kind["defer"]],
            "defer_errors": [o.error or None for o in by_kind["defer"]],
            "defer_attempts": [o.attempt for o in by_kind["defer"]],
        }
        for prefix in ("dead", "drop"):
            failures = by_kind[prefix]
            params[f"{prefix}_ids"] = [o.job_id for o in failures]
            params[f"{prefix}_errors"] = [o.error for o in failures]
            params[f"{prefix}_kinds"] = [o.error_kind for o in failures]
            params[f"{prefix}_attempts"] = [o.attempt for o in failures]
        return params


@dataclass(frozen=True, slots=True)
class Written:
    """What a batch write reports: the ids it wrote, and the observers of dead letters."""

    ids: set[int]
    dead_observers: list[str]


class JobStore:
    def __init__(
        self, dsn: str, pool: AsyncConnectionPool[Connection], worker_id: str, lease_s: float
    ) -> None:
        self.dsn = dsn
        self._claim_conn: Connection | None = None
        self.pool = pool
        self.worker_id = worker_id
        self.lease_s = lease_s

    async def claim(self, limit: int, known: Sequence[str]) -> list[Job]:
        """Claim up to ``limit`` due jobs whose ``observer/action`` is in ``known``, on the
        claimer's own connection (see claimer_session_settings); a broken connection is
        replaced on the next call."""
        if self._claim_conn is None or self._claim_conn.closed:
            self._claim_conn = await connect(self.dsn, autocommit=True)
            await self._claim_conn.execute(query("claimer_session_settings"))
        try:
            async with self._claim_conn.cursor(row_factory=args_row(_claimed_job)) as cur:
                await cur.execute(
                    query("claim_jobs"),
                    {
                        "limit": limit,
                        "known": list(known),
                        "worker": self.worker_id,
                        "lease_s": self.lease_s,
                    },
                )
                return await cur.fetchall()
        except psycopg.Error:
            await self._claim_conn.close()
            raise

    async def close(self) -> None:
        if self._claim_conn is not None:
            await self._claim_conn.close()

    async def write(self, batch: Batch) -> Written:
        """Write every start and outcome in one statement."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("write_outcomes"), batch.params(self.worker_id))
            rows = await cur.fetchall()
        return Written({row[0] for row in rows}, [row[1] for row in rows if row[1] is not None])

    async def extend_leases(self, ids: list[int]) -> set[int]:
        """Extend the leases of ``ids``; returns those still ours."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                query("extend_leases"),
                {"ids": ids, "worker": self.worker_id, "lease_s": self.lease_s},
            )
            return {row[0] for row in await cur.fetchall()}

    async def release(self, ids: list[int]) -> int:
        """Hand back jobs that never started; returns how many went back."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("release_jobs"), {"ids": ids, "worker": self.worker_id})
            return len(await cur.fetchall())

    async def register(self, action_keys: list[str]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                query("register_worker"),
                {
                    "worker": self.worker_id,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "actions": action_keys,
                },
            )

    async def unregister(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(query("unregister_worker"), {"worker": self.worker_id})

    async def rescue_expired(self) -> tuple[int, list[str]]:
        """Expired leases: dead-letter the jobs that were on their last attempt (or never get
        started), make the others claimable again. Returns (rescued, dead-lettered observers)."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(query("dead_letter_expired_jobs"))
            dead = [row[0] for row in await cur.fetchall()]
            cur = await conn.execute(query("rescue_expired_jobs"))
            rescued = len(await cur.fetchall())
        return rescued, dead

    async def dead_letter_unknown_actions(self, after_s: float) -> list[str]:
        """Dead-letter jobs due for ``after_s`` whose action no live worker knows; returns their
        observers."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("dead_letter_unknown_actions"), {"after_s": after_s})
            return [row[0] for row in await cur.fetchall()]


def _claimed_job(
    id: int,
    observer: str,
    action: str,
    action_index: int,
    action_type: str,
    attempts: int,
    max_attempts: int,
    claims: int,
    payload: Any,
    event_id: int,
    entity_type: str | None,
    entity_id: str | None,
    event_type: str | None,
    data: Any,
    old_data: Any,
    changed_fields: list[str] | None,
    tenant: str | None,
    actor: str | None,
    created_at: datetime | None,
    size: int,
) -> Job:
    """One row of claim_jobs: the job, with its event's row or else its payload's copy. The
    parameters are the query's columns, in order (positional: a dict per row cost more than the
    rest of the mapping; tests/integration/test_query_plans.py checks the names match)."""
    event: Event | None = None
    if entity_type is not None:
        event = Event(
            id=event_id,
            entity_type=entity_type,
            entity_id=entity_id,
            event_type=event_type or "",
            data=data,
            old_data=old_data,
            changed_fields=changed_fields,
            tenant=tenant,
            actor=actor,
            created_at=created_at,
        )
    elif isinstance(payload, dict) and "entity_type" in payload:
        event = Event.from_json(event_id, payload)
    return Job(
        id,
        event_id,
        observer,
        action,
        action_index,
        attempts + 1,
        max_attempts,
        event,
        action_type,
        claims,
        size,
    )
