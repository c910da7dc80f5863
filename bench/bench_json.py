"""Decoding a typical 10-field row, and encoding its webhook envelope, per JSON library.

Run: ``python bench/bench_json.py [--number 200000]``. The listener decodes every event it reads
and the worker every event it claims, so this is a per-event cost on both hot paths. Candidates
that are not installed (simplejson) are skipped. orjson is the lossy baseline (every non-integer
becomes a float, integers past 64 bits too); the others keep numbers exact.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import timeit
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

import msgspec
import orjson

from pgobs import jsoncodec

# As Postgres writes a row of an orders table (jsonb's key order), with and without a numeric.
MONEY_ROW = (
    b'{"id": 48213, "note": null, "paid": true, "email": "ada@example.com", "items": 3, '
    b'"total": 250.00, "status": "paid", "currency": "EUR", '
    b'"created_at": "2026-11-28T07:41:47.789962+00:00", "customer_id": 9021}'
)
INTEGER_ROW = MONEY_ROW.replace(b"250.00", b"25000")


def decoders() -> dict[str, Callable[[bytes], Any]]:
    stdlib = json.JSONDecoder(parse_float=Decimal)
    found: dict[str, Callable[[bytes], Any]] = {
        "orjson (lossy: floats)": orjson.loads,
        "msgspec float_hook=Decimal (pgobs)": jsoncodec.decode,
        "json parse_float=Decimal": lambda doc: stdlib.decode(doc.decode()),
    }
    try:
        import simplejson  # type: ignore[import-untyped]  # optional; has no type stubs
    except ImportError:
        return found
    simple = simplejson.JSONDecoder(parse_float=Decimal)
    found["simplejson use_decimal"] = lambda doc: simple.decode(doc.decode())
    return found


def envelope(data: Any) -> dict[str, Any]:
    return {
        "event_id": 1,
        "entity_type": "Order",
        "entity_id": "48213",
        "event_type": "UPDATE",
        "data": data,
        "old_data": dict(data),
        "changes": ["status"],
        "tenant": None,
        "actor": None,
        "created_at": "2026-11-28T07:41:47.789962+00:00",
        "observer": "obs-paid",
    }


def per_call_ns(call: Callable[[], object], number: int) -> float:
    """Best of 5, in this thread's CPU time: steadier than wall time on a shared machine."""
    return min(timeit.repeat(call, number=number, repeat=5, timer=time.thread_time)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000, help="calls per timing")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"msgspec {msgspec.__version__}, orjson {orjson.__version__}")
    print(f"{'decode a 10-field row':<36} {'numeric row':>12} {'integer row':>12}")
    for name, decode in decoders().items():
        money = per_call_ns(partial(decode, MONEY_ROW), args.number)
        ints = per_call_ns(partial(decode, INTEGER_ROW), args.number)
        print(f"{name:<36} {money:>9,.0f} ns {ints:>9,.0f} ns")
    exact, lossy = envelope(jsoncodec.decode(MONEY_ROW)), envelope(orjson.loads(MONEY_ROW))
    print(f"{'encode its webhook envelope':<36}")
    baseline = per_call_ns(lambda: orjson.dumps(lossy), args.number)
    print(f"{'orjson, floats (lossy)':<36} {baseline:>9,.0f} ns")
    chosen = per_call_ns(lambda: jsoncodec.encode(exact), args.number)
    print(f"{'orjson + Decimal fragments (pgobs)':<36} {chosen:>9,.0f} ns")


if __name__ == "__main__":
    main()
