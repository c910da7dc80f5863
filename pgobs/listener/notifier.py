"""One LISTEN connection per process; channels ring doorbells that loops wait on.

Notifications are wake-ups only: a lost one costs a poll interval, never an event. The
connection reconnects in a loop; a broken server or network never kills the process.
"""

from __future__ import annotations

import logging

import anyio
import psycopg
from psycopg import sql

from pgobs.db.connect import connect

log = logging.getLogger("pgobs.notifier")

EVENTS_CHANNEL = "pgobs_events"
JOBS_CHANNEL = "pgobs_jobs"


class Doorbell:
    """Wakes whoever waits on it; a ring while nobody waits is kept until the next wait."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def ring(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait for a ring or ``timeout`` seconds; True when rung."""
        rung = False
        with anyio.move_on_after(timeout):
            await self._event.wait()
            rung = True
        if self._event.is_set():
            self._event = anyio.Event()
            rung = True
        return rung


class Notifier:
    def __init__(self, dsn: str, channels: tuple[str, ...]) -> None:
        self.dsn = dsn
        self.doorbells = {channel: Doorbell() for channel in channels}
        self.connected = anyio.Event()

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                conn = await connect(self.dsn, autocommit=True)
            except Exception as exc:
                log.warning("notifier cannot connect (%s); retrying in %.1fs", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                for channel in self.doorbells:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                delay = 0.1
                self.connected.set()
                # Everything that happened while we were not listening: ring once.
                for bell in self.doorbells.values():
                    bell.ring()
                async for note in conn.notifies():
                    rung = self.doorbells.get(note.channel)
                    if rung is not None:
                        rung.ring()
            except psycopg.Error as exc:
                log.warning("notifier connection lost (%s); reconnecting", exc)
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.close()
