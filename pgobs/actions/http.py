"""Sending an HTTP request and classing the answer: 2xx ok; 408, 429, 5xx and network errors
transient (honouring Retry-After); other statuses permanent."""

from __future__ import annotations

import email.utils
import time

import httpx

from pgobs.actions.failures import ActionFailed

TRANSIENT_STATUSES = frozenset({408, 425, 429})


async def deliver(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout_s: float,
) -> httpx.Response:
    try:
        response = await client.request(
            method, url, content=body, headers=headers, timeout=timeout_s
        )
    except httpx.TimeoutException as exc:
        raise ActionFailed(
            f"{method} {url} timed out after {timeout_s:g}s ({type(exc).__name__})"
        ) from exc
    except httpx.TransportError as exc:
        raise ActionFailed(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
    status = response.status_code
    if 200 <= status < 300:
        return response
    detail = f"{method} {url} answered {status}: {response.text[:200]}"
    if status >= 500 or status in TRANSIENT_STATUSES:
        raise ActionFailed(detail, "transient", retry_after(response.headers.get("retry-after")))
    if 300 <= status < 400:
        detail += " (redirects are not followed: configure the final URL)"
    raise ActionFailed(detail, "permanent")


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
