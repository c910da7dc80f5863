"""A template from the config, compiled and tried on a sample event before any real one."""

from __future__ import annotations

from typing import Any

import jinja2

from pgobs.config.fields import Fields
from pgobs.events import Event
from pgobs.templates import Template, TemplateFailed, compile_error

# A template that fails on this event fails on every event; one that only misses a field the
# sample lacks may well render on real ones.
SAMPLE_EVENT = Event(id=1, entity_type="Sample", event_type="INSERT", data={}, entity_id="1")


def checked_template(f: Fields, field: str, source: str, hint: str, what: str) -> Template | None:
    """``what`` names the template in messages (e.g. "dedup key")."""
    error = compile_error(source)
    if error:
        f.issues.error(f.at(field), f"{what}: {error}", hint)
        return None
    template = Template(source)
    envelope: dict[str, Any] = SAMPLE_EVENT.envelope()
    try:
        template.render({**envelope, "event": envelope, "observer": "sample"})
    except TemplateFailed as exc:
        if not isinstance(exc.__cause__, jinja2.UndefinedError):
            f.issues.error(f.at(field), f"{what} does not render: {exc}", hint)
            return None
    return template
