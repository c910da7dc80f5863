"""Job ownership, in-process: outcomes written exactly once through faults at every await point
of the outcome path and shutdowns in the middle of it, a lease lost mid-run, sync handlers whose
threads outlive their timeout, handlers that raise SystemExit, and actions found by identity."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psycopg
import pytest
from prometheus_client import REGISTRY

from pgobs.config.loader import parse_config
from pgobs.db.notify import Doorbell
from pgobs.queue.dlq import dead_ids, retry_dead
from pgobs.queue.worker import WorkerPool, WorkerSettings
from tests import inproc_handlers as handlers
from tests.support import Receiver

pytestmark = pytest.mark.anyio

HANDLER = "tests.inproc_handlers"


async def sql(dsn: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(statement, params)
        return await cur.fetchall() if cur.description else []


async def value(dsn: str, statement: str, params: Any = None) -> Any:
    rows = await sql(dsn, statement, params)
    return rows[0][0] if rows else None


async def until(predicate: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    with anyio.fail_after(timeout):
        while True:
            found = await predicate()
            if found:
                return found
            await anyio.sleep(0.02)


def config(text: str) -> Any:
    parsed, issues = parse_config(text)
    assert parsed is not None, issues
    return parsed


@asynccontextmanager
async def pool(
    dsn: str,
    text: str,
    *,
    concurrency: int = 4,
    lease_s: float = 5.0,
    faults: Callable[[str], Awaitable[None]] | None = None,
) -> AsyncIterator[WorkerPool]:
    settings = WorkerSettings(
        concurrency=concurrency, lease_s=lease_s, poll_interval_s=0.05, grace_s=1.0
    )
    worker = WorkerPool(dsn, config(text), Doorbell(), settings, faults=faults)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        try:
            yield worker
        finally:
            worker.stop()


async def add_jobs(
    dsn: str, observer: str, action: str, modes: list[str], attempts: int = 3, **extra: Any
) -> None:
    """One event per mode (its data says what the handler does) and one job for it."""
    await sql(
        dsn,
        "WITH e AS (INSERT INTO pgobs.events (entity_type, entity_id, event_type, data) "
        "SELECT 'Order', m.n::text, 'paid', jsonb_build_object('mode', m.mode) || %(extra)s "
        "FROM unnest(%(modes)s::text[]) WITH ORDINALITY AS m(mode, n) RETURNING id) "
        "INSERT INTO pgobs.jobs (event_id, observer, action, action_index, action_type, "
        "max_attempts) SELECT id, %(observer)s, %(action)s, 0, 'python', %(attempts)s FROM e",
        {
            "modes": modes,
            "observer": observer,
            "action": action,
            "attempts": attempts,
            "extra": psycopg_json(extra),
        },
    )


def psycopg_json(value: dict[str, Any]) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def fresh_handlers() -> None:
    handlers.reset()


BY_MODE = f"""
defaults: {{circuit: {{enabled: false}}}}  # handlers fail on purpose here
observers:
  - name: obs
    entity: Order
    actions: [{{type: python, handler: "{HANDLER}:by_mode"}}]
    retry: {{max_attempts: 3, initial_delay_ms: 1, jitter: false}}
"""


class Fault:
    """At the ``nth`` pass through ``point``: stop the worker, and break the write if told."""

    def __init__(self, point: str, *, nth: int, breaks: bool) -> None:
        self.point, self.nth, self.breaks = point, nth, breaks
        self.hits = Counter[str]()
        self.worker: WorkerPool | None = None

    async def __call__(self, at: str) -> None:
        self.hits[at] += 1
        if at == self.point and self.hits[at] == self.nth and self.worker is not None:
            self.worker.stop()
            if self.breaks:
                raise psycopg.OperationalError(f"injected at {at}")


async def test_every_outcome_is_written_once_through_faults_and_shutdowns(dsn: str) -> None:
    """Stop the worker, or break its connection, at every await point of the outcome path, in
    the middle of succeeding, failing and permanently failing jobs; then let a clean worker
    finish. Every job's runs, attempts and error history agree, and nothing ran twice."""
    modes = ["ok", "fail", "permanent"] * 32
    await add_jobs(dsn, "obs", f"{HANDLER}:by_mode", modes)
    points = itertools.cycle(["write", "written", "extend"])
    fired = 0
    for round_no in range(12):
        fault = Fault(next(points), nth=1 + round_no % 3, breaks=round_no % 2 == 0)
        async with pool(dsn, BY_MODE, concurrency=2, lease_s=0.6, faults=fault) as worker:
            fault.worker = worker
            with anyio.move_on_after(3):
                while fault.hits[fault.point] < fault.nth:
                    await anyio.sleep(0.01)
        fired += fault.hits[fault.point] >= fault.nth
    left = await value(dsn, "SELECT count(*) FROM pgobs.jobs")
    assert fired >= 9 and left > 0, (fired, left)  # the faults struck while work was in flight
    async with pool(dsn, BY_MODE):
        await until(lambda: value(dsn, "SELECT count(*) = 0 FROM pgobs.jobs"))

    runs = Counter(event_id for event_id, what in handlers.RUNS if what == "ran")
    dead = {
        row[0]: row[1:]
        for row in await sql(
            dsn,
            "SELECT event_id, attempts, error_kind, "
            "jsonb_path_query_array(errors, '$[*].attempt') FROM pgobs.dlq",
        )
    }
    events = await sql(dsn, "SELECT id, data->>'mode' FROM pgobs.events ORDER BY id")
    for event_id, mode in events:
        if mode == "ok":
            assert runs[event_id] == 1 and event_id not in dead, (event_id, runs[event_id])
        elif mode == "permanent":
            assert runs[event_id] == 1 and dead[event_id] == (1, "permanent", [1])
        else:
            assert runs[event_id] == 3 and dead[event_id] == (3, "transient", [1, 2, 3]), (
                runs[event_id],
                dead.get(event_id),
            )


UNTIL_RELEASED = f"""
defaults: {{circuit: {{enabled: false}}}}  # handlers fail on purpose here
observers:
  - name: obs
    entity: Order
    actions: [{{type: python, handler: "{HANDLER}:until_released"}}]
"""


async def test_a_lease_lost_mid_run_stops_the_job_and_discards_its_result(dsn: str) -> None:
    await add_jobs(dsn, "obs", f"{HANDLER}:until_released", ["x"])
    lost_before = metric("observer_leases_lost_total", observer="obs")
    async with pool(dsn, UNTIL_RELEASED, lease_s=0.6):
        await until(lambda: _ran(handlers.RUNS))
        # Another worker took the job over (as the rescuer does when a lease lapsed).
        await sql(dsn, "UPDATE pgobs.jobs SET locked_by = 'thief'")
        await until(lambda: _said(handlers.RUNS, "cancelled"))
        handlers.RELEASE.set()
    assert await sql(dsn, "SELECT state, locked_by, last_error FROM pgobs.jobs") == [
        ("running", "thief", None)
    ]
    assert metric("observer_leases_lost_total", observer="obs") == lost_before + 1


async def test_an_outcome_for_a_job_no_longer_ours_is_discarded(dsn: str) -> None:
    await add_jobs(dsn, "obs", f"{HANDLER}:until_released", ["x"])
    async with pool(dsn, UNTIL_RELEASED, lease_s=60):
        await until(lambda: _ran(handlers.RUNS))
        await sql(dsn, "UPDATE pgobs.jobs SET locked_by = 'thief'")
        handlers.RELEASE.set()  # it finishes; its completion must not delete the thief's job
        await until(lambda: _gone_from_held(dsn))
    assert await sql(dsn, "SELECT state, locked_by FROM pgobs.jobs") == [("running", "thief")]


async def _gone_from_held(dsn: str) -> bool:
    return metric("observer_leases_lost_total", observer="obs") > 0


STUCK = f"""
defaults: {{circuit: {{enabled: false}}}}  # handlers fail on purpose here
observers:
  - name: obs
    entity: Order
    actions: [{{type: python, handler: "{HANDLER}:sync_stuck", timeout_ms: 100}}]
    retry: {{max_attempts: 2, initial_delay_ms: 1, jitter: false}}
"""


async def test_a_stuck_sync_handler_keeps_its_thread_and_its_job_until_it_returns(
    dsn: str,
) -> None:
    """Timed out, its thread runs on: the thread counts against the bound (no new thread per
    attempt), and the job is not retried beside it."""
    await add_jobs(dsn, "obs", f"{HANDLER}:sync_stuck", ["x"] * 3, attempts=2, seconds=1.0)
    before = threading.active_count()
    peak = 0
    async with pool(dsn, STUCK, concurrency=2):

        async def watch() -> bool:
            nonlocal peak
            peak = max(peak, threading.active_count() - before)
            return bool(await value(dsn, "SELECT count(*) = 3 FROM pgobs.dlq"))

        await until(watch, timeout=30)
    assert peak <= 2 + 1  # the handler threads, and at most one of psycopg's resolver threads
    # Each event's runs never overlap: "ran" is always followed by its "returned".
    for _, runs in itertools.groupby(sorted(handlers.RUNS, key=lambda r: r[0]), lambda r: r[0]):
        steps = [what for _, what in runs]
        assert steps == ["ran", "returned", "ran", "returned"], steps
    assert await value(dsn, "SELECT min(last_error) FROM pgobs.dlq") == (
        "python action timed out after 100 ms"
    )


async def test_system_exit_in_a_handler_is_the_jobs_failure(dsn: str) -> None:
    text = f"""
defaults: {{circuit: {{enabled: false}}}}  # handlers fail on purpose here
observers:
  - name: obs-sync
    entity: Order
    actions: [{{type: python, handler: "{HANDLER}:sync_exit"}}]
    retry: {{max_attempts: 1}}
  - name: obs-async
    entity: Order
    actions: [{{type: python, handler: "{HANDLER}:async_exit"}}]
    retry: {{max_attempts: 1}}
  - name: obs-cancelled
    entity: Order
    actions: [{{type: python, handler: "{HANDLER}:async_cancelled"}}]
    retry: {{max_attempts: 1}}
  - name: obs-genexit
    entity: Order
    actions: [{{type: python, handler: "{HANDLER}:sync_generator_exit"}}]
    retry: {{max_attempts: 1}}
"""
    await add_jobs(dsn, "obs-sync", f"{HANDLER}:sync_exit", ["x"])
    await add_jobs(dsn, "obs-async", f"{HANDLER}:async_exit", ["x"])
    await add_jobs(dsn, "obs-cancelled", f"{HANDLER}:async_cancelled", ["x"])
    await add_jobs(dsn, "obs-genexit", f"{HANDLER}:sync_generator_exit", ["x"])
    async with pool(dsn, text):
        await until(lambda: value(dsn, "SELECT count(*) = 4 FROM pgobs.dlq"))
    assert sorted(r[0] for r in await sql(dsn, "SELECT last_error FROM pgobs.dlq")) == [
        f"{HANDLER}:async_cancelled raised CancelledError",
        f"{HANDLER}:async_exit raised SystemExit: 4",
        f"{HANDLER}:sync_exit raised SystemExit: 3",
        f"{HANDLER}:sync_generator_exit raised GeneratorExit: ",
    ]


def hooks(receiver: Receiver, first: str, second: str) -> str:
    return f"""
defaults: {{circuit: {{enabled: false}}}}  # handlers fail on purpose here
observers:
  - name: obs
    entity: Order
    actions:
      - {{type: webhook, name: {first}, url: "{receiver.url}/{first}"}}
      - {{type: webhook, name: {second}, url: "{receiver.url}/{second}"}}
"""


async def test_a_dead_letter_retried_after_the_actions_were_swapped_runs_its_own_action(
    dsn: str, receiver: Receiver
) -> None:
    receiver.respond("/refund", 500)
    await sql(
        dsn,
        "INSERT INTO pgobs.events (entity_type, entity_id, event_type, data) "
        "VALUES ('Order', '7', 'paid', '{}')",
    )
    await sql(
        dsn,
        "INSERT INTO pgobs.jobs (event_id, observer, action, action_index, action_type, "
        "max_attempts) VALUES (1, 'obs', 'refund', 0, 'webhook', 1), "
        "(1, 'obs', 'notify', 1, 'webhook', 1)",
    )
    async with pool(dsn, hooks(receiver, "refund", "notify")):
        await until(lambda: value(dsn, "SELECT count(*) = 0 FROM pgobs.jobs"))
    first_id = receiver.to("/refund")[0].headers["webhook-id"]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await retry_dead(conn, await dead_ids(conn, "obs")) == 1
    async with pool(dsn, hooks(receiver, "notify", "refund")):  # the YAML order swapped
        await until(lambda: value(dsn, "SELECT count(*) = 0 FROM pgobs.jobs"))
    assert len(receiver.to("/refund")) == 2 and len(receiver.to("/notify")) == 1
    assert receiver.to("/refund")[1].headers["webhook-id"] == first_id == "evt_1_obs_0"


async def test_a_job_for_an_action_this_worker_does_not_know_waits(
    dsn: str, receiver: Receiver
) -> None:
    """A rolling deploy: the new listener wrote a job for an action old workers lack. They
    neither run it nor dead-letter it; once no live worker knows it for long, it is removed for
    good and goes to the DLQ with a message naming it."""
    await sql(
        dsn,
        "INSERT INTO pgobs.events (entity_type, entity_id, event_type, data) "
        "VALUES ('Order', '7', 'paid', '{}')",
    )
    await sql(
        dsn,
        "INSERT INTO pgobs.jobs (event_id, observer, action, action_index, action_type) "
        "VALUES (1, 'obs', 'brand-new', 2, 'log'), (1, 'obs', 'refund', 0, 'webhook')",
    )
    async with pool(dsn, hooks(receiver, "refund", "notify")) as worker:
        await until(lambda: value(dsn, "SELECT count(*) = 1 FROM pgobs.jobs"))
        await until(lambda: value(dsn, "SELECT count(*) = 1 FROM pgobs.workers"))
        assert await sql(dsn, "SELECT action, state, attempts, claims FROM pgobs.jobs") == [
            ("brand-new", "available", 0, 0)
        ]
        assert await value(dsn, "SELECT count(*) FROM pgobs.dlq") == 0
        # Long enough ago that no worker, running or lately stopped, could have known it.
        await sql(dsn, "UPDATE pgobs.jobs SET run_at = now() - interval '1 minute'")
        await sql(dsn, "UPDATE pgobs.workers SET last_seen = now() - interval '40 seconds'")
        await sql(
            dsn,
            "INSERT INTO pgobs.workers (worker_id, host, pid, actions) "
            "VALUES ('peer', 'h', 1, ARRAY['obs/refund'])",
        )
        store_dead = await worker_store(worker).dead_letter_unknown_actions(30)
    assert store_dead == ["obs"]
    assert await value(dsn, "SELECT last_error FROM pgobs.dlq") == (
        "action brand-new of observer obs is in no running worker's config: it was removed or "
        "renamed; restore it in observers.yaml, then pgobs dlq retry"
    )


def worker_store(worker: WorkerPool) -> Any:
    completer = worker._completer
    assert completer is not None
    return completer.store


def _ran(runs: list[tuple[int, str]]) -> Awaitable[bool]:
    return _said(runs, "ran")


async def _said(runs: list[tuple[int, str]], what: str) -> bool:
    return any(w == what for _, w in runs)
