"""An observer's ``dedup: {key: "<template>", window: 5m}``."""

from __future__ import annotations

from pgobs.config.fields import Fields
from pgobs.config.templatecheck import checked_template
from pgobs.reliability.specs import DedupPolicy
from pgobs.templates import Template, compile_error

MAX_WINDOW_S = 30 * 86_400.0  # a fingerprint kept longer is a uniqueness constraint, not dedup
DEFAULT_WINDOW_S = 300.0


def parse_dedup(f: Fields) -> DedupPolicy | None:
    if not f.has("dedup"):
        return None
    d = Fields(f.get("dedup"), f.at("dedup"), f.issues, "dedup", strict_env=f.strict_env)
    if not d.ok:
        return None
    window_s = d.duration("window", default=DEFAULT_WINDOW_S, minimum=0.001, maximum=MAX_WINDOW_S)
    source = d.string("key", hint='key: "{{ data.order_id }}-{{ event_type }}"')
    key = None
    if source is not None:
        key = _key_template(d, source)
    d.finish()
    return DedupPolicy(window_s=window_s, key=key)


def _key_template(d: Fields, source: str) -> Template | None:
    hint = 'a key names what makes two events the same, e.g. key: "order:{{ data.id }}"'
    if compile_error(source) is None and "{" not in source:
        d.issues.error(
            d.at("key"),
            f"dedup key {source!r} has no template: every event would be the same one",
            hint,
        )
        return None
    return checked_template(d, "key", source, hint, "dedup key")
