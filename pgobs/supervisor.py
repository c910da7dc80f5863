"""One ``pgobs worker`` process: the notifier, a listener candidate and the worker pool, owned by
one task group. SIGTERM or SIGINT: the listener stops at once (its session closes, freeing the
leader lock for a standby), the pool stops claiming and drains, then the process exits."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from typing import Literal

import anyio

from pgobs.config.model import Config
from pgobs.db.migrate import ensure_migrated
from pgobs.listener.listener import Listener, ListenerSettings
from pgobs.listener.notifier import EVENTS_CHANNEL, JOBS_CHANNEL, Notifier
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
    notifier = Notifier(dsn, (EVENTS_CHANNEL, JOBS_CHANNEL))
    pool = (
        WorkerPool(dsn, config, notifier.doorbells[JOBS_CHANNEL], settings.worker)
        if (settings.role in ("worker", "all"))
        else None
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.run)
        listener_scope = anyio.CancelScope()
        if settings.role in ("listener", "all"):
            listener = Listener(dsn, config, notifier.doorbells[EVENTS_CHANNEL], settings.listener)

            async def run_listener() -> None:
                with listener_scope:
                    await listener.run()

            tg.start_soon(run_listener)
        stopped = anyio.Event()
        tg.start_soon(_stop_on_signal, listener_scope, pool, stopped)
        log.info(
            "pgobs worker running: role %s, %d observer(s)", settings.role, len(config.observers)
        )
        if pool is not None:
            await pool.run()
            log.info("worker pool stopped after %d completed job(s)", pool.completed)
        else:
            await stopped.wait()
        tg.cancel_scope.cancel()


async def _stop_on_signal(
    listener_scope: anyio.CancelScope, pool: WorkerPool | None, stopped: anyio.Event
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: stopping", signal.Signals(signum).name)
            listener_scope.cancel()
            if pool is not None:
                pool.stop()
            stopped.set()
            return
