"""What ``pgobs status`` reads from the database, and how it judges it healthy or not."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from pgobs.db.connect import Connection
from pgobs.db.sqlfiles import query
from pgobs.queue import dlq


@dataclass(frozen=True, slots=True)
class Instance:
    """A row of pgobs.listeners: one listener candidate process."""

    listener_id: str
    instance_id: str
    host: str
    pid: int
    state: str
    is_leader: bool
    heartbeat_age_s: float
    events_processed: int
    started_at: datetime
    lag_events: int  # as the leader measured it at its last heartbeat
    lag_seconds: float


@dataclass(frozen=True, slots=True)
class OpenWriter:
    """An open transaction that wrote events: they go out when it commits (open_event_writers)."""

    pid: str
    database: str
    xid: str
    open_s: float
    application: str


@dataclass(slots=True)
class ListenerStatus:
    """One listener id: its instances, the leader among them, and its lag measured now."""

    listener_id: str
    instances: list[Instance]
    lag_events: int = 0
    lag_seconds: float = 0.0
    lag_measured: str = "now"  # or "at the leader's last heartbeat", for a role that may not

    @property
    def leader(self) -> Instance | None:
        for i in self.instances:
            if i.is_leader and i.state == "running":
                return i
        return None


@dataclass(frozen=True, slots=True)
class ObserverJobs:
    observer: str
    ready: int
    running: int
    retrying: int
    oldest_age_s: float


@dataclass(frozen=True, slots=True)
class Sink:
    """Where the trail ships (pgobs.trail_shipping): what went, and what waits."""

    sink: str
    shipped: int
    rejected: int
    last_shipped_age_s: float  # since the cursor last moved
    backlog: int  # documents waiting, counted up to 1,000,000
    oldest_age_s: float  # of the oldest waiting


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_lag_s: float
    max_heartbeat_age_s: float


@dataclass(slots=True)
class Status:
    listeners: list[ListenerStatus]
    open_writers: list[OpenWriter]
    jobs: list[ObserverJobs]
    dlq: list[dict[str, Any]]
    circuits: list[dict[str, Any]]
    sinks: list[Sink] | None  # None: this role may not read the shipping cursor
    problems: list[str] = field(default_factory=list)


async def read_status(conn: Connection, listener_id: str | None) -> Status:
    async with conn.cursor(row_factory=class_row(Instance)) as instances_cur:
        await instances_cur.execute(query("status_listeners"), {"listener_id": listener_id})
        instances = await instances_cur.fetchall()
    listeners: dict[str, ListenerStatus] = {}
    for instance in instances:
        listeners.setdefault(
            instance.listener_id, ListenerStatus(instance.listener_id, [])
        ).instances.append(instance)
    checkpointed = await conn.execute(
        query("status_checkpointed_listener_ids"), {"listener_id": listener_id}
    )
    for (held_by,) in await checkpointed.fetchall():
        listeners.setdefault(held_by, ListenerStatus(held_by, []))
    for status in listeners.values():
        await _measure_lag(conn, status)
    cur = await conn.execute(query("open_event_writers"))
    writers = [OpenWriter(*row) for row in await cur.fetchall()]
    async with conn.cursor(row_factory=class_row(ObserverJobs)) as jobs_cur:
        await jobs_cur.execute(query("status_jobs"))
        jobs = await jobs_cur.fetchall()
    circuits_cur = await conn.execute(query("status_open_circuits"))
    circuits = [row[0] for row in await circuits_cur.fetchall()]
    dead = await dlq.stats(conn, by_observer=True)
    return Status(
        sorted(listeners.values(), key=lambda s: s.listener_id),
        writers,
        jobs,
        dead,
        circuits,
        await _sinks(conn),
    )


async def _sinks(conn: Connection) -> list[Sink] | None:
    """Each sink the trail has shipped to, with its backlog (trail_ship_backlog)."""
    try:
        cur = await conn.execute(query("status_sinks"))
    except psycopg.errors.InsufficientPrivilege:
        return None
    sinks = []
    for name, shipped, rejected, age in await cur.fetchall():
        backlog = await conn.execute(query("trail_ship_backlog"), {"sink": name})
        row = await backlog.fetchone()
        waiting, oldest = row if row is not None else (0, 0.0)
        sinks.append(Sink(name, shipped, rejected, age, waiting, oldest))
    return sinks


async def _measure_lag(conn: Connection, status: ListenerStatus) -> None:
    """The lag now; for a role that may not read events as the listener does (pgobs_operator
    may not execute pgobs.slice_events), the lag the leader wrote at its last heartbeat."""
    try:
        cur = await conn.execute(query("listener_lag"), {"listener_id": status.listener_id})
    except psycopg.errors.InsufficientPrivilege:
        leader = status.leader
        if leader is not None:
            status.lag_events, status.lag_seconds = leader.lag_events, leader.lag_seconds
        status.lag_measured = "at the leader's last heartbeat"
        return
    row = await cur.fetchone()
    if row is not None:
        status.lag_events, status.lag_seconds = int(row[0]), float(row[1])


def judge(status: Status, limits: Thresholds, listener_id: str | None) -> list[str]:
    """Why the deployment is unhealthy, one reason a line; empty when it is healthy."""
    problems: list[str] = []
    if not status.listeners:
        which = f"listener {listener_id!r}" if listener_id else "listener"
        return [f"no {which} has run against this database: nothing fans events out"]
    for listener in status.listeners:
        name = listener.listener_id
        leader = listener.leader
        if not listener.instances:
            literal = name.replace("'", "''")
            problems.append(
                f"listener {name!r} has no instance left but its checkpoint holds back "
                "retention: pgobs.run_maintenance() keeps every event it has not fanned out; "
                f"start it again, or retire it: DELETE FROM pgobs.checkpoints WHERE listener_id "
                f"= '{literal}' (and from pgobs.leadership)"
            )
            continue
        if leader is None:
            problems.append(f"listener {name!r} has no leader: no running instance leads it")
        elif leader.heartbeat_age_s > limits.max_heartbeat_age_s:
            problems.append(
                f"listener {name!r}: the leader {leader.host}:{leader.pid} has not beaten for "
                f"{leader.heartbeat_age_s:.0f}s (limit {limits.max_heartbeat_age_s:g}s)"
            )
        problems.extend(
            f"listener {name!r}: standby {i.host}:{i.pid} ({i.state}) has not beaten for "
            f"{i.heartbeat_age_s:.0f}s (limit {limits.max_heartbeat_age_s:g}s)"
            for i in listener.instances
            if i is not leader
            and i.state != "stopped"
            and i.heartbeat_age_s > limits.max_heartbeat_age_s
        )
        if listener.lag_seconds > limits.max_lag_s:
            problems.append(
                f"listener {name!r} lags {listener.lag_seconds:.0f}s "
                f"({listener.lag_events} events not fanned out; limit {limits.max_lag_s:g}s)"
            )
    return problems
