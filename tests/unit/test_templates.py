"""Templates render JSON, not Python reprs; a body leaf that is one expression keeps its type."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from pgobs import jsoncodec
from pgobs.templates import BodyTemplate, Template, TemplateFailed

ROW: dict[str, Any] = {
    "id": 7,
    "total": Decimal("250.00"),
    "big": Decimal("12345678901234567.89"),
    "tiny": Decimal("0.0000001"),
    "paid": True,
    "note": None,
    "tags": ["a", "b"],
    "customer": {"name": "Ada", "credit": Decimal("0.10")},
}
CONTEXT = {"data": ROW, "event": {"data": ROW}}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ data.total }}", "250.00"),
        ("{{ data.big }}", "12345678901234567.89"),
        ("{{ data.tiny }}", "0.0000001"),
        ("{{ data.paid }}", "true"),
        ("[{{ data.note }}]", "[]"),
        ("[{{ data.missing }}]", "[]"),
        ("{{ data.tags }}", '["a","b"]'),
        ("{{ data.customer }}", '{"name":"Ada","credit":0.10}'),
        ("{{ data.customer | tojson }}", '{"name":"Ada","credit":0.10}'),
        ("Order {{ data.id }}: {{ data.total }} EUR", "Order 7: 250.00 EUR"),
    ],
)
def test_text_templates_render_values_as_json(source: str, expected: str) -> None:
    assert Template(source).render(CONTEXT) == expected


def test_data_renders_as_json_that_parses_back_exactly() -> None:
    rendered = Template("{{ data }}").render(CONTEXT)
    assert jsoncodec.decode(rendered) == ROW
    assert '"total":250.00' in rendered


@pytest.mark.parametrize(
    ("leaf", "expected"),
    [
        ("{{ data.total }}", Decimal("250.00")),
        ("{{- data.total -}}", Decimal("250.00")),
        ("{{ data.id }}", 7),
        ("{{ data.paid }}", True),
        ("{{ data.note }}", None),
        ("{{ data.missing }}", None),
        ("{{ data.missing.deeper }}", None),
        ("{{ data.customer }}", ROW["customer"]),
        ("{{ data.tags }}", ["a", "b"]),
        ("{{ data }}", ROW),
        ("{{ [data.id, data.missing] }}", [7, None]),
        ("{{ data.total | string }}", "250.00"),
        ("Order {{ data.id }}", "Order 7"),
        ("{{ data.id }}{{ data.id }}", "77"),
        ("{{ data.id }} ", "7 "),
        ("{% if data.paid %}{{ data.id }}{% endif %}", "7"),
        ("plain text", "plain text"),
    ],
)
def test_a_body_leaf_that_is_one_expression_keeps_its_type(leaf: str, expected: Any) -> None:
    rendered = BodyTemplate({"value": leaf}).render(CONTEXT)["value"]
    assert rendered == expected
    assert type(rendered) is type(expected)


def test_a_typed_body_keeps_exact_digits_on_the_wire() -> None:
    body = BodyTemplate(
        {"total": "{{ data.total }}", "big": "{{ data.big }}", "label": "Total {{ data.total }}"}
    )
    wire = jsoncodec.encode(body.render(CONTEXT))
    assert wire == b'{"total":250.00,"big":12345678901234567.89,"label":"Total 250.00"}'


def test_a_whole_body_can_be_one_expression() -> None:
    assert BodyTemplate("{{ data.customer }}").render(CONTEXT) == ROW["customer"]


def test_a_value_without_a_json_form_fails_the_template() -> None:
    with pytest.raises(TemplateFailed, match="has no JSON form"):
        BodyTemplate({"v": "{{ data.keys }}"}).render(CONTEXT)
    with pytest.raises(TemplateFailed, match="key must be a string"):
        BodyTemplate({"v": "{{ {1: 2} }}"}).render(CONTEXT)


def test_float_arithmetic_on_an_exact_number_says_how_to_write_it() -> None:
    assert Template("{{ data.total * 11 / 10 }}").render(CONTEXT) == "275.00"
    with pytest.raises(TemplateFailed, match=r"exact decimals: .*\| float"):
        Template("{{ data.total * 1.1 }}").render(CONTEXT)
