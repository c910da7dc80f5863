"""``pgobs validate-config``: check an observers file without running any of it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from pgobs.cli.output import Format, JsonFlag, print_json, wants_json
from pgobs.config.loader import parse_config_file
from pgobs.config.model import Config
from pgobs.errors import EXIT_VALIDATION_FAILED


def validate_config(
    file: Path = Path("observers.yaml"),
    *,
    detailed: bool = False,
    import_handlers: bool = False,
    json: JsonFlag = False,
    format: Format = "text",
) -> int:
    """Check an observers file; print every error with its line and a hint.

    Python handlers are found by reading their modules' source: checking runs none of your code.
    Exits 4 when the file has errors.

    Parameters
    ----------
    detailed
        Also list each observer with its events, condition and actions.
    import_handlers
        Import the python handlers' modules (running them, as the worker does) for a full check.
    """
    config, issues = parse_config_file(file, strict_env=False, import_handlers=import_handlers)
    errors = sum(1 for i in issues if i.severity == "error")
    if wants_json(json, format):
        print_json(
            {
                "file": str(file),
                "valid": config is not None,
                "errors": errors,
                "issues": [dataclasses.asdict(i) for i in issues],
                "observers": _observers(config) if config is not None else [],
            }
        )
        return 0 if config is not None else EXIT_VALIDATION_FAILED
    for issue in issues:
        print(issue, file=sys.stderr if issue.severity == "error" else sys.stdout)
    if config is None:
        print(f"{file}: {errors} error(s)", file=sys.stderr)
        return EXIT_VALIDATION_FAILED
    actions = sum(len(o.actions) for o in config.observers)
    print(f"{file}: ok — {len(config.observers)} observer(s), {actions} action(s)")
    if detailed:
        _print_detail(config)
    return 0


def _observers(config: Config) -> list[dict[str, Any]]:
    from pgobs.actions.specs import action_type

    return [
        {
            "name": obs.name,
            "line": obs.line,
            "entity": obs.entity,
            "event_types": sorted(obs.event_types) if obs.event_types else None,
            "condition": obs.condition_source,
            "actions": [
                {"name": name, "type": action_type(spec)}
                for name, spec in zip(obs.action_names, obs.actions, strict=True)
            ],
            "max_attempts": obs.retry.max_attempts,
            "on_failure": obs.on_failure,
        }
        for obs in config.observers
    ]


def _print_detail(config: Config) -> None:
    from pgobs.actions.handler_source import HandlerSource
    from pgobs.actions.specs import PythonSpec, action_type

    for obs in config.observers:
        events = ", ".join(sorted(obs.event_types)) if obs.event_types else "any event"
        kinds = ", ".join(action_type(a) for a in obs.actions)
        print(f"  {obs.name} (line {obs.line}): {obs.entity} on {events}")
        print(f"    condition: {obs.condition_source or '(always)'}")
        print(
            f"    actions:   {kinds}; retry {obs.retry.max_attempts}x "
            f"{obs.retry.backoff_strategy}; on_failure {obs.on_failure}"
        )
        for spec in obs.actions:
            if not isinstance(spec, PythonSpec):
                continue
            found = spec.handler
            if isinstance(found, HandlerSource):
                where = f"{found.file}:{found.line}" if found.line else found.file
                how = "not settled from source" if found.doubt else found.binding
                print(f"    handler {spec.handler_name}: {how} at {where}")
            else:
                kind = "async" if spec.is_async else "sync"
                print(f"    handler {spec.handler_name}: {kind}, imported")
