"""Retry delays: exponential, linear or fixed, capped, with full jitter."""

from __future__ import annotations

import random
from typing import assert_never

from pgobs.config.model import RetryPolicy


def retry_delay_s(
    policy: RetryPolicy,
    attempt: int,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the attempt after ``attempt`` (1-based).

    exponential: initial · 2^(attempt-1); linear: initial · attempt; fixed: initial; all capped at
    ``max_delay_ms``. Jitter picks uniformly in [delay/2, delay] so a fleet does not retry in step.
    A server's ``Retry-After`` wins when longer, still capped.
    """
    initial = policy.initial_delay_ms / 1000
    cap = policy.max_delay_ms / 1000
    strategy = policy.backoff_strategy
    if strategy == "exponential":
        delay = initial * 2.0 ** min(attempt - 1, 62)
    elif strategy == "linear":
        delay = initial * attempt
    elif strategy == "fixed":
        delay = initial
    else:
        assert_never(strategy)
    delay = min(delay, cap)
    if policy.jitter and delay > 0:
        uniform = rng.uniform if rng else random.uniform
        delay = uniform(delay / 2, delay)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, cap))
    return delay
