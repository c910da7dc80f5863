"""The email action: one message over SMTP (plain, STARTTLS or TLS)."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from pgobs.actions.failures import ActionFailed, ErrorKind
from pgobs.actions.redact import Secrets
from pgobs.actions.specs import EmailSpec


async def send_email(spec: EmailSpec, context: dict[str, Any], msg_id: str) -> None:
    try:
        import aiosmtplib
    except ImportError as exc:
        raise ActionFailed(
            "email actions need aiosmtplib: pip install 'pgobs[email]'", "permanent"
        ) from exc
    recipients = list(spec.to)
    if spec.to_template is not None:
        recipients += [a.strip() for a in spec.to_template.render(context).split(",") if a.strip()]
    if not recipients:
        raise ActionFailed("the email has no recipient (to_template rendered empty)", "permanent")
    message = EmailMessage()
    message["From"] = spec.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = spec.subject.render(context)
    message["Message-ID"] = f"<{msg_id}@pgobs>"
    message.set_content(spec.body.render(context))
    # A server's reply is quoted in the error; one that echoes the login must not store it.
    # Raised "from None" so no chained exception carries more than the message says.
    hidden = Secrets([spec.username, spec.password])
    try:
        await aiosmtplib.send(
            message,
            hostname=spec.host,
            port=spec.port,
            username=spec.username,
            password=spec.password,
            use_tls=spec.security == "tls",
            start_tls=spec.security == "starttls",
            timeout=spec.timeout_ms / 1000,
        )
    except aiosmtplib.SMTPResponseException as exc:
        kind: ErrorKind = "permanent" if 500 <= exc.code < 600 else "transient"
        raise ActionFailed(
            hidden.scrub(f"SMTP {spec.host}:{spec.port} answered {exc.code}: {exc.message}"),
            kind,
        ) from None
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise ActionFailed(
            hidden.scrub(f"SMTP refused the recipients: {exc.recipients}"), "permanent"
        ) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise ActionFailed(hidden.scrub(f"SMTP {spec.host}:{spec.port} failed: {exc}")) from None
