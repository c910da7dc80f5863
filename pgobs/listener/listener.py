"""The listener candidate: leads its ``listener_id`` or stands by, and fans events out.

Leadership is ``pg_try_advisory_lock`` on the listener's own session, keyed by the id's own
``pgobs.leadership.lock_key``, and every fan-out transaction runs on that same session: a leader
that lost its session cannot commit, so there is never split-brain. Standbys retry every
``leader_retry_s``; when the leader's process or connection dies Postgres frees the lock and a
standby leads on its next try. A frozen process keeps its session and lock, so the fan-out loop
itself beats on that session, and a standby that finds the beat older than ``leader_stale_s``
ends the leader's session and leads. The frozen process, when it thaws, finds its session gone
and stands by.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import anyio
import psycopg
from psycopg.rows import args_row

from pgobs.config.model import Config
from pgobs.db.connect import Connection, connect
from pgobs.db.notify import Doorbell
from pgobs.db.sqlfiles import query
from pgobs.errors import ConnectionFailed, PgobsError
from pgobs.events import Event
from pgobs.listener.fanout import FanoutPlan, ObserverIndex, Skipped, plan_fanout
from pgobs.listener.fleet import FleetPublisher
from pgobs.listener.maintenance import LeaderMaintenance
from pgobs.listener.wakelock import WakeLock
from pgobs.observability import metrics
from pgobs.reliability.dedup import RedisDedup
from pgobs.reliability.redisconn import RedisSettings

log = logging.getLogger("pgobs.listener")

FIRST_IDLE_WAIT_S = 0.001
# While writers that skipped NOTIFY are still open, the wake-up lock is not back yet and the
# idle leader reads this often at the least (see WakeLock).
UNANNOUNCED_POLL_S = 0.1
BUSY_BATCH = 8  # a batch this large means writers outpace us: stop asking them for wake-ups
NOTHING_FANNED_OUT = "3:3:"  # the snapshot in which no transaction is visible
FENCE_TAKEOVER_TRIES = 50  # after ending a frozen leader's session: 1 s of tries for its lock
FENCE_DENIED_LOG_S = 60.0  # a standby that may not end the leader's session says so this often

State = Literal["initializing", "connecting", "running", "recovering", "stopped"]


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    listener_id: str = "default"
    batch_size: int = 500
    poll_interval_s: float = 0.5
    leader_retry_s: float = 0.25
    heartbeat_s: float = 1.0
    batch_bytes: int = 32 * 1024 * 1024  # past its first row, a batch holds at most this much data
    open_writer_warn_s: float = 60.0  # warn about a transaction holding events back this long
    leader_stale_s: float = 3.0  # a leader whose fan-out loop was silent this long is fenced out
    redis: RedisSettings | None = None  # dedup's fast path, when configured
    trail: bool = True  # record every event, and the observers it matched, in pgobs.trail

    def __post_init__(self) -> None:
        # The loop beats every quarter of leader_stale_s at most; it must come round that often
        # even when idle, or a live leader would look frozen.
        if self.poll_interval_s > self.leader_stale_s / 4:
            raise PgobsError(
                f"leader_stale_s ({self.leader_stale_s:g}) must be at least 4 x the poll "
                f"interval ({self.poll_interval_s:g} s)",
                "raise --leader-stale-seconds",
            )

    @property
    def beat_s(self) -> float:
        return self.leader_stale_s / 4


class LeadershipLost(Exception):
    """The leadership row names another session: this one no longer leads."""


@dataclass(slots=True)
class Checkpoint:
    """What has been fanned out, as PgQ keeps it: every event whose transaction is visible in
    ``snapshot``, plus, while a slice is drained, the events visible in ``target`` and not in
    ``snapshot`` up to (``txid``, ``event_id``) in (txid, id) order. A new snapshot is taken
    only once the slice is drained, so a batch that cannot take everything loses and doubles
    nothing."""

    snapshot: str = NOTHING_FANNED_OUT
    target: str | None = None
    txid: int = 0
    event_id: int = 0

    def position(self) -> dict[str, Any]:
        """The read's parameters: within the target's slice, after the last event taken."""
        inside = self.target is not None
        return {
            "snapshot": self.snapshot,
            "target": self.target,
            "txid": self.txid if inside else 0,
            "event_id": self.event_id if inside else 0,
        }


@dataclass(frozen=True, slots=True)
class Batch:
    """Events read from the slice and their plan (None when the slice is empty)."""

    target: str  # the slice's target snapshot
    events: list[Event]
    size: int  # bytes received
    drained: bool  # the slice had no more than this
    plan: FanoutPlan | None
    started: float  # perf_counter() when its read began

    def after(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """Where the checkpoint stands once this batch is written (a read's position): a new
        snapshot when it drained the slice, else inside the slice after its last event."""
        if self.drained:
            return {"snapshot": self.target, "target": None, "txid": 0, "event_id": 0}
        last = self.events[-1]
        return {
            "snapshot": checkpoint.snapshot,
            "target": self.target,
            "txid": last.txid,
            "event_id": last.id,
        }


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a task group raised: the write's, else the read's (the other is cancelled)."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


class Listener:
    def __init__(
        self,
        dsn: str,
        config: Config,
        doorbell: Doorbell,
        settings: ListenerSettings | None = None,
        *,
        jobs_written: Callable[[], object] | None = None,
    ) -> None:
        self.dsn = dsn
        self.settings = settings or ListenerSettings()
        self.index = ObserverIndex(config)
        self.fleet = FleetPublisher(self.index.refs)
        self.doorbell = doorbell
        # Called after a fan-out that wrote jobs, from the listener's thread: wakes a worker in
        # this process without waiting for the NOTIFY to come back through the server.
        self.jobs_written = jobs_written
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.state: State = "initializing"
        self.is_leader = False
        self.events_processed = 0
        self.became_leader = anyio.Event()
        self._labels = {"listener_id": self.settings.listener_id}
        self._warned_writers: set[str] = set()  # transaction ids already named in a warning
        self._beaten_at = 0.0  # time.monotonic() of the fan-out loop's last beat
        self._reads_in_flight = 0  # reads running on the reader's session
        self._fence_denied_at: float | None = None
        windows = [obs.dedup.window_s for obs in config.observers if obs.dedup is not None]
        self.dedup_redis = (
            RedisDedup(self.settings.redis, max(windows))
            if self.settings.redis is not None and windows
            else None
        )

    # -- the candidate loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Stand by, lead when the lock is free, recover from any lost connection."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._heartbeat_loop)
            try:
                await self._candidate_loop()
            finally:
                self._set_state("stopped", leader=False)
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await self._write_heartbeat(lag=(0, 0.0))
                    if self.dedup_redis is not None:
                        await self.dedup_redis.close()
                tg.cancel_scope.cancel()

    async def _candidate_loop(self) -> None:
        delay = 0.1
        while True:
            self._set_state("connecting", leader=False)
            try:
                # pg_stat_activity shows which process leads: "pgobs listener default pid 123".
                name = f"pgobs listener {self.settings.listener_id} pid {os.getpid()}"
                conn = await connect(self.dsn, autocommit=True, application_name=name[:63])
            except Exception as exc:
                log.warning("listener cannot connect (%s); retrying in %.1fs", exc, delay)
                self._set_state("recovering", leader=False)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            try:
                await conn.execute(query("listener_session_settings"))
                lock_key = await self._lock_key(conn)
                self._set_state("running", leader=False)
                while True:
                    if await self._try_lead(conn, lock_key):
                        await self._lead(conn)
                    await anyio.sleep(self.settings.leader_retry_s)
            except (psycopg.OperationalError, ConnectionFailed) as exc:
                # ConnectionFailed: the reader session could not be opened on taking the lead
                # (connections full, a pooler restarting): stand by and try again.
                log.warning("listener %s lost its session (%s)", self.settings.listener_id, exc)
                self._set_state("recovering", leader=False)
            except LeadershipLost as exc:
                log.warning("listener %s: %s; standing by", self.settings.listener_id, exc)
                self._set_state("recovering", leader=False)
            except psycopg.Error as exc:
                # A statement failed on a live session: leadership is given up with the session;
                # wait before trying again rather than spin on the same batch.
                log.error(
                    "listener %s: a batch failed (%s); retrying in 1s",
                    self.settings.listener_id,
                    exc,
                )
                self._set_state("recovering", leader=False)
                with anyio.CancelScope(shield=True):
                    await conn.close()
                await anyio.sleep(1.0)
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.close()
                # A batch lost with the session sits in a reference cycle through the exception
                # (up to its 32 MB of rows); terminated again and again, it piled up to GBs.
                gc.collect()

    async def _lock_key(self, conn: Connection) -> int:
        cur = await conn.execute(query("leader_lock_key"), self._labels)
        row = await cur.fetchone()
        assert row is not None  # the statement returns the found or the made row
        return int(row[0])

    async def _try_lead(self, conn: Connection, lock_key: int) -> bool:
        """Take the lock if it is free, or if its holder's fan-out loop fell silent."""
        if await self._take_lock(conn, lock_key):
            return True
        if not await self._fence_stale_leader(conn):
            return False
        # Its backend is exiting; the lock frees when it is gone (another standby may win it).
        for _ in range(FENCE_TAKEOVER_TRIES):
            if await self._take_lock(conn, lock_key):
                return True
            await anyio.sleep(0.02)
        return False

    async def _take_lock(self, conn: Connection, lock_key: int) -> bool:
        params = {**self._labels, "lock_key": lock_key}
        cur = await conn.execute(query("try_leader_lock"), params)
        row = await cur.fetchone()
        if row and row[0]:
            self._beaten_at = time.monotonic()  # the statement wrote the first beat
            return True
        return False

    async def _fence_stale_leader(self, conn: Connection) -> bool:
        """End the session of a leader whose beat is stale; True when one was ended."""
        params = {**self._labels, "stale_s": self.settings.leader_stale_s}
        try:
            cur = await conn.execute(query("fence_stale_leader"), params)
            stale = await cur.fetchall()
        except psycopg.errors.InsufficientPrivilege as exc:
            self._fence_denied(str(exc.diag.message_primary or exc))
            return False
        fenced = False
        for pid, silent_s, ended in stale:
            if ended is None:
                self._fence_denied(f"the session of backend pid {pid} belongs to another role")
                continue
            log.warning(
                "listener %s: the leader's fan-out loop has been silent for %.1fs; ended its "
                "session (backend pid %s) to take over",
                self.settings.listener_id,
                silent_s,
                pid,
            )
            metrics.leader_fenced.labels(**self._labels).inc()
            fenced = True
        return fenced

    def _fence_denied(self, reason: str) -> None:
        """A frozen leader this role may not fence: say so, once a minute."""
        now = time.monotonic()
        if self._fence_denied_at is not None and now - self._fence_denied_at < FENCE_DENIED_LOG_S:
            return
        self._fence_denied_at = now
        log.error(
            "listener %s: the leader looks frozen, but this role may not end its session (%s); "
            "run every candidate as one role, or grant this one pg_signal_backend and "
            "pg_read_all_stats",
            self.settings.listener_id,
            reason,
        )

    async def _beat(self, conn: Connection) -> None:
        """The fan-out loop's proof of life, on the leader's session, at most every ``beat_s``.
        Written from the loop itself: a loop that stops turning stops beating."""
        now = time.monotonic()
        if now - self._beaten_at < self.settings.beat_s:
            return
        cur = await conn.execute(query("leader_beat"), self._labels)
        if await cur.fetchone() is None:
            raise LeadershipLost("the leadership row names another session")
        self._beaten_at = now

    async def _lead(self, conn: Connection) -> None:
        checkpoint = await self._load_checkpoint(conn)
        # Reads go to a session of their own, so the next batch is read and planned while the
        # leader's session writes this one (see _fan_out_loop).
        name = f"pgobs reader {self.settings.listener_id} pid {os.getpid()}"
        reader = await connect(self.dsn, autocommit=True, application_name=name[:63])
        self._set_state("running", leader=True)
        self.became_leader.set()
        log.info("listener %s is the leader (%s)", self.settings.listener_id, self.instance_id)
        wake = WakeLock(self.dsn)
        try:
            await reader.execute(query("listener_session_settings"))
            async with anyio.create_task_group() as tg:
                tg.start_soon(wake.run)
                tg.start_soon(LeaderMaintenance(self.dsn, self.settings.listener_id).run)
                tg.start_soon(self._beat_during_reads, conn)
                await self._fan_out_loop(conn, reader, checkpoint, wake)
        except BaseExceptionGroup as group:
            # WakeLock.run and LeaderMaintenance.run never raise: the loop's own error, for
            # _candidate_loop to handle.
            raise group.exceptions[0] from None
        finally:
            with anyio.CancelScope(shield=True):
                await reader.close()

    async def _fan_out_loop(
        self, conn: Connection, reader: Connection, checkpoint: Checkpoint, wake: WakeLock
    ) -> None:
        idle_wait = FIRST_IDLE_WAIT_S
        ahead: list[Batch] = []  # the next batch, read while this one was written
        while True:
            await self._beat(conn)
            fetched = await self._fan_out_batch(conn, reader, checkpoint, ahead)
            if fetched:
                idle_wait = FIRST_IDLE_WAIT_S
                if fetched >= BUSY_BATCH:
                    # Events arrive faster than one at a time: read on unwoken, since every
                    # NOTIFY costs its writer a cluster-wide lock at commit.
                    wake.want(False)
                continue
            wake.want(True)
            if wake.held:
                # Every commit from now on is announced (WakeLock): sleep until one is.
                await self.doorbell.wait(self.settings.poll_interval_s)
                continue
            # Writers that skipped NOTIFY are still open. Taking the lock back announces them
            # all once the last has ended; until then read often, so that one that ends early
            # does not wait for one that stays open.
            rung = await self.doorbell.wait(idle_wait)
            idle_wait = FIRST_IDLE_WAIT_S if rung else min(idle_wait * 2, UNANNOUNCED_POLL_S)

    async def _load_checkpoint(self, conn: Connection) -> Checkpoint:
        cur = await conn.execute(query("load_checkpoint"), self._labels)
        row = await cur.fetchone()
        if row is None:
            return Checkpoint()
        return Checkpoint(snapshot=row[0], target=row[1], txid=row[2], event_id=row[3])

    # -- one batch: read and planned, then written in one transaction ------------------------

    async def _fan_out_batch(
        self, conn: Connection, reader: Connection, checkpoint: Checkpoint, ahead: list[Batch]
    ) -> int:
        """The next batch (the one in ``ahead``, else read on ``reader``) written on the leader's
        session ``conn``; returns how many events it held. A full batch means more wait: the
        next one is read and planned into ``ahead`` while this one is written. The read needs
        no leader (see _read), and a failed write loses it with the session, as it would lose
        an unread batch."""
        batch = ahead.pop() if ahead else await self._read(reader, checkpoint.position())
        if not batch.events:
            # The slice is drained: what is visible in the target has all been fanned out.
            # Kept in memory only; read from the stored checkpoint, the slice is empty too.
            checkpoint.snapshot, checkpoint.target = batch.target, None
            return 0
        try:
            async with anyio.create_task_group() as tg:
                if not batch.drained:
                    tg.start_soon(self._read_ahead, reader, batch.after(checkpoint), ahead)
                await self._write(conn, checkpoint, batch)
        except BaseExceptionGroup as group:
            raise _first(group) from None
        return len(batch.events)

    async def _read_ahead(
        self, reader: Connection, position: dict[str, Any], ahead: list[Batch]
    ) -> None:
        ahead.append(await self._read(reader, position))

    async def _beat_during_reads(self, conn: Connection) -> None:
        """Beats on the leader's session while a read runs on the reader's: a read waiting on a
        lock (DDL, VACUUM FULL) is a busy leader, not a frozen one. When reads ran on the
        leader's session, the fence saw it inside a statement and left it alone; idle beside
        a slow read, it was fenced. Only during reads: a loop stuck elsewhere stops beating."""
        while True:
            await anyio.sleep(self.settings.beat_s / 2)
            if self._reads_in_flight:
                await self._beat(conn)

    async def _read(self, reader: Connection, position: dict[str, Any]) -> Batch:
        """The slice's next events after ``position``, and their plan.

        The read needs no transaction, nor the leader's session: the events it returns belong
        to transactions visible in the target snapshot, which have committed and never change,
        and the write is atomic on the session that holds the leader lock, so a leader that
        lost its session writes nothing. While it runs, the leader's session keeps beating
        (_beat_during_reads).
        """
        started = time.perf_counter()
        self._reads_in_flight += 1
        try:
            async with reader.cursor(row_factory=args_row(_read_row)) as cur:
                await cur.execute(
                    query("fetch_committed_events"),
                    {
                        **position,
                        "limit": self.settings.batch_size,
                        "max_bytes": self.settings.batch_bytes,
                    },
                )
                rows = await cur.fetchall()
        finally:
            self._reads_in_flight -= 1
        events = [row.event for row in rows if row.event is not None]
        size = sum(row.size for row in rows)
        drained = len(rows) < self.settings.batch_size and size < self.settings.batch_bytes
        plan = plan_fanout(events, self.index) if events else None
        return Batch(rows[0].target, events, size, drained, plan, started)

    async def _write(self, conn: Connection, checkpoint: Checkpoint, batch: Batch) -> None:
        """The batch's jobs, trail records and the new checkpoint, in one statement on the
        leader's session."""
        plan = batch.plan
        assert plan is not None
        # A big batch can take a while to read and plan: beat again (when due), or a standby
        # could take this busy leader for a frozen one.
        if self.is_leader:
            await self._beat(conn)
        if self.dedup_redis is not None and plan.gates.items:
            await self.dedup_redis.screen(plan.gates)
        after = batch.after(checkpoint)
        last = batch.events[-1]
        written = await conn.execute(
            query("fan_out"),
            {
                **plan.params(),
                "trail_event_ids": [e.id for e in batch.events] if self.settings.trail else [],
                "listener_id": self.settings.listener_id,
                "snapshot": after["snapshot"],
                "target": after["target"],
                "txid": last.txid,
                "event_id": last.id,
                "last_processed_at": last.created_at,
            },
        )
        plan.skipped = [Skipped(*row) for row in await written.fetchall() if row[0] is not None]
        if self.dedup_redis is not None:
            await self.dedup_redis.committed(plan.gates)
        self._count_skipped(plan)
        checkpoint.snapshot, checkpoint.target = after["snapshot"], after["target"]
        checkpoint.txid, checkpoint.event_id = last.txid, last.id
        if plan.matched and self.jobs_written is not None:
            self.jobs_written()
        events = len(batch.events)
        self.events_processed += events
        metrics.events_processed.labels(**self._labels).inc(events)
        metrics.listener_batch_bytes.observe(batch.size)
        for observer, count in plan.matched.items():
            metrics.jobs_created.labels(observer).inc(count)
        for observer, count in plan.events_matched.items():
            metrics.events_matched.labels(observer).inc(count)
        elapsed = time.perf_counter() - batch.started
        metrics.event_processing_duration.observe(elapsed / events)

    def _count_skipped(self, plan: FanoutPlan) -> None:
        for skipped in plan.skipped:
            plan.matched[skipped.observer] -= len(self.index.refs[skipped.observer])
            metrics.dedup_skipped.labels(skipped.observer).inc()
            log.debug(
                "observer %s skipped event %d: a duplicate (fingerprint %s) within its window",
                skipped.observer,
                skipped.event_id,
                skipped.fingerprint,
            )

    # -- liveness -----------------------------------------------------------------------------

    def _set_state(self, state: State, *, leader: bool) -> None:
        self.state = state
        self.is_leader = leader
        metrics.listener_health.labels(**self._labels).set(1 if state == "running" else 0)
        metrics.listener_is_leader.labels(**self._labels).set(1 if leader else 0)

    async def _heartbeat_loop(self) -> None:
        conn: Connection | None = None
        try:
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await connect(self.dsn, autocommit=True)
                    lag = (0, 0.0)
                    if self.is_leader:
                        lag = await self._measure_lag(conn)
                        await conn.execute(
                            query("retire_stale_listeners"),
                            {**self._labels, "instance_id": self.instance_id},
                        )
                    metrics.listener_lag_events.labels(**self._labels).set(lag[0])
                    metrics.listener_lag_seconds.labels(**self._labels).set(lag[1])
                    await self._write_heartbeat(lag, conn)
                    await self.fleet.tick(conn, leading=self.is_leader)
                except Exception as exc:
                    log.warning("listener heartbeat failed (%s)", exc)
                    if conn is not None:
                        await conn.close()
                    conn = None
                await anyio.sleep(self.settings.heartbeat_s)
        finally:
            if conn is not None:  # cancelled: the process stops or the listener does
                with anyio.CancelScope(shield=True):
                    await conn.close()

    async def _measure_lag(self, conn: Connection) -> tuple[int, float]:
        """Committed events not fanned out yet and the oldest one's age; and whoever holds
        events back by staying open, named in a warning."""
        cur = await conn.execute(query("listener_lag"), self._labels)
        row = await cur.fetchone()
        lag = (int(row[0]), float(row[1])) if row else (0, 0.0)
        await self._check_open_writers(conn)
        return lag

    async def _check_open_writers(self, conn: Connection) -> None:
        cur = await conn.execute(query("open_event_writers"))
        writers = await cur.fetchall()
        oldest = writers[0][3] if writers else 0.0
        metrics.listener_open_writer_seconds.labels(**self._labels).set(oldest)
        still_open = set()
        for pid, database, xid, age_s, application in writers:
            still_open.add(xid)
            if age_s < self.settings.open_writer_warn_s or xid in self._warned_writers:
                continue
            self._warned_writers.add(xid)
            log.warning(
                "listener %s: transaction %s (backend pid %s, database %s%s) has been open for "
                "%.0fs after writing events; they are fanned out when it commits",
                self.settings.listener_id,
                xid,
                pid,
                database,
                f", application {application!r}" if application else "",
                age_s,
            )
        self._warned_writers &= still_open

    async def _write_heartbeat(
        self, lag: tuple[int, float], conn: Connection | None = None
    ) -> None:
        params: dict[str, Any] = {
            "instance_id": self.instance_id,
            "listener_id": self.settings.listener_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "state": self.state,
            "is_leader": self.is_leader,
            "events_processed": self.events_processed,
            "lag_events": lag[0],
            "lag_seconds": lag[1],
        }
        if conn is not None:
            await conn.execute(query("listener_heartbeat"), params)
            return
        try:
            own = await connect(self.dsn, autocommit=True)
        except ConnectionFailed as exc:
            log.warning("listener %s could not record its state (%s)", self.instance_id, exc)
            return
        try:
            await own.execute(query("listener_heartbeat"), params)
        finally:
            await own.close()


@dataclass(frozen=True, slots=True)
class _Read:
    """A row of fetch_committed_events: the slice's target snapshot, and an event of it (None
    when the slice is empty) with its size as received."""

    target: str
    event: Event | None
    size: int


def _read_row(
    target: str,
    id: int | None,
    txid: int | None,
    entity_type: str | None,
    entity_id: str | None,
    event_type: str | None,
    data: Any,
    old_data: Any,
    changed_fields: list[str] | None,
    tenant: str | None,
    actor: str | None,
    created_at: datetime | None,
    idempotency_key: str | None,
    size: int | None,
) -> _Read:
    """The query's columns, in order (see ``_claimed_job``)."""
    if id is None or entity_type is None or event_type is None:
        return _Read(target, None, 0)
    event = Event(
        id=id,
        txid=txid or 0,
        entity_type=entity_type,
        entity_id=entity_id,
        event_type=event_type,
        data=data,
        old_data=old_data,
        changed_fields=changed_fields,
        tenant=tenant,
        actor=actor,
        created_at=created_at,
        idempotency_key=idempotency_key,
    )
    return _Read(target, event, size or 0)
