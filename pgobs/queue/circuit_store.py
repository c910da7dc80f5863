"""Every statement on ``pgobs.circuits``: the workers' reports, the fleet's one probe, and the
operators' list and reset. The logic of a breaker is in ``pgobs.queue.circuits``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import args_row
from psycopg_pool import AsyncConnectionPool

from pgobs.db.connect import Connection
from pgobs.db.sqlfiles import query
from pgobs.errors import NotFound


@dataclass(frozen=True, slots=True)
class Report:
    """One circuit's calls since the last report, and the settings that judge them."""

    target: str
    requests: int
    failures: int
    error: str | None
    failure_threshold: float
    min_requests: int
    window_s: float
    open_s: float


@dataclass(frozen=True, slots=True)
class CircuitRow:
    """A circuit as the fleet sees it: calls and failures in its window (estimated), and how
    long until its probe (open) or until its probe's grant runs out (half-open)."""

    target: str
    state: str
    requests: float
    failures: float
    wait_s: float
    open_s: float
    ours: bool  # this worker holds its probe
    tripped: bool  # this report opened it


@dataclass(frozen=True, slots=True)
class ProbeResult:
    state: str
    open_s: float
    wait_s: float


class CircuitStore:
    def __init__(self, pool: AsyncConnectionPool[Connection], worker_id: str) -> None:
        self.pool = pool
        self.worker_id = worker_id

    async def sync(self, reports: list[Report], known: list[str]) -> list[CircuitRow]:
        params: dict[str, Any] = {
            "worker": self.worker_id,
            "known": known,
            "targets": [r.target for r in reports],
            "requests": [r.requests for r in reports],
            "failures": [r.failures for r in reports],
            "errors": [r.error for r in reports],
            "thresholds": [r.failure_threshold for r in reports],
            "min_requests": [r.min_requests for r in reports],
            "window_s": [r.window_s for r in reports],
            "open_s": [r.open_s for r in reports],
        }
        async with (
            self.pool.connection() as conn,
            conn.cursor(row_factory=args_row(CircuitRow)) as cur,
        ):
            await cur.execute(query("circuit_sync"), params)
            return await cur.fetchall()

    async def take_probe(self, target: str, lease_s: float) -> str | None:
        """The fleet's probe for ``target``, if it is this worker's to take: the state before."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                query("circuit_take_probe"),
                {"target": target, "worker": self.worker_id, "lease_s": lease_s},
            )
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def probe_done(
        self,
        target: str,
        *,
        ok: bool,
        error: str | None,
        success_threshold: int,
        max_open_s: float,
    ) -> ProbeResult | None:
        """Report this worker's probe; None when it was no longer this worker's."""
        async with (
            self.pool.connection() as conn,
            conn.cursor(row_factory=args_row(ProbeResult)) as cur,
        ):
            await cur.execute(
                query("circuit_probe_done"),
                {
                    "target": target,
                    "worker": self.worker_id,
                    "ok": ok,
                    "error": error,
                    "success_threshold": success_threshold,
                    "max_open_s": max_open_s,
                },
            )
            return await cur.fetchone()

    async def release_deferred(self, keys: list[str]) -> int:
        """Make the waiting jobs of these ``observer/action`` keys due now; how many."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("circuit_release_deferred"), {"keys": keys})
            return len(await cur.fetchall())

    async def notify(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(query("circuits_notify"))


# -- for operators ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CircuitStatus:
    target: str
    state: str
    requests: float  # calls in the window (estimated)
    failures: float
    window_s: float
    opened_at: datetime | None
    open_s: float
    next_at: datetime | None  # open: the probe time; half-open: when the probe's grant ends
    probe_by: str | None
    failed_probes: int
    last_error: str | None
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in self.__slots__}
        for key in ("opened_at", "next_at", "updated_at"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        out["requests"] = round(self.requests, 1)
        out["failures"] = round(self.failures, 1)
        return out


async def list_circuits(conn: Connection) -> list[CircuitStatus]:
    async with conn.cursor(row_factory=args_row(CircuitStatus)) as cur:
        await cur.execute(query("circuits_list"))
        return await cur.fetchall()


async def reset_circuit(conn: Connection, target: str) -> None:
    """Close ``target``'s circuit now; every worker learns it at once."""
    async with conn.transaction():
        cur = await conn.execute(query("circuit_reset"), {"target": target})
        if await cur.fetchone() is None:
            raise NotFound(
                f"there is no circuit {target!r}",
                "pgobs circuits list shows them, e.g. https://api.example.com:443",
            )
        await conn.execute(query("circuits_notify"))
