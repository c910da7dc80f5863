"""The slack action: a message to a Slack incoming webhook."""

from __future__ import annotations

from typing import Any

import httpx

from pgobs import jsoncodec
from pgobs.actions.http import deliver
from pgobs.actions.specs import SlackSpec


async def send_slack(client: httpx.AsyncClient, spec: SlackSpec, context: dict[str, Any]) -> int:
    message: dict[str, Any] = {"text": spec.message.render(context)}
    if spec.channel:
        message["channel"] = spec.channel
    if spec.username:
        message["username"] = spec.username
    return await deliver(
        client,
        "POST",
        spec.webhook_url,
        jsoncodec.encode(message),
        {"content-type": "application/json"},
        spec.timeout_ms / 1000,
        egress=spec.egress,
        credential_url=True,  # an incoming webhook's URL is its credential
    )
