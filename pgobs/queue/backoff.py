"""Retry delays: exponential, linear or fixed, capped, with equal jitter; a server's
Retry-After wins when longer, up to its own cap."""

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
    ``max_delay_ms``. Jitter is "equal jitter": uniform in [delay/2, delay], so a fleet does not
    retry in step yet never retries sooner than half the delay. A server's ``Retry-After`` wins
    when longer, capped at ``max_retry_after_ms`` (not ``max_delay_ms``: a 429 asking for two
    minutes means two minutes).
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
        delay = max(delay, min(retry_after_s, policy.max_retry_after_ms / 1000))
    return delay
