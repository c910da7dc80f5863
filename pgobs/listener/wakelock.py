"""The wake-up lock: while the leader waits, writers send NOTIFY; while it reads on, they don't.

Writers try advisory lock (2024061502, 0) shared in every tracked statement (``pgobs.wake_
listeners``, migration 0004). A waiting leader holds it exclusively on a session of its own, so
their tries fail and they notify. A leader reading a stream lets it go, so writers skip the
NOTIFY (its commit takes a cluster-wide lock) and keep the lock shared until they end. Taking it
back waits for each of those writers to end and then notifies once, so an event written while
the leader was busy and committed after it turned idle is announced all the same. The lock is a
session's: a listener that exits or dies stops the notifications with it.
"""

from __future__ import annotations

import logging

import anyio

from pgobs.db.connect import Connection, connect
from pgobs.db.sqlfiles import query

log = logging.getLogger("pgobs.listener")

RECONNECT_S = 1.0


class WakeLock:
    """Holds the wake-up lock while :meth:`want` says so, on its own connection (run :meth:`run`
    as a task)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.held = False  # granted: every writer that skipped NOTIFY has ended since
        self._wanted = True
        self._changed = anyio.Event()

    def want(self, held: bool) -> None:
        """True while the leader waits for wake-ups, False while it reads on unwoken."""
        if held != self._wanted:
            self._wanted = held
            self._changed.set()
            self._changed = anyio.Event()

    async def run(self) -> None:
        """Hold or release the lock as wanted; reconnect on any failure, never raise."""
        while True:
            try:
                conn = await connect(self.dsn, autocommit=True, application_name="pgobs wake-up")
            except Exception as exc:
                log.warning("wake-up lock cannot connect (%s); retrying", exc)
                await anyio.sleep(RECONNECT_S)
                continue
            try:
                await self._serve(conn)
            except Exception as exc:
                log.warning("wake-up lock session lost (%s); reconnecting", exc)
            finally:
                self.held = False
                with anyio.CancelScope(shield=True):
                    await conn.close()
            await anyio.sleep(RECONNECT_S)

    async def _serve(self, conn: Connection) -> None:
        await conn.execute(query("wake_lock_session_settings"))
        while True:
            await self._until(True)
            # Waits until every writer that skipped NOTIFY has ended, then notifies (the idle
            # leader reads every UNANNOUNCED_POLL_S meanwhile); every writer's try fails
            # against the waiting request, so new writers notify.
            await conn.execute(query("take_wake_lock"))
            self.held = True
            await self._hold(conn)
            await conn.execute(query("release_wake_lock"))
            self.held = False

    async def _hold(self, conn: Connection) -> None:
        """Wait until the lock is no longer wanted. Nothing else reads the session meanwhile:
        one that ended (terminated, the server restarted) took the lock with it, writers then
        skipped NOTIFY and the leader, believing it held, slept its poll interval for each
        event. Whatever the server sends makes the socket readable; a query then tells a
        session that ended (it raises, and ``run`` takes the lock on a new one)."""
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while True:
                    await anyio.wait_readable(conn.fileno())
                    await conn.execute(query("wake_lock_alive"))

            tg.start_soon(watch)
            await self._until(False)
            tg.cancel_scope.cancel()

    async def _until(self, wanted: bool) -> None:
        while self._wanted != wanted:
            await self._changed.wait()
