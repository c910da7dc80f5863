"""What every command's output shares: ``--json`` and ``--format json|text`` (the same choice,
both spellings accepted), and JSON printed with exact numbers."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal, TextIO

from cyclopts import Parameter

from pgobs import jsoncodec

JsonFlag = Annotated[bool, Parameter(help="Print JSON (same as --format json).")]
Format = Annotated[Literal["text", "json"], Parameter(help="text for people, json for scripts.")]


def wants_json(json: bool, output_format: str) -> bool:
    return json or output_format == "json"


def print_json(value: Any) -> None:
    print(jsoncodec.encode_indented(value))  # numbers in event data keep their digits


# C0 and C1 control characters but newline and tab, as JSON's own escapes: readable in text,
# the same character inside a JSON string, and obeyed by no terminal.
_SHOWN = {c: f"\\u{c:04x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if chr(c) not in "\n\t"}


class ShownControls(io.TextIOBase):
    """Standard output that shows the control characters it is given instead of sending them to
    the terminal: entity ids, event data and a receiver's error body are anyone's text, and an
    escape sequence among them must not clear the operator's screen or forge lines."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        self._out.write(text.translate(_SHOWN))
        return len(text)

    def flush(self) -> None:
        self._out.flush()
