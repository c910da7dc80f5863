"""Each claimed job's life in this process, from its claim to its written outcome.

A job is *claimed* (waiting in the runners' stream), then *started*, then *finished* (its outcome
waits to be written), or *parked* (finished, but its sync handler still runs in a thread: the
outcome waits for the thread, so the job is never retried beside its previous attempt). One
writer records starts and outcomes in batches, in one statement per batch. Every write and every
lease extension reports which jobs are still ours; a job that is not was rescued from a lapsed
lease and may run elsewhere: its run is stopped and its result discarded.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import anyio
import psycopg

from pgobs.actions.failures import Failure
from pgobs.actions.threads import ThreadRunner
from pgobs.config.model import Config
from pgobs.db.notify import Doorbell
from pgobs.observability import metrics
from pgobs.queue.backoff import retry_delay_s
from pgobs.queue.jobs import Batch, Job, JobStore, Outcome

log = logging.getLogger("pgobs.queue")

MESSAGE_LIMIT = 4000
# A start is written once its job has run this long: a faster job writes only its outcome (which
# carries the attempt), so counting starts costs no statement of its own for most jobs. A worker
# killed within this much of a start does not count that attempt (the claims guard bounds a job
# that kills its worker every time).
START_RECORD_S = 0.05
DRAIN_S = 10.0  # at shutdown, how long outcomes may take to be written

State = Literal["claimed", "started", "finished", "parked"]
FaultHook = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class Held:
    job: Job
    state: State = "claimed"
    stop: Callable[[], None] | None = None  # stops its run, when the lease is lost
    parked: Failure | None = None


class Completer:
    def __init__(
        self,
        store: JobStore,
        config: Config,
        jobs_bell: Doorbell,
        faults: FaultHook | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.jobs_bell = jobs_bell
        self.held: dict[int, Held] = {}
        self.capacity = Doorbell()  # rung when jobs leave: the producer may claim more
        self.held_bytes = 0  # event data of the held jobs, as received
        self.parked = 0  # held jobs waiting for a stuck thread: not work the runners can do
        self.finished = 0
        self.completed = 0
        self._faults = faults
        self._pending = Batch()
        self._starts: dict[int, tuple[float, int]] = {}  # job id -> (when to write, attempt)
        self._ready = Doorbell()
        self._flushing = anyio.Lock()  # one writer: drain waits for a batch half written
        self._writing: set[int] = set()
        self._uncertain: set[int] = set()  # written once by a write whose result we never saw
        self._retries_due: list[float] = []  # a heap of when this worker's retries come due

    # -- the runners' side --------------------------------------------------------------------

    def claimed(self, jobs: list[Job]) -> list[Job]:
        """Take claimed jobs in; returns those new to us (a job still held was re-claimed
        after its lease lapsed, which renewed the lease: it is already ours)."""
        fresh = [job for job in jobs if job.id not in self.held]
        for job in fresh:
            self.held[job.id] = Held(job)
            self.held_bytes += job.size
        return fresh

    def start(
        self, job: Job, stop: Callable[[], None], *, record_in: float = START_RECORD_S
    ) -> bool:
        """Record that ``job`` starts now; False when it is no longer ours (do not run it)."""
        held = self.held.get(job.id)
        if held is None:
            return False
        held.state = "started"
        held.stop = stop
        self._starts[job.id] = (anyio.current_time() + record_in, job.attempt)
        if len(self._starts) == 1:
            self._ready.ring()  # the writer sets its timer for this start
        return True

    async def start_recorded(self, job: Job, stop: Callable[[], None]) -> bool:
        """``start``, and wait until the start is written: for a job that may have killed the
        worker that ran it last (``Job.suspect``). False when it is no longer ours."""
        if not self.start(job, stop, record_in=0.0):
            return False
        await self.flush()
        return job.id in self.held

    def finish(self, job: Job, failure: Failure | None, *, defer_s: float | None = None) -> None:
        """``job``'s run ended; its outcome is written with the next batch. ``defer_s``: it
        failed while its circuit is open, so it waits that long instead of retrying."""
        held = self.held.get(job.id)
        if held is None:
            return  # lost meanwhile: the result is discarded
        held.state = "finished"
        held.stop = None
        self.finished += 1
        self._starts.pop(job.id, None)
        self._pending.starts.pop(job.id, None)
        self._pending.outcomes[job.id] = self._outcome(job, failure, defer_s)
        self._ready.ring()

    def defer(self, job: Job, delay_s: float) -> None:
        """``job`` did not run (its circuit is open): back in ``delay_s``, no attempt spent."""
        held = self.held.get(job.id)
        if held is None:
            return
        held.state = "finished"
        self.finished += 1
        self._pending.outcomes[job.id] = Outcome(job.id, job.attempt - 1, "defer", delay_s=delay_s)
        self._ready.ring()

    def park(self, job: Job, failure: Failure, threads: ThreadRunner) -> None:
        """``job`` timed out but its thread runs on: write ``failure`` once it returns."""
        held = self.held.get(job.id)
        if held is None:
            return
        held.state = "parked"
        held.parked = failure
        self.parked += 1
        threads.on_return(job.run_key, lambda: self._unpark(job.id))

    def _unpark(self, job_id: int) -> None:
        self.parked -= 1
        held = self.held.get(job_id)
        if held is not None and held.parked is not None:
            self.finish(held.job, held.parked)

    def finish_parked(self) -> None:
        """Shutdown: the process exits with its stuck threads; their jobs' outcomes go now."""
        for held in list(self.held.values()):
            if held.parked is not None:
                self.finish(held.job, held.parked)

    def unstarted(self) -> list[int]:
        return [job_id for job_id, held in self.held.items() if held.state == "claimed"]

    def next_retry_in(self, now: float, longest: float) -> float:
        """Seconds until this worker's next retry comes due, at most ``longest``."""
        while self._retries_due and self._retries_due[0] <= now:
            heapq.heappop(self._retries_due)
        return min(longest, self._retries_due[0] - now) if self._retries_due else longest

    def _outcome(self, job: Job, failure: Failure | None, defer_s: float | None) -> Outcome:
        if failure is None:
            return Outcome(job.id, job.attempt, "completed")
        message = _storable(failure.message)
        if defer_s is not None and failure.kind == "transient":
            return Outcome(job.id, job.attempt, "defer", message, "transient", defer_s)
        obs = self.config.observer(job.observer)
        if obs is not None and failure.kind == "transient" and job.attempt < job.max_attempts:
            delay = retry_delay_s(obs.retry, job.attempt, failure.retry_after_s)
            return Outcome(job.id, job.attempt, "retry", message, "transient", delay)
        if obs is not None and obs.on_failure == "log":
            log.warning("%s failed for good, dropped (on_failure: log): %s", job.observer, message)
            return Outcome(job.id, job.attempt, "drop", message, failure.kind)
        return Outcome(job.id, job.attempt, "dead", message, failure.kind)

    # -- the writer ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Write outcomes as they come, and starts as they come due, until cancelled."""
        while True:
            if self._starts:
                due = next(iter(self._starts.values()))[0]
                await self._ready.wait(max(0.0, due - anyio.current_time()))
            else:
                await self._ready.wait(math.inf)
            await self.flush()

    async def flush(self, *, every_start: bool = False) -> None:
        """Write everything pending (starts only once due, unless ``every_start``); connection
        trouble is retried until it is written."""
        async with self._flushing:
            self._take_starts(every_start)
            await self._flush()

    def _take_starts(self, every_start: bool) -> None:
        now = anyio.current_time()
        for job_id, (due, attempt) in list(self._starts.items()):
            if due > now and not every_start:
                break  # in start order, so the rest are later still
            del self._starts[job_id]
            self._pending.starts[job_id] = attempt

    async def _flush(self) -> None:
        while len(self._pending):
            batch, self._pending = self._pending, Batch()
            self._writing = batch.ids()
            try:
                await self._fault("write")
                written = await self.store.write(batch)
                await self._fault("written")
            except psycopg.OperationalError as exc:
                # Whether it committed is unknown: write it again (every branch is guarded by
                # the lease, so nothing is written twice).
                log.warning("writing %d job outcomes failed (%s); retrying", len(batch), exc)
                self._uncertain |= batch.ids()
                batch.merge(self._pending)
                self._pending = batch
                self._writing = set()
                await anyio.sleep(0.5)
                continue
            except psycopg.Error as exc:
                # A row the batch statement cannot take: write job by job so it blocks no other.
                log.error(
                    "writing %d job outcomes failed (%s); writing one by one", len(batch), exc
                )
                await self._write_singly(batch)
                self._writing = set()
                continue
            self._writing = set()
            self._written(batch, written.ids, written.dead_observers)

    async def _write_singly(self, batch: Batch) -> None:
        for single in batch.split():
            try:
                written = await self.store.write(single)
            except psycopg.OperationalError:
                self._pending.merge(single)  # connection trouble: the next flush retries it
                continue
            except psycopg.Error as exc:
                # Given up: its lease lapses and it runs again elsewhere.
                job_id = next(iter(single.ids()))
                log.error("cannot record the start or outcome of job %s: %s", job_id, exc)
                self._drop(job_id)
                self.capacity.ring()
                continue
            self._written(single, written.ids, written.dead_observers)

    def _written(self, batch: Batch, ids: set[int], dead_observers: list[str]) -> None:
        now = anyio.current_time()
        for job_id in batch.starts:
            if job_id not in ids:
                self._lose(job_id, "recording its start")
        for job_id, outcome in batch.outcomes.items():
            if job_id not in ids and job_id not in self._uncertain:
                self._lose(job_id, "recording its outcome")
                continue
            self._uncertain.discard(job_id)
            self._drop(job_id)
            if outcome.kind == "completed":
                self.completed += 1
            elif outcome.kind in ("retry", "defer"):
                heapq.heappush(self._retries_due, now + outcome.delay_s)
        self.capacity.ring()
        if any(o.kind == "retry" for o in batch.outcomes.values()):
            self.jobs_bell.ring()
        for observer in dead_observers:
            metrics.dlq_moved.labels(observer).inc()

    async def drain(self) -> None:
        """Shutdown: write every outcome there is (for at most ``DRAIN_S``)."""
        with anyio.move_on_after(DRAIN_S) as scope:
            await self.flush(every_start=True)
        if scope.cancelled_caught:
            log.warning(
                "%d job outcome(s) could not be written before shutdown; their leases will "
                "expire and they run again",
                len(self._pending),
            )

    # -- leases -------------------------------------------------------------------------------

    async def keep_leases(self, every_s: float) -> None:
        """Extend the leases of every held job; a job whose lease was lost is stopped."""
        while True:
            await anyio.sleep(every_s)
            await self.extend_leases()

    async def extend_leases(self) -> None:
        ids = [job_id for job_id in self.held if job_id not in self._writing]
        if not ids:
            return
        try:
            await self._fault("extend")
            kept = await self.store.extend_leases(ids)
        except psycopg.Error as exc:
            log.warning("extending leases failed (%s)", exc)
            return
        for job_id in ids:
            if job_id not in kept and job_id in self.held and job_id not in self._writing:
                self._lose(job_id, "extending its lease")

    def _lose(self, job_id: int, when: str) -> None:
        held = self.held.get(job_id)
        if held is None:
            return
        log.warning(
            "job %s (%s/%s) is no longer ours (found %s): its lease lapsed and another worker "
            "may run it; this run is stopped and its result discarded",
            job_id,
            held.job.observer,
            held.job.action,
            when,
        )
        metrics.leases_lost.labels(held.job.observer).inc()
        stop = held.stop
        self._drop(job_id)
        self.capacity.ring()
        if stop is not None:
            stop()

    def _drop(self, job_id: int) -> None:
        held = self.held.pop(job_id, None)
        if held is not None:
            self.held_bytes -= held.job.size
        self._starts.pop(job_id, None)
        self._pending.starts.pop(job_id, None)
        self._pending.outcomes.pop(job_id, None)

    async def _fault(self, point: str) -> None:
        if self._faults is not None:
            await self._faults(point)


def _storable(message: str) -> str:
    """Postgres text holds no NUL, and an error quoting a huge body need not be kept whole."""
    message = message.replace("\x00", "\\0")
    return message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT] + " …"
