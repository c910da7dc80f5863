"""The dead-letter queue, for operators: list, show, retry, stats, purge."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import class_row

from pgobs.db.connect import Connection
from pgobs.db.sqlfiles import query
from pgobs.errors import BadOption, NotFound

RETRY_BATCH = 5000
BY_ERROR_LIMIT = 50  # the most frequent errors; the rest are one-offs
MAX_AGE = timedelta(days=36_500)
_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    observer: str
    action: str  # its identity ('#n' for dead letters from before actions had names)
    action_index: int
    action_type: str
    event_id: int
    entity_type: str | None
    entity_id: str | None
    attempts: int
    max_attempts: int
    error_kind: str
    last_error: str | None
    failed_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in self.__slots__},
            "failed_at": self.failed_at.isoformat(),
        }


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``15m``, ``90s``, ``2w`` → a timedelta."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise BadOption(
            f"cannot read the age {text!r}", "use a number and a unit: 90s, 15m, 12h, 30d, 2w"
        )
    age = timedelta(**{_UNITS[match.group(2)]: min(int(match.group(1)), 10**9)})
    if age > MAX_AGE:
        raise BadOption(f"the age {text!r} is over 100 years", "give a shorter age, like 30d")
    return age


async def list_dead(
    conn: Connection,
    observer: str | None,
    limit: int,
    offset: int = 0,
    after: datetime | None = None,
) -> list[DeadLetter]:
    """Newest first: ``limit`` of them after skipping ``offset``; only failed after ``after``."""
    params = {"observer": observer, "limit": limit, "offset": offset, "after": after}
    async with conn.cursor(row_factory=class_row(DeadLetter)) as cur:
        await cur.execute(query("dlq_list"), params)
        return await cur.fetchall()


async def show_dead(conn: Connection, dlq_id: int) -> dict[str, Any]:
    cur = await conn.execute(query("dlq_show"), {"id": dlq_id})
    row = await cur.fetchone()
    if row is None:
        raise missing(dlq_id)
    found: dict[str, Any] = row[0]
    return found


async def dead_ids(conn: Connection, observer: str | None) -> list[int]:
    return [i for i, _ in await retry_candidates(conn, observer)]


async def retry_candidates(
    conn: Connection, observer: str | None, dlq_id: int | None = None
) -> list[tuple[int, bool]]:
    """(id, past_max) of the dead letters (of an observer, or the one id): past_max when its
    history holds more attempts than its max, having been retried from the DLQ before."""
    cur = await conn.execute(query("dlq_select_ids"), {"observer": observer, "id": dlq_id})
    return [(int(i), bool(past)) for i, past in await cur.fetchall()]


async def remove_dead(conn: Connection, dlq_id: int) -> None:
    cur = await conn.execute(query("dlq_remove"), {"id": dlq_id})
    if await cur.fetchone() is None:
        raise missing(dlq_id)


def missing(dlq_id: int) -> NotFound:
    return NotFound(f"no dead letter with id {dlq_id}", "list them with pgobs dlq list")


async def retry_dead(
    conn: Connection, ids: list[int], progress: Callable[[int, int], None] | None = None
) -> int:
    """Move dead letters back to the queue, ``RETRY_BATCH`` per transaction; returns the count."""
    moved = 0
    for start in range(0, len(ids), RETRY_BATCH):
        async with conn.transaction():
            cur = await conn.execute(query("dlq_retry"), {"ids": ids[start : start + RETRY_BATCH]})
            moved += len(await cur.fetchall())
            await conn.execute(query("notify_jobs"))
        if progress is not None:
            progress(min(start + RETRY_BATCH, len(ids)), len(ids))
    return moved


async def stats(
    conn: Connection, by_observer: bool, by_error: bool = False
) -> list[dict[str, Any]]:
    if by_error:
        cur = await conn.execute(query("dlq_stats_by_error"), {"limit": BY_ERROR_LIMIT})
        keys = ["error_kind", "error", "total", "oldest", "newest"]
    else:
        cur = await conn.execute(query("dlq_stats_by_observer" if by_observer else "dlq_stats"))
        keys = ["total", "transient", "permanent", "oldest", "newest"]
        if by_observer:
            keys = ["observer", *keys]
    rows = await cur.fetchall()
    return [
        {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in zip(keys, row, strict=True)
        }
        for row in rows
    ]


async def purge(conn: Connection, age: timedelta, observer: str | None, dry_run: bool) -> int:
    params = {"age": age, "observer": observer}
    if dry_run:
        cur = await conn.execute(query("dlq_count_older"), params)
        row = await cur.fetchone()
        return int(row[0]) if row else 0
    async with conn.transaction():
        cur = await conn.execute(query("dlq_purge"), params)
        return cur.rowcount
