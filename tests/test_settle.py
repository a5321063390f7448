"""``queue_actions``: every outcome kind, with or without a DLQ, standard or FIFO, at the limits."""

from __future__ import annotations

from typing import Any

import pytest
from taskhop.sdk import Envelope, ErrorInfo, Outcome, OutcomeKind, QueueActions, queue_actions
from taskhop.static_contracts.limits import SQS_MAX_DELAY, SQS_MAX_VISIBILITY

ENVELOPE = Envelope(task="t", input=None)
DELETE = QueueActions(delete=True)
REDRIVE = QueueActions()


def outcome(kind: OutcomeKind, **fields: Any) -> Outcome:
    envelope = None if kind is OutcomeKind.POISON else ENVELOPE
    return Outcome(kind, envelope, 1, **fields)


# (outcome, has_dlq, fifo, expected actions)
CASES: list[tuple[str, Outcome, bool, bool, QueueActions]] = [
    *(
        (f"{kind}-dlq={dlq}-fifo={fifo}", outcome(kind), dlq, fifo, DELETE)
        for kind in (OutcomeKind.SUCCEEDED, OutcomeKind.SKIPPED)
        for dlq in (True, False)
        for fifo in (True, False)
    ),
    *(
        (f"{kind}-kept-dlq={dlq}-fifo={fifo}", outcome(kind, reason="x"), dlq, fifo, DELETE)
        for kind in (OutcomeKind.FAILED, OutcomeKind.REJECTED, OutcomeKind.POISON)
        for dlq in (True, False)
        for fifo in (True, False)
    ),
    *(
        (
            f"{kind}-dead-letter-fifo={fifo}",
            outcome(kind, dead_letter=True, reason="retries_exhausted"),
            True,
            fifo,
            QueueActions(dead_letter="retries_exhausted", delete=True),
        )
        for kind in (OutcomeKind.FAILED, OutcomeKind.REJECTED, OutcomeKind.POISON)
        for fifo in (True, False)
    ),
    *(
        (
            f"{kind}-dead-letter-no-dlq-fifo={fifo}",
            outcome(kind, dead_letter=True, reason="not_json"),
            False,
            fifo,
            REDRIVE,
        )
        for kind in (OutcomeKind.FAILED, OutcomeKind.REJECTED, OutcomeKind.POISON)
        for fifo in (True, False)
    ),
    (
        "failed-dead-letter-without-reason-names-its-kind",
        outcome(OutcomeKind.FAILED, dead_letter=True),
        True,
        False,
        QueueActions(dead_letter="failed", delete=True),
    ),
    *(
        (
            f"retry-dlq={dlq}-fifo={fifo}",
            outcome(OutcomeKind.RETRY, retry_after=2.5),
            dlq,
            fifo,
            QueueActions(hide_for=2.5),
        )
        for dlq in (True, False)
        for fifo in (True, False)
    ),
    (
        "retry-without-delay",
        outcome(OutcomeKind.RETRY),
        True,
        False,
        QueueActions(hide_for=0.0),
    ),
    (
        "retry-over-12h-is-clamped",
        outcome(OutcomeKind.RETRY, retry_after=SQS_MAX_VISIBILITY + 3600.0),
        True,
        False,
        QueueActions(hide_for=SQS_MAX_VISIBILITY),
    ),
    (
        "retry-negative-is-zero",
        outcome(OutcomeKind.RETRY, retry_after=-5.0),
        False,
        False,
        QueueActions(hide_for=0.0),
    ),
    *(
        (
            f"deferred-dlq={dlq}",
            outcome(OutcomeKind.DEFERRED, retry_after=119.2),
            dlq,
            False,
            QueueActions(resend_after=119.2, delete=True),
        )
        for dlq in (True, False)
    ),
    (
        "deferred-over-900s-is-one-hop-of-900s",
        outcome(OutcomeKind.DEFERRED, retry_after=3600.0),
        True,
        False,
        QueueActions(resend_after=SQS_MAX_DELAY, delete=True),
    ),
    *(
        (
            f"deferred-fifo-dlq={dlq}",
            outcome(OutcomeKind.DEFERRED, retry_after=119.2),
            dlq,
            True,
            QueueActions(hide_for=119.2),
        )
        for dlq in (True, False)
    ),
    (
        "deferred-fifo-over-900s-keeps-the-whole-wait",
        outcome(OutcomeKind.DEFERRED, retry_after=3600.0),
        True,
        True,
        QueueActions(hide_for=3600.0),
    ),
    (
        "deferred-fifo-over-12h-is-clamped",
        outcome(OutcomeKind.DEFERRED, retry_after=SQS_MAX_VISIBILITY * 2.0),
        False,
        True,
        QueueActions(hide_for=SQS_MAX_VISIBILITY),
    ),
]


@pytest.mark.parametrize(
    ("given", "has_dlq", "fifo", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_queue_actions_for_each_outcome(
    given: Outcome, has_dlq: bool, fifo: bool, expected: QueueActions
) -> None:
    """Each outcome, on each kind of queue, settles with exactly the expected actions."""
    assert queue_actions(given, has_dlq=has_dlq, fifo=fifo) == expected


def test_the_table_covers_every_outcome_kind_on_every_kind_of_queue() -> None:
    """No outcome kind, DLQ setting or queue type is left out of the table above."""
    covered = {(case[1].kind, case[2], case[3]) for case in CASES}
    assert covered == {(k, d, f) for k in OutcomeKind for d in (True, False) for f in (True, False)}


@pytest.mark.parametrize(
    ("actions", "delay", "visibility", "left"),
    [
        (QueueActions(resend_after=119.2, delete=True), 120, None, False),
        (QueueActions(resend_after=0.0004, delete=True), 1, None, False),
        (QueueActions(resend_after=SQS_MAX_DELAY, delete=True), SQS_MAX_DELAY, None, False),
        (QueueActions(hide_for=0.0), None, 0, False),
        (QueueActions(hide_for=0.01), None, 1, False),
        (QueueActions(hide_for=SQS_MAX_VISIBILITY), None, SQS_MAX_VISIBILITY, False),
        (DELETE, None, None, False),
        (QueueActions(dead_letter="poison", delete=True), None, None, False),
        (REDRIVE, None, None, True),
    ],
)
def test_sqs_seconds_are_whole_and_rounded_up(
    actions: QueueActions, delay: int | None, visibility: int | None, left: bool
) -> None:
    """DelaySeconds and VisibilityTimeout round up, so nothing comes back before it is due."""
    assert actions.delay_seconds == delay
    assert actions.visibility_timeout == visibility
    assert actions.left_for_redrive is left


def test_the_worker_error_of_a_dead_letter_does_not_change_its_actions() -> None:
    """Only the reason travels with a dead letter; the error stays on the outcome."""
    failed = outcome(
        OutcomeKind.FAILED,
        dead_letter=True,
        reason="retries_exhausted",
        error=ErrorInfo("ConnectionError", "down", retryable=True),
    )
    assert queue_actions(failed, has_dlq=True) == QueueActions(
        dead_letter="retries_exhausted", delete=True
    )


def test_a_fifo_wait_over_12h_hides_once_per_copy_then_re_sends() -> None:
    """Issue 15 #11: each copy is received at most twice while it waits, so no redrive fires.

    The first receive of a copy hides it for 12 h; a later receive of the same copy (still
    not due) re-sends a fresh copy to its group, whose receive count starts again.
    """
    three_days = outcome(OutcomeKind.DEFERRED, retry_after=3 * 86_400.0)
    assert queue_actions(three_days, has_dlq=True, fifo=True, receives=1) == QueueActions(
        hide_for=SQS_MAX_VISIBILITY
    )
    assert queue_actions(three_days, has_dlq=True, fifo=True, receives=2) == QueueActions(
        resend_after=0.0, delete=True
    )
    within = outcome(OutcomeKind.DEFERRED, retry_after=SQS_MAX_VISIBILITY)
    assert queue_actions(within, has_dlq=True, fifo=True, receives=7) == QueueActions(
        hide_for=SQS_MAX_VISIBILITY
    )
    standard = queue_actions(three_days, has_dlq=True, fifo=False, receives=2)
    assert standard == QueueActions(resend_after=SQS_MAX_DELAY, delete=True)
