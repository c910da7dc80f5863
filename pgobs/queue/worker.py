"""The worker pool of one process: claims jobs in batches, runs at most ``concurrency`` actions
at once, writes their outcomes in batches, keeps leases alive and rescues expired ones.

No task per job: ``concurrency`` long-lived runners take jobs from an in-memory stream that one
claimer keeps filled; one flusher writes completions, retries and dead letters together.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import socket
import uuid
from dataclasses import dataclass

import anyio
import httpx
import psycopg
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from pgobs.actions.executor import ActionExecutor
from pgobs.config.model import Config
from pgobs.db.connect import open_pool
from pgobs.errors import ConnectionFailed
from pgobs.listener.notifier import Doorbell
from pgobs.observability import metrics
from pgobs.queue.backoff import retry_delay_s
from pgobs.queue.jobs import Job, JobStore, Outcomes
from pgobs.queue.outcome import Failure

log = logging.getLogger("pgobs.queue")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    concurrency: int = 32
    lease_s: float = 30.0
    poll_interval_s: float = 1.0
    grace_s: float = 10.0
    max_prefetch: int = 0  # 0: chosen from concurrency

    @property
    def prefetch_cap(self) -> int:
        return self.max_prefetch or max(self.concurrency * 16, 512)


# Claimed-but-unstarted jobs are kept to about this much work at the observed completion rate:
# enough to hide a claim's round trip for fast jobs, next to nothing for slow ones (which then
# stay claimable by idle workers elsewhere, and few are at stake if this process dies).
PREFETCH_S = 0.02
CLAIM_AFTER_S = 0.005  # claim again once this much work has freed room
MESSAGE_LIMIT = 4000


class _Slot:
    """What one runner is doing, for the watchdog."""

    __slots__ = ("deadline", "expired", "job", "scope")

    def __init__(self) -> None:
        self.job: Job | None = None
        self.deadline = 0.0
        self.expired: Job | None = None
        self.scope = anyio.CancelScope()


class WorkerPool:
    def __init__(
        self, dsn: str, config: Config, doorbell: Doorbell, settings: WorkerSettings | None = None
    ) -> None:
        self.dsn = dsn
        self.config = config
        self.doorbell = doorbell
        self.settings = settings or WorkerSettings()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Claimed by this process and outcome not yet written: their leases are renewed, they
        # count against the prefetch, and whatever is left at shutdown is handed back.
        self._held: set[int] = set()
        self._running: dict[int, Job] = {}
        self._slots: list[_Slot] = []
        self._outcomes = Outcomes()
        self._outcome_ready = Doorbell()
        self._capacity = Doorbell()
        self._stopping = anyio.Event()
        self._finished = 0
        self._rate = 0.0  # completions per second, smoothed
        self._window_start = 0.0
        self._window_finished = 0
        self._retries_due: list[float] = []  # a heap of when this worker's retries come due
        self.completed = 0

    def stop(self) -> None:
        """Stop claiming; running actions get ``grace_s`` to finish."""
        self._stopping.set()

    async def run(self) -> None:
        s = self.settings
        # Service work (outcomes, leases, rescue) has its own small pool, so slow database
        # actions can never starve lease renewal; the claimer has its own connection.
        async with (
            open_pool(self.dsn, max_size=3, name="pgobs-control") as control,
            open_pool(
                self.dsn, max_size=1 + min(s.concurrency, 8), name="pgobs-actions"
            ) as actions,
            httpx.AsyncClient(
                limits=httpx.Limits(max_connections=max(s.concurrency, 10)),
                follow_redirects=False,
            ) as http,
        ):
            store = JobStore(self.dsn, control, self.worker_id, s.lease_s)
            self._window_start = anyio.current_time()
            metrics.jobs_in_flight.set_function(lambda: len(self._running))
            executor = ActionExecutor(self.config, actions, http)
            send, receive = anyio.create_memory_object_stream[Job](max_buffer_size=math.inf)
            async with anyio.create_task_group() as service:
                service.start_soon(self._flusher, store)
                service.start_soon(self._lease_keeper, store)
                service.start_soon(self._rescuer, store)
                service.start_soon(self._watchdog, executor)
                async with anyio.create_task_group() as runners:
                    service.start_soon(self._grace_watchdog, runners.cancel_scope)
                    async with receive:
                        for _ in range(s.concurrency):
                            runners.start_soon(self._runner, executor, receive.clone())
                    runners.start_soon(self._claimer, store, send)
                # Runners are done: write what is left, hand back what never finished.
                with anyio.CancelScope(shield=True):
                    await self._hand_back(store)
                    await store.close()
                service.cancel_scope.cancel()

    # -- claiming ----------------------------------------------------------------------------------

    def _room(self) -> int:
        """How many jobs to claim now (0: not yet worth a round trip)."""
        s = self.settings
        target = s.concurrency + min(s.prefetch_cap, int(self._rate * PREFETCH_S))
        room = target - len(self._held)
        threshold = max(1, min(target // 4, int(self._rate * CLAIM_AFTER_S)))
        return room if room >= threshold else 0

    def _measure_rate(self) -> None:
        """Completions per second over windows of at least 50 ms, smoothed."""
        now = anyio.current_time()
        elapsed = now - self._window_start
        if elapsed >= 0.05:
            sample = (self._finished - self._window_finished) / elapsed
            self._rate = sample if self._rate == 0 else 0.5 * self._rate + 0.5 * sample
            self._window_start, self._window_finished = now, self._finished

    async def _claimer(self, store: JobStore, send: MemoryObjectSendStream[Job]) -> None:
        s = self.settings
        async with send:
            while not self._stopping.is_set():
                room = self._room()
                if room == 0:
                    await self._wait_or_stop(self._capacity, s.poll_interval_s)
                    self._measure_rate()
                    continue
                try:
                    jobs = await store.claim(room)
                except (psycopg.Error, ConnectionFailed) as exc:
                    log.warning("claiming jobs failed (%s); retrying", exc)
                    await self._wait_or_stop(self._capacity, 1.0)
                    continue
                # Hand the claimed jobs on before anything else can fail: they are leased to us.
                for job in jobs:
                    if job.id in self._held:
                        continue  # its lease lapsed while we still run it: the claim renewed it
                    self._held.add(job.id)
                    send.send_nowait(job)
                if len(jobs) < room:
                    await self._wait_or_stop(self.doorbell, self._until_due())
                self._measure_rate()

    def _until_due(self) -> float:
        """How long to sleep when nothing was due: until this worker's next scheduled retry, at
        most a poll (new jobs, rescued ones and DLQ retries ring the doorbell)."""
        now = anyio.current_time()
        while self._retries_due and self._retries_due[0] <= now:
            heapq.heappop(self._retries_due)
        poll = self.settings.poll_interval_s
        return min(poll, self._retries_due[0] - now) if self._retries_due else poll

    async def _wait_or_stop(self, bell: Doorbell, timeout: float) -> None:
        async with anyio.create_task_group() as tg:

            async def stop_waiting() -> None:
                await self._stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(stop_waiting)
            await bell.wait(timeout)
            tg.cancel_scope.cancel()

    async def _grace_watchdog(self, runners: anyio.CancelScope) -> None:
        """Stopping: running actions get ``grace_s`` to finish, then are cancelled."""
        await self._stopping.wait()
        await anyio.sleep(self.settings.grace_s)
        runners.cancel()

    # -- running -----------------------------------------------------------------------------------

    async def _runner(
        self, executor: ActionExecutor, receive: MemoryObjectReceiveStream[Job]
    ) -> None:
        """Runs jobs one after another inside one cancel scope, which the watchdog cancels when
        the current job passes its deadline; then a fresh scope takes over."""
        slot = _Slot()
        self._slots.append(slot)
        async with receive:
            while True:
                with anyio.CancelScope() as slot.scope:
                    async for job in receive:
                        if self._stopping.is_set():
                            continue  # claimed, never started: handed back at shutdown
                        self._running[job.id] = job
                        slot.deadline = anyio.current_time() + executor.timeout_s(job)
                        slot.job = job
                        try:
                            failure = await executor.run(job)
                        finally:
                            slot.job = None
                            self._running.pop(job.id, None)
                        slot.expired = None  # finished after all (it swallowed the cancel)
                        self._record(job, failure)
                    return
                expired, slot.expired = slot.expired, None
                if expired is not None:
                    self._record(expired, executor.timed_out(expired))

    async def _watchdog(self, executor: ActionExecutor) -> None:
        """Cancels the runners whose job is past its deadline, checking every ``tick`` s."""
        tick = min(0.05, max(0.005, executor.shortest_timeout_s() / 4))
        while True:
            await anyio.sleep(tick)
            now = anyio.current_time()
            for slot in self._slots:
                if slot.job is not None and slot.expired is None and slot.deadline <= now:
                    slot.expired = slot.job
                    slot.scope.cancel()

    def _record(self, job: Job, failure: Failure | None) -> None:
        out = self._outcomes
        self._finished += 1
        if failure is None:
            out.completed.append(job.id)
        else:
            message = _storable(failure.message)
            obs = self.config.observer(job.observer)
            final = failure.kind == "permanent" or job.attempts >= job.max_attempts or obs is None
            if not final and obs is not None:
                delay = retry_delay_s(obs.retry, job.attempts, failure.retry_after_s)
                out.retry_ids.append(job.id)
                out.retry_delays.append(delay)
                out.retry_errors.append(message)
            elif obs is not None and obs.on_failure == "log":
                log.warning(
                    "%s failed for good, dropped (on_failure: log): %s", job.observer, message
                )
                out.discarded.append((job.id, message, failure.kind))
            else:
                out.dead.append((job.id, message, failure.kind))
        self._outcome_ready.ring()

    # -- writing outcomes -------------------------------------------------------------------------

    async def _flusher(self, store: JobStore) -> None:
        while True:
            await self._outcome_ready.wait(math.inf)
            await self._flush(store)

    async def _flush(self, store: JobStore) -> None:
        while len(self._outcomes):
            batch, self._outcomes = self._outcomes, Outcomes()
            try:
                dead = await store.write(batch)
            except psycopg.OperationalError as exc:
                log.warning("writing %d job outcomes failed (%s); retrying", len(batch), exc)
                self._outcomes.merge(batch)
                await anyio.sleep(0.5)
                continue
            except psycopg.Error as exc:
                # A row the batch statement cannot take: write job by job so it blocks no other.
                log.error(
                    "writing %d job outcomes failed (%s); writing one by one", len(batch), exc
                )
                dead = await self._write_singly(store, batch)
            self._written(batch, dead)

    async def _write_singly(self, store: JobStore, batch: Outcomes) -> list[str]:
        dead: list[str] = []
        for single in batch.split():
            try:
                dead += await store.write(single)
            except psycopg.OperationalError:
                self._outcomes.merge(single)  # connection trouble: the next flush retries it
            except psycopg.Error as exc:
                # Dropped from the held set: its lease lapses and it runs again elsewhere.
                log.error("cannot record the outcome of job %s: %s", single.ids()[0], exc)
                self._held.discard(single.ids()[0])
        return dead

    def _written(self, batch: Outcomes, dead: list[str]) -> None:
        self._held.difference_update(batch.ids())
        self._capacity.ring()
        self.completed += len(batch.completed)
        if batch.retry_ids:
            # Due times from when the write completed: never before the run_at it stored.
            now = anyio.current_time()
            for delay in batch.retry_delays:
                heapq.heappush(self._retries_due, now + delay)
            self.doorbell.ring()
        for observer in dead:
            metrics.dlq_moved.labels(observer).inc()

    async def _hand_back(self, store: JobStore) -> None:
        """Shutdown: write the outcomes we have, release every other job we hold — queued,
        never started, or cancelled when the grace period ran out — without spending an
        attempt."""
        with anyio.move_on_after(10):
            await self._flush(store)
            back = list(self._held)
            if back:
                try:
                    await store.release(back)
                except psycopg.Error as exc:
                    log.warning(
                        "handing back %d job(s) failed (%s); their leases will expire",
                        len(back),
                        exc,
                    )
                    return
                log.info("handed %d unfinished job(s) back", len(back))

    # -- leases ------------------------------------------------------------------------------------

    async def _lease_keeper(self, store: JobStore) -> None:
        while True:
            await anyio.sleep(self.settings.lease_s / 3)
            held = list(self._held)
            if held:
                try:
                    await store.extend_leases(held)
                except psycopg.Error as exc:
                    log.warning("extending leases failed (%s)", exc)

    async def _rescuer(self, store: JobStore) -> None:
        while True:
            await anyio.sleep(self.settings.lease_s / 2)
            try:
                rescued, dead = await store.rescue_expired()
            except psycopg.Error as exc:
                log.warning("rescuing expired jobs failed (%s)", exc)
                continue
            if rescued or dead:
                log.info("rescued %d job(s) with expired leases, %d to the DLQ", rescued, len(dead))
                self.doorbell.ring()


def _storable(message: str) -> str:
    """Postgres text holds no NUL, and an error quoting a huge body need not be kept whole."""
    message = message.replace("\x00", "\\0")
    return message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT] + " …"
