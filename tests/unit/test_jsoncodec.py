"""JSON with exact numbers: what jsonb decodes to and how pgobs writes it back."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgobs import jsoncodec
from pgobs.db.connect import decode_json
from pgobs.events import DATA_ERROR_KEY


def test_integers_stay_ints_of_any_size_and_other_numbers_are_exact_decimals() -> None:
    data = jsoncodec.decode(
        b'{"id": 12345678901234567890123, "n": -9223372036854775809, "total": 250.00,'
        b' "big": 12345678901234567.89, "tiny": 0.0000001, "e": 1.5e3}'
    )
    assert data == {
        "id": 12345678901234567890123,
        "n": -9223372036854775809,
        "total": Decimal("250.00"),
        "big": Decimal("12345678901234567.89"),
        "tiny": Decimal("0.0000001"),
        "e": Decimal("1.5E+3"),
    }
    assert type(data["id"]) is int and type(data["total"]) is Decimal


def test_decimals_are_written_with_their_own_digits() -> None:
    value = {
        "total": Decimal("250.00"),
        "big": Decimal("12345678901234567.89"),
        "tiny": Decimal("0.0000001"),
        "zero": Decimal("0E-7"),
        "hundred": Decimal("1E+2"),
        "nan": Decimal("NaN"),
        "n": [1, 2.5, None, True],
        "ints": [2**64 - 1, 2**64, -(2**63) - 1, (12345678901234567890123,)],
    }
    assert jsoncodec.encode(value) == (
        b'{"total":250.00,"big":12345678901234567.89,"tiny":0.0000001,"zero":0.0000000,'
        b'"hundred":100,"nan":null,"n":[1,2.5,null,true],"ints":[18446744073709551615,'
        b"18446744073709551616,-9223372036854775809,[12345678901234567890123]]}"
    )
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsoncodec.encode({"big": 2**64, "odd": object()})
    assert jsoncodec.encode_indented({"a": Decimal("1.10"), "b": 2**70}) == (
        '{\n  "a": 1.10,\n  "b": 1180591620717411303424\n}'
    )


POSTGRES_NUMBERS = st.from_regex(r"\A-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?\Z").filter(
    lambda text: not (text.startswith("-") and Decimal(text) == 0)  # numeric has no -0
)


@given(POSTGRES_NUMBERS)
def test_numbers_as_postgres_writes_them_come_back_with_the_same_text(number: str) -> None:
    document = f'{{"n": {number}, "list": [{number}]}}'
    assert jsoncodec.encode(jsoncodec.decode(document)).decode() == document.replace(" ", "")


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_decimal_is_written_as_a_json_number_of_the_same_value(value: Decimal) -> None:
    text = jsoncodec.encode([value])
    assert jsoncodec.decode(text) == [value]
    assert jsoncodec.encode(jsoncodec.decode(text)) == text


@pytest.mark.parametrize("document", [b"[" * 5000 + b"]" * 5000, b'{"a": '])
def test_an_undecodable_document_becomes_a_marked_error(document: bytes) -> None:
    decoded = decode_json(document)
    assert "cannot decode" in decoded[DATA_ERROR_KEY]
