"""The egress policy enforced at request time (``pgobs.config.egress`` says what it allows).

Two checks, so that neither a literal address nor DNS can route a delivery somewhere refused:

- before the request: a URL naming a refused address (or a cloud metadata host name) fails
  without any network traffic;
- at connect time: the address the TCP connection actually reached is checked before TLS and
  before a byte of the request is sent, so a name that resolves somewhere refused — or is
  rebound there between two lookups — is caught on what it connected to, not on a lookup of
  its own. Through an HTTP proxy, that peer is the proxy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from typing import Any

from pgobs.config.egress import EgressPolicy, literal_address

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
