"""What errors may show of a request: URLs without credentials, text without secrets."""

from __future__ import annotations

import base64

import pytest

from pgobs.actions.redact import Secrets, shown_url, url_secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://u:p@api.example.com:8443/hooks/x?api_key=k#frag",
            "https://api.example.com:8443/hooks/x",
        ),
        ("http://[::1]:9000/a?b=c", "http://[::1]:9000/a"),
        ("https://hooks.slack.com/services/T0/B0/tok123", "https://hooks.slack.com"),
        ("https://discord.com/api/webhooks/1/tok", "https://discord.com"),
        ("https://acme.webhook.office.com/webhookb2/x", "https://acme.webhook.office.com"),
        ("http://host:99999999/", "(an unparsable URL)"),
    ],
)
def test_urls_lose_userinfo_query_and_credential_paths(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_any_url_can_be_marked_a_credential() -> None:
    assert shown_url("http://127.0.0.1:8080/services/T/B/x", credential=True) == (
        "http://127.0.0.1:8080"
    )


def test_hidden_url_parts_are_listed_in_every_form_a_server_echoes() -> None:
    found = url_secrets("https://alice:pa%24s@h/p?api_key=k3y-1&x=y")
    assert {"alice", "pa$s", "k3y-1", "api_key=k3y-1&x=y"} <= set(found)
    assert base64.b64encode(b"alice:pa$s").decode() in found  # the Basic auth header
    slack = url_secrets("https://hooks.slack.com/services/T01/B02/abcd1234")
    assert "abcd1234" in slack and "services" not in slack


def test_secrets_are_masked_whole_and_by_their_last_word() -> None:
    hidden = Secrets(["Bearer tok-7f3a", "whsec_abc", None, "ab"])
    text = "auth=Bearer tok-7f3a raw=tok-7f3a sig=whsec_abc ab stays"
    assert hidden.scrub(text) == "auth=*** raw=*** sig=*** ab stays"


def test_a_prefix_never_ends_in_half_a_secret() -> None:
    hidden = Secrets(["supersecret-42"])
    assert hidden.scrub_prefix("token: supersec", 100) == "token: ***"
    assert hidden.scrub_prefix("x" * 10 + "supersecret-42", 14) == "x" * 10 + "***"
    assert hidden.scrub_prefix("nothing here", 7) == "nothing"


def test_a_config_error_about_a_url_does_not_print_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pgobs.config.loader import parse_config

    monkeypatch.setenv("PGOBS_TEST_HOOK", "ftp://ops:hunter2-pw@files.example.com/in?key=k-9f")
    text = (
        "observers:\n"
        "  - {name: a, entity: O, actions: [{type: webhook, url_env: PGOBS_TEST_HOOK}]}\n"
    )
    _, issues = parse_config(text, "observers.yaml")
    (issue,) = [str(i) for i in issues]
    assert "must start with http:// or https://, not ftp://" in issue
    assert "hunter2" not in issue and "k-9f" not in issue and "ops" not in issue


def test_query_values_are_masked_as_written_and_as_sent() -> None:
    """A server may echo a query value raw (with its + or %20) or decoded: each form is cut."""
    url = 'https://h.example/hook?api_key=Zm9v+YmFy+c2VjcmV0&token=s3cr3t%20part2&q=a"b%22c9q8'
    hidden = Secrets(url_secrets(url))
    for echoed in (
        "Zm9v+YmFy+c2VjcmV0",
        "Zm9v YmFy c2VjcmV0",
        "s3cr3t%20part2",
        "s3cr3t part2",
        'a"b"c9q8',
        "a%22b%22c9q8",
    ):
        assert echoed not in hidden.scrub(f"the server said: {echoed}"), echoed
