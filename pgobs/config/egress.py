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

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

from pgobs.config.fields import Fields

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

LOOPBACK: tuple[Network, ...] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
LINK_LOCAL_AND_METADATA: tuple[Network, ...] = (
    ip_network("169.254.0.0/16"),  # link-local; 169.254.169.254 is AWS, GCP, Azure, OpenStack
    ip_network("fe80::/10"),
    ip_network("fd00:ec2::254/128"),  # AWS IMDS over IPv6
    ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
)
# Metadata names are checked as the address they stand for, before any DNS lookup.
METADATA_HOSTS: dict[str, Address] = {
    "metadata.google.internal": IPv4Address("169.254.169.254"),
    "metadata.goog": IPv4Address("169.254.169.254"),
}
PRIVATE: tuple[Network, ...] = (
    ip_network("10.0.0.0/8"),
    ip_network("172.16.0.0/12"),
    ip_network("192.168.0.0/16"),
    ip_network("fc00::/7"),
)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        best: tuple[int, int, bool, Network] | None = None  # prefix, from the file, allow, net
        rules = (
            [(net, True, 0) for net in LOOPBACK]
            + [(net, False, 0) for net in LINK_LOCAL_AND_METADATA]
            + [(net, True, 1) for net in self.allow]
            + [(net, False, 1) for net in self.deny]
        )
        for net, allowed, from_file in rules:
            if address in net:
                candidate = (net.prefixlen, from_file, allowed, net)
                if best is None or candidate[:2] > best[:2]:
                    best = candidate
        if best is None:
            return None if not self.allow else f"{address} is not in egress.allow"
        _, from_file, allowed, net = best
        if allowed:
            return None
        if from_file:
            return f"{address} is in {net}, which egress.deny refuses"
        return (
            f"{address} is a link-local or cloud metadata address, refused unless "
            f"egress.allow lists it"
        )


DEFAULT_EGRESS = EgressPolicy()


def literal_address(url: str) -> Address | None:
    """The address a URL names literally (an IP, or a cloud metadata host name), else None."""
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return None
    if host in METADATA_HOSTS:
        return METADATA_HOSTS[host]
    try:
        return ip_address(host)
    except ValueError:
        return None


def is_private(address: Address) -> bool:
    return any(address in net for net in PRIVATE)


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
