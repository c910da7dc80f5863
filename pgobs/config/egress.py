"""The ``egress:`` key: which networks HTTP actions may reach.

A webhook URL is an instruction to connect somewhere from inside the deployment, so pgobs keeps
it away from what only the host itself should talk to: link-local networks and cloud metadata
services are refused unless a rule allows them. Loopback is allowed (first steps and tests
deliver to localhost); everything else is allowed unless ``deny`` covers it, or, once an
``allow`` list is given, only what it covers (plus loopback) is reachable.

The most specific rule wins (longest prefix); at equal prefixes a rule of the file beats a
built-in one.
"""

from __future__ import annotations

from ipaddress import ip_network

from pgobs.config.fields import Fields
from pgobs.reliability.egress import DEFAULT_EGRESS, EgressPolicy, Network


def parse_egress(top: Fields) -> EgressPolicy:
    """The file's ``egress: {allow: [...], deny: [...]}``; every bad network is reported."""
    if not top.has("egress"):
        return DEFAULT_EGRESS
    f = Fields(top.get("egress"), top.at("egress"), top.issues, "egress", strict_env=top.strict_env)
    allow = _networks(f, "allow")
    deny = _networks(f, "deny")
    for net in sorted(set(allow) & set(deny), key=str):
        f.issues.error(
            f.at("deny"),
            f"{net} is in both egress.allow and egress.deny",
            "keep it in one of them",
        )
    f.finish()
    return EgressPolicy(allow=tuple(allow), deny=tuple(deny))


def _networks(f: Fields, key: str) -> list[Network]:
    out: list[Network] = []
    raw = f.get(key)
    for i, text in enumerate(f.string_list(key)):
        path = (*f.at(key), i) if isinstance(raw, list) else f.at(key)
        try:
            out.append(ip_network(text.strip()))
        except ValueError as exc:
            hint = "write a network like 10.0.0.0/8 or an address like 169.254.169.254"
            if "host bits set" in str(exc):
                hint = f"did you mean {ip_network(text.strip(), strict=False)}?"
            f.issues.error(path, f"egress.{key}: {text!r} is not a network: {exc}", hint)
    return out
