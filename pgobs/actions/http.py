"""Sending an HTTP request and classing the answer: 2xx ok; 408, 429, 5xx and network errors
transient (honouring Retry-After); other statuses permanent; a target the egress policy refuses
permanent.

A response body is streamed, never held whole: a few KB are kept for the error message, and a
body longer than ``DRAIN_LIMIT`` is cut off by closing the connection. Errors name the URL the
way ``pgobs.actions.redact`` shows it, with every secret of the request cut out.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable

import httpx

from pgobs.actions.failures import ActionFailed
from pgobs.actions.redact import Secrets, shown_url, url_secrets
from pgobs.reliability.egress import EgressDenied, EgressPolicy, check_url, peer_check

TRANSIENT_STATUSES = frozenset({408, 425, 429})
EXCERPT_BYTES = 2048  # read for the error message...
EXCERPT_CHARS = 300  # ...of which this much is kept
DRAIN_LIMIT = 64 * 1024  # a body up to this size is read to the end, so the connection is reused


async def deliver(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout_s: float,
    *,
    egress: EgressPolicy,
    secrets: Iterable[str | None] = (),
    credential_url: bool = False,
) -> int:
    """Send the request; return the status, or raise ``ActionFailed`` unless it is 2xx.

    ``secrets`` are values that must never appear in an error (header values, signing secrets);
    ``credential_url`` marks a URL that is itself a secret (a Slack webhook), shown as its origin.
    """
    shown = f"{method} {shown_url(url, credential=credential_url)}"
    hidden = Secrets([*secrets, *url_secrets(url, credential=credential_url)])
    # Errors are raised "from None": a chained httpx exception quotes the full URL, and a
    # traceback printed anywhere downstream would show it.
    try:
        check_url(url, egress)
        async with client.stream(
            method,
            url,
            content=body,
            headers=_with_identity_encoding(headers),
            timeout=timeout_s,
            extensions={"trace": peer_check(egress)},
        ) as response:
            status = response.status_code
            excerpt = await _excerpt(response)
            retry = retry_after(response.headers.get("retry-after"))
    except EgressDenied as exc:
        raise ActionFailed(hidden.scrub(f"{shown} refused: {exc}"), "permanent") from None
    except httpx.TimeoutException as exc:
        raise ActionFailed(
            f"{shown} timed out after {timeout_s:g}s ({type(exc).__name__})"
        ) from None
    except httpx.InvalidURL as exc:
        raise ActionFailed(hidden.scrub(f"{shown}: invalid URL: {exc}"), "permanent") from None
    except httpx.HTTPError as exc:
        raise ActionFailed(hidden.scrub(f"{shown} failed: {type(exc).__name__}: {exc}")) from None
    if 200 <= status < 300:
        return status
    detail = f"{shown} answered {status}: " + hidden.scrub_prefix(excerpt, EXCERPT_CHARS)
    if status >= 500 or status in TRANSIENT_STATUSES:
        raise ActionFailed(detail, "transient", retry, status_code=status)
    if 300 <= status < 400:
        detail += " (redirects are not followed: configure the final URL)"
    raise ActionFailed(detail, "permanent", status_code=status)


def _with_identity_encoding(headers: dict[str, str]) -> dict[str, str]:
    """Ask for an uncompressed body unless the config chose: a compressed error body would
    have to be inflated to read its first KB, and a small one can inflate to gigabytes."""
    if any(name.lower() == "accept-encoding" for name in headers):
        return headers
    return {"accept-encoding": "identity", **headers}


async def _excerpt(response: httpx.Response) -> str:
    """The start of the body as text. Reading stops at ``DRAIN_LIMIT``; leaving the rest unread
    makes httpx close the connection instead of reading a body of any size."""
    kept = bytearray()
    read = 0
    async for chunk in response.aiter_raw():
        if len(kept) < EXCERPT_BYTES:
            kept += chunk[: EXCERPT_BYTES - len(kept)]
        read += len(chunk)
        if read >= DRAIN_LIMIT:
            break
    return kept.decode(response.encoding or "utf-8", errors="replace")


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
