"""Hypothesis strategies for the search language: trail records and queries over them."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from pgobs.search.ast import (
    ONE,
    STAR,
    All,
    And,
    DataLike,
    DataMatch,
    DataRange,
    Instant,
    Like,
    Match,
    Node,
    Not,
    Or,
    Pattern,
    Range,
    Relative,
    Text,
)

WORDS = ["order", "paid", "Order", "x-1", "a", "ab", "b", "42", "7", "gone", "Élan", "a_b"]
STATUSES = ["received", "matched", "delivered", "retried", "failed", "dropped"]
OBSERVERS = ["obs-a", "obs-b", "pay"]
DATA_KEYS = ["status", "total", "n", "tag"]

word = st.sampled_from(WORDS)
maybe_word = st.none() | word


def records(now: datetime) -> st.SearchStrategy[dict[str, Any]]:
    scalar = st.none() | word | st.integers(-3, 300) | st.booleans()
    data = st.dictionaries(
        st.sampled_from(DATA_KEYS),
        scalar | st.lists(word, max_size=2) | st.dictionaries(st.sampled_from(["id"]), scalar),
        max_size=3,
    )
    event = st.fixed_dictionaries(
        {
            "kind": st.just("event"),
            "status": st.sampled_from(["received", "matched"]),
            "observer": st.none(),
            "observers": st.none() | st.lists(st.sampled_from(OBSERVERS), min_size=1, unique=True),
            "data": data,
            "attempt": st.none(),
        }
    )
    action = st.fixed_dictionaries(
        {
            "kind": st.just("action"),
            "status": st.sampled_from(STATUSES[2:]),
            "observer": st.sampled_from(OBSERVERS),
            "observers": st.none(),
            "data": st.just({}),
            "attempt": st.integers(1, 5),
        }
    )
    common = st.fixed_dictionaries(
        {
            "entity_type": st.sampled_from(["Order", "User", "order"]),
            "entity_id": st.none() | st.sampled_from(["42", "7", "420", "a"]),
            "event_type": st.sampled_from(["INSERT", "UPDATE", "signed_up"]),
            "tenant": maybe_word,
            "actor": maybe_word,
            "action": st.none() | st.sampled_from(["hook", "mail"]),
            "action_type": st.none() | st.sampled_from(["webhook", "email"]),
            "status_code": st.none() | st.sampled_from([200, 404, 500]),
            "message": st.none() | st.lists(word, min_size=1, max_size=4).map(" ".join),
            # hours and a half back: relative bounds in hours never meet a record
            "at": st.integers(0, 24 * 4).map(lambda h: now - timedelta(hours=h, minutes=30)),
        }
    )
    return st.tuples(common, event | action).map(lambda pair: {**pair[0], **pair[1]})


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Relative):
        return value.es()
    if isinstance(value, Instant):
        return value.at.isoformat()
    return _quote(str(value))


def _pattern(pattern: Pattern) -> str:
    out = []
    for part in pattern:
        if part is STAR:
            out.append("*")
        elif part is ONE:
            out.append("?")
        else:
            out.append("".join("\\" + c if not c.isalnum() else c for c in str(part)))
    return "".join(out)


def render(node: Node) -> str:
    """Query text for ``node`` that parses back to it."""
    if isinstance(node, And | Or):
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(render(n) for n in node.items) + ")"
    if isinstance(node, Not):
        return "NOT " + render(node.item)
    if isinstance(node, All):
        return "*"
    if isinstance(node, Match):
        assert len(node.values) == 1
        return f"{node.field}:{_value(node.values[0])}"
    if isinstance(node, Like):
        return f"{node.field}:{_pattern(node.pattern)}"
    if isinstance(node, Range | DataRange):
        name = node.field if isinstance(node, Range) else "data." + ".".join(node.path)
        low = "*" if node.low is None else _value(node.low)
        high = "*" if node.high is None else _value(node.high)
        return (
            f"{name}:{'[' if node.low_inclusive else '{'}{low} TO {high}"
            f"{']' if node.high_inclusive else '}'}"
        )
    if isinstance(node, DataMatch):
        return "data." + ".".join(node.path) + ":" + _quote(node.value)
    if isinstance(node, DataLike):
        return "data." + ".".join(node.path) + ":" + _pattern(node.pattern)
    if isinstance(node, Text):
        if node.mode == "prefix":
            return node.words[0] + "*"
        return _quote(" ".join(node.words)) if node.mode == "phrase" else node.words[0]
    raise AssertionError(node)


def _patterns() -> st.SearchStrategy[Pattern]:
    literal = st.sampled_from(["a", "b", "obs-", "4", "x_", "%"])
    parts = st.lists(literal | st.just(STAR) | st.just(ONE), min_size=1, max_size=3)

    def tidy(found: list[Any]) -> Pattern:
        merged: list[Any] = []
        for part in found:
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part
            elif not (part is STAR and merged and merged[-1] is STAR):
                merged.append(part)
        return tuple(merged)

    return parts.map(tidy).filter(lambda p: p != (STAR,) and any(not isinstance(x, str) for x in p))


KEYWORDS = [
    "entity_type",
    "entity_id",
    "event_type",
    "tenant",
    "actor",
    "observer",
    "action",
    "action_type",
    "kind",
]


def leaves(now: datetime) -> st.SearchStrategy[Node]:
    keyword = st.sampled_from(KEYWORDS)
    hours = st.integers(-100, 2).map(lambda h: Relative(h, "h") if h else Relative(0, "s"))
    numbers = st.integers(0, 600).map(Decimal)
    data_path = st.sampled_from([("status",), ("total",), ("n",), ("tag",), ("tag", "id")])
    data_scalar = st.sampled_from(["paid", "42", "7", "true", "false", "order", "-3", "1.0"])
    return st.one_of(
        st.builds(lambda f, w: Match(f, (w,)), keyword, word),
        st.builds(lambda s: Match("status", (s,)), st.sampled_from(STATUSES)),
        st.builds(
            lambda f, n: Match(f, (n,)), st.sampled_from(["attempt", "status_code"]), numbers
        ),
        st.builds(Like, keyword, _patterns()),
        st.builds(Range, keyword, st.none() | word, st.none() | word, st.booleans(), st.booleans()),
        st.builds(
            Range,
            st.just("attempt"),
            st.none() | numbers,
            st.none() | numbers,
            st.booleans(),
            st.booleans(),
        ),
        st.builds(
            Range,
            st.just("timestamp"),
            st.none() | hours,
            st.none() | hours,
            st.booleans(),
            st.booleans(),
        ),
        st.builds(lambda f: Range(f, None, None), keyword),
        st.builds(DataMatch, data_path, data_scalar),
        st.builds(DataLike, data_path, _patterns()),
        st.builds(
            DataRange,
            data_path,
            st.none() | numbers,
            st.none() | numbers,
            st.booleans(),
            st.booleans(),
        ),
        st.builds(
            DataRange, data_path, st.none() | word, st.none() | word, st.booleans(), st.booleans()
        ),
        st.builds(
            lambda w: Text((w,), "word"), st.sampled_from(["order", "paid", "42", "a", "élan"])
        ),
        st.builds(
            lambda w: Text(w, "phrase"),
            st.sampled_from([("x", "1"), ("order", "paid"), ("a", "b"), ("obs", "a")]),
        ),
        st.builds(lambda w: Text((w,), "prefix"), st.sampled_from(["or", "pa", "4", "ob"])),
    )


def queries(now: datetime) -> st.SearchStrategy[Node]:
    return st.recursive(
        leaves(now),
        lambda inner: st.one_of(
            st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
            st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
            inner.map(Not),
        ),
        max_leaves=6,
    )
