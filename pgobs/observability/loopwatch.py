"""A watchdog for an event loop: when the loop stops ticking, say so and name what runs on it.

A coroutine that blocks (``time.sleep`` or a sync client in an ``async def`` handler, CPU-heavy
work) holds every other task of its loop: timeouts, lease renewal, claims. Nothing can interrupt
it from outside, but a thread can notice it, log the handler that holds the loop, and count the
seconds lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from pgobs.observability import metrics

log = logging.getLogger("pgobs.loopwatch")


@dataclass(slots=True)
class _Stall:
    counted_s: float = 0.0  # how much of it is in the metric already
    running: str = ""


class LoopWatch:
    """:meth:`run` ticks on the loop to watch; a thread beside it checks that the ticks come.

    ``describe`` is called from the watching thread while the loop is held, so it must only read
    (a snapshot of the running jobs' names, say) and be quick; "" means nothing to name.
    """

    def __init__(
        self, describe: Callable[[], str], *, loop: str = "worker", threshold_s: float = 1.0
    ) -> None:
        self.describe = describe
        self.loop = loop
        self.threshold_s = threshold_s
        self._tick_s = threshold_s / 4
        self._lock = threading.Lock()
        self._due = time.monotonic() + self._tick_s  # when the loop should tick next
        self._stall: _Stall | None = None

    async def run(self) -> None:
        """Until cancelled. The watching thread ends within a tick after that."""
        stopped = threading.Event()
        thread = threading.Thread(
            target=self._watch, args=(stopped,), name=f"pgobs-loopwatch-{self.loop}", daemon=True
        )
        thread.start()
        try:
            while True:
                with self._lock:
                    self._due = time.monotonic() + self._tick_s
                await anyio.sleep(self._tick_s)
                self._ticked()
        finally:
            stopped.set()

    def _watch(self, stopped: threading.Event) -> None:
        while not stopped.wait(self._tick_s):
            self._check()

    def _check(self) -> None:
        """In the watching thread: is the loop later than the threshold?"""
        with self._lock:
            late = time.monotonic() - self._due
            if late <= self.threshold_s:
                return
            stall = self._stall
            first = stall is None
            if stall is None:
                stall = self._stall = _Stall()
            new_s, stall.counted_s = late - stall.counted_s, late
        metrics.event_loop_blocked_seconds.labels(self.loop).inc(new_s)
        if first:
            stall.running = self._running()
            log.warning(
                "%s event loop blocked for %.1fs so far by code that neither awaits nor returns "
                "(a blocking call or CPU-bound work in an async handler?); running: %s",
                self.loop,
                late,
                stall.running,
            )

    def _ticked(self) -> None:
        """On the loop, after a tick: a stall the thread saw has ended; count its tail."""
        with self._lock:
            late = time.monotonic() - self._due
            stall, self._stall = self._stall, None
        if stall is None:
            return
        metrics.event_loop_blocked_seconds.labels(self.loop).inc(max(0.0, late - stall.counted_s))
        log.warning(
            "%s event loop was blocked for %.1fs; running: %s", self.loop, late, stall.running
        )

    def _running(self) -> str:
        try:
            named = self.describe()
        except Exception as exc:  # a describe that fails must not take the watchdog down
            return f"(describe failed: {exc})"
        return named or "(no running handler named)"
