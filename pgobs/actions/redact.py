"""What an error may say about a request: errors are stored in pgobs.jobs, the DLQ and the
audit trail and logged, so they must never carry a credential.

A URL is shown without userinfo, query or fragment; a URL that is itself the credential (a Slack
or Discord webhook) is shown as its origin only. Everything secret an action knows (passwords,
header values, signing secrets, the hidden URL parts) is also cut out of any text a server or a
library sends back, since receivers echo requests and exception texts quote URLs.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlsplit

MASK = "***"
MIN_SECRET_LEN = 4  # shorter values are too common in ordinary text to cut out safely
# Incoming-webhook services whose URL path is the credential.
CREDENTIAL_HOSTS = (
    "hooks.slack.com",
    "discord.com",
    "discordapp.com",
    "webhook.office.com",
    "hooks.zapier.com",
    "api.telegram.org",
    "outlook.office.com",  # legacy Teams connectors
    "events.pagerduty.com",
)


def is_credential_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in CREDENTIAL_HOSTS)


def shown_url(url: str, *, credential: bool = False) -> str:
    """``url`` as errors show it: ``scheme://host[:port]/path``, or only the origin when the URL
    is a credential (``credential`` or a known incoming-webhook host)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(an unparsable URL)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    if credential or is_credential_url(url):
        return origin
    return origin + parts.path


def url_secrets(url: str, *, credential: bool = False) -> list[str]:
    """The parts of ``url`` that ``shown_url`` hides, in the forms a server may echo them."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found: list[str] = []
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        found += [user, password, base64.b64encode(f"{user}:{password}".encode()).decode()]
    for _, value in parse_qsl(parts.query, keep_blank_values=True):
        found.append(value)
    for pair in parts.query.split("&"):
        # As written (a + or %20 left as is) and as httpx sends it: servers echo either.
        raw = pair.partition("=")[2]
        found += [raw, unquote(raw), quote(unquote_plus(raw), safe="")]
    found.append(parts.query)
    if parts.password:
        found += [parts.password]  # percent-encoded, as the URL carried it
    if credential or is_credential_url(url):
        # The path whole, and each token-like segment (ids and keys hold digits; the fixed
        # words around them, such as "services" or "webhooks", are not worth masking).
        found += [parts.path, *(p for p in parts.path.split("/") if any(c.isdigit() for c in p))]
    return found


class Secrets:
    """Values that must not appear in an error, cut out of any text before it is kept."""

    def __init__(self, values: Iterable[str | None]) -> None:
        forms = set()
        for value in values:
            if value is None:
                continue
            for form in (value, unquote(value), *value.split()[-1:]):
                if len(form) >= MIN_SECRET_LEN:
                    forms.add(form)
        # Longest first, so a secret that contains another is masked whole.
        self._values = sorted(forms, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def scrub_prefix(self, text: str, limit: int) -> str:
        """The first ``limit`` characters of ``text``, scrubbed, with no secret cut in half at
        the end (``text`` itself may be a cut-off prefix of what the server sent)."""
        text = self.scrub(text)[:limit]
        for value in self._values:
            for size in range(min(len(value) - 1, len(text)), MIN_SECRET_LEN - 1, -1):
                if text.endswith(value[:size]):
                    text = text[:-size] + MASK
                    break
        return text
