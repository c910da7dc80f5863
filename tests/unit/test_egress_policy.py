"""The egress policy: which addresses HTTP actions may reach, checked before any traffic."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import httpx
import pytest

from pgobs.actions.failures import ActionFailed
from pgobs.actions.http import deliver
from pgobs.config.loader import parse_config
from pgobs.reliability.egress import DEFAULT_EGRESS, EgressPolicy, literal_address


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("169.254.169.254", True),
        ("169.254.170.2", True),  # ECS task metadata: link-local
        ("fd00:ec2::254", True),
        ("fe80::1", True),
        ("::ffff:169.254.169.254", True),  # IPv4-mapped is the IPv4 address
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 (RFC 6052) reaches 169.254.169.254
        ("64:ff9b::169.254.169.254", True),
        ("::169.254.169.254", True),  # IPv4-compatible, deprecated but routed by some stacks
        ("64:ff9b::5db8:d822", False),  # NAT64 of a public address
        ("100.100.100.200", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.1.2.3", False),
        ("93.184.216.34", False),
    ],
)
def test_default_policy(address: str, refused: bool) -> None:
    assert (DEFAULT_EGRESS.refusal(ip_address(address)) is not None) is refused


def test_the_most_specific_rule_wins_and_the_file_beats_the_defaults() -> None:
    policy = EgressPolicy(
        allow=(ip_network("169.254.169.254/32"), ip_network("10.1.0.0/16")),
        deny=(ip_network("10.0.0.0/8"), ip_network("127.0.0.0/8")),
    )
    assert policy.refusal(ip_address("169.254.169.254")) is None
    assert policy.refusal(ip_address("169.254.169.253")) is not None
    assert policy.refusal(ip_address("10.1.2.3")) is None
    assert (
        policy.refusal(ip_address("10.2.0.1"))
        == "10.2.0.1 is in 10.0.0.0/8, which egress.deny refuses"
    )
    assert policy.refusal(ip_address("127.0.0.1")) is not None
    assert policy.refusal(ip_address("::1")) is None  # only IPv4 loopback was denied


def test_an_allow_list_refuses_everything_else_but_loopback() -> None:
    policy = EgressPolicy(allow=(ip_network("203.0.113.0/24"),))
    assert policy.refusal(ip_address("203.0.113.9")) is None
    assert policy.refusal(ip_address("127.0.0.1")) is None
    assert policy.refusal(ip_address("198.51.100.1")) == "198.51.100.1 is not in egress.allow"


async def _deliver_to(url: str, policy: EgressPolicy) -> list[httpx.Request]:
    """Deliver through a transport that records instead of sending: nothing leaves the host."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204, stream=httpx.ByteStream(b""))  # as a network answer is

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        await deliver(client, "POST", url, b"{}", {}, 1.0, egress=policy)
    return seen


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        # Spellings a resolver turns into 169.254.169.254 without DNS.
        "http://2852039166/latest/meta-data/",
        "http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/",
        "http://0251.0376.0251.0376/latest/meta-data/",
        "http://169.254.43518/latest/meta-data/",
        # Hosts the client reads differently from urllib: IDNA dots (U+3002, U+FF0E, U+FF61),
        # a trailing root dot. Through an HTTP proxy this check is the only one.
        "http://169\u3002254\u3002169\u3002254/latest/meta-data/",
        "http://169\uff0e254\uff0e169\uff0e254/latest/meta-data/",
        "http://metadata\uff61google\uff61internal/computeMetadata/v1/",
        "http://metadata.google.internal./computeMetadata/v1/",
        "http://169.254.169.254./latest/meta-data/",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # through a NAT64 gateway
    ],
)
async def test_a_metadata_target_is_refused_before_any_request(url: str) -> None:
    with pytest.raises(ActionFailed) as failed:
        await _deliver_to(url, DEFAULT_EGRESS)
    assert failed.value.kind == "permanent"
    assert "refused: " in failed.value.message
    assert "link-local or cloud metadata address" in failed.value.message


@pytest.mark.anyio
async def test_an_allow_rule_lets_a_metadata_address_through() -> None:
    policy = EgressPolicy(allow=(ip_network("169.254.169.254/32"),))
    seen = await _deliver_to("http://169.254.169.254/latest/meta-data/", policy)
    assert len(seen) == 1


def _issues(text: str) -> list[str]:
    _, issues = parse_config(text, "observers.yaml")
    return [str(i) for i in issues]


def test_egress_errors_name_the_line_and_a_fix() -> None:
    issues = _issues(
        "egress:\n"
        "  allow: [10.0.0.1/8]\n"
        "  deny: [nonsense, 127.0.0.0/8]\n"
        "  denny: []\n"
        "observers:\n"
        "  - {name: a, entity: Order, actions: [{type: log}]}\n"
    )
    assert any(
        i.startswith("observers.yaml:2: error: egress.allow: '10.0.0.1/8' is not a network")
        and "did you mean 10.0.0.0/8?" in i
        for i in issues
    ), issues
    assert any(i.startswith("observers.yaml:3: error: egress.deny: 'nonsense'") for i in issues)
    assert any(
        i.startswith("observers.yaml:4: error: unknown key 'denny' in egress") for i in issues
    )


def test_validation_warns_about_private_and_refused_literal_targets() -> None:
    text = """
observers:
  - name: a
    entity: Order
    actions:
      - {type: webhook, name: a, url: "http://10.20.30.40:8080/hook"}
      - {type: slack, webhook_url: "http://169.254.169.254/", message_template: x}
      - {type: webhook, name: b, url: "http://192.168.1.5/?k=v"}
      - {type: webhook, name: c, url: "http://127.0.0.1:9000/ok"}
      - {type: webhook, name: d, url: "http://0xa9fea9fe/"}
"""
    config, issues = parse_config(text, "observers.yaml")
    assert config is not None
    assert [str(i) for i in issues] == [
        "observers.yaml:6: warning: webhook url targets the private address 10.20.30.40: "
        "deliveries go inside the network (observers[0].actions[0].url) — if that is not "
        "intended, fix the URL or list the range in egress.deny",
        "observers.yaml:7: warning: slack url targets 169.254.169.254, which the egress policy "
        "refuses: 169.254.169.254 is a link-local or cloud metadata address, refused unless "
        "egress.allow lists it (observers[0].actions[1].webhook_url) — every delivery will "
        "fail; if intended, add 169.254.169.254 to egress.allow",
        "observers.yaml:8: warning: webhook url targets the private address 192.168.1.5: "
        "deliveries go inside the network (observers[0].actions[2].url) — if that is not "
        "intended, fix the URL or list the range in egress.deny",
        "observers.yaml:10: warning: webhook url targets 169.254.169.254, which the egress "
        "policy refuses: 169.254.169.254 is a link-local or cloud metadata address, refused "
        "unless egress.allow lists it (observers[0].actions[4].url) — every delivery will fail; "
        "if intended, add 169.254.169.254 to egress.allow",
    ]


def test_an_ipv4_mapped_private_address_is_private() -> None:
    """[::ffff:10.0.0.1] reaches 10.0.0.1: validate-config must warn about it as well."""
    text = """
observers:
  - name: a
    entity: Order
    actions:
      - {type: webhook, name: a, url: "http://[::ffff:10.0.0.1]:8080/hook"}
"""
    config, issues = parse_config(text, "observers.yaml")
    assert config is not None
    assert [i.message for i in issues if "private address" in i.message]


def test_a_host_the_client_cannot_decode_is_no_literal_address() -> None:
    """httpx's host raises IDNAError (not InvalidURL) for a bad A-label: reading it crashed the
    egress check and validate-config with a traceback."""
    assert literal_address("http://xn--169-.254.169.254/") is None
    ideographic = "http://169\u3002254\u3002169\u3002254/"
    assert literal_address(ideographic) == ip_address("169.254.169.254")
