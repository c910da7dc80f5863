"""One summary of a latency sample for every queue, so pgobs and its peers are reported alike."""

from __future__ import annotations

import statistics


def summarize(latencies_s: list[float]) -> dict[str, float]:
    """p50, p99 and max in milliseconds, and the sample count, of latencies in seconds."""
    if not latencies_s:
        raise ValueError("no latency samples")
    lat = sorted(x * 1000 for x in latencies_s)
    return {
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[max(int(len(lat) * 0.99) - 1, 0)],
        "max_ms": lat[-1],
        "samples": len(lat),
    }
