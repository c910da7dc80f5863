"""Queue upkeep every worker shares: expired leases rescued, this worker's known actions
registered, and jobs whose action was removed from the config for good dead-lettered."""

from __future__ import annotations

import logging

import anyio
import psycopg

from pgobs.db.notify import Doorbell
from pgobs.observability import metrics
from pgobs.queue.jobs import JobStore

log = logging.getLogger("pgobs.queue")

UNKNOWN_ACTIONS_EVERY_S = 60.0
REGISTER_EVERY_S = 10.0


class Maintenance:
    def __init__(
        self, store: JobStore, jobs_bell: Doorbell, action_keys: list[str], lease_s: float
    ) -> None:
        self.store = store
        self.jobs_bell = jobs_bell
        self.action_keys = action_keys
        self.lease_s = lease_s

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._register)
            tg.start_soon(self._rescue)
            tg.start_soon(self._sweep_unknown_actions)

    async def _register(self) -> None:
        """Say which actions this worker runs, every third of a lease (at most ten seconds
        apart: the sweep of removed actions counts a worker unseen for a minute as gone)."""
        while True:
            try:
                await self.store.register(self.action_keys)
            except psycopg.Error as exc:
                log.warning("registering this worker failed (%s)", exc)
            await anyio.sleep(min(self.lease_s / 3, REGISTER_EVERY_S))

    async def _rescue(self) -> None:
        while True:
            await anyio.sleep(self.lease_s / 2)
            try:
                rescued, dead = await self.store.rescue_expired()
            except psycopg.Error as exc:
                log.warning("rescuing expired jobs failed (%s)", exc)
                continue
            if rescued or dead:
                log.info("rescued %d job(s) with expired leases, %d to the DLQ", rescued, len(dead))
                self._dead_lettered(dead)
                self.jobs_bell.ring()

    async def _sweep_unknown_actions(self) -> None:
        while True:
            await anyio.sleep(UNKNOWN_ACTIONS_EVERY_S)
            try:
                dead = await self.store.dead_letter_unknown_actions(UNKNOWN_ACTIONS_EVERY_S)
            except psycopg.Error as exc:
                log.warning("checking for jobs of removed actions failed (%s)", exc)
                continue
            if dead:
                log.warning(
                    "%d job(s) whose action is in no running worker's config went to the DLQ "
                    "(observers: %s)",
                    len(dead),
                    ", ".join(sorted(set(dead))),
                )
                self._dead_lettered(dead)

    @staticmethod
    def _dead_lettered(observers: list[str]) -> None:
        for observer in observers:
            metrics.dlq_moved.labels(observer).inc()
