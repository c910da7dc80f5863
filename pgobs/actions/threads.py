"""Plain ``def`` handlers on a bounded set of threads, built for throughput.

``anyio.to_thread.run_sync`` costs a thread hop and an event-loop wake-up per call. Here threads
take calls from one queue and run as many as are waiting before they sleep, and finished calls
come back to the event loop in batches: one wake-up for however many finished meanwhile.

A call whose caller gave up (its timeout) cannot be stopped: its thread runs on. That thread
still counts against the bound until the call truly returns, so a hung handler can never grow
the process's threads without limit; ``on_return`` tells the caller when it finally did, and the
stuck calls are visible in the log and the ``observer_handler_threads_stuck`` gauge.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio

from pgobs.observability import metrics

log = logging.getLogger("pgobs.actions")

STUCK_WARNING_S = 30.0  # a thread still stuck this long after its caller gave up is logged again


class _Call:
    __slots__ = (
        "abandoned_at",
        "arg",
        "done",
        "error",
        "fn",
        "key",
        "label",
        "on_return",
        "result",
        "started",
    )

    def __init__(self, fn: Callable[[Any], Any], arg: Any, label: str, key: str) -> None:
        self.key = key
        self.fn = fn
        self.arg = arg
        self.label = label
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = False
        self.abandoned_at: float | None = None  # when the caller gave up, if it did
        self.on_return: list[Callable[[], None]] = []


class ThreadRunner:
    """Runs sync callables on at most ``max_threads`` threads (stuck ones included)."""

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self._work: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._finished: collections.deque[_Call] = collections.deque()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stuck: dict[str, _Call] = {}
        metrics.handler_threads_stuck.set_function(lambda: len(self._stuck))

    async def run(self, fn: Callable[[Any], Any], arg: Any, label: str, key: str) -> Any:
        """``fn(arg)`` on a thread. When the caller is cancelled meanwhile, a call not started
        yet never starts, and a started one runs on: :meth:`is_stuck` then says so for ``key``
        until it returns, and :meth:`on_return` tells when it did."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        call = _Call(fn, arg, label, key)
        self._submit(call)
        try:
            await call.done.wait()
        except BaseException:
            with self._lock:
                abandoned = call.started and not call.done.is_set()
                if abandoned:
                    call.abandoned_at = time.monotonic()
                    self._stuck[key] = call
                else:
                    call.fn = _skip  # not started: its thread will skip it
            if abandoned:
                log.warning(
                    "%s is still running in a thread after its timeout; it keeps a thread (%d "
                    "of %d stuck) until it returns, and its job waits for it",
                    label,
                    len(self._stuck),
                    self.max_threads,
                )
            raise
        if call.error is not None:
            raise call.error
        return call.result

    def is_stuck(self, key: str) -> bool:
        return key in self._stuck

    def on_return(self, key: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the event loop once the stuck call ``key`` returns (right away
        if it has already); several callbacks run in the order given."""
        with self._lock:
            call = self._stuck.get(key)
            if call is not None:
                call.on_return.append(callback)
                return
        callback()

    def close(self) -> None:
        """Let idle threads exit; stuck ones are daemons and end with the process."""
        for _ in self._threads:
            self._work.put(None)

    # -- threads -------------------------------------------------------------------------------

    def _submit(self, call: _Call) -> None:
        self._work.put(call)
        with self._lock:
            if self._idle > 0 or len(self._threads) >= self.max_threads:
                return
            thread = threading.Thread(
                target=self._serve, name=f"pgobs-handler-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        work = self._work
        while True:
            with self._lock:
                self._idle += 1
            call = work.get()
            with self._lock:
                self._idle -= 1
            if call is None:
                return
            with self._lock:
                if call.fn is _skip:
                    continue
                call.started = True
            try:
                call.result = call.fn(call.arg)
            except BaseException as exc:  # SystemExit from a handler is its failure, not ours
                call.error = exc
            self._finish(call)

    def _finish(self, call: _Call) -> None:
        self._finished.append(call)
        if not self._wake_pending:
            self._wake_pending = True
            loop = self._loop
            if loop is not None and not loop.is_closed():
                # RuntimeError: the loop closed meanwhile, and nobody waits any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """On the event loop: wake the callers of every call that finished since last time."""
        self._wake_pending = False
        finished = self._finished
        while finished:
            call = finished.popleft()
            with self._lock:
                was_stuck = self._stuck.get(call.key) is call
                if was_stuck:
                    del self._stuck[call.key]
                on_return = call.on_return
            call.done.set()
            if was_stuck:
                held = time.monotonic() - (call.abandoned_at or 0.0)
                log.warning(
                    "%s returned %.1fs after its timeout; its thread is free", call.label, held
                )
                for callback in on_return:
                    callback()


def _skip(_: Any) -> None:
    """Stands in for a call whose caller left before it started."""
