"""LISTEN connections whose channels ring doorbells that loops wait on: one for the worker's
loop, one on the listener's own thread and loop.

Notifications are wake-ups only: a lost one costs a poll interval, never an event. The
connection reconnects in a loop; a broken server or network never kills the process.
"""

from __future__ import annotations

import contextlib
import logging
import socket

import anyio
import anyio.lowlevel
import psycopg
from psycopg import sql

from pgobs.db.connect import connect

log = logging.getLogger("pgobs.notifier")

EVENTS_CHANNEL = "pgobs_events"
JOBS_CHANNEL = "pgobs_jobs"
CIRCUITS_CHANNEL = "pgobs_circuits"  # a circuit changed state: workers read it at once


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


class ThreadSafeDoorbell(Doorbell):
    """A doorbell rung from any thread and waited on in another thread's event loop (the
    listener's): a byte on a socket pair, so a ring never blocks and needs no shared loop.
    One task waits on it at a time."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def ring(self) -> None:
        # OSError: a buffer full of unheard rings (this one adds nothing), or closed at shutdown.
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    async def wait(self, timeout: float) -> bool:
        if self._drain():
            await anyio.lowlevel.checkpoint()  # a wait always lets the loop run others
            return True
        with anyio.move_on_after(timeout):
            await anyio.wait_readable(self._reader)
        return self._drain()

    def _drain(self) -> bool:
        rung = False
        with contextlib.suppress(BlockingIOError):
            while self._reader.recv(4096):
                rung = True
        return rung

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class Notifier:
    """LISTENs on ``channels`` and rings their doorbells, for tasks of the loop it runs on."""

    def __init__(self, dsn: str, channels: tuple[str, ...]) -> None:
        self.dsn = dsn
        self.doorbells = {channel: Doorbell() for channel in channels}
        self.connected = anyio.Event()
        self.up = False  # LISTENing now (read by /readyz from another thread)

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
                self.up = True
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
                self.up = False
                with anyio.CancelScope(shield=True):
                    await conn.close()
