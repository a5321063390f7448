"""Middleware: no-op hook methods the core calls in order (dramatiq's shape).

Subclass ``Middleware`` and override only what you need. App middleware
(``create_app(middleware=...)``) sees every dispatch and every job. Task middleware
(``ImplementOptions.middleware``) is worker-side, like the rest of ``ImplementOptions``: it
gets the process hooks only, after the app's. A hook that raises stops the dispatch
(before_dispatch) or fails the job like a handler error (before_process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskhop.static_contracts import Envelope

from ._context import JobContext

if TYPE_CHECKING:
    from ._worker import Outcome

__all__ = ["Middleware"]


class Middleware:
    """Base class of hooks around dispatch and processing; every method is a no-op."""

    def before_dispatch(self, envelope: Envelope) -> Envelope | None:
        """Called before sending; return a replacement envelope (e.g. with trace) or None."""
        return None

    def after_dispatch(self, envelope: Envelope) -> None:
        """Called after the transport accepted the envelope."""

    def before_process(self, ctx: JobContext) -> None:
        """Called after validation, just before the handler runs."""

    def after_process(self, ctx: JobContext, outcome: Outcome) -> None:
        """Called after the outcome is recorded, whatever it was."""
