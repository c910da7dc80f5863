"""Templates made only of text and ``{{ field.path }}`` render without Jinja; the result must be
exactly Jinja's, for every kind of value, missing and null fields, and names Jinja reads as
dict methods."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from pgobs.templates import Template, _field_parts, _render_fields

CONTEXT: dict[str, Any] = {
    "entity_id": "7",
    "attempt": 2,
    "data": {
        "id": 7,
        "total": Decimal("250.00"),
        "paid": True,
        "gone": None,
        "tags": ["a", "b"],
        "customer": {"id": 3, "name": "Ada", "items": 5},
        "ratio": 0.5,
        "items": "shadowed",
    },
}

SOURCES = [
    "customer:{{ data.customer.id }}",
    "{{ data.total }}|{{ data.paid }}|{{ data.gone }}|{{ data.missing }}|{{ nothing.at.all }}",
    "{{ data.tags }} {{ data.customer }} {{ data.ratio }} {{ attempt }}",
    "{{ data.gone.deeper }}-{{ data.missing.deeper }}",
    "order {{entity_id}} ends with a newline\n",
    "{{ data.items }}",  # a dict method to Jinja
    "{{ data.customer.items }}",
    "{{ data.id.real }}",  # a step into a number: Jinja's business
    "{{ data.tags.0 }}",
]


@pytest.mark.parametrize("source", SOURCES)
def test_fields_render_as_jinja_does(source: str) -> None:
    template = Template(source)
    assert template.render(CONTEXT) == template._compiled.render(CONTEXT)


def test_which_templates_take_the_short_path() -> None:
    assert _field_parts("customer:{{ data.customer_id }}") is not None
    assert _field_parts("plain text") is None
    for jinja_only in (
        "{{ data.id | int }}",
        "{{- data.id }}",
        "{% if x %}y{% endif %}",
        "{{ a }}{",
    ):
        assert _field_parts(jinja_only) is None
    parts = _field_parts("{{ data.items }}")
    assert parts is not None and _render_fields(parts, CONTEXT) is None
