"""The circuit breaker's settings: ``defaults: {circuit: {...}}`` for the fleet, ``circuit:`` on
an action to override them, and which breaker each action uses."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from pgobs.actions.specs import ActionSpec, CacheSpec, LogSpec, target_of
from pgobs.config.fields import Fields
from pgobs.config.report import Issues, Path

# Actions that call nothing outside pgobs' own database have nothing for a breaker to protect.
_UNGUARDED = (LogSpec, CacheSpec)


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    key: str | None = None  # the breaker's name; None: what the action calls (target_of)
    failure_threshold: float = 0.5  # failure rate that opens it...
    min_requests: int = 10  # ...once at least this many calls were made within window_s
    window_s: float = 30.0
    open_for_s: float = 30.0  # until the first probe; doubled by each failed probe...
    max_open_for_s: float = 600.0  # ...up to this
    success_threshold: int = 1  # good probes in a row that close it
    enabled: bool = True

    def same_settings(self, other: CircuitPolicy) -> bool:
        return dataclasses.replace(self, key=None) == dataclasses.replace(other, key=None)


DEFAULT_POLICY = CircuitPolicy()
CIRCUIT_HINT = (
    "circuit: {failure_threshold: 0.5, min_requests: 10, window: 30s, open_for: 30s, "
    "max_open_for: 10m, success_threshold: 1, enabled: true, key: NAME}"
)


def parse_defaults(top: Fields) -> CircuitPolicy:
    """The top-level ``defaults:`` mapping; its ``circuit:`` is every action's starting point."""
    if not top.has("defaults"):
        return DEFAULT_POLICY
    f = Fields(top.get("defaults"), top.at("defaults"), top.issues, "defaults", strict_env=False)
    policy = DEFAULT_POLICY
    if f.has("circuit"):
        policy = _policy(f, DEFAULT_POLICY, allow_key=False)
    f.finish()
    return policy


def parse_action_circuit(af: Fields, defaults: CircuitPolicy) -> CircuitPolicy:
    """An action's ``circuit:`` over the defaults. Read before the action's other keys are
    checked, so ``circuit`` is never reported as unknown."""
    if not af.has("circuit"):
        return defaults
    if af.raw.get("type") in ("log", "cache"):
        af.get("circuit")
        af.issues.error(
            af.at("circuit"),
            f"a {af.raw.get('type')} action calls nothing outside: it has no circuit",
            "remove circuit: from this action",
        )
        return defaults
    return _policy(af, defaults, allow_key=True)


def _policy(parent: Fields, base: CircuitPolicy, *, allow_key: bool) -> CircuitPolicy:
    f = Fields(
        parent.get("circuit"), parent.at("circuit"), parent.issues, "circuit", strict_env=False
    )
    if not f.ok:
        return base
    key = base.key
    if allow_key:
        key = f.string("key", hint="key: partner-api (actions with one key share one breaker)")
        if key is not None and not key.strip():
            f.issues.error(f.at("key"), "circuit 'key' must not be blank", "key: partner-api")
            key = None
    policy = CircuitPolicy(
        key=key,
        failure_threshold=_rate(f, "failure_threshold", base.failure_threshold),
        min_requests=f.integer(
            "min_requests", default=base.min_requests, minimum=1, maximum=1_000_000
        ),
        window_s=f.duration("window", default=base.window_s, minimum=0.1, maximum=86_400),
        open_for_s=f.duration("open_for", default=base.open_for_s, minimum=0.1, maximum=86_400),
        max_open_for_s=f.duration(
            "max_open_for", default=base.max_open_for_s, minimum=0.1, maximum=7 * 86_400
        ),
        success_threshold=f.integer(
            "success_threshold", default=base.success_threshold, minimum=1, maximum=1000
        ),
        enabled=f.boolean("enabled", default=base.enabled),
    )
    if policy.max_open_for_s < policy.open_for_s:
        f.issues.error(
            f.at("max_open_for") if f.has("max_open_for") else f.at("open_for"),
            f"circuit max_open_for ({_seconds(policy.max_open_for_s)}) is shorter than open_for "
            f"({_seconds(policy.open_for_s)})",
            "raise max_open_for (default 10m) or lower open_for",
        )
    f.finish()
    return policy


def _rate(f: Fields, key: str, default: float) -> float:
    value = f.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        f.issues.error(
            f.at(key),
            f"circuit '{key}' must be a failure rate above 0 and at most 1, got {value!r}",
            "e.g. failure_threshold: 0.5 (half of the calls in the window failed)",
        )
        return default
    return float(value)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def circuit_key(spec: ActionSpec, policy: CircuitPolicy) -> str | None:
    """The breaker an action uses, None when it has none (switched off, or it calls nothing)."""
    if not policy.enabled or isinstance(spec, _UNGUARDED):
        return None
    return policy.key or target_of(spec)


def check_shared(actions: Iterable[tuple[Path, ActionSpec, CircuitPolicy]], issues: Issues) -> None:
    """Actions that share a breaker must agree on its settings: one breaker, one behaviour."""
    first: dict[str, tuple[Path, CircuitPolicy]] = {}
    for path, spec, policy in actions:
        key = circuit_key(spec, policy)
        if key is None:
            continue
        seen = first.setdefault(key, (path, policy))
        if seen[1].same_settings(policy):
            continue
        issues.error(
            path,
            f"this action shares the circuit {key!r} with the action at line "
            f"{issues.line_of(seen[0])}, with other circuit settings",
            "give both the same circuit settings, or this one its own circuit: {key: NAME}",
        )
