"""The egress policy (which networks HTTP actions may reach: link-local and metadata addresses
refused unless allowed, loopback allowed, the most specific rule winning) and its enforcement at
request time. ``pgobs.config.egress`` reads it from observers.yaml.

Two checks, so that neither a literal address nor DNS can route a delivery somewhere refused:

- before the request: a URL naming a refused address (or a cloud metadata host name) fails
  without any network traffic;
- at connect time: the address the TCP connection actually reached is checked before TLS and
  before a byte of the request is sent, so a name that resolves somewhere refused — or is
  rebound there between two lookups — is caught on what it connected to, not on a lookup of
  its own. Through an HTTP proxy, that peer is the proxy.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any
from urllib.parse import urlsplit

import httpx

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
NAT64_WELL_KNOWN = ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ip_network("::/96")
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
        address = reached(address)
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
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}")


def literal_address(url: str) -> Address | None:
    """The address a URL names literally (an IP, or a cloud metadata host name), else None.

    The host is read as the HTTP client reads it (IDNA maps U+3002 and other full stops to
    dots, which urllib keeps), else as urllib does for a URL the client rejects; a trailing
    root dot names the same host. Through a proxy this is the only check, so both must agree.
    """
    try:
        # raw_host: the ASCII form the client connects to (.host decodes IDNA, and raises
        # IDNAError, a ValueError, on an A-label it cannot decode).
        host = httpx.URL(url).raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError):
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            return None
    host = host.lower().removesuffix(".")
    if host in METADATA_HOSTS:
        return METADATA_HOSTS[host]
    try:
        return ip_address(host)
    except ValueError:
        return _numeric_ipv4(host)


def _numeric_ipv4(host: str) -> IPv4Address | None:
    """The other spellings resolvers accept for an IPv4 address: one number (2852039166), hex or
    octal parts (0xa9.0xfe.0xa9.0xfe, 0251.0376.0251.0376), fewer parts (169.254.43518)."""
    if not host or not _NUMERIC_HOST.fullmatch(host):
        return None
    try:
        return IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def is_private(address: Address) -> bool:
    return any(reached(address) in net for net in PRIVATE)


def reached(address: Address) -> Address:
    """The IPv4 address an IPv6 one stands for, where it embeds one: IPv4-mapped
    ([::ffff:10.0.0.1] reaches 10.0.0.1), NAT64 with the well-known prefix (on a NAT64 network
    [64:ff9b::a9fe:a9fe] reaches 169.254.169.254; RFC 6052) and IPv4-compatible (::a.b.c.d,
    deprecated, still routed by some stacks). Else the address itself."""
    if not isinstance(address, IPv6Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64_WELL_KNOWN or (address in IPV4_COMPATIBLE and int(address) > 1):
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address


Trace = Callable[[str, dict[str, Any]], Awaitable[None]]


class EgressDenied(Exception):
    """The policy refuses this target; a permanent failure, retrying cannot help."""


def check_url(url: str, policy: EgressPolicy) -> None:
    address = literal_address(url)
    if address is not None:
        reason = policy.refusal(address)
        if reason:
            raise EgressDenied(reason)


def peer_check(policy: EgressPolicy) -> Trace:
    """An httpx ``trace`` extension that refuses a connection to a refused peer address."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream = info["return_value"]
        peer = stream.get_extra_info("server_addr")
        reason = policy.refusal(ip_address(peer[0])) if peer else "the peer address is unknown"
        if reason:
            await stream.aclose()
            raise EgressDenied(f"connected to {reason}")

    return trace
