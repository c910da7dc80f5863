"""Message and body templates: ``{{ data.field }}`` rendered in Jinja2's sandbox.

Values render as JSON does, never as Python reprs: an object or list as JSON, a number with its
exact digits (``250.00``), booleans as ``true``/``false``; null and a missing field render as
nothing (a missing field in a condition is null too). A template that does not compile is a
config error; one that fails while rendering is a permanent failure.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from pgobs import jsoncodec

# A leaf that is exactly one expression, ``{{ data.total }}`` (whitespace control allowed);
# the parsed template confirms there is nothing else (``{{ a }}{{ b }}`` matches this too).
_ONE_EXPRESSION = re.compile(r"\A\{\{[-+]?(.*?)[-+]?\}\}\Z", re.DOTALL)


def _as_text(value: Any) -> Any:
    """Jinja's ``finalize``: what ``{{ value }}`` writes, JSON-like rather than Python's str()."""
    cls = value.__class__
    if cls is str:
        return value
    if cls is Decimal:
        return jsoncodec.number_text(value)
    if cls is bool:
        return "true" if value else "false"
    if value is None:
        return ""
    if cls is dict or cls is list:
        return jsoncodec.encode(value).decode()
    return value


def _json_dumps(value: Any, **_: Any) -> str:
    """``| tojson`` with exact numbers (Jinja's default json.dumps cannot write a Decimal)."""
    return jsoncodec.encode(value).decode()


_ENV = SandboxedEnvironment(
    undefined=jinja2.ChainableUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    finalize=_as_text,
)
_ENV.policies["json.dumps_function"] = _json_dumps


class TemplateFailed(Exception):
    """A template raised while rendering; the job goes to the DLQ with this message."""


# ``{{ a.b.c }}`` with nothing else in the braces: a field of the event, read without Jinja.
_FIELD = re.compile(r"\{\{ *([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*) *\}\}")
_Parts = tuple[tuple[str, tuple[str, ...] | None], ...]


class Template:
    __slots__ = ("_compiled", "_parts", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._compiled = _ENV.from_string(source)  # raises jinja2.TemplateSyntaxError
        self._parts = _field_parts(source)

    def render(self, context: dict[str, Any]) -> str:
        if self._parts is not None:
            text = _render_fields(self._parts, context)
            if text is not None:
                return text
        try:
            return self._compiled.render(context)
        except Exception as exc:
            raise _failed(self.source, exc) from exc


def _field_parts(source: str) -> _Parts | None:
    """Text and fields, when ``source`` is nothing more (``customer:{{ data.customer_id }}``):
    a key rendered per job cost more than the rest of an enrichment lookup through Jinja."""
    parts: list[tuple[str, tuple[str, ...] | None]] = []
    at = 0
    for match in _FIELD.finditer(source):
        parts += [(source[at : match.start()], None), ("", tuple(match.group(1).split(".")))]
        at = match.end()
    parts.append((source[at:], None))
    literal = "".join(text for text, _ in parts)
    if not any(path for _, path in parts) or "{" in literal or "}" in literal:
        return None
    return tuple(parts)


def _render_fields(parts: _Parts, context: dict[str, Any]) -> str | None:
    """What Jinja renders for these parts, or None where Jinja could differ: a name that is also
    an attribute of dict (``data.items`` is the method to Jinja), or a step into a non-object."""
    out = []
    for text, path in parts:
        if path is None:
            out.append(text)
            continue
        value: Any = context
        for name in path:
            if value.__class__ is not dict or hasattr(dict, name):
                return None
            value = value.get(name)
            if value is None:
                break  # a missing field and null both render as nothing
        if value is not None:
            shown = _as_text(value)
            out.append(shown if shown.__class__ is str else str(shown))
    return "".join(out)


class _Expression:
    """A body leaf that is one ``{{ expression }}``: it renders to the value itself, so a number
    stays a JSON number (with its digits), a bool a bool, an object an object, missing null."""

    __slots__ = ("_compiled", "source")

    def __init__(self, source: str, expression: str) -> None:
        self.source = source
        self._compiled = _ENV.compile_expression(expression, undefined_to_none=True)

    def render(self, context: dict[str, Any]) -> Any:
        try:
            return _json_value(self._compiled(context))
        except Exception as exc:
            raise _failed(self.source, exc) from exc


class BodyTemplate:
    """A JSON body given as YAML: every string leaf is a template, so the result is valid JSON.

    A leaf that is exactly one expression keeps the value's JSON type; any other leaf with a
    template in it renders to a string.
    """

    __slots__ = ("_shape",)

    def __init__(self, shape: Any) -> None:
        self._shape = _compile_leaves(shape)

    def render(self, context: dict[str, Any]) -> Any:
        return _render_leaves(self._shape, context)


def _failed(source: str, exc: Exception) -> TemplateFailed:
    message = f"template {source!r} failed: {exc}"
    if isinstance(exc, TypeError) and "'decimal.Decimal' and 'float'" in str(exc):
        message += (
            " (numbers from data are exact decimals: multiply by an integer ratio,"
            " data.total * 11 / 10, or convert with | float)"
        )
    return TemplateFailed(message)


def compile_error(source: str) -> str | None:
    """Why ``source`` does not compile, or None (an unknown filter or test included)."""
    try:
        _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"template does not compile: {exc.message} (template line {exc.lineno})"
    return None


def _compile_leaf(source: str) -> Template | _Expression | str:
    if "{" not in source:
        return source
    match = _ONE_EXPRESSION.match(source)
    if match is not None:
        body = _ENV.parse(source).body
        output = body[0] if len(body) == 1 else None
        if (
            isinstance(output, nodes.Output)
            and len(output.nodes) == 1
            and not isinstance(output.nodes[0], nodes.TemplateData)
        ):
            return _Expression(source, match.group(1))
    return Template(source)


def _compile_leaves(shape: Any) -> Any:
    if isinstance(shape, str):
        return _compile_leaf(shape)
    if isinstance(shape, dict):
        return {key: _compile_leaves(value) for key, value in shape.items()}
    if isinstance(shape, list):
        return [_compile_leaves(item) for item in shape]
    return shape


def _render_leaves(shape: Any, context: dict[str, Any]) -> Any:
    if isinstance(shape, Template | _Expression):
        return shape.render(context)
    if isinstance(shape, dict):
        return {key: _render_leaves(value, context) for key, value in shape.items()}
    if isinstance(shape, list):
        return [_render_leaves(item, context) for item in shape]
    return shape


_JSON_SCALARS = (str, bool, int, float, Decimal)


def _json_value(value: Any) -> Any:
    """``value`` as something JSON can hold; a missing field (Undefined) is null."""
    if value is None or isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, jinja2.Undefined):
        return None
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"an object key must be a string, got {key!r}")
        return {key: _json_value(item) for key, item in value.items()}
    raise TypeError(f"a {type(value).__name__} has no JSON form")
