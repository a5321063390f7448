"""Settling a message: the queue actions an ``Outcome`` calls for, decided once for every host.

The worker decides what happened to a job; what that means for the message it came in is
decided here, so the memory queue, the Lambda SQS batch path and anything else that hosts a
worker cannot drift apart (each used to carry its own copy, and they disagreed on
deferrals). Hosts only carry the actions out. The rules, as SQS and Lambda shape them:

- A dead letter goes to the DLQ with its reason, then the message is deleted. A host with no
  DLQ to send to leaves the message alone, for the queue's redrive policy to move after
  ``maxReceiveCount``; every later receive of it is dead-lettered again (the job record keeps
  its reason), so nothing is lost either way.
- A retry keeps the message and hides it for the backoff (ChangeMessageVisibility); the next
  receive counts one more, and ``ApproximateReceiveCount`` is the attempt number.
- A job not yet due is re-sent as a new message delayed for the rest of the wait (in hops of
  at most 900 s, SQS's longest delay) and the original is deleted, so waiting never uses an
  attempt (attempts are the job store's count, and a new message's receive count starts at
  one). FIFO queues take no per-message delay and a re-send goes to the back of the group:
  there the message is hidden instead (ChangeMessageVisibility, 12 h at most), which holds
  its group back too. A wait longer than 12 h hides the message once, then re-sends it as a
  new message at the back of its group, which is hidden in turn: each copy is received at
  most twice while it waits, so the queue's redrive policy never takes a job that is not due.
- Everything else is final for the queue: the message is deleted.

Pure: no I/O, no clock. Seconds are clamped to what SQS accepts but kept fractional, for hosts
that time things finer than SQS (the memory queue); SQS hosts read ``delay_seconds`` and
``visibility_timeout``, rounded up to the whole seconds its API takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import assert_never

from taskhop.static_contracts.limits import SQS_MAX_DELAY, SQS_MAX_VISIBILITY

from ._worker import Outcome, OutcomeKind

__all__ = ["QueueActions", "queue_actions"]


@dataclass(frozen=True, slots=True)
class QueueActions:
    """What a host does with the message one outcome came from, in field order.

    The sends come first and the delete last ("preserve before you finalize"): a host
    deletes the message only once the dead letter or the re-sent copy is safely on its queue,
    and leaves the message where it is if either send fails. No action at all (see
    ``left_for_redrive``) means: leave the message, as it is, to the queue's redrive policy.
    """

    dead_letter: str | None = None
    """Send the body, as it arrived, to the dead-letter queue with this reason."""
    resend_after: float | None = None
    """Send the body, as it arrived, again as a new message delayed this many seconds."""
    hide_for: float | None = None
    """Keep the message and make it visible again after this many seconds (one more receive,
    so one more attempt)."""
    delete: bool = False
    """Acknowledge the message: delete it from the queue."""

    @property
    def left_for_redrive(self) -> bool:
        """Nothing to do: the message stays as it is until the queue's redrive policy moves it."""
        return not self.delete and self.hide_for is None and self.resend_after is None

    @property
    def delay_seconds(self) -> int | None:
        """``resend_after`` as SQS's ``DelaySeconds`` takes it: whole seconds, rounded up."""
        return None if self.resend_after is None else math.ceil(self.resend_after)

    @property
    def visibility_timeout(self) -> int | None:
        """``hide_for`` as SQS's ``VisibilityTimeout`` takes it: whole seconds, rounded up."""
        return None if self.hide_for is None else math.ceil(self.hide_for)


def queue_actions(
    outcome: Outcome, *, has_dlq: bool, fifo: bool = False, receives: int = 1
) -> QueueActions:
    """The queue actions that settle the message ``outcome`` came from.

    Args:
        outcome: what the worker made of the message.
        has_dlq: the host can send dead letters to a DLQ itself; without one they are left
            to the queue's redrive policy.
        fifo: the message came from a FIFO queue (no per-message delay; order per group).
        receives: how many times this message was received (SQS's ApproximateReceiveCount).

    """
    kind = outcome.kind
    if outcome.dead_letter:
        if not has_dlq:
            return _LEAVE
        return QueueActions(dead_letter=outcome.reason or kind.value, delete=True)
    wait = max(0.0, outcome.retry_after or 0.0)
    match kind:
        case OutcomeKind.RETRY:
            # ChangeMessageVisibility takes 12 h at most (SQS_MAX_VISIBILITY).
            return QueueActions(hide_for=min(wait, SQS_MAX_VISIBILITY))
        case OutcomeKind.DEFERRED if fifo and wait > SQS_MAX_VISIBILITY and receives > 1:
            # Hidden for 12 h once already: a fresh copy (receive count 1), due sooner.
            return QueueActions(resend_after=0.0, delete=True)
        case OutcomeKind.DEFERRED if fifo:
            return QueueActions(hide_for=min(wait, SQS_MAX_VISIBILITY))
        case OutcomeKind.DEFERRED:
            # DelaySeconds is 900 s at most (SQS_MAX_DELAY): a longer wait takes more hops,
            # each one a new message whose receive count starts again.
            return QueueActions(resend_after=min(wait, SQS_MAX_DELAY), delete=True)
        case (
            OutcomeKind.SUCCEEDED
            | OutcomeKind.FAILED
            | OutcomeKind.REJECTED
            | OutcomeKind.SKIPPED
            | OutcomeKind.POISON
        ):
            return _DELETE  # the common case: one shared (frozen) answer
        case _:  # pragma: no cover - a new OutcomeKind must be settled above
            assert_never(kind)


_DELETE = QueueActions(delete=True)
_LEAVE = QueueActions()
