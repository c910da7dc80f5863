"""observers.yaml validation: every broken config is rejected at the right line with a hint."""

from __future__ import annotations

import textwrap

import pytest

from pgobs.actions.specs import PythonSpec, WebhookSpec
from pgobs.config.fields import parse_duration
from pgobs.config.loader import parse_config

GOOD = """
observers:
  - name: obs-webhook
    entity: Order
    event_type: [created, UPDATE]
    condition: "status == 'paid' && total > 100"
    actions:
      - type: webhook
        url: https://example.com/hooks/orders
        headers: {Authorization: "Bearer ${PGOBS_TEST_TOKEN}"}
        signing_secret_env: PGOBS_TEST_SECRET
        timeout_ms: 5000
        body_template: {order: "{{ data.id }}", fixed: 3}
      - type: slack
        webhook_url: https://hooks.slack.com/services/x
        message_template: "Order {{ data.id }} paid: {{ data.total }}"
      - type: email
        from: alerts@example.com
        to: [ops@example.com]
        subject_template: "Order {{ data.id }}"
        body_template: "paid"
      - type: database
        function: app.on_order
      - type: log
      - type: python
        handler: json:dumps
      - type: cache
        keys: ["order:{{ data.id }}"]
    retry:
      {max_attempts: 5, initial_delay_ms: 100, max_delay_ms: 30000, backoff_strategy: exponential}
    on_failure: dlq
"""


def test_a_good_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOBS_TEST_TOKEN", "tok")
    monkeypatch.setenv("PGOBS_TEST_SECRET", "s3cret")
    config, issues = parse_config(GOOD, "observers.yaml", strict_env=True)
    assert issues == []
    assert config is not None
    (obs,) = config.observers
    assert obs.event_types == frozenset({"INSERT", "UPDATE"})
    assert len(obs.actions) == 7
    webhook = obs.actions[0]
    assert isinstance(webhook, WebhookSpec)
    assert webhook.headers == {"Authorization": "Bearer tok"}
    assert webhook.signing_secret == "s3cret"
    assert isinstance(obs.actions[5], PythonSpec)


def test_unset_env_is_a_warning_at_validate_time_and_an_error_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGOBS_TEST_TOKEN", raising=False)
    monkeypatch.delenv("PGOBS_TEST_SECRET", raising=False)
    config, issues = parse_config(GOOD, "observers.yaml", strict_env=False)
    assert config is not None
    assert {i.severity for i in issues} == {"warning"}
    assert {i.line for i in issues} == {10, 11}
    config, issues = parse_config(GOOD, "observers.yaml", strict_env=True)
    assert config is None
    assert any("PGOBS_TEST_SECRET" in i.message and i.line == 11 for i in issues)


def base(actions: str = "      - type: log", extra: str = "") -> str:
    return (
        "observers:\n  - name: obs\n    entity: Order\n" + extra + "    actions:\n" + actions + "\n"
    )


BROKEN = [
    # (config text, line, words in the message)
    ("observers: [\n", 2, "YAML syntax"),
    ("observer:\n  - name: x\n", 1, "unknown key 'observer'"),
    ("observers: []\n", 1, "non-empty 'observers'"),
    ("observers:\n  - entity: Order\n    actions: [{type: log}]\n", 2, "needs 'name'"),
    (base(extra="    entyty: Order\n"), 4, "did you mean 'entity'"),
    (base(actions="      - type: carrier_pigeon"), 5, "must be one of"),
    (base(actions="      - type: webhook"), 5, "needs one of url, url_env"),
    (base(actions="      - type: webhook\n        url: ftp://x"), 6, "http:// or https://"),
    (base(extra="    condition: \"status == 'paid' &&\"\n"), 4, "condition does not parse"),
    (base(extra='    condition: "fancy(x)"\n'), 4, "condition does not parse"),
    (
        base(
            actions="      - type: slack\n        webhook_url: https://x\n"
            '        message_template: "{{ data.id "'
        ),
        7,
        "template does not compile",
    ),
    (base(actions="      - type: log\n        timeout_ms: soon"), 6, "must be an integer"),
    (base(extra="    retry: {max_attempts: 0}\n"), 4, "between 1 and 1000"),
    (base(extra="    retry: {backoff_strategy: random}\n"), 4, "must be one of"),
    (base(extra="    retry: {max_delay_ms: 99999999999}\n"), 4, "between 0 and 86400000"),
    (base(extra="    retry: {initial_delay_ms: 500, max_delay_ms: 10}\n"), 4, "max_delay_ms"),
    (base(extra="    on_failure: ignore\n"), 4, "must be one of dlq, log"),
    (
        base(actions="      - type: python\n        handler: no_such_module_xyz:run"),
        6,
        "cannot import",
    ),
    (base(actions="      - type: python\n        handler: not-a-handler"), 6, "module:function"),
    (
        base(actions='      - type: database\n        function: "x; drop table y"'),
        6,
        "SQL function name",
    ),
    (
        base(actions="      - type: email\n        from: a@b.c\n        body_template: hi"),
        5,
        "needs 'to' or 'to_template'",
    ),
    (base(actions="      - type: log\n        level: loud"), 6, "must be one of"),
    (base(actions=""), 4, "non-empty 'actions'"),
    (base() + "  - name: obs\n    entity: Order\n    actions: [{type: log}]\n", 6, "used twice"),
    (base(extra="    name: again\n"), 4, "duplicate key 'name'"),
    (
        base(actions="      - type: webhook\n        url: https://x\n        headers: [a, b]"),
        7,
        "must be a mapping",
    ),
    ("observers:\n  - just a string\n", 2, "must be a mapping"),
]


@pytest.mark.parametrize(("text", "line", "words"), BROKEN)
def test_broken_config_is_rejected_at_the_right_line(text: str, line: int, words: str) -> None:
    config, issues = parse_config(textwrap.dedent(text), "observers.yaml")
    assert config is None
    errors = [i for i in issues if i.severity == "error"]
    assert errors, issues
    matching = [i for i in errors if words in str(i)]
    assert matching, [str(i) for i in errors]
    assert matching[0].line == line, [str(i) for i in errors]
    assert str(matching[0]).startswith(f"observers.yaml:{line}: error: ")


def test_every_error_is_reported_not_just_the_first() -> None:
    text = base(extra='    entyty: x\n    on_failure: nope\n    condition: "a =="\n')
    config, issues = parse_config(text, "observers.yaml")
    assert config is None
    assert len([i for i in issues if i.severity == "error"]) == 3


def test_actions_are_named_by_what_they_are_never_by_position() -> None:
    def names(actions: str) -> dict[str, str]:
        config, issues = parse_config(
            f"observers:\n  - name: o\n    entity: E\n    actions:\n{actions}"
        )
        assert config is not None, issues
        obs = config.observers[0]
        return {n: type(s).__name__ for n, s in zip(obs.action_names, obs.actions, strict=True)}

    a = '      - {type: webhook, url: "http://127.0.0.1/a"}\n'
    b = '      - {type: webhook, url: "http://127.0.0.1/b"}\n'
    log = "      - {type: log}\n"
    handler = '      - {type: python, handler: "tests.handlers:record"}\n'
    assert list(names(log + handler)) == ["log", "tests.handlers:record"]
    named = '      - {type: webhook, name: refund, url: "http://127.0.0.1/r"}\n'
    assert list(names(named + log)) == ["refund", "log"]
    # Two unnamed webhooks: each keeps its own identity when the YAML order is swapped.
    first, second = names(a + b), names(b + a)
    assert set(first) == set(second) and len(first) == 2
    assert all(n.startswith("webhook~") for n in first)
    assert list(first) == list(reversed(list(second)))


def test_two_actions_with_one_name_are_refused() -> None:
    text = """observers:
  - name: o
    entity: E
    actions:
      - {type: log, name: same}
      - {type: webhook, name: same, url: "http://127.0.0.1/x"}
"""
    config, issues = parse_config(text, "observers.yaml")
    assert config is None
    assert "two actions of this observer are both named 'same'" in str(issues[-1])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("300", 300.0),
        (45, 45.0),
        ("1.5s", 1.5),
    ],
)
def test_durations_read_with_their_unit(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "-1s", "1x", "", True, None, [], "m"])
def test_a_malformed_duration_is_refused(text: object) -> None:
    assert parse_duration(text) is None
