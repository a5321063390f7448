"""The ``contracts`` module the docs' worker examples import ("your contracts").

The docs' code blocks are type-checked as written (tests/test_docs_examples.py); a block that
imports a user's own module finds this stand-in beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from taskhop.sdk import static_contract


class SendEmail(TypedDict):
    """An email to send."""

    to: str
    subject: str


@dataclass(frozen=True)
class EmailSent:
    """The provider's id of the sent email."""

    message_id: str


send_email = static_contract("send-email", input=SendEmail, output=EmailSent)
