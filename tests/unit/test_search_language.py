"""The search language: the grammar, its errors, and both translations against a reference."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import pgobs.search
from pgobs.search import QuerySyntaxError, parse, to_es
from pgobs.search.ast import (
    STAR,
    And,
    DataMatch,
    DataRange,
    Instant,
    Like,
    Match,
    Node,
    Not,
    Or,
    Range,
    Relative,
    Text,
)
from pgobs.search.parser import MAX_NESTING
from pgobs.trail.elastic import document
from tests import es_dsl, search_reference
from tests.search_strategies import queries, records, render

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_public_names() -> None:
    assert pgobs.search.__all__ == sorted(pgobs.search.__all__)
    for name in pgobs.search.__all__:
        assert getattr(pgobs.search, name) is not None


def test_the_seed_queries_work_as_written() -> None:
    assert parse("entity_type:Order AND event_kind:created AND timestamp:[now-1d TO now]") == And(
        (
            Match("entity_type", ("Order",)),
            Match("event_type", ("INSERT",)),
            Range("timestamp", Relative(-1, "d"), Relative(0, "s")),
        )
    )
    assert parse("entity_type:Product AND action_type:webhook AND status:failed") == And(
        (
            Match("entity_type", ("Product",)),
            Match("action_type", ("webhook",)),
            Match("status", ("failed", "retried", "dropped")),  # every failed attempt
        )
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("entity_id:42", Match("entity_id", ("42",))),
        ("event_type:deleted", Match("event_type", ("DELETE",))),
        ("event_type:signed_up", Match("event_type", ("signed_up",))),
        (
            'message_x OR "timed out"',
            Or((Text(("message", "x"), "phrase"), Text(("timed", "out"), "phrase"))),
        ),
        ("-status:delivered", Not(Match("status", ("delivered",)))),
        ("!kind:event", Not(Match("kind", ("event",)))),
        ("observer:obs-*", Like("observer", ("obs-", STAR))),
        ("observer:obs\\-\\*", Match("observer", ("obs-*",))),
        ("attempt:>=3", Range("attempt", Decimal(3), None, True, True)),
        ("status_code:<500", Range("status_code", None, Decimal(500), True, False)),
        ("attempt:{1 TO 3]", Range("attempt", Decimal(1), Decimal(3), False, True)),
        ("tenant:*", Range("tenant", None, None)),
        ("timestamp:*", Range("timestamp", None, None)),
        (
            "timestamp:2026-11-28",
            Range(
                "timestamp",
                Instant(datetime(2026, 11, 28, tzinfo=UTC)),
                Instant(datetime(2026, 11, 29, tzinfo=UTC)),
                True,
                False,
            ),
        ),
        (
            "timestamp:[2026-11-28T10:00:00Z TO now+15m}",
            Range(
                "timestamp",
                Instant(datetime(2026, 11, 28, 10, tzinfo=UTC)),
                Relative(15, "m"),
                True,
                False,
            ),
        ),
        ("data.customer.id:7", DataMatch(("customer", "id"), "7")),
        ("data.total:[100 TO *]", DataRange(("total",), Decimal(100), None)),
        ("time*", Text(("time",), "prefix")),
        ("Order-42", Text(("order", "42"), "phrase")),
        ("a b OR c", Or((And((Text(("a",), "word"), Text(("b",), "word"))), Text(("c",), "word")))),
        ("*", pgobs.search.ast.All()),
    ],
)
def test_queries_parse_to(query: str, expected: Node) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize(
    ("query", "column", "message"),
    [
        ("", 1, "the query is empty"),
        ("status:", 8, "expected a value after status:"),
        ("status:[a TO", 13, "expected a bound: a value or *, found the end of the query"),
        ("status:[a b]", 11, "expected TO between the bounds"),
        ("(entity_id:42", 14, "expected ')' to close the '(' at column 1"),
        ("entity_id:42)", 13, "this ')' closes no '('"),
        ("customer_org:acme-corp", 1, "unknown field 'customer_org'"),
        ("status:exploded", 8, "unknown status 'exploded'"),
        ("attempt:three", 9, "attempt takes a number, found 'three'"),
        ("attempt:3*", 9, "wildcards work on text fields only"),
        ("timestamp:[yesterday TO now]", 12, "expected a time"),
        ('"open phrase', 1, "the quoted phrase is not closed"),
        ("a AND", 6, "expected a field:value, a word or '('"),
        ("data.:x", 1, "expected a path after 'data.'"),
        ("data.n:[1 TO b]", 9, "must both be numbers or both be text"),
        ("ti*me", 1, "only a word ending in * is a wildcard"),
        ("...", 1, "has no letters or digits"),
        ("(" * (MAX_NESTING + 1) + "a", MAX_NESTING + 1, "nests deeper than"),
    ],
)
def test_syntax_errors_name_the_column_and_what_was_expected(
    query: str, column: int, message: str
) -> None:
    with pytest.raises(QuerySyntaxError) as caught:
        parse(query)
    assert caught.value.column == column
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"cannot read the query at column {column}: ")
    assert "\n" not in str(caught.value)


@given(queries(NOW))
def test_rendered_queries_parse_back(node: Node) -> None:
    text = render(node)
    assume('status:"failed"' not in text)  # a word that stands for three statuses
    assert parse(text) == node


@given(st.text(max_size=40))
def test_any_text_parses_or_fails_with_a_column(text: str) -> None:
    column = 0
    try:
        node = parse(text)
    except QuerySyntaxError as exc:
        column = exc.column
    if column:
        assert 1 <= column <= len(text) + 1
        return
    to_es(node)
    pgobs.search.to_sql(node)


def _doc(rec: dict[str, Any]) -> dict[str, Any]:
    row = {
        "id": 1,
        "seq": 0,
        "event_id": None,
        "job_id": None,
        "duration_ms": None,
        "next_run_at": None,
        **rec,
        "text": search_reference.text(rec),
    }
    return document(row)["_source"]


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(queries(NOW), st.lists(records(NOW), min_size=1, max_size=8))
def test_the_elasticsearch_dsl_means_what_the_reference_means(
    node: Node, recs: list[dict[str, Any]]
) -> None:
    dsl = to_es(node)
    for rec in recs:
        expected = search_reference.evaluate(node, rec, NOW)
        assert es_dsl.matches(dsl, _doc(rec), NOW) == expected, (render(node), rec, dsl)


def test_the_dsl_never_passes_user_text_to_query_string() -> None:
    dsl = to_es(parse('entity_type:Order AND ("a b" OR data.x:y*) AND NOT status:failed'))
    assert "query_string" not in repr(dsl)
    assert dsl == {
        "bool": {
            "filter": [
                {"terms": {"entity_type": ["Order"]}},
                {
                    "bool": {
                        "should": [
                            {"match_phrase": {"text": {"query": "a b"}}},
                            {"wildcard": {"data.x": {"value": "y*"}}},
                        ],
                        "minimum_should_match": 1,
                    }
                },
                {"bool": {"must_not": [{"terms": {"status": ["failed", "retried", "dropped"]}}]}},
            ]
        }
    }
