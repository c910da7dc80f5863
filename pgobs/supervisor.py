"""One ``pgobs worker`` process: the worker pool and the notifier that wakes it on the main event
loop, a listener candidate and its own notifier on a thread and loop of their own (so a handler
that blocks the main loop can neither stall fan-out nor keep its wake-ups from it), and a
watchdog that names whatever blocks the main loop.

SIGTERM or SIGINT: the listener stops at once (its session closes, freeing the leader lock for a
standby), the pool stops claiming and drains, then the process exits."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import anyio

from pgobs.config.model import Config
from pgobs.db.migrate import ensure_migrated
from pgobs.db.notify import CIRCUITS_CHANNEL, EVENTS_CHANNEL, JOBS_CHANNEL, Notifier
from pgobs.listener.listener import Listener, ListenerSettings
from pgobs.listener.thread import ListenerThread
from pgobs.observability.health import Check, readiness
from pgobs.observability.loopwatch import LoopWatch
from pgobs.queue.worker import WorkerPool, WorkerSettings

log = logging.getLogger("pgobs.worker")

Role = Literal["listener", "worker", "all"]


@dataclass(frozen=True, slots=True)
class ProcessSettings:
    role: Role = "all"
    listener: ListenerSettings = field(default_factory=ListenerSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)


async def run_process(dsn: str, config: Config, settings: ProcessSettings) -> None:
    await ensure_migrated(dsn)
    # Each loop hears its own channels: the pool's on the main loop (jobs, and circuits that
    # another worker opened or closed), the listener's on its thread.
    notifier = Notifier(dsn, (JOBS_CHANNEL, CIRCUITS_CHANNEL))
    pool = (
        WorkerPool(
            dsn,
            config,
            notifier.doorbells[JOBS_CHANNEL],
            settings.worker,
            circuits_bell=notifier.doorbells[CIRCUITS_CHANNEL],
        )
        if (settings.role in ("worker", "all"))
        else None
    )
    jobs_written: Callable[[], object] | None = None
    if pool is not None:
        # A fan-out on this process's listener thread wakes its pool at once (on the main loop:
        # anyio.run's asyncio backend), a hop shorter than its NOTIFY's way through the server.
        loop = asyncio.get_running_loop()
        jobs_written = partial(loop.call_soon_threadsafe, notifier.doorbells[JOBS_CHANNEL].ring)
    listener = None
    if settings.role in ("listener", "all"):
        events = Notifier(dsn, (EVENTS_CHANNEL,))
        listener = ListenerThread(
            Listener(
                dsn,
                config,
                events.doorbells[EVENTS_CHANNEL],
                settings.listener,
                jobs_written=jobs_written,
            ),
            events,
        )
    checks = _readiness_checks(notifier if pool is not None else None, listener)
    for name, check in checks.items():
        readiness.add(name, check)
    try:
        async with anyio.create_task_group() as tg:
            if pool is not None:
                tg.start_soon(notifier.run)
            if listener is not None:
                listener.start()
                # A listener that fails ends the process, as it did on the shared loop.
                tg.start_soon(listener.wait)
            stopped = anyio.Event()
            tg.start_soon(_stop_on_signal, listener, pool, stopped)
            if pool is not None:
                # When a handler holds the loop, the watchdog's warning names what was running.
                tg.start_soon(LoopWatch(pool.describe_running, loop="worker").run)
            log.info(
                "pgobs worker running: role %s, %d observer(s)",
                settings.role,
                len(config.observers),
            )
            if pool is not None:
                await pool.run()
                log.info("worker pool stopped after %d completed job(s)", pool.completed)
            else:
                await stopped.wait()
            tg.cancel_scope.cancel()
    finally:
        for name in (*checks, "process"):
            readiness.remove(name)
        if listener is not None:
            listener.stop()
            with anyio.CancelScope(shield=True):
                await listener.wait()


def _readiness_checks(
    notifier: Notifier | None, listener: ListenerThread | None
) -> dict[str, Check]:
    """Ready (/readyz): the workers' wake-up connection is up, and a listener candidate leads or
    stands by (connected: the state says so)."""
    checks: dict[str, Check] = {}
    if notifier is not None:
        checks["database"] = lambda: None if notifier.up else "not connected to the database"
    if listener is not None:
        candidate = listener.listener

        def listening() -> str | None:
            if candidate.state == "running":
                return None  # leading or standing by
            return f"listener {candidate.settings.listener_id} is {candidate.state}"

        checks["listener"] = listening
    return checks


async def _stop_on_signal(
    listener: ListenerThread | None, pool: WorkerPool | None, stopped: anyio.Event
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: stopping", signal.Signals(signum).name)
            readiness.add("process", lambda: "stopping")
            if listener is not None:
                listener.stop()
            if pool is not None:
                pool.stop()
            stopped.set()
            return
