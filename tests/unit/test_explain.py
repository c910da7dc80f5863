"""The explain walk (pgobs debug-event) reaches the compiled condition's verdict, and shows what
each part of the condition saw."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import assume, given
from hypothesis import strategies as st

from pgobs.conditions import compile_condition
from pgobs.conditions.explain import explain, render
from pgobs.conditions.parser import MAX_NESTING, Node, parse
from pgobs.events import Event
from tests.unit.test_conditions import PROPERTY_SETTINGS, events, nesting, trees
from tests.unit.test_conditions import render as render_parenthesised


@PROPERTY_SETTINGS
@given(tree=trees, subjects=st.lists(events, min_size=2, max_size=6))
def test_explain_agrees_with_the_compiled_condition(tree: Node, subjects: list[Event]) -> None:
    assume(nesting(tree) <= MAX_NESTING)
    source = render_parenthesised(tree, False)
    condition = compile_condition(source)
    assert parse(render(tree)) == tree  # the text it shows reads back as the same condition
    for subject in subjects:
        assert explain(source, subject).value is condition(subject), (source, subject)


def order(**data: object) -> Event:
    return Event(7, "Order", "UPDATE", dict(data), old_data={"status": "new"}, changed_fields=[])


def test_a_non_match_shows_the_value_of_every_part() -> None:
    explained = explain("status == 'paid' && total > 100", order(status="paid", total=80))
    assert explained.value is False
    assert explained.lines() == [
        "status == 'paid' && total > 100 → false",
        "  status == 'paid' → true",
        "    status → 'paid'",
        "  total > 100 → false",
        "    total → 80",
    ]


def test_functions_show_old_and_new() -> None:
    explained = explain(
        "field_changed_to('status', 'paid') || !has_field('x')",
        order(status="paid", total=Decimal("250.00"), x=None),
    )
    assert explained.value is False
    assert explained.as_json()["parts"][0] == {
        "expression": "field_changed_to('status', 'paid')",
        "value": False,
        "parts": [
            {"expression": "old.status", "value": "new"},
            {"expression": "status", "value": "paid"},
            {"expression": "changed_fields", "value": []},
        ],
    }
    assert explained.lines()[-1] == "    has_field('x') → true"
