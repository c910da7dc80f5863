"""In-process handlers for the adv7 repro tests: they record runs here; hung ones wait on
RELEASE (a threading.Event) so a test can free their threads when it ends."""

from __future__ import annotations

import threading

from pgobs import Event

RUNS: list[tuple[int, str]] = []
RELEASE = threading.Event()


def hang(event: Event) -> None:
    RUNS.append((event.id, "hang"))
    RELEASE.wait(120)


def noop(event: Event) -> None:
    RUNS.append((event.id, "noop"))


async def anoop(event: Event) -> None:
    RUNS.append((event.id, "anoop"))


async def block_loop(event: Event) -> None:
    """Blocks the worker's event loop (a common mistake: time.sleep in an async def)."""
    import time

    RUNS.append((event.id, "block"))
    time.sleep(float((event.data or {}).get("s", 2.5)))
    RUNS.append((event.id, "blockdone"))


async def swallow_or_work(event: Event) -> None:
    """mode 'swallow': outlives its timeout by swallowing the cancellation (a bad but common
    pattern); otherwise a short, normal job."""
    import anyio

    mode = (event.data or {}).get("mode")
    RUNS.append((event.id, f"start-{mode}"))
    if mode == "swallow":
        try:
            await anyio.sleep(2)
        except BaseException:
            RUNS.append((event.id, "swallowed"))
            return
    await anyio.sleep(0.05)
    RUNS.append((event.id, f"done-{mode}"))


def first_long_then_longer(event: Event) -> None:
    """Run 1 sleeps 1.5 s, run 2 sleeps 3 s (both in threads)."""
    import time

    n = sum(1 for e, w in RUNS if e == event.id and w.startswith("run"))
    RUNS.append((event.id, f"run{n + 1}"))
    time.sleep(1.5 if n == 0 else 3.0)
    RUNS.append((event.id, f"returned{n + 1}"))
