"""What each action type accepts in observers.yaml, checked once at load.

Secrets and URLs named by ``*_env`` are resolved here, so a running worker never reads the
environment per job; templates are compiled here too.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path as FsPath
from typing import Any

from pgobs.actions.handler_source import HandlerNotFound, find_handler
from pgobs.actions.specs import (
    ActionSpec,
    CacheSpec,
    DatabaseSpec,
    EmailSpec,
    LogSpec,
    PythonSpec,
    SlackSpec,
    WebhookSpec,
)
from pgobs.config.fields import Fields, expand_env
from pgobs.templates import BodyTemplate, Template, compile_error

ACTION_TYPES = ("webhook", "slack", "email", "database", "log", "python", "cache")
DEFAULT_TIMEOUT_MS = 10_000
_SQL_FUNCTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_HANDLER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def parse_action(f: Fields, base_dir: FsPath, *, import_handlers: bool = True) -> ActionSpec | None:
    kind = f.string("type", required=True, choices=ACTION_TYPES, hint="e.g. type: webhook")
    timeout_ms = f.integer("timeout_ms", default=DEFAULT_TIMEOUT_MS, minimum=1, maximum=3_600_000)
    spec: ActionSpec | None = None
    if kind == "webhook":
        spec = _webhook(f, timeout_ms)
    elif kind == "slack":
        spec = _slack(f, timeout_ms)
    elif kind == "email":
        spec = _email(f, timeout_ms)
    elif kind == "database":
        spec = _database(f, timeout_ms)
    elif kind == "log":
        level = f.string("level", default="info", choices=("debug", "info", "warning", "error"))
        message = _template(f, "message_template")
        spec = LogSpec(level=level, message=message, timeout_ms=timeout_ms)  # type: ignore[arg-type]  # choices= narrows it
    elif kind == "python":
        spec = _python(f, timeout_ms, base_dir, import_handlers)
    elif kind == "cache":
        keys = [
            _compile(f, ("keys", i), k) for i, k in enumerate(f.string_list("keys", required=True))
        ]
        spec = CacheSpec(keys=tuple(k for k in keys if k is not None), timeout_ms=timeout_ms)
    if kind is not None:
        f.finish()
    return spec


def _secret_or_env(f: Fields, key: str, *, required: bool, hint: str) -> str | None:
    """``key`` inline or ``key_env``; the value (empty when the variable is unset)."""
    env_key = f"{key}_env"
    if required:
        f.one_of(key, env_key, hint=hint)
    inline = f.string(key)
    if inline is not None:
        return expand_env(inline, f.at(key), f.issues, strict_env=f.strict_env)
    name = f.env_name(env_key)
    return None if name is None else os.environ.get(name, "")


def _webhook(f: Fields, timeout_ms: int) -> WebhookSpec:
    url = _secret_or_env(f, "url", required=True, hint="url: https://... or url_env: HOOK_URL")
    if url and not url.startswith(("http://", "https://")):
        # Name only the scheme: the rest of a URL may be a credential (userinfo, a key).
        scheme = url.partition("://")[0] + "://" if "://" in url else "no scheme"
        f.issues.error(
            f.at("url"), f"webhook url must start with http:// or https://, not {scheme}"
        )
    method = f.string("method", default="POST", choices=("POST", "PUT", "PATCH", "GET", "DELETE"))
    headers = {
        name: expand_env(value, (*f.at("headers"), name), f.issues, strict_env=f.strict_env)
        for name, value in f.string_map("headers").items()
    }
    body = None
    if f.has("body_template"):
        shape = f.get("body_template")
        leaves = _string_leaves(shape, f.at("body_template"))
        compiled = [_compile(f, path, source) for path, source in leaves]
        if all(t is not None for t in compiled):
            body = BodyTemplate(shape)
    secret = _secret_or_env(f, "signing_secret", required=False, hint="")
    return WebhookSpec(
        url=url or "",
        method=method or "POST",
        headers=headers,
        body=body,
        signing_secret=secret or None,
        timeout_ms=timeout_ms,
    )


def _slack(f: Fields, timeout_ms: int) -> SlackSpec:
    url = _secret_or_env(f, "webhook_url", required=True, hint="webhook_url_env: SLACK_WEBHOOK_URL")
    message = _template(f, "message_template", required=True)
    return SlackSpec(
        webhook_url=url or "",
        message=message or Template(""),
        channel=f.string("channel"),
        username=f.string("username"),
        timeout_ms=timeout_ms,
    )


def _email(f: Fields, timeout_ms: int) -> EmailSpec:
    security = f.string("security", default="none", choices=("none", "starttls", "tls"))
    default_port = {"none": 25, "starttls": 587, "tls": 465}[security or "none"]
    host = _secret_or_env(f, "host", required=False, hint="") or "localhost"
    sender = f.string("from", required=True, hint="from: alerts@example.com")
    to = f.string_list("to")
    to_template = _template(f, "to_template")
    if not to and to_template is None:
        f.issues.error(f.path, "email action needs 'to' or 'to_template'", "to: [ops@example.com]")
    subject = _template(f, "subject_template") or Template(f.string("subject", default="") or "")
    body = _template(f, "body_template", required=True)
    username = f.env_name("username_env")
    password = f.env_name("password_env")
    return EmailSpec(
        host=host,
        port=f.integer("port", default=default_port, minimum=1, maximum=65535),
        sender=sender or "",
        to=tuple(to),
        to_template=to_template,
        subject=subject,
        body=body or Template(""),
        security=security,  # type: ignore[arg-type]  # choices= narrows it
        username=os.environ.get(username) if username else None,
        password=os.environ.get(password) if password else None,
        timeout_ms=timeout_ms,
    )


def _database(f: Fields, timeout_ms: int) -> DatabaseSpec:
    name = f.string("function", required=True, hint="function: app.on_order_paid") or ""
    if name and not _SQL_FUNCTION.match(name):
        f.issues.error(
            f.at("function"),
            f"'function' must be a SQL function name like schema.name, got {name!r}",
            "the function is called as schema.name(event jsonb)",
        )
    return DatabaseSpec(function=tuple(name.split(".")), timeout_ms=timeout_ms)


def _python(
    f: Fields, timeout_ms: int, base_dir: FsPath, import_handlers: bool
) -> PythonSpec | None:
    """Without ``import_handlers`` the handler is found in its module's source, so checking a
    config runs no user code; a worker imports it (it runs it) and so needs the folders on
    ``sys.path``."""
    name = f.string("handler", required=True, hint="handler: myapp.hooks:on_order") or ""
    if not name:
        return None
    if not _HANDLER.match(name):
        f.issues.error(f.at("handler"), f"'handler' must look like module:function, got {name!r}")
        return None
    module_name, func_name = name.split(":")
    if not import_handlers:
        try:
            found = find_handler(module_name, func_name, (str(base_dir), "."))
        except HandlerNotFound as exc:
            f.issues.error(f.at("handler"), exc.message, exc.hint)
            return None
        if found.doubt:
            hint = "pgobs validate-config --import-handlers imports it to check"
            f.issues.warning(f.at("handler"), found.doubt, hint)
        return PythonSpec(
            handler_name=name, handler=found, is_async=found.is_async, timeout_ms=timeout_ms
        )
    for folder in (str(base_dir), "."):
        if folder not in sys.path:
            sys.path.append(folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        f.issues.error(
            f.at("handler"),
            f"cannot import {module_name!r}: {exc}",
            "put the module on PYTHONPATH or next to observers.yaml",
        )
        return None
    handler = getattr(module, func_name, None)
    if not callable(handler):
        f.issues.error(
            f.at("handler"),
            f"{module_name!r} has no function {func_name!r}",
            f"define def {func_name}(event) or async def {func_name}(event) in {module_name}",
        )
        return None
    return PythonSpec(
        handler_name=name,
        handler=handler,
        is_async=inspect.iscoroutinefunction(handler),
        timeout_ms=timeout_ms,
    )


def _template(f: Fields, key: str, *, required: bool = False) -> Template | None:
    source = f.string(key, required=required)
    return None if source is None else _compile(f, f.at(key), source)


def _compile(f: Fields, path: tuple[str | int, ...], source: str) -> Template | None:
    error = compile_error(source)
    if error:
        f.issues.error(path, error, "templates look like {{ data.field }}")
        return None
    return Template(source)


def _string_leaves(
    shape: Any, path: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    if isinstance(shape, str):
        return [(path, shape)]
    if isinstance(shape, dict):
        return [leaf for k, v in shape.items() for leaf in _string_leaves(v, (*path, k))]
    if isinstance(shape, list):
        return [leaf for i, v in enumerate(shape) for leaf in _string_leaves(v, (*path, i))]
    return []
