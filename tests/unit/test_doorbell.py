"""The cross-thread doorbell: rung from one thread, heard on another thread's event loop."""

from __future__ import annotations

import threading

import anyio

from pgobs.db.notify import ThreadSafeDoorbell


def test_a_ring_from_another_thread_wakes_the_waiting_loop() -> None:
    bell = ThreadSafeDoorbell()
    waiting = threading.Event()
    heard: list[bool] = []

    async def wait() -> None:
        waiting.set()
        heard.append(await bell.wait(30))

    try:
        loop = threading.Thread(target=anyio.run, args=(wait,))
        loop.start()
        waiting.wait(10)
        bell.ring()
        loop.join(10)
        assert heard == [True]
    finally:
        bell.close()


def test_a_ring_while_nobody_waits_is_kept_once_and_silence_times_out() -> None:
    bell = ThreadSafeDoorbell()

    async def main() -> list[bool]:
        bell.ring()
        bell.ring()
        return [await bell.wait(0.01), await bell.wait(0.01)]

    try:
        assert anyio.run(main) == [True, False]
    finally:
        bell.close()


def test_a_ring_after_close_is_ignored() -> None:
    bell = ThreadSafeDoorbell()
    bell.close()
    bell.ring()
