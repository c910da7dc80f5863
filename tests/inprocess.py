"""A listener (and its notifier) run in a thread of the test process, for tests that set what
the CLI does not expose (a 30 s poll interval, a byte budget) or look inside a batch."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import anyio

from pgobs.config.loader import parse_config
from pgobs.db.notify import EVENTS_CHANNEL, Notifier
from pgobs.listener.listener import Listener, ListenerSettings

ALL_ORDERS = """
observers:
  - name: obs-all
    entity: Order
    actions: [{type: log}]
"""


class InProcessListener:
    """``with InProcessListener(dsn, poll_interval_s=30) as listener:`` leads until the block
    ends; the thread is stopped and joined (bounded) on the way out."""

    def __init__(self, dsn: str, config: str = ALL_ORDERS, **settings: Any) -> None:
        parsed, issues = parse_config(config, "test observers.yaml")
        assert parsed is not None, issues
        self.notifier = Notifier(dsn, (EVENTS_CHANNEL,))
        self.listener = Listener(
            dsn, parsed, self.notifier.doorbells[EVENTS_CHANNEL], ListenerSettings(**settings)
        )
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        if not self._leading.wait(15):
            self._stop.set()
            raise AssertionError(f"the in-process listener did not lead: {self._error!r}")
        return self.listener

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(15)
        assert not self._thread.is_alive(), "the in-process listener did not stop"
        if self._error is not None and kind is None:
            raise self._error

    def _main(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseException as exc:  # handed to the test thread in __exit__
            self._error = exc

    async def _serve(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.notifier.run)
            tg.start_soon(self.listener.run)
            await self.listener.became_leader.wait()
            await self.notifier.connected.wait()
            self._leading.set()
            while not self._stop.is_set():
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
