"""The worker pool of one process, along River's seams: a producer claims, runners run, a
completer writes starts and outcomes and keeps leases, maintenance rescues expired ones.

Shutdown loses nothing: claiming stops, running actions get the grace period, every outcome is
written, and only then are the jobs that never started handed back, without spending an attempt.
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

from pgobs.actions.executor import ActionExecutor
from pgobs.actions.threads import ThreadRunner
from pgobs.config.model import Config
from pgobs.db.connect import open_pool
from pgobs.db.notify import Doorbell
from pgobs.queue.circuit_store import CircuitStore
from pgobs.queue.circuits import CircuitBoard
from pgobs.queue.completer import Completer, FaultHook
from pgobs.queue.jobs import Job, JobStore
from pgobs.queue.maintenance import Maintenance
from pgobs.queue.producer import Producer
from pgobs.queue.runner import Runners
from pgobs.reliability.cache import Cache, PostgresCache, RedisCache
from pgobs.reliability.handlercache import cache as handler_cache
from pgobs.reliability.redisconn import RedisSettings

log = logging.getLogger("pgobs.queue")

RELEASE_S = 10.0


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    concurrency: int = 32
    lease_s: float = 30.0
    poll_interval_s: float = 1.0
    grace_s: float = 10.0
    max_prefetch: int = 0  # 0: chosen from concurrency
    max_held_bytes: int = 64 * 1024 * 1024  # event data held in memory, claimed or running
    redis: RedisSettings | None = None  # the enrichment cache's store, when configured

    @property
    def prefetch_cap(self) -> int:
        return self.max_prefetch or max(self.concurrency * 16, 512)

    def default_share(self, others: int) -> int:
        """Runners one observer (or target) may fill by default: all but a quarter (at least
        one), kept for the others, if there are any."""
        if others <= 1:
            return self.concurrency
        return max(1, self.concurrency - max(1, self.concurrency // 4))


@dataclass(frozen=True, slots=True)
class _Call:
    """An action named without a job, to ask the executor about it."""

    observer: str
    action: str
    event: None = None
    attempt: int = 0
    idempotency_key: str = ""
    run_key: str = ""
    action_type: str = ""


class WorkerPool:
    def __init__(
        self,
        dsn: str,
        config: Config,
        doorbell: Doorbell,
        settings: WorkerSettings | None = None,
        *,
        faults: FaultHook | None = None,
        circuits_bell: Doorbell | None = None,
    ) -> None:
        self.dsn = dsn
        self.circuits_bell = circuits_bell  # rung when another worker changes a circuit
        self.config = config
        self.doorbell = doorbell
        self.settings = settings or WorkerSettings()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.faults = faults
        self.threads = ThreadRunner(self.settings.concurrency)
        self._stopping = anyio.Event()
        self._runners: Runners | None = None
        self._completer: Completer | None = None

    @property
    def completed(self) -> int:
        return self._completer.completed if self._completer else 0

    def stop(self) -> None:
        """Stop claiming; running actions get ``grace_s`` to finish."""
        self._stopping.set()
        if self._runners is not None:
            self._runners.stopping.set()

    def describe_running(self) -> str:
        """The actions running now, for the blocked-event-loop warning."""
        return self._runners.describe_running() if self._runners else ""

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
            cache_store = PostgresCache(actions)
            redis_cache = RedisCache(s.redis, cache_store) if s.redis is not None else None
            cache = Cache(redis_cache or cache_store)
            executor = ActionExecutor(self.config.observers, actions, http, self.threads, cache)
            handler_cache.activate(cache)
            completer = Completer(store, self.config, self.doorbell, self.faults)
            circuits = CircuitBoard(CircuitStore(control, self.worker_id), self.config.observers)
            runners = Runners(
                executor,
                completer,
                concurrency=s.concurrency,
                shares={
                    obs.name: min(
                        s.concurrency,
                        obs.max_concurrency or s.default_share(len(self.config.observers)),
                    )
                    for obs in self.config.observers
                },
                target_share=s.default_share(len(executor.targets())),
                grace_s=s.grace_s,
                circuits=circuits,
            )
            keys = [
                (key, observer, executor.target(_Call(observer, action)))
                for key in executor.action_keys()
                for observer, action in [key.split("/", 1)]
            ]

            def claimable() -> list[str]:
                return [key for key, obs, target in keys if not runners.full(obs, target)]

            producer = Producer(
                store,
                completer,
                lambda: runners.waiting_aside,
                self.doorbell,
                claimable,
                concurrency=s.concurrency,
                prefetch_cap=s.prefetch_cap,
                poll_interval_s=s.poll_interval_s,
                max_held_bytes=s.max_held_bytes,
            )
            self._runners, self._completer = runners, completer
            if self._stopping.is_set():
                runners.stopping.set()
            send, receive = anyio.create_memory_object_stream[Job](max_buffer_size=math.inf)
            async with anyio.create_task_group() as service:
                service.start_soon(completer.run)
                service.start_soon(completer.keep_leases, s.lease_s / 3)
                service.start_soon(circuits.run, self.circuits_bell)
                action_keys = [key for key, _, _ in keys]
                service.start_soon(Maintenance(store, self.doorbell, action_keys, s.lease_s).run)
                async with anyio.create_task_group() as work:
                    work.start_soon(producer.run, send, self._stopping)
                    work.start_soon(runners.run, receive)
                with anyio.CancelScope(shield=True):
                    await self._shut_down(store, completer)
                service.cancel_scope.cancel()
            self.threads.close()
            handler_cache.activate(None)
            if redis_cache is not None:
                with anyio.CancelScope(shield=True):
                    await redis_cache.close()

    async def _shut_down(self, store: JobStore, completer: Completer) -> None:
        """Write every outcome, then hand back what never started, then leave the fleet."""
        completer.finish_parked()
        await completer.drain()
        back = completer.unstarted()
        with anyio.move_on_after(RELEASE_S):
            try:
                if back:
                    released = await store.release(back)
                    log.info("handed %d job(s) that never started back", released)
                await store.unregister()
            except Exception as exc:
                log.warning(
                    "handing back %d job(s) failed (%s); their leases will expire and they "
                    "go back without spending an attempt",
                    len(back),
                    exc,
                )
        await store.close()
