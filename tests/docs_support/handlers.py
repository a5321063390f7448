"""The ``handlers`` module the docs' worker examples import ("your handlers")."""

from __future__ import annotations

from contracts import EmailSent, SendEmail
from taskhop.sdk import JobContext


def send(data: SendEmail, ctx: JobContext) -> EmailSent:
    """Pretend to send the email."""
    return EmailSent(message_id=f"msg-{ctx.job_id}")
