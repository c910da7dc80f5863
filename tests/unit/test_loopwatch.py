"""The loop watchdog notices a loop held by time.sleep, names what ran, and counts the time."""

from __future__ import annotations

import logging
import time

import anyio
import pytest
from prometheus_client import REGISTRY

from pgobs.observability.loopwatch import LoopWatch


def blocked_seconds(loop: str) -> float:
    value = REGISTRY.get_sample_value("observer_event_loop_blocked_seconds_total", {"loop": loop})
    return value or 0.0


def test_a_loop_held_by_a_blocking_call_is_reported_with_what_ran(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = LoopWatch(lambda: "obs-slow: handlers:block_loop", loop="test-held", threshold_s=0.2)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            await anyio.sleep(0.1)
            time.sleep(1.0)  # the mistake being watched for: a blocking call on the loop
            await anyio.sleep(0.3)  # a few ticks: the watchdog sees the loop run again
            tg.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING, logger="pgobs.loopwatch"):
        anyio.run(main)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "test-held event loop blocked for" in m and "obs-slow: handlers:block_loop" in m
        for m in messages
    ), messages
    assert any("test-held event loop was blocked for" in m for m in messages), messages
    # The stall lasted about 1 s (less the part before the tick was due); counted twice it
    # would be near 2.
    assert 0.7 < blocked_seconds("test-held") < 1.8


def test_a_loop_that_keeps_ticking_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    watch = LoopWatch(lambda: "nothing", loop="test-free", threshold_s=0.2)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            for _ in range(20):
                time.sleep(0.02)  # short holds, well under the threshold
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING, logger="pgobs.loopwatch"):
        anyio.run(main)
    assert not caplog.records
    assert blocked_seconds("test-free") == 0.0
