"""The listener on an event loop and an OS thread of its own.

User handlers run on the worker's event loop; an ``async def`` handler that calls
``time.sleep(120)`` holds that loop for 120 s. Fan-out on the same loop stood still that long
(and a frozen fan-out loop would now be fenced out by a standby). On a thread of its own the
listener goes on: blocking calls release the GIL, and pure-Python CPU work gives it up every
few milliseconds. A child process would also shield fan-out from C code that keeps the GIL,
at the price of a second copy of the config, metrics the parent does not see and a child to
reap; the thread was measured good enough (README, "Failover").
"""

from __future__ import annotations

import math
import threading

import anyio

from pgobs.db.notify import Notifier, ThreadSafeDoorbell
from pgobs.listener.listener import Listener


class ListenerThread:
    """Runs ``listener.run()`` in a daemon thread until :meth:`stop`; :meth:`wait` returns once
    the thread has finished (its session closed, so the leader lock is free) and re-raises what
    ended it, if anything did (once: a second wait returns quietly)."""

    def __init__(self, listener: Listener, notifier: Notifier) -> None:
        """``notifier`` rings the listener's doorbell; it runs on this thread's loop too, so
        wake-ups reach fan-out even while a handler holds the worker's loop."""
        self.listener = listener
        self.notifier = notifier
        self._stop = ThreadSafeDoorbell()
        self._done = ThreadSafeDoorbell()
        self._error: BaseException | None = None
        name = f"pgobs-listener-{listener.settings.listener_id}"
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the listener to stop; callable from any thread, returns at once."""
        self._stop.ring()

    async def wait(self) -> None:
        while self._thread.is_alive():
            await self._done.wait(1.0)
        if self._thread.ident is not None:
            self._thread.join()
        self._stop.close()
        self._done.close()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _main(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseException as exc:  # handed to the thread that waits on us
            self._error = exc
        finally:
            self._done.ring()

    async def _serve(self) -> None:
        async with anyio.create_task_group() as tg:

            async def stop_when_asked() -> None:
                await self._stop.wait(math.inf)
                tg.cancel_scope.cancel()

            tg.start_soon(stop_when_asked)
            tg.start_soon(self.notifier.run)
            await self.listener.run()
            tg.cancel_scope.cancel()
