"""Condition evaluations per second on one core, for a few condition shapes.

Run: ``python bench/bench_conditions.py [--seconds 1.0]``. Conditions run for every event the
listener reads, once per observer, so this is the per-event cost the listener pays; the
two-clause shape should stay above 500,000 evaluations per second.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from decimal import Decimal

from pgobs.conditions import Condition, compile_condition
from pgobs.events import Event

SHAPES = {
    "two clauses": "status == 'paid' && total > 100",
    "dotted path": "customer.tier == 'gold' && items.0.qty >= 2",
    "in list": "status in ['paid', 'shipped', 'delivered'] || event.tenant in ['acme', 'globex']",
    "field_changed": "field_changed('status') && !field_changed_to('status', 'cancelled')",
    "envelope": "event.event_type == 'UPDATE' and event.entity_type == 'Order'",
}
STATUSES = ["paid", "pending", "shipped", "delivered", "cancelled", "refunded"]
TARGET = 500_000


def make_events(count: int, seed: int = 7) -> list[Event]:
    """Order events as the listener sees them: a mix of inserts and updates, of matches and not."""
    rng = random.Random(seed)
    events = []
    for number in range(count):
        data = {
            "id": number,
            "status": rng.choice(STATUSES),
            # numeric columns arrive as int or, with a fraction, as Decimal (pgobs.jsoncodec)
            "total": rng.choice([rng.randint(0, 400), Decimal(f"{rng.uniform(0, 400):.2f}")]),
            "currency": "EUR",
            "customer": {"id": rng.randint(1, 5000), "tier": rng.choice(["gold", "silver", None])},
            "items": [{"sku": f"SKU-{rng.randint(1, 99)}", "qty": rng.randint(1, 4)}],
        }
        if rng.random() < 0.05:
            del data["total"]  # a few rows lack the field; a missing field is null
        is_update = rng.random() < 0.6
        old_data = None
        if is_update:
            old_data = {**data, "status": rng.choice(STATUSES)}
        events.append(
            Event(
                id=number,
                entity_type="Order",
                event_type="UPDATE" if is_update else "INSERT",
                data=data,
                entity_id=str(number),
                old_data=old_data,
                tenant=rng.choice(["acme", "globex", "initech"]),
            )
        )
    return events


def measure(condition: Condition, events: list[Event], seconds: float) -> tuple[float, float]:
    """Evaluations per second and the share of events that matched."""
    matched = sum(condition(event) for event in events)
    evaluations = 0
    started = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        for event in events:
            condition(event)
        evaluations += len(events)
        elapsed = time.perf_counter() - started
    return evaluations / elapsed, matched / len(events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per shape")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the brief says
    events = make_events(10_000)
    print(f"{'shape':<15} {'evals/s':>12} {'matched':>8}  condition")
    for name, source in SHAPES.items():
        rate, matched = measure(compile_condition(source), events, args.seconds)
        print(f"{name:<15} {rate:>12,.0f} {matched:>8.1%}  {source}")
        if name == "two clauses" and rate < TARGET:
            print(f"  below the target of {TARGET:,} evaluations per second")


if __name__ == "__main__":
    main()
