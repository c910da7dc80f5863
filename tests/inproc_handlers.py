"""Handlers for in-process worker tests: they record every run in this module's lists, so a
test can compare what ran with what the database recorded."""

from __future__ import annotations

import time

import anyio

from pgobs import Event, PermanentError

RUNS: list[tuple[int, str]] = []  # (event id, "ran" or "cancelled")
RELEASE = anyio.Event()


def reset() -> None:
    global RELEASE
    RUNS.clear()
    RELEASE = anyio.Event()


async def by_mode(event: Event) -> None:
    """Succeeds, fails (transient), fails for good, or waits, as the event's data says."""
    mode = (event.data or {}).get("mode")
    RUNS.append((event.id, "ran"))
    await anyio.sleep(0.05)
    if mode == "fail":
        raise RuntimeError(f"event {event.id} fails")
    if mode == "permanent":
        raise PermanentError(f"event {event.id} can never work")


async def until_released(event: Event) -> None:
    try:
        RUNS.append((event.id, "ran"))
        await RELEASE.wait()
    except BaseException:
        RUNS.append((event.id, "cancelled"))
        raise


def sync_noop(event: Event) -> None:
    RUNS.append((event.id, "ran"))


def sync_stuck(event: Event) -> None:
    """Blocks its thread for a while, far past any timeout the test gives it."""
    RUNS.append((event.id, "ran"))
    time.sleep(float((event.data or {}).get("seconds", 2)))
    RUNS.append((event.id, "returned"))


def sync_exit(event: Event) -> None:
    raise SystemExit(3)


async def async_exit(event: Event) -> None:
    raise SystemExit(4)


async def async_cancelled(event: Event) -> None:
    """Lets a CancelledError of its own escape (an inner task it cancelled, say)."""
    import asyncio

    raise asyncio.CancelledError


def sync_generator_exit(event: Event) -> None:
    raise GeneratorExit
