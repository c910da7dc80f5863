"""Message and body templates: ``{{ data.field }}`` rendered in Jinja2's sandbox.

A missing field renders as nothing (like a missing field in a condition is null). A template
that does not compile is a config error; one that fails while rendering is a permanent failure.
"""

from __future__ import annotations

from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

_ENV = SandboxedEnvironment(
    undefined=jinja2.ChainableUndefined, autoescape=False, keep_trailing_newline=True
)


class TemplateFailed(Exception):
    """A template raised while rendering; the job goes to the DLQ with this message."""


class Template:
    __slots__ = ("_compiled", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._compiled = _ENV.from_string(source)  # raises jinja2.TemplateSyntaxError

    def render(self, context: dict[str, Any]) -> str:
        try:
            return self._compiled.render(context)
        except Exception as exc:
            raise TemplateFailed(f"template {self.source!r} failed: {exc}") from exc


class BodyTemplate:
    """A JSON body given as YAML: every string leaf is a template, so the result is valid JSON."""

    __slots__ = ("_shape",)

    def __init__(self, shape: Any) -> None:
        self._shape = _compile_leaves(shape)

    def render(self, context: dict[str, Any]) -> Any:
        return _render_leaves(self._shape, context)


def compile_error(source: str) -> str | None:
    """Why ``source`` does not compile, or None."""
    try:
        _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"template does not compile: {exc.message} (template line {exc.lineno})"
    return None


def _compile_leaves(shape: Any) -> Any:
    if isinstance(shape, str):
        return Template(shape) if "{" in shape else shape
    if isinstance(shape, dict):
        return {key: _compile_leaves(value) for key, value in shape.items()}
    if isinstance(shape, list):
        return [_compile_leaves(item) for item in shape]
    return shape


def _render_leaves(shape: Any, context: dict[str, Any]) -> Any:
    if isinstance(shape, Template):
        return shape.render(context)
    if isinstance(shape, dict):
        return {key: _render_leaves(value, context) for key, value in shape.items()}
    if isinstance(shape, list):
        return [_render_leaves(item, context) for item in shape]
    return shape
