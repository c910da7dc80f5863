"""One ``pgobs worker`` process: the notifier and the worker pool on the main event loop, a
listener candidate on a thread and loop of its own (so a handler that blocks the main loop cannot
stall fan-out), and a watchdog that names whatever blocks the main loop.

SIGTERM or SIGINT: the listener stops at once (its session closes, freeing the leader lock for a
standby), the pool stops claiming and drains, then the process exits."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from typing import Literal

import anyio

from pgobs.config.model import Config
from pgobs.db.migrate import ensure_migrated
from pgobs.db.notify import EVENTS_CHANNEL, JOBS_CHANNEL, Notifier
from pgobs.listener.listener import Listener, ListenerSettings
from pgobs.listener.thread import ListenerThread
from pgobs.observability.loopwatch import LoopWatch
from pgobs.queue.worker import WorkerPool, WorkerSettings

log = logging.getLogger("pgobs.worker")

Role = Literal["listener", "worker", "all"]


@dataclass(frozen=True, slots=True)
class ProcessSettings:
    role: Role = "all"
    listener: ListenerSettings = field(default_factory=ListenerSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    elasticsearch_url: str | None = None  # ship the trail there (one shipper per fleet)


async def run_process(dsn: str, config: Config, settings: ProcessSettings) -> None:
    await ensure_migrated(dsn)
    notifier = Notifier(dsn, (EVENTS_CHANNEL, JOBS_CHANNEL), cross_thread=(EVENTS_CHANNEL,))
    pool = (
        WorkerPool(dsn, config, notifier.doorbells[JOBS_CHANNEL], settings.worker)
        if (settings.role in ("worker", "all"))
        else None
    )
    listener = (
        ListenerThread(Listener(dsn, config, notifier.doorbells[EVENTS_CHANNEL], settings.listener))
        if settings.role in ("listener", "all")
        else None
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            if listener is not None:
                listener.start()
                # A listener that fails ends the process, as it did on the shared loop.
                tg.start_soon(listener.wait)
            stopped = anyio.Event()
            tg.start_soon(_stop_on_signal, listener, pool, stopped)
            if settings.elasticsearch_url:
                from pgobs.trail.shipper import Shipper, ShipperSettings

                shipper = Shipper(dsn, ShipperSettings(settings.elasticsearch_url))
                tg.start_soon(shipper.run)
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
        if listener is not None:
            listener.stop()
            with anyio.CancelScope(shield=True):
                await listener.wait()
        notifier.close()


async def _stop_on_signal(
    listener: ListenerThread | None, pool: WorkerPool | None, stopped: anyio.Event
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: stopping", signal.Signals(signum).name)
            if listener is not None:
                listener.stop()
            if pool is not None:
                pool.stop()
            stopped.set()
            return
