"""JSON with exact numbers, for jsonb in and out of Postgres and for every body pgobs sends.

Decoding keeps integers as ``int`` of any size and reads every other number as a ``Decimal``
with the digits Postgres wrote (``250.00`` is ``Decimal('250.00')``): money must not pass
through float. msgspec decodes that way at orjson's speed (bench/bench_json.py).
Encoding is orjson's, with each Decimal written as its own digits.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import orjson

__all__ = ["DecodeFailed", "decode", "encode", "encode_indented", "number_text"]

_DECODER = msgspec.json.Decoder(float_hook=Decimal)

# What decode raises: malformed JSON, or nesting deeper than the decoder's recursion limit.
DecodeFailed = (msgspec.DecodeError, RecursionError)


def decode(data: bytes | str) -> Any:
    """JSON text to Python: objects, lists, str, bool, None, int, and Decimal for the rest."""
    return _DECODER.decode(data)


def number_text(value: Decimal) -> str:
    """The digits of ``value`` as a JSON number: ``250.00`` stays ``250.00``.

    ``str()`` switches to exponent form below 1e-6 (``1E-7``); Postgres never writes that, so
    such values are written out in full as Postgres does.
    """
    text = str(value)
    if "E" in text:
        text = format(value, "f")
    return text


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        # JSON has no NaN or Infinity; orjson writes non-finite floats as null, so these too.
        return orjson.Fragment(number_text(value)) if value.is_finite() else None
    raise TypeError(f"{type(value).__name__} has no JSON form")


def encode(value: Any) -> bytes:
    """Compact JSON, Decimals as their exact digits."""
    try:
        return orjson.dumps(value, default=_default)
    except TypeError:
        # orjson refuses integers beyond 64 bits (a numeric(30) key, say): write those as
        # fragments and try once more; any other TypeError comes back from the second try.
        return orjson.dumps(_big_ints_as_fragments(value), default=_default)


def encode_indented(value: Any) -> str:
    """Indented JSON for people to read (CLI output)."""
    option = orjson.OPT_INDENT_2
    try:
        text = orjson.dumps(value, default=_default, option=option)
    except TypeError:
        text = orjson.dumps(_big_ints_as_fragments(value), default=_default, option=option)
    return text.decode()


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _big_ints_as_fragments(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _INT64_MIN <= value <= _UINT64_MAX else orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {key: _big_ints_as_fragments(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_big_ints_as_fragments(item) for item in value]
    return value
