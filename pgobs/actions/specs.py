"""Each action type's settings, as the executor runs them: resolved secrets and URLs, compiled
templates. ``pgobs.config.actions`` builds them from observers.yaml."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pgobs.reliability.egress import DEFAULT_EGRESS, EgressPolicy
from pgobs.templates import BodyTemplate, Template


@dataclass(frozen=True, kw_only=True, slots=True)
class WebhookSpec:
    url: str
    method: str
    headers: dict[str, str]
    body: BodyTemplate | None
    signing_secret: str | None
    timeout_ms: int
    egress: EgressPolicy = DEFAULT_EGRESS  # the file's egress: key, set by the loader


@dataclass(frozen=True, kw_only=True, slots=True)
class SlackSpec:
    webhook_url: str
    message: Template
    channel: str | None
    username: str | None
    timeout_ms: int
    egress: EgressPolicy = DEFAULT_EGRESS  # the file's egress: key, set by the loader


EmailSecurity = Literal["none", "starttls", "tls"]


@dataclass(frozen=True, kw_only=True, slots=True)
class EmailSpec:
    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    to_template: Template | None
    subject: Template
    body: Template
    security: EmailSecurity
    username: str | None
    password: str | None
    timeout_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class DatabaseSpec:
    function: tuple[str, ...]  # (schema, name) or (name,)
    timeout_ms: int


LogLevel = Literal["debug", "info", "warning", "error"]


@dataclass(frozen=True, kw_only=True, slots=True)
class LogSpec:
    level: LogLevel
    message: Template | None
    timeout_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class PythonSpec:
    handler_name: str
    handler: Callable[..., Any]  # a HandlerSource, never run, when loaded without importing
    is_async: bool
    timeout_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheSpec:
    keys: tuple[Template, ...]
    timeout_ms: int


ActionSpec = WebhookSpec | SlackSpec | EmailSpec | DatabaseSpec | LogSpec | PythonSpec | CacheSpec


def action_type(spec: ActionSpec) -> str:
    return _TYPE_OF[type(spec)]


def target_of(spec: ActionSpec) -> str:
    """What an action calls, for per-target limits: a URL's origin (scheme, host, port), an SMTP
    server, a SQL function, a handler; the type for actions that call nothing outside."""
    if isinstance(spec, WebhookSpec | SlackSpec):
        url = urlsplit(spec.url if isinstance(spec, WebhookSpec) else spec.webhook_url)
        host = url.hostname or ""
        return f"{url.scheme}://{host}:{url.port or (443 if url.scheme == 'https' else 80)}"
    if isinstance(spec, EmailSpec):
        return f"smtp://{spec.host}:{spec.port}"
    if isinstance(spec, DatabaseSpec):
        return "sql:" + ".".join(spec.function)
    if isinstance(spec, PythonSpec):
        return "python:" + spec.handler_name
    return action_type(spec)


def derived_name(spec: ActionSpec) -> str:
    """An action's identity when it has no ``name:``: what it calls (handler, SQL function),
    else its type. Jobs find their action by it, so it must not depend on the action's
    position."""
    if isinstance(spec, PythonSpec):
        return spec.handler_name
    if isinstance(spec, DatabaseSpec):
        return ".".join(spec.function)
    return action_type(spec)


_TYPE_OF: dict[type, str] = {
    WebhookSpec: "webhook",
    SlackSpec: "slack",
    EmailSpec: "email",
    DatabaseSpec: "database",
    LogSpec: "log",
    PythonSpec: "python",
    CacheSpec: "cache",
}
