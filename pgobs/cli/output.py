"""What every command's output shares: ``--json`` and ``--format json|text`` (the same choice,
both spellings accepted), and JSON printed with exact numbers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from cyclopts import Parameter

from pgobs import jsoncodec

JsonFlag = Annotated[bool, Parameter(help="Print JSON (same as --format json).")]
Format = Annotated[Literal["text", "json"], Parameter(help="text for people, json for scripts.")]


def wants_json(json: bool, output_format: str) -> bool:
    return json or output_format == "json"


def print_json(value: Any) -> None:
    print(jsoncodec.encode_indented(value))  # numbers in event data keep their digits
