"""Delivery logic without I/O: backoff, Standard Webhooks signatures, Retry-After, templates."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from pgobs.actions.http import retry_after
from pgobs.actions.webhook import sign
from pgobs.config.model import RetryPolicy
from pgobs.queue.backoff import retry_delay_s
from pgobs.templates import BodyTemplate, Template, TemplateFailed


def test_exponential_linear_fixed_and_the_cap() -> None:
    exp = RetryPolicy(initial_delay_ms=100, max_delay_ms=30_000, jitter=False)
    assert [retry_delay_s(exp, n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert retry_delay_s(exp, 200) == 30.0
    lin = RetryPolicy(initial_delay_ms=100, backoff_strategy="linear", jitter=False)
    assert [retry_delay_s(lin, n) for n in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.3])
    fixed = RetryPolicy(initial_delay_ms=250, backoff_strategy="fixed", jitter=False)
    assert {retry_delay_s(fixed, n) for n in (1, 5, 9)} == {0.25}


def test_jitter_stays_within_half_and_full_delay() -> None:
    policy = RetryPolicy(initial_delay_ms=1000)
    rng = random.Random(1)
    delays = [retry_delay_s(policy, 3, rng=rng) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100


def test_retry_after_wins_when_longer_up_to_its_own_cap() -> None:
    policy = RetryPolicy(initial_delay_ms=100, max_delay_ms=30_000, jitter=False)
    assert retry_delay_s(policy, 1, retry_after_s=3) == 3
    assert retry_delay_s(policy, 1, retry_after_s=120) == 120  # not max_delay_ms' 30 s
    assert retry_delay_s(policy, 1, retry_after_s=7200) == 3600  # the default cap: an hour
    assert retry_delay_s(policy, 1, retry_after_s=0) == 0.1
    short = RetryPolicy(max_retry_after_ms=60_000, jitter=False)
    assert retry_delay_s(short, 1, retry_after_s=120) == 60


def test_retry_after_header_forms() -> None:
    assert retry_after("120") == 120
    assert retry_after(None) is None
    assert retry_after("soon") is None
    before = datetime.now(UTC)
    waited = retry_after(format_datetime(before + timedelta(seconds=60), usegmt=True)) or 0
    elapsed = (datetime.now(UTC) - before).total_seconds()
    assert 59 - elapsed < waited <= 60  # an HTTP date drops the fraction of a second


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # From the Standard Webhooks specification's reference test.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_body_template_renders_valid_json_shapes() -> None:
    body = BodyTemplate({"text": "Order {{ data.id }}", "n": 3, "tags": ["{{ data.tag }}", "x"]})
    rendered = body.render({"data": {"id": 7, "tag": 'quote " and \\ back'}})
    assert rendered == {"text": "Order 7", "n": 3, "tags": ['quote " and \\ back', "x"]}


def test_missing_fields_render_empty_and_failures_are_reported() -> None:
    assert Template("[{{ data.customer.name }}]").render({"data": {}}) == "[]"
    with pytest.raises(TemplateFailed, match="division by zero"):
        Template("{{ 1 / 0 }}").render({})


def test_the_sandbox_refuses_python_internals() -> None:
    with pytest.raises(TemplateFailed, match="unsafe"):
        Template("{{ data.__class__.__mro__[1].__subclasses__() }}").render({"data": {}})


def test_the_retry_after_cap_is_read_from_the_retry_block() -> None:
    from pgobs.config.loader import parse_config

    text = (
        "observers:\n"
        "  - name: a\n"
        "    entity: Order\n"
        "    actions: [{type: log}]\n"
        "    retry: {max_retry_after_ms: %s}\n"
    )
    config, _ = parse_config(text % "600000")
    assert config is not None and config.observers[0].retry.max_retry_after_ms == 600_000
    config, issues = parse_config(text % "-1", "observers.yaml")
    assert config is None
    assert str(issues[0]) == (
        "observers.yaml:5: error: 'max_retry_after_ms' must be between 0 and 86400000, got -1 "
        "(observers[0].retry.max_retry_after_ms)"
    )
