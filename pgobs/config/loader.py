"""observers.yaml → ``Config``, checking everything and reporting every problem with its line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from pathlib import Path as FsPath
from typing import Any

from pgobs.actions.specs import (
    ActionSpec,
    SlackSpec,
    WebhookSpec,
    action_type,
    derived_name,
)
from pgobs.conditions import ConditionSyntaxError, compile_condition
from pgobs.config.actions import parse_action
from pgobs.config.circuit import CircuitPolicy, check_shared, parse_action_circuit, parse_defaults
from pgobs.config.dedup import parse_dedup
from pgobs.config.egress import parse_egress
from pgobs.config.enrich import parse_enrich
from pgobs.config.fields import Fields
from pgobs.config.model import EVENT_TYPE_ALIASES, Config, Observer, RetryPolicy
from pgobs.config.report import ConfigInvalid, ConfigIssue, Issues
from pgobs.config.yamlsource import load_yaml
from pgobs.errors import ConfigError
from pgobs.reliability.egress import EgressPolicy, is_private, literal_address
from pgobs.reliability.specs import HttpLookup

MAX_DELAY_MS = 86_400_000  # a day: a retry further out is a DLQ entry's job, not a delay
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def load_config(
    path: str | FsPath, *, strict_env: bool = True, import_handlers: bool = True
) -> Config:
    """Load and validate a config file; raise ``ConfigInvalid`` listing every error.

    ``strict_env`` makes unset ``*_env`` variables errors (worker start) rather than warnings.
    ``import_handlers=False`` finds python handlers in their source instead of importing them,
    so no user code runs; the config's handlers then cannot be called.
    """
    config, issues = parse_config_file(path, strict_env=strict_env, import_handlers=import_handlers)
    if config is None:
        raise ConfigInvalid([i for i in issues if i.severity == "error"])
    return config


def parse_config_file(
    path: str | FsPath, *, strict_env: bool = False, import_handlers: bool = True
) -> tuple[Config | None, list[ConfigIssue]]:
    file = FsPath(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {file} does not exist", "pass --config PATH") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}", "check the path") from exc
    return parse_config(
        text,
        str(file),
        base_dir=file.parent,
        strict_env=strict_env,
        import_handlers=import_handlers,
    )


def parse_config(
    text: str,
    file: str = "<memory>",
    *,
    base_dir: FsPath | None = None,
    strict_env: bool = False,
    import_handlers: bool = True,
) -> tuple[Config | None, list[ConfigIssue]]:
    """Parse config text; returns the config (None when there are errors) and all issues."""
    issues = Issues(file=file, lines={})
    raw = load_yaml(text, issues)
    observers: list[Observer] = []
    if raw is not None or not issues.errors:
        top = Fields(raw, (), issues, "the config file", strict_env=strict_env)
        egress = parse_egress(top)
        circuit_defaults = parse_defaults(top)
        items = top.get("observers")
        if not isinstance(items, list) or not items:
            issues.error(
                ("observers",),
                "the config needs a non-empty 'observers' list",
                "start the file with observers: and a list of observers",
            )
            items = []
        top.finish()
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            obs = _observer(
                item,
                ("observers", index),
                issues,
                base_dir or FsPath("."),
                strict_env,
                egress,
                import_handlers,
                circuit_defaults,
            )
            if obs is None:
                continue
            if obs.name in seen:
                issues.error(
                    ("observers", index, "name"),
                    f"observer name {obs.name!r} is used twice (first at line {seen[obs.name]})",
                    "observer names must be unique",
                )
            seen.setdefault(obs.name, obs.line)
            observers.append(obs)
        check_shared(
            (
                (("observers", i, "actions", n), spec, policy)
                for i, obs in enumerate(observers)
                for n, (spec, policy) in enumerate(zip(obs.actions, obs.circuits, strict=True))
            ),
            issues,
        )
    if issues.errors:
        return None, issues.found
    return Config(observers=tuple(observers), source=file), issues.found


def _observer(
    raw: Any,
    path: tuple[str | int, ...],
    issues: Issues,
    base_dir: FsPath,
    strict_env: bool,
    egress: EgressPolicy,
    import_handlers: bool,
    circuit_defaults: CircuitPolicy,
) -> Observer | None:
    f = Fields(raw, path, issues, "an observer", strict_env=strict_env)
    if not f.ok:
        return None
    name = f.string("name", required=True, hint="name: obs-orders-paid") or ""
    if name and not _NAME.match(name):
        issues.error(
            f.at("name"),
            f"observer name {name!r} has unusual characters",
            "use letters, digits, and - _ . :",
        )
    entity = f.string("entity", required=True, hint="entity: Order, or '*' for every entity") or "*"
    event_types = _event_types(f)
    condition_source = f.string("condition")
    condition = None
    if condition_source is not None:
        try:
            condition = compile_condition(condition_source)
        except ConditionSyntaxError as exc:
            issues.error(
                f.at("condition"),
                f"condition does not parse: {exc}",
                "e.g. status == 'paid' && total > 100",
            )
    actions: list[ActionSpec] = []
    circuits: list[CircuitPolicy] = []
    names: list[tuple[int, str | None, str, Any]] = []  # (position, name:, derived, raw)
    raw_actions = f.get("actions")
    if not isinstance(raw_actions, list) or not raw_actions:
        issues.error(
            f.at("actions"),
            "an observer needs a non-empty 'actions' list",
            "e.g. actions: [{type: log}]",
        )
        raw_actions = []
    for i, raw_action in enumerate(raw_actions):
        af = Fields(raw_action, (*f.at("actions"), i), issues, "an action", strict_env=strict_env)
        if af.ok:
            action_name = _action_name(af)
            circuit = parse_action_circuit(af, circuit_defaults)
            spec = parse_action(af, base_dir, import_handlers=import_handlers)
            if isinstance(spec, WebhookSpec | SlackSpec):
                spec = dataclasses.replace(spec, egress=egress)
                _check_target(af, spec)
            if spec is not None:
                actions.append(spec)
                circuits.append(circuit)
                names.append((i, action_name, derived_name(spec), raw_action))
    named = _name_actions(f, names)
    retry = _retry(f)
    on_failure = f.string("on_failure", default="dlq", choices=("dlq", "log"))
    priority = f.integer("priority", default=0, minimum=-32768, maximum=32767)
    max_concurrency = (
        f.integer("max_concurrency", default=1, minimum=1, maximum=100_000)
        if f.has("max_concurrency")
        else None
    )
    dedup = parse_dedup(f)
    enrich = tuple(
        dataclasses.replace(lookup, source=dataclasses.replace(lookup.source, egress=egress))
        if isinstance(lookup.source, HttpLookup)
        else lookup
        for lookup in parse_enrich(f)
    )
    f.finish()
    return Observer(
        name=name,
        entity=entity,
        event_types=event_types,
        condition_source=condition_source,
        condition=condition,
        actions=tuple(actions),
        action_names=named,
        retry=retry,
        on_failure=on_failure,  # type: ignore[arg-type]  # choices= narrows it
        priority=priority,
        max_concurrency=max_concurrency,
        line=issues.line_of(path),
        dedup=dedup,
        enrich=enrich,
        circuits=tuple(circuits),
    )


def _action_name(af: Fields) -> str | None:
    """An action's explicit identity (``name:``), checked like observer names."""
    name = af.string("name")
    if name is not None and not _NAME.match(name):
        af.issues.error(
            af.at("name"),
            f"action name {name!r} has unusual characters",
            "use letters, digits, and - _ . :",
        )
    return name


def _name_actions(f: Fields, names: list[tuple[int, str | None, str, Any]]) -> tuple[str, ...]:
    """Each action's identity, which jobs find it by: its ``name:``, else what it calls (a
    handler, a SQL function) or its type. Unnamed actions that would share one are told apart
    by a hash of their settings, never by position, so reordering the YAML cannot send one
    action's jobs to another."""
    base_count = Counter(derived for _, given, derived, _ in names if given is None)
    chosen: list[str] = []
    seen: set[str] = set()
    for position, given, derived, raw in names:
        name = given or derived
        if given is None and base_count[derived] > 1:
            settings = json.dumps(raw, sort_keys=True, default=str).encode()
            name = f"{derived}~{hashlib.sha256(settings).hexdigest()[:8]}"
            f.issues.warning(
                (*f.at("actions"), position, "type"),
                f"this observer has several unnamed {derived} actions: this one is known as "
                f"{name!r}, a hash of its settings, which changes when they are edited",
                "give each a name: to keep its queued jobs and dead letters across edits",
            )
        if name in seen:
            f.issues.error(
                (*f.at("actions"), position, "name" if given else "type"),
                f"two actions of this observer are both named {name!r}",
                "give each a unique name:, e.g. name: notify-crm",
            )
        seen.add(name)
        chosen.append(name)
    return tuple(chosen)


def _check_target(f: Fields, spec: WebhookSpec | SlackSpec) -> None:
    """Warn about a URL naming an address inside the network, or one egress refuses."""
    url = spec.url if isinstance(spec, WebhookSpec) else spec.webhook_url
    address = literal_address(url)
    if address is None:
        return
    key = next((k for k in ("url", "webhook_url", "url_env", "webhook_url_env") if f.has(k)), "")
    kind = action_type(spec)
    refusal = spec.egress.refusal(address)
    if refusal:
        f.issues.warning(
            f.at(key),
            f"{kind} url targets {address}, which the egress policy refuses: {refusal}",
            f"every delivery will fail; if intended, add {address} to egress.allow",
        )
    elif is_private(address):
        f.issues.warning(
            f.at(key),
            f"{kind} url targets the private address {address}: deliveries go inside the network",
            "if that is not intended, fix the URL or list the range in egress.deny",
        )


def _event_types(f: Fields) -> frozenset[str] | None:
    names = f.string_list("event_type")
    if not names or "*" in names:
        return None
    return frozenset(EVENT_TYPE_ALIASES.get(n.lower(), n) for n in names)


def _retry(f: Fields) -> RetryPolicy:
    if not f.has("retry"):
        return RetryPolicy()
    r = Fields(f.get("retry"), f.at("retry"), f.issues, "retry", strict_env=f.strict_env)
    default = RetryPolicy()
    policy = RetryPolicy(
        max_attempts=r.integer(
            "max_attempts", default=default.max_attempts, minimum=1, maximum=1000
        ),
        initial_delay_ms=r.integer(
            "initial_delay_ms", default=default.initial_delay_ms, maximum=MAX_DELAY_MS
        ),
        max_delay_ms=r.integer("max_delay_ms", default=default.max_delay_ms, maximum=MAX_DELAY_MS),
        backoff_strategy=r.string(  # type: ignore[arg-type]  # choices= narrows it
            "backoff_strategy", default="exponential", choices=("exponential", "linear", "fixed")
        ),
        jitter=r.boolean("jitter", default=True),
        max_retry_after_ms=r.integer(
            "max_retry_after_ms", default=default.max_retry_after_ms, maximum=MAX_DELAY_MS
        ),
    )
    if policy.max_delay_ms < policy.initial_delay_ms:
        f.issues.error(
            f.at("retry"), "max_delay_ms is smaller than initial_delay_ms", "raise max_delay_ms"
        )
    r.finish()
    return policy
