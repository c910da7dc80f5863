"""A worker's view of its circuits, without I/O: what counts, when it opens on its own counts,
which jobs come back at the probe time, and what a probe's result does."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from pgobs.actions.failures import Failure
from pgobs.config.loader import parse_config
from pgobs.queue.circuits import CLOSED, HALF_OPEN, OPEN, PROBE, Circuit, CircuitBoard
from pgobs.queue.jobs import Job

CONFIG = """
observers:
  - name: obs
    entity: E
    actions:
      - type: webhook
        url: http://partner:8080/hook
        circuit: {min_requests: 4, failure_threshold: 0.5, open_for: 2s, max_open_for: 5s}
      - type: log
"""
DOWN = Failure("POST http://partner:8080/hook answered 503", "transient")
NOT_FOUND = Failure("POST http://partner:8080/hook answered 404", "permanent")


def job(n: int, action: str = "webhook") -> Job:
    return Job(n, n, "obs", action, 0, 1, 5, None)


def in_loop(test: Callable[[CircuitBoard, Circuit], None]) -> None:
    config, issues = parse_config(CONFIG)
    assert config is not None, issues

    async def main() -> None:
        board = CircuitBoard(None, config.observers)  # type: ignore[arg-type]  # no I/O here
        circuit = board.of(job(0))
        assert circuit is not None
        test(board, circuit)

    anyio.run(main)


def test_only_transient_failures_count_and_the_rate_opens_it() -> None:
    def test(board: CircuitBoard, c: Circuit) -> None:
        assert c.key == "http://partner:8080"
        assert board.of(job(0, "log")) is None  # calls nothing: no breaker
        for n in range(3):
            assert board.record(c, job(n), NOT_FOUND) is None  # the target answered
        assert board.record(c, job(3), DOWN) is None  # 1 of 4 failed
        assert board.record(c, job(4), DOWN) is None  # 2 of 5
        assert c.state == CLOSED
        # 3 of 6: the rate is reached, and this worker stops calling before any round trip;
        # the job that tripped it waits for the probe time instead of retrying.
        assert board.record(c, job(5), DOWN) is not None
        assert c.state == OPEN
        assert (c.requests, c.failures) == (6, 3)

    in_loop(test)


def test_an_open_circuit_sends_two_jobs_back_for_the_probe_and_holds_the_rest() -> None:
    def test(board: CircuitBoard, c: Circuit) -> None:
        c.fleet_requests, c.fleet_failures = 3.0, 3.0  # the fleet's failures count too
        delay = board.record(c, job(1), DOWN)  # the one that tripped it waits, not retries
        assert c.state == OPEN and delay is not None and 2 <= delay <= 3
        waits = [float(board.verdict(c)) for _ in range(4)]  # deferrals, never PROBE
        # The one that tripped it and this one come back at the probe time; the rest later.
        assert [2 <= w <= 3 for w in waits] == [True, False, False, False]
        assert all(w >= 7 for w in waits[1:])
        # A call begun before it opened and failing now is deferred too, and not counted.
        assert board.record(c, job(9), DOWN) is not None
        assert c.failures == 1

    in_loop(test)


def test_one_probe_and_what_its_result_does() -> None:
    def test(board: CircuitBoard, c: Circuit) -> None:
        c.state, c.open_s, c.wait_until = OPEN, 2.0, anyio.current_time() - 0.1
        assert board.verdict(c) == PROBE
        c.state, c.probing = HALF_OPEN, 7  # granted to job 7 (take_probe asks the fleet)
        assert isinstance(board.verdict(c), float)  # the others wait for its result
        delay = board.record(c, job(7), DOWN)
        assert c.state == OPEN and c.open_s == 4  # twice as long...
        assert delay is not None and delay >= 4
        c.state, c.probing, c.wait_until = HALF_OPEN, 8, 0.0
        board.record(c, job(8), DOWN)
        assert c.open_s == 5  # ...up to max_open_for
        c.state, c.probing = HALF_OPEN, 9
        assert board.record(c, job(9), None) is None
        assert c.state == CLOSED
        assert [ok for _, ok in board._probes] == [DOWN, DOWN, None]  # reported by the sync

    in_loop(test)


def test_a_probe_that_stops_without_a_result_lets_the_fleet_probe_again() -> None:
    """Its worker shut down, or lost its lease: not the target's failure."""

    def test(board: CircuitBoard, c: Circuit) -> None:
        c.state, c.probing, c.wait_until = HALF_OPEN, 3, 0.0
        board.abandon(c, job(3))
        assert c.probing is None and board.verdict(c) == PROBE

    in_loop(test)
