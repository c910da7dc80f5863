"""Claiming: keeps the runners fed with just enough claimed work to hide a claim's round trip.

Claimed-but-unstarted jobs are kept to about ``PREFETCH_S`` of work at the observed completion
rate: enough for fast jobs, next to nothing for slow ones (which then stay claimable by idle
workers elsewhere). What a worker holds is bounded in bytes too (``max_held_bytes`` of event
data, judged by the jobs claimed so far), so huge rows cannot take its memory.

Only jobs whose action this worker knows are claimed, and none of an observer that already
fills its share of the runners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import psycopg
from anyio.streams.memory import MemoryObjectSendStream

from pgobs.db.notify import Doorbell
from pgobs.errors import ConnectionFailed
from pgobs.queue.completer import Completer
from pgobs.queue.jobs import Job, JobStore

log = logging.getLogger("pgobs.queue")

PREFETCH_S = 0.02
CLAIM_AFTER_S = 0.005  # claim again once this much work has freed room
FIRST_CLAIM = 8


class Producer:
    def __init__(
        self,
        store: JobStore,
        completer: Completer,
        aside: Callable[[], int],
        jobs_bell: Doorbell,
        claimable: Callable[[], list[str]],
        *,
        concurrency: int,
        prefetch_cap: int,
        poll_interval_s: float,
        max_held_bytes: int,
    ) -> None:
        self.store = store
        self.completer = completer
        self.aside = aside  # held jobs waiting for their observer's or target's share
        self.jobs_bell = jobs_bell
        self.claimable = claimable
        self.concurrency = concurrency
        self.prefetch_cap = prefetch_cap
        self.poll_interval_s = poll_interval_s
        self.max_held_bytes = max_held_bytes
        self._job_bytes = 0.0  # bytes per claimed job, smoothed
        self._rate = 0.0  # completions per second, smoothed
        self._window_start = 0.0
        self._window_finished = 0

    async def run(self, send: MemoryObjectSendStream[Job], stopping: anyio.Event) -> None:
        """Claim until ``stopping``; then close the stream."""
        self._window_start = anyio.current_time()
        async with send:
            while not stopping.is_set():
                room = self._room()
                keys = self.claimable() if room else []
                if not keys:
                    await _wait_or_stop(self.completer.capacity, self.poll_interval_s, stopping)
                    self._measure_rate()
                    continue
                try:
                    jobs = await self.store.claim(room, keys)
                except (psycopg.Error, ConnectionFailed) as exc:
                    log.warning("claiming jobs failed (%s); retrying", exc)
                    await _wait_or_stop(self.completer.capacity, 1.0, stopping)
                    continue
                # Hand the claimed jobs on before anything else can fail: they are leased to us.
                for job in self.completer.claimed(jobs):
                    send.send_nowait(job)
                if jobs:
                    size = max(1.0, sum(job.size for job in jobs) / len(jobs))
                    self._job_bytes = size if not self._job_bytes else (self._job_bytes + size) / 2
                if len(jobs) < room:
                    until = self.completer.next_retry_in(anyio.current_time(), self.poll_interval_s)
                    await _wait_or_stop(self.jobs_bell, until, stopping)
                self._measure_rate()

    def _room(self) -> int:
        """How many jobs to claim now (0: not yet worth a round trip)."""
        target = self.concurrency + min(self.prefetch_cap, int(self._rate * PREFETCH_S))
        # Jobs set aside wait for a full observer or target, whose jobs are no longer claimed:
        # they must not use up the room that other observers' jobs need.
        # Parked jobs wait for a stuck thread, not for a runner.
        room = target - (len(self.completer.held) - self.aside() - self.completer.parked)
        if not self._job_bytes:
            room = min(room, FIRST_CLAIM)  # row sizes unknown yet: start small
        else:
            budget = self.max_held_bytes - self.completer.held_bytes
            room = min(room, max(0, int(budget / self._job_bytes)))
            if room == 0 and not self.completer.held:
                room = 1  # one job always fits, however big
        threshold = max(1, min(target // 4, int(self._rate * CLAIM_AFTER_S)))
        return room if room >= threshold else 0

    def _measure_rate(self) -> None:
        """Completions per second over windows of at least 50 ms, smoothed."""
        now = anyio.current_time()
        elapsed = now - self._window_start
        if elapsed >= 0.05:
            finished = self.completer.finished
            sample = (finished - self._window_finished) / elapsed
            self._rate = sample if self._rate == 0 else 0.5 * self._rate + 0.5 * sample
            self._window_start, self._window_finished = now, finished


async def _wait_or_stop(bell: Doorbell, timeout: float, stopping: anyio.Event) -> None:
    async with anyio.create_task_group() as tg:

        async def stop_waiting() -> None:
            await stopping.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(stop_waiting)
        await bell.wait(timeout)
        tg.cancel_scope.cancel()
