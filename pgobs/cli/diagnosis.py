"""What ``pgobs debug-event`` gathers about one event: the event, each observer's verdict with
its reason, the jobs, dead letters and trail the event left."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import class_row

from pgobs.conditions.explain import Explained, explain
from pgobs.config.model import Config, Observer
from pgobs.db.connect import Connection
from pgobs.db.sqlfiles import query
from pgobs.errors import NotFound
from pgobs.events import DATA_ERROR_KEY, Event


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether one observer matched the event and, when it did not, why not."""

    observer: str
    matched: bool
    reason: str | None = None  # entity, event type or condition, in words
    condition: Explained | None = None  # every sub-expression's value, when a condition ran

    def as_json(self) -> dict[str, Any]:
        return {
            "observer": self.observer,
            "matched": self.matched,
            "reason": self.reason,
            "condition": self.condition.as_json() if self.condition else None,
        }


@dataclass(slots=True)
class Diagnosis:
    event: Event
    fanned_out: dict[str, bool]  # listener id -> its checkpoint has passed the event
    jobs: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    trail: list[dict[str, Any]] | None  # None: this database has no pgobs.trail
    verdicts: list[Verdict] = field(default_factory=list)


def judge_observer(obs: Observer, event: Event) -> Verdict:
    """The listener's decision (pgobs.listener.fanout) for one observer, with its reason."""
    if obs.entity not in ("*", event.entity_type):
        return Verdict(
            obs.name,
            False,
            f"entity: the observer watches {obs.entity!r}, the event is {event.entity_type!r}",
        )
    if obs.event_types is not None and event.event_type not in obs.event_types:
        wanted = ", ".join(sorted(obs.event_types))
        return Verdict(
            obs.name,
            False,
            f"event type: the observer takes {wanted}, the event is {event.event_type}",
        )
    if obs.condition_source is None:
        return Verdict(obs.name, True)
    explained = explain(obs.condition_source, event)
    if obs.matches(event):
        return Verdict(obs.name, True, condition=explained)
    reason = f"condition: {obs.condition_source} is false for this event"
    if isinstance(event.data, dict) and DATA_ERROR_KEY in event.data:
        reason += f" (its data could not be read: {event.data[DATA_ERROR_KEY]})"
    return Verdict(obs.name, False, reason, explained)


def judge(config: Config, event: Event) -> list[Verdict]:
    return [judge_observer(obs, event) for obs in config.observers]


async def read_event(conn: Connection, event_id: int) -> Event:
    async with conn.cursor(row_factory=class_row(Event)) as cur:
        await cur.execute(query("debug_event"), {"id": event_id})
        event = await cur.fetchone()
    if event is None:
        raise NotFound(
            f"no event with id {event_id}",
            "list recent ones with pgobs debug-event --history 20",
        )
    return event


async def read_diagnosis(conn: Connection, event_id: int) -> Diagnosis:
    event = await read_event(conn, event_id)
    params = {"id": event_id}
    cur = await conn.execute(query("debug_event_fanned_out"), params)
    fanned_out = {str(r[0]): bool(r[1]) for r in await cur.fetchall()}
    jobs = await _dicts(conn, "debug_event_jobs", params)
    dead = await _dicts(conn, "debug_event_dlq", params)
    audit = await _dicts(conn, "debug_event_audit", params)
    trail = None
    cur = await conn.execute(query("trail_exists"))
    exists = await cur.fetchone()
    if exists and exists[0]:
        cur = await conn.execute(query("debug_event_trail"), params)
        trail = [r[0] for r in await cur.fetchall()]
        trail.sort(key=lambda t: str(t.get("at") or t.get("created_at") or ""))
    return Diagnosis(event, fanned_out, jobs, dead, audit, trail)


async def _dicts(conn: Connection, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = await conn.execute(query(name), params)
    columns = [c.name for c in cur.description or ()]
    return [
        {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in zip(columns, row, strict=True)
        }
        for row in await cur.fetchall()
    ]
