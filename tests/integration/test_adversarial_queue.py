"""What an adversarial review of the queue found (each failed before its fix), kept as tests."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from tests import adv_handlers as inproc
from tests.integration.test_ownership import add_jobs, pool, sql, value

pytestmark = pytest.mark.anyio

H = "tests.adv_handlers"


@pytest.fixture(autouse=True)
def released() -> Iterator[None]:
    inproc.RUNS.clear()
    inproc.RELEASE.clear()
    yield
    inproc.RELEASE.set()  # free every hung thread


async def test_one_observers_hung_sync_handler_does_not_stop_the_others(dsn: str) -> None:
    """Observer 'hung' has a sync handler that never returns (timeout 200 ms); observer 'other'
    has a plain async one. Fair share says 'hung' may fill 3 of 4 runners; 'other' must go on."""
    text = f"""
defaults: {{circuit: {{enabled: false}}}}  # handlers fail on purpose here
observers:
  - name: hung
    entity: Order
    actions: [{{type: python, handler: "{H}:hang", timeout_ms: 200}}]
    retry: {{max_attempts: 3, initial_delay_ms: 1, jitter: false}}
  - name: other
    entity: Order
    actions: [{{type: python, handler: "{H}:anoop"}}]
"""
    await add_jobs(dsn, "hung", f"{H}:hang", ["x"] * 8)
    async with pool(dsn, text, concurrency=4):
        with anyio.move_on_after(3):
            while sum(1 for _, w in inproc.RUNS if w == "hang") < 4:
                await anyio.sleep(0.05)
        await add_jobs(dsn, "other", f"{H}:anoop", ["y"] * 3)
        with anyio.move_on_after(10):
            while await value(dsn, "SELECT count(*) FROM pgobs.jobs WHERE observer = 'other'"):
                await anyio.sleep(0.1)
        state = await sql(
            dsn,
            "SELECT observer, state, count(*) FROM pgobs.jobs GROUP BY 1, 2 ORDER BY 1, 2",
        )
        inproc.RELEASE.set()
    hangs = sum(1 for _, w in inproc.RUNS if w == "hang")
    anoops = sum(1 for _, w in inproc.RUNS if w == "anoop")
    assert anoops == 3, (hangs, anoops, state)


def two_observers(names: list[str]) -> str:
    body = "".join(
        f"""
  - name: {name}
    entity: Order
    actions: [{{type: python, handler: "{H}:anoop"}}]
"""
        for name in names
    )
    return "defaults: {circuit: {enabled: false}}\nobservers:" + body


async def test_a_job_whose_worker_restarts_is_not_dead_lettered_as_removed(dsn: str) -> None:
    """README: a job is dead-lettered once no live worker 'has known it for a minute'. Worker A
    (observers a and b) restarts; worker B (only a, e.g. an old version in a rolling deploy)
    sweeps meanwhile. b's backlog, older than a minute, is known by a worker seconds ago."""
    async with pool(dsn, two_observers(["a", "b"])):
        await anyio.sleep(0.5)  # A registered, knows b
    # b's backlog: queued five minutes ago (A was busy), still there as A restarts.
    await add_jobs(dsn, "b", f"{H}:anoop", ["x"] * 3)
    await sql(dsn, "UPDATE pgobs.jobs SET run_at = now() - interval '5 minutes'")
    # A stopped cleanly a moment ago (its row is deleted); B is live and sweeps.
    async with pool(dsn, two_observers(["a"])) as b_worker:
        await anyio.sleep(0.5)
        from tests.integration.test_ownership import worker_store

        await worker_store(b_worker).dead_letter_unknown_actions(60)
    assert await value(dsn, "SELECT count(*) FROM pgobs.dlq") == 0, await sql(
        dsn, "SELECT observer, last_error FROM pgobs.dlq LIMIT 1"
    )


async def test_a_handler_that_blocks_the_loop_past_the_lease_runs_once_per_attempt(
    dsn: str,
) -> None:
    """(Held up: kept as a guard.) An async handler calls time.sleep for longer than the
    lease, on a worker alone. Its run
    ends normally; the worker's own rescuer may see the lapsed lease when the loop comes back.
    Expected: it ran once and its success was recorded (or, at worst, it counts attempts)."""
    text = f"""
defaults: {{circuit: {{enabled: false}}}}  # handlers fail on purpose here
observers:
  - name: obs
    entity: Order
    actions: [{{type: python, handler: "{H}:block_loop", timeout_ms: 60000}}]
    retry: {{max_attempts: 2, initial_delay_ms: 1, jitter: false}}
"""
    await add_jobs(dsn, "obs", f"{H}:block_loop", ["x"], attempts=2, s=5)
    async with pool(dsn, text, concurrency=2, lease_s=2.0):
        with anyio.move_on_after(40):
            while await value(dsn, "SELECT count(*) FROM pgobs.jobs"):
                await anyio.sleep(0.2)
    blocks = sum(1 for _, w in inproc.RUNS if w == "block")
    dead = await sql(dsn, "SELECT attempts, last_error FROM pgobs.dlq")
    assert blocks == 1 and dead == [], (blocks, dead)


async def test_the_job_after_one_that_swallowed_its_timeout_still_runs(dsn: str) -> None:
    """Observer with max_concurrency 1: job 1 times out and swallows the cancellation; jobs 2
    and 3 waited aside. They must run and get outcomes."""
    text = f"""
defaults: {{circuit: {{enabled: false}}}}  # handlers fail on purpose here
observers:
  - name: obs
    entity: Order
    max_concurrency: 1
    actions: [{{type: python, handler: "{H}:swallow_or_work", timeout_ms: 200}}]
  - name: idle
    entity: Nothing
    actions: [{{type: log}}]
"""
    await add_jobs(dsn, "obs", f"{H}:swallow_or_work", ["swallow", "work", "work"])
    async with pool(dsn, text, concurrency=2, lease_s=2.0):
        with anyio.move_on_after(8):
            while await value(dsn, "SELECT count(*) FROM pgobs.jobs"):
                await anyio.sleep(0.1)
        left = await sql(dsn, "SELECT event_id, state, attempts, claims FROM pgobs.jobs")
    assert left == [], (left, inproc.RUNS)


async def test_a_parked_job_is_written_once_its_thread_returns_even_after_a_lost_lease(
    dsn: str,
) -> None:
    """Run 1 of a sync handler loses its lease (its thread runs on, abandoned); the job comes
    back to this same worker; run 2 times out and is parked. When both threads have returned,
    the parked job's outcome must be written. ThreadRunner keys stuck calls by idempotency key,
    so run 1's return removes run 2's entry and run 2's return is never reported."""
    text = f"""
defaults: {{circuit: {{enabled: false}}}}  # handlers fail on purpose here
observers:
  - name: obs
    entity: Order
    actions: [{{type: python, handler: "{H}:first_long_then_longer", timeout_ms: 700}}]
    retry: {{max_attempts: 3, initial_delay_ms: 1, jitter: false}}
"""
    await add_jobs(dsn, "obs", f"{H}:first_long_then_longer", ["x"])
    async with pool(dsn, text, concurrency=2, lease_s=0.6):
        with anyio.fail_after(5):
            while (1, "run1") not in inproc.RUNS:
                await anyio.sleep(0.01)
        await sql(dsn, "UPDATE pgobs.jobs SET locked_by = 'thief'")  # the lease is lost
        with anyio.fail_after(5):
            while await value(dsn, "SELECT count(*) FROM pgobs.jobs WHERE locked_by = 'thief'"):
                # once the worker has seen the loss, the job comes back to the queue
                await anyio.sleep(0.1)
                await sql(
                    dsn,
                    "UPDATE pgobs.jobs SET state = 'available', locked_by = NULL, "
                    "leased_until = NULL WHERE locked_by = 'thief' AND EXISTS ("
                    "SELECT 1 WHERE %s)",
                    (len([1 for _, w in inproc.RUNS if w == "run1"]) == 1,),
                )
        with anyio.move_on_after(10):
            while (1, "returned2") not in inproc.RUNS:
                await anyio.sleep(0.1)
        await anyio.sleep(1.5)
        rows = await sql(dsn, "SELECT state, attempts, claims, last_error FROM pgobs.jobs")
    assert (1, "run2") in inproc.RUNS, inproc.RUNS
    # Run 2's outcome (timed out) was written once its thread returned: the job went on to
    # its next attempt (or finished), instead of waiting "running" forever.
    assert rows == [] or (rows[0][1] >= 2 and "timed out" in rows[0][3]), (rows, inproc.RUNS)
