"""The worker pool of one process: claims jobs in batches, runs at most ``concurrency`` actions
at once, writes their outcomes in batches, keeps leases alive and rescues expired ones.

No task per job: ``concurrency`` long-lived runners take jobs from an in-memory stream that one
claimer keeps filled; one flusher writes completions, retries and dead letters together.
"""

from __future__ import annotations

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
    claim_batch: int = 0  # 0: chosen from concurrency

    @property
    def batch(self) -> int:
        return self.claim_batch or max(self.concurrency * 16, 512)


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
        self._held: set[int] = set()  # claimed and not yet ended
        self._slots: list[_Slot] = []
        self._running: dict[int, Job] = {}
        self._released: list[int] = []
        self._outcomes = Outcomes()
        self._outcome_ready = Doorbell()
        self._capacity = Doorbell()
        self._stopping = anyio.Event()
        self.completed = 0

    def stop(self) -> None:
        """Stop claiming; running actions get ``grace_s`` to finish."""
        self._stopping.set()

    async def run(self) -> None:
        s = self.settings
        pool_size = 3 + min(s.concurrency, 8)
        async with (
            open_pool(self.dsn, max_size=pool_size, name="pgobs-worker") as pool,
            httpx.AsyncClient(
                limits=httpx.Limits(max_connections=max(s.concurrency, 10)),
                follow_redirects=False,
            ) as http,
        ):
            store = JobStore(self.dsn, pool, self.worker_id, s.lease_s)
            metrics.jobs_in_flight.set_function(lambda: len(self._running))
            executor = ActionExecutor(self.config, pool, http)
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

    async def _claimer(self, store: JobStore, send: MemoryObjectSendStream[Job]) -> None:
        s = self.settings
        async with send:
            while not self._stopping.is_set():
                room = s.batch - len(self._held)
                if room < s.batch // 4:
                    await self._wait_or_stop(self._capacity, s.poll_interval_s)
                    continue
                try:
                    jobs = await store.claim(room)
                    for job in jobs:
                        self._held.add(job.id)
                        send.send_nowait(job)
                    due = await store.next_due_in() if len(jobs) < room else None
                except psycopg.Error as exc:
                    log.warning("claiming jobs failed (%s); retrying", exc)
                    await self._wait_or_stop(self._capacity, 1.0)
                    continue
                if len(jobs) < room:
                    wait = (
                        s.poll_interval_s
                        if due is None
                        else min(s.poll_interval_s, max(due, 0.001))
                    )
                    await self._wait_or_stop(self.doorbell, wait)

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
                            self._released.append(job.id)  # claimed, never started: hand back
                            continue
                        self._running[job.id] = job
                        slot.deadline = anyio.current_time() + executor.timeout_s(job)
                        slot.job = job
                        try:
                            failure = await executor.run(job)
                        finally:
                            slot.job = None
                            del self._running[job.id]
                        slot.expired = None  # finished after all (it swallowed the cancel)
                        self._finish(job, failure)
                    return
                expired, slot.expired = slot.expired, None
                if expired is not None:
                    self._finish(expired, executor.timed_out(expired))

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

    def _finish(self, job: Job, failure: Failure | None) -> None:
        self._record(job, failure)
        self._held.discard(job.id)
        if len(self._held) < self.settings.batch // 2:
            self._capacity.ring()

    def _record(self, job: Job, failure: Failure | None) -> None:
        out = self._outcomes
        if failure is None:
            out.completed.append(job.id)
        else:
            obs = self.config.observer(job.observer)
            final = failure.kind == "permanent" or job.attempts >= job.max_attempts or obs is None
            if not final and obs is not None:
                out.retry_ids.append(job.id)
                out.retry_delays.append(
                    retry_delay_s(obs.retry, job.attempts, failure.retry_after_s)
                )
                out.retry_errors.append(failure.message)
            elif obs is not None and obs.on_failure == "log":
                log.warning(
                    "%s failed for good, dropped (on_failure: log): %s",
                    job.observer,
                    failure.message,
                )
                out.discarded.append((job.id, failure.message, failure.kind))
            else:
                out.dead.append((job.id, failure.message, failure.kind))
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
            except psycopg.Error as exc:
                log.warning("writing %d job outcomes failed (%s); retrying", len(batch), exc)
                self._merge(batch)
                await anyio.sleep(0.5)
                continue
            self.completed += len(batch.completed)
            if batch.retry_ids:
                self.doorbell.ring()  # the claimer re-reads when the next job is due
            for observer in dead:
                metrics.dlq_moved.labels(observer).inc()

    def _merge(self, batch: Outcomes) -> None:
        out = self._outcomes
        out.completed += batch.completed
        out.retry_ids += batch.retry_ids
        out.retry_delays += batch.retry_delays
        out.retry_errors += batch.retry_errors
        out.dead += batch.dead
        out.discarded += batch.discarded

    async def _hand_back(self, store: JobStore) -> None:
        with anyio.move_on_after(10):
            await self._flush(store)
            back = self._released + list(self._running)
            if back:
                await store.release(back)
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
