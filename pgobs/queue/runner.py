"""Running: ``concurrency`` long-lived runners take jobs from one stream, one job at a time.

No task and no cancel scope per job: each runner keeps one scope, which the watchdog cancels when
its job passes its deadline (or the completer, when the job's lease is lost; or shutdown, when
the grace period ends); then a fresh scope takes over. An observer may fill at most its share of
the runners, and so may a target (a webhook's origin, an SMTP server): one hanging endpoint cannot
starve the others. Surplus jobs wait aside, and the producer claims none of a full observer's.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping
from typing import Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from pgobs.actions.executor import ActionExecutor
from pgobs.actions.failures import Failure
from pgobs.observability import metrics
from pgobs.queue.circuits import CLOSED, PROBE, CircuitBoard
from pgobs.queue.completer import Completer
from pgobs.queue.jobs import Job

log = logging.getLogger("pgobs.queue")

StopReason = Literal["timeout", "lost", "shutdown"]


class _Slot:
    """What one runner is doing, for the watchdog and for whoever stops it."""

    __slots__ = ("deadline", "job", "reason", "scope", "stopped")

    def __init__(self) -> None:
        self.job: Job | None = None
        self.deadline = 0.0
        self.stopped: Job | None = None
        self.reason: StopReason = "timeout"
        self.scope = anyio.CancelScope()

    def stop(self, job: Job, reason: StopReason) -> None:
        if self.job is job and self.stopped is None:
            self.stopped, self.reason = job, reason
            self.scope.cancel()


class Runners:
    def __init__(
        self,
        executor: ActionExecutor,
        completer: Completer,
        *,
        concurrency: int,
        shares: Mapping[str, int],
        target_share: int,
        grace_s: float,
        circuits: CircuitBoard | None = None,
    ) -> None:
        self.executor = executor
        self.circuits = circuits
        self.completer = completer
        self.concurrency = concurrency
        self.shares = shares  # observer -> how many runners it may fill at once
        self.target_share = target_share  # how many runners one target may fill at once
        self._busy_targets: collections.Counter[str] = collections.Counter()
        self._aside_targets: collections.Counter[str] = collections.Counter()
        self._aside_count = 0
        self.grace_s = grace_s
        self.stopping = anyio.Event()
        self._slots: list[_Slot] = []
        self._busy: collections.Counter[str] = collections.Counter()
        self._aside: dict[str, collections.deque[Job]] = collections.defaultdict(collections.deque)
        metrics.jobs_in_flight.set_function(lambda: sum(self._busy.values()))

    def full(self, observer: str, target: str) -> bool:
        """Whether jobs of ``observer`` calling ``target`` would only wait aside now: either
        fills its share, counting the jobs already waiting for it."""
        waiting = self._aside.get(observer)
        return (
            self._busy[observer] + (len(waiting) if waiting else 0) >= self._share(observer)
            or self._busy_targets[target] + self._aside_targets[target] >= self.target_share
        )

    @property
    def waiting_aside(self) -> int:
        return self._aside_count

    def _share(self, observer: str) -> int:
        return self.shares.get(observer, self.concurrency)

    def describe_running(self) -> str:
        """What the runners are running now, for the blocked-loop watchdog's warning."""
        return ", ".join(
            sorted({self.executor.describe(s.job) for s in self._slots if s.job is not None})
        )

    async def run(self, receive: MemoryObjectReceiveStream[Job]) -> None:
        """Run jobs until the stream closes and every runner is done."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watchdog)
            async with anyio.create_task_group() as runners, receive:
                for _ in range(self.concurrency):
                    runners.start_soon(self._runner, receive.clone())
                tg.start_soon(self._stop_after_grace)
            tg.cancel_scope.cancel()

    async def _runner(self, receive: MemoryObjectReceiveStream[Job]) -> None:
        slot = _Slot()
        self._slots.append(slot)
        async with receive:
            while True:
                with anyio.CancelScope() as slot.scope:
                    job = self._next_aside(None)
                    while True:
                        if job is None:
                            try:
                                job = await receive.receive()
                            except anyio.EndOfStream:
                                return
                        if not self.stopping.is_set() and self._admit(job):
                            await self._run(slot, job)
                            if slot.scope.cancel_called:
                                break  # it swallowed its stop: the next job gets a new scope
                            job = self._next_aside(job.observer)
                        else:
                            job = None
                self._stopped_early(slot)

    def _admit(self, job: Job) -> bool:
        """Start ``job`` now, or set it aside while its observer or target fills its share."""
        if not self._may_start(job):
            self._aside[job.observer].append(job)
            self._aside_targets[self.executor.target(job)] += 1
            self._aside_count += 1
            return False
        return True

    def _may_start(self, job: Job) -> bool:
        return (
            self._busy[job.observer] < self._share(job.observer)
            and self._busy_targets[self.executor.target(job)] < self.target_share
        )

    def _next_aside(self, observer: str | None) -> Job | None:
        """A job set aside that may start now: ``observer``'s first, as its run just ended."""
        if not self._aside_count:
            return None
        names = [observer] if observer is not None else []
        for name in [*names, *self._aside]:
            waiting = self._aside.get(name)
            if waiting and self._may_start(waiting[0]):
                job = waiting.popleft()
                self._aside_targets[self.executor.target(job)] -= 1
                self._aside_count -= 1
                return job
        return None

    async def _run(self, slot: _Slot, job: Job) -> None:
        def stop() -> None:
            slot.stop(job, "lost")

        board = self.circuits
        circuit = board.of(job) if board is not None else None
        if board is not None and circuit is not None and circuit.state != CLOSED:
            # Its target is down: the job waits for the probe time, spending nothing; one job
            # of the whole fleet probes.
            verdict = board.verdict(circuit)
            if verdict == PROBE:
                probing = await board.take_probe(circuit, job, self.executor.timeout_s(job))
                verdict = PROBE if probing else circuit.recheck_s()
            if verdict != PROBE:
                board.deferred(circuit, job)
                self.completer.defer(job, verdict)
                return
        if job.suspect:
            if not await self.completer.start_recorded(job, stop):
                self._abandon(job)
                return
        elif not self.completer.start(job, stop):
            self._abandon(job)
            return
        target = self.executor.target(job)
        self._busy[job.observer] += 1
        self._busy_targets[target] += 1
        slot.deadline = anyio.current_time() + self.executor.timeout_s(job)
        slot.job = job
        try:
            failure = await self.executor.run(job)
        finally:
            slot.job = None
            self._busy[job.observer] -= 1
            self._busy_targets[target] -= 1
        slot.stopped = None  # finished after all (it swallowed the cancel)
        defer_s = None
        if board is not None and circuit is not None:
            defer_s = board.record(circuit, job, failure)  # found once, before the run
        self.completer.finish(job, failure, defer_s=defer_s)

    def _record(self, job: Job, failure: Failure | None) -> float | None:
        """Count the call for its circuit; how long to defer it when the circuit is open."""
        board = self.circuits
        circuit = board.of(job) if board is not None else None
        if board is None or circuit is None:
            return None
        return board.record(circuit, job, failure)

    def _abandon(self, job: Job) -> None:
        board = self.circuits
        circuit = board.of(job) if board is not None else None
        if board is not None and circuit is not None:
            board.abandon(circuit, job)

    def _stopped_early(self, slot: _Slot) -> None:
        job, slot.stopped = slot.stopped, None
        if job is None:
            return
        if slot.reason == "lost":
            self._abandon(job)
            return  # lost: the completer has discarded it already
        if slot.reason == "shutdown":
            self._abandon(job)  # not the target's failure
            failure = Failure(
                f"the worker shut down before the action finished (grace period {self.grace_s:g}s)",
                "transient",
            )
        else:
            failure = self.executor.timed_out(job)
        threads = self.executor.threads
        if slot.reason == "timeout" and threads.is_stuck(job.run_key):
            # Its thread keeps a runner's worth of its observer's and target's share until it
            # returns: a hung handler cannot take every runner, one stuck job at a time.
            target = self.executor.target(job)
            self._busy[job.observer] += 1
            self._busy_targets[target] += 1

            def returned() -> None:
                self._busy[job.observer] -= 1
                self._busy_targets[target] -= 1

            threads.on_return(job.run_key, returned)
            self._record(job, failure)  # a parked job retries as usual
            self.completer.park(job, failure, threads)
        elif slot.reason == "timeout":
            self.completer.finish(job, failure, defer_s=self._record(job, failure))
        else:
            self.completer.finish(job, failure)

    async def _watchdog(self) -> None:
        """Stops the runners whose job is past its deadline, checking every ``tick`` s."""
        tick = min(0.05, max(0.005, self.executor.shortest_timeout_s() / 4))
        while True:
            await anyio.sleep(tick)
            now = anyio.current_time()
            for slot in self._slots:
                job = slot.job
                if job is not None and slot.deadline <= now:
                    slot.stop(job, "timeout")

    async def _stop_after_grace(self) -> None:
        """Stopping: running actions get ``grace_s`` to finish, then are stopped."""
        await self.stopping.wait()
        await anyio.sleep(self.grace_s)
        for slot in self._slots:
            if slot.job is not None:
                slot.stop(slot.job, "shutdown")
