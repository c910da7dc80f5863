"""Handlers the benchmarks' worker processes run. Timing is taken inside the handler (first call
to N-th call), as the peer benchmarks count completions in their entrypoints."""

from __future__ import annotations

import json
import os
import time

from pgobs import Event

_TARGET = int(os.environ.get("PGOBS_BENCH_N", "0"))
_OUT = os.environ.get("PGOBS_BENCH_OUT", "")
_calls = 0
_first = 0.0
_latencies: list[float] = []


def _report(payload: dict[str, object], path: str = _OUT) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, path)


async def noop(event: Event) -> None:
    """Counts calls; writes the first and N-th call times when the N-th arrives."""
    global _calls, _first
    _calls += 1
    if _calls == 1:
        _first = time.time()
    if _calls == _TARGET:
        _report({"first": _first, "last": time.time(), "calls": _calls})


def noop_sync(event: Event) -> None:
    """The same as ``noop``, written as a plain ``def`` (what most handlers are)."""
    global _calls, _first
    _calls += 1
    if _calls == 1:
        _first = time.time()
    if _calls == _TARGET:
        _report({"first": _first, "last": time.time(), "calls": _calls})


async def latency(event: Event) -> None:
    """INSERT-to-handler-start latency: the writer puts its send time in the row. A row without
    one is the warm-up: seeing it proves the listener leads and this worker runs, so the timed
    inserts start on a ready pipeline (``<out>.ready`` appears), as the pgqueuer peer's do."""
    started = time.time()
    sent = (event.data or {}).get("sent")  # a Decimal: pgobs keeps numbers exact
    if sent is None:
        _report({"ready": started}, _OUT + ".ready")
        return
    _latencies.append(started - float(sent))
    if len(_latencies) == _TARGET:
        _report({"latencies": _latencies, "last": time.time()})
