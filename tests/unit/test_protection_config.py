"""``dedup:`` and ``enrich:``: what they load to, and every mistake at its line with a hint."""

from __future__ import annotations

import pytest

from pgobs.config.loader import parse_config
from pgobs.events import Event
from pgobs.reliability.dedup import fingerprint
from pgobs.reliability.specs import DedupPolicy, HttpLookup, SqlLookup
from pgobs.templates import Template

GOOD = """
observers:
  - name: obs
    entity: Order
    dedup: {key: "order:{{ data.id }}", window: 5m}
    enrich:
      - name: customer
        http:
          url: "https://crm.internal/customers/{{ data.customer_id }}"
          headers: {Authorization: "Bearer x"}
        cache: {key: "customer:{{ data.customer_id }}", ttl: 5m}
      - name: price
        sql: "SELECT amount FROM prices WHERE sku = %(sku)s AND tier = %(tier)s"
        timeout: 500ms
    actions: [{type: log}]
"""


def test_dedup_and_lookups_load() -> None:
    config, issues = parse_config(GOOD, "observers.yaml")
    assert issues == []
    assert config is not None
    (obs,) = config.observers
    assert obs.dedup is not None and obs.dedup.window_s == 300.0
    customer, price = obs.enrich
    assert isinstance(customer.source, HttpLookup)
    assert customer.cache is not None and customer.cache.ttl_s == 300.0
    assert customer.timeout_s == 5.0
    assert isinstance(price.source, SqlLookup)
    assert price.source.parameters == ("sku", "tier")
    assert price.cache is None and price.timeout_s == 0.5


def observer(body: str) -> str:
    return "observers:\n  - name: obs\n    entity: Order\n" + body + "    actions: [{type: log}]\n"


@pytest.mark.parametrize(
    ("body", "line", "words", "hint"),
    [
        ("    dedup: {window: 5m, keys: x}\n", 4, "unknown key 'keys' in dedup", "did you mean"),
        ("    dedup: {window: five minutes}\n", 4, "'window' must be a duration", "5m"),
        ("    dedup: {window: -1}\n", 4, "'window' must be a duration", "5m"),
        ("    dedup: {window: 90d}\n", 4, "'window' must be between", None),
        ('    dedup: {key: "{{ data.id "}\n', 4, "dedup key", "{{ data.id }}"),
        ('    dedup: {key: "{{ 1 / 0 }}"}\n', 4, "key does not render", "order:"),
        ('    dedup: {key: "{{ data.id | nosuch }}"}\n', 4, "No filter named 'nosuch'", None),
        ('    dedup: {key: "fixed"}\n', 4, "has no template", "order:"),
        (
            '    enrich:\n      - name: c\n        http: {url: "ftp://x/{{ data.id }}"}\n',
            6,
            "is not an http(s) URL",
            "https://",
        ),
        (
            '    enrich:\n      - name: c\n        http: {url: "{{ data.host }}/x"}\n',
            6,
            "is not an http(s) URL with a fixed host",
            "templates go in the path",
        ),
        (
            '    enrich:\n      - name: c\n        http: {url: "https://x/{{ data.id }}"}\n'
            "        cache: {key: c, ttl: 5 minutes}\n",
            7,
            "'ttl' must be a duration",
            "5m",
        ),
        (
            '    enrich:\n      - name: c\n        sql: "DELETE FROM t"\n',
            6,
            "must be a query",
            "SELECT",
        ),
        (
            '    enrich:\n      - name: c\n        sql: "SELECT 1"\n        cach: {}\n',
            7,
            "unknown key 'cach' in a lookup",
            "did you mean 'cache'",
        ),
        ("    enrich:\n      - name: c\n", 5, "needs one of http, sql", "http:"),
        (
            '    enrich:\n      - {name: a-b, sql: "SELECT 1"}\n',
            5,
            "is not an identifier",
            "enrich.<name>",
        ),
    ],
)
def test_mistakes_are_reported_at_their_line(
    body: str, line: int, words: str, hint: str | None
) -> None:
    config, issues = parse_config(observer(body), "observers.yaml")
    assert config is None
    found = [i for i in issues if i.severity == "error"]
    assert any(i.line == line and words in i.message for i in found), found
    if hint is not None:
        assert any(hint in (i.hint or "") for i in found), found


def event(**changes: object) -> Event:
    fields: dict[str, object] = {
        "id": 1,
        "entity_type": "Order",
        "event_type": "UPDATE",
        "entity_id": "7",
        "data": {"id": 7, "status": "paid"},
    }
    fields.update(changes)
    return Event(**fields)  # type: ignore[arg-type]


def test_fingerprints() -> None:
    by_change = DedupPolicy(window_s=60)
    same = fingerprint("obs", by_change, event())
    assert same == fingerprint("obs", by_change, event(id=2))  # the same change written again
    assert same != fingerprint("obs", by_change, event(data={"id": 7, "status": "new"}))
    assert same != fingerprint("obs", by_change, event(event_type="INSERT"))
    assert same != fingerprint("obs", by_change, event(entity_id="8"))
    assert same != fingerprint("other", by_change, event())  # per observer
    keyed = DedupPolicy(window_s=60, key=Template("order:{{ data.id }}"))
    assert fingerprint("obs", keyed, event()) == fingerprint(
        "obs", keyed, event(data={"id": 7, "status": "new"})
    )
    # The application's idempotency key wins over the template and the data.
    assert fingerprint("obs", keyed, event(idempotency_key="k")) == fingerprint(
        "obs", by_change, event(data={"x": 1}, idempotency_key="k")
    )
