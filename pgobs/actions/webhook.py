"""The webhook action: the event envelope (or a body template) POSTed with Standard Webhooks
headers — ``webhook-id`` stable across retries, ``webhook-signature`` v1 when a secret is set."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import httpx

from pgobs import jsoncodec
from pgobs.actions.http import deliver
from pgobs.actions.specs import WebhookSpec


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``id.timestamp.body``. A ``whsec_`` secret is base64."""
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


async def send_webhook(
    client: httpx.AsyncClient, spec: WebhookSpec, context: dict[str, Any], msg_id: str
) -> int:
    payload = spec.body.render(context) if spec.body else context["event"]
    body = jsoncodec.encode(payload)  # numbers keep their exact digits
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "pgobs",
        **spec.headers,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
    }
    if spec.signing_secret:
        headers["webhook-signature"] = sign(spec.signing_secret, msg_id, timestamp, body)
    return await deliver(
        client,
        spec.method,
        spec.url,
        body,
        headers,
        spec.timeout_ms / 1000,
        egress=spec.egress,
        secrets=[*spec.headers.values(), spec.signing_secret],
    )
