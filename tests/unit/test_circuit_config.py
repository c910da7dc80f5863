"""Circuit settings in observers.yaml: defaults, per-action overrides, which breaker an action
uses, and every mistake reported at its line with a hint."""

from __future__ import annotations

import textwrap

import pytest

from pgobs.config.circuit import CircuitPolicy, circuit_key
from pgobs.config.loader import parse_config

CONFIG = """
defaults:
  circuit:
    {failure_threshold: 0.25, min_requests: 4, window: 10s, open_for: 500ms, max_open_for: 1m}
observers:
  - name: obs-a
    entity: Order
    actions:
      - type: webhook
        url: https://api.example.com/hooks/a
      - type: webhook
        name: other
        url: https://api.example.com:8443/b
        circuit: {open_for: 2s, success_threshold: 3}
      - type: python
        handler: json:dumps
        circuit: {enabled: false}
      - type: database
        function: app.on_order
        circuit: {key: shared-db}
      - type: log
  - name: obs-b
    entity: Order
    actions:
      - type: slack
        webhook_url: https://api.example.com/services/x
        message_template: hi
      - type: email
        host: smtp.example.com
        from: a@example.com
        to: [b@example.com]
        body_template: hi
"""


def test_defaults_and_overrides_give_each_action_its_breaker() -> None:
    config, issues = parse_config(CONFIG, "observers.yaml")
    assert [i for i in issues if i.severity == "error"] == []
    assert config is not None
    a, b = config.observers
    defaults = CircuitPolicy(
        failure_threshold=0.25, min_requests=4, window_s=10, open_for_s=0.5, max_open_for_s=60
    )
    assert a.circuits[0] == defaults
    assert a.circuits[1].open_for_s == 2 and a.circuits[1].success_threshold == 3
    assert a.circuits[1].min_requests == 4  # the rest from the defaults
    keys = [circuit_key(s, p) for s, p in zip(a.actions, a.circuits, strict=True)]
    assert keys == [
        "https://api.example.com:443",
        "https://api.example.com:8443",
        None,  # switched off
        "shared-db",
        None,  # a log action calls nothing
    ]
    slack_key, email_key = (circuit_key(s, p) for s, p in zip(b.actions, b.circuits, strict=True))
    assert slack_key == "https://api.example.com:443"  # the same origin: the same breaker
    assert email_key == "smtp://smtp.example.com:25"


def test_without_any_circuit_key_every_action_has_the_documented_defaults() -> None:
    config, _ = parse_config(
        "observers: [{name: o, entity: E, actions: [{type: python, handler: 'json:dumps'}]}]"
    )
    assert config is not None
    (policy,) = config.observers[0].circuits
    assert policy == CircuitPolicy(
        key=None,
        failure_threshold=0.5,
        min_requests=10,
        window_s=30,
        open_for_s=30,
        max_open_for_s=600,
        success_threshold=1,
        enabled=True,
    )
    assert circuit_key(config.observers[0].actions[0], policy) == "python:json:dumps"


ACTION = """
observers:
  - name: obs
    entity: Order
    actions:
      - type: webhook
        url: https://example.com/x
        circuit: {circuit}
"""


@pytest.mark.parametrize(
    ("circuit", "words", "hint"),
    [
        ("{open_for: soon}", "'open_for' must be a duration, got 'soon'", "500ms, 30s, 5m"),
        ("{window: -3s}", "'window' must be a duration", "500ms, 30s, 5m"),
        ("{open_fr: 1s}", "unknown key 'open_fr' in circuit", "did you mean 'open_for'?"),
        ("{failure_threshold: 2}", "failure rate above 0 and at most 1, got 2", "e.g."),
        ("{failure_threshold: '50%'}", "failure rate above 0 and at most 1", "e.g."),
        ("{min_requests: 0}", "'min_requests' must be between 1 and 1000000", None),
        ("{open_for: 5m, max_open_for: 1m}", "max_open_for (60s) is shorter", "raise"),
        ("{enabled: maybe}", "'enabled' must be true or false", None),
        ("{key: '  '}", "circuit 'key' must not be blank", "key: partner-api"),
        ("30s", "circuit must be a mapping", "key: value"),
    ],
)
def test_a_bad_circuit_is_reported_at_its_line_with_a_hint(
    circuit: str, words: str, hint: str | None
) -> None:
    config, issues = parse_config(ACTION.format(circuit=circuit), "observers.yaml")
    assert config is None
    (issue,) = [i for i in issues if i.severity == "error"]
    assert words in issue.message
    assert issue.line == 8
    if hint is not None:
        assert issue.hint is not None and hint in issue.hint


def test_bad_defaults_are_reported_too() -> None:
    text = textwrap.dedent(
        """
        defaults:
          circuit: {open_for: 1 minute}
          retries: 3
        observers: [{name: o, entity: E, actions: [{type: log}]}]
        """
    )
    config, issues = parse_config(text, "observers.yaml")
    assert config is None
    messages = sorted((i.line, i.message) for i in issues)
    assert messages == [
        (3, "'open_for' must be a duration, got '1 minute'"),
        (4, "unknown key 'retries' in defaults"),
    ]


def test_a_circuit_on_an_action_that_calls_nothing_is_refused() -> None:
    text = "observers: [{name: o, entity: E, actions: [{type: log, circuit: {open_for: 1s}}]}]"
    config, issues = parse_config(text, "observers.yaml")
    assert config is None
    assert "a log action calls nothing outside: it has no circuit" in issues[0].message


def test_actions_sharing_a_breaker_must_agree_on_it() -> None:
    text = textwrap.dedent(
        """
        observers:
          - name: a
            entity: E
            actions: [{type: webhook, url: "http://h:81/x", circuit: {open_for: 1s}}]
          - name: b
            entity: E
            actions:
              - type: webhook
                url: "http://h:81/y"
        """
    )
    config, issues = parse_config(text, "observers.yaml")
    assert config is None
    (issue,) = issues
    assert issue.line == 9
    assert "shares the circuit 'http://h:81' with the action at line 5" in issue.message
    assert issue.hint is not None and "{key: NAME}" in issue.hint
