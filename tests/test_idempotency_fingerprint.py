"""A reused idempotency key with a different input is refused, not answered (issue 16, item 7).

The worker stores a fingerprint of each job's validated input with its key's claim; a later
job under the key whose fingerprint differs is recorded rejected (``IdempotencyKeyMismatch``,
reason ``key_mismatch``), whether the holder still runs or has succeeded. The behaviours run on
the in-memory backend and on AWS (SQS and a ``DynamoStore`` table on the moto server, jobs run
by the shipped Lambda runtime); the few that stay in memory say why.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any, cast

import attrs
import pytest
from backend_legs import BACKENDS, Backend, open_backend
from conftest import FAST_RETRY
from taskhop.sdk import (
    App,
    ContractError,
    Envelope,
    IdempotencyKeyMismatch,
    ImplementOptions,
    JobContext,
    JobStatus,
    OutcomeKind,
    Reason,
    TaskhopError,
    TaskRejected,
    create_app,
    define_task,
    key_digest,
    make_converter,
    queue_actions,
)
from taskhop.sdk._fingerprint import input_fingerprint
from taskhop.sdk.memory import MemoryQueue

KEY = "charge:ann@example.com:order-17"
"""Built from a customer's e-mail address, as keys often are: it must never be written out."""


@attrs.define
class Charge:
    amount: int = attrs.field(validator=attrs.validators.gt(0))
    currency: str = "usd"
    note: str | None = None


@attrs.define
class Charged:
    charge_id: str
    amount: int


charge = define_task("charge-card", input=Charge, output=Charged, retry=FAST_RETRY)


def pay(runs: list[int]) -> Any:
    """A handler that charges ``amount`` and notes each run."""

    def handler(data: Charge, ctx: JobContext) -> Charged:
        runs.append(data.amount)
        return Charged(charge_id=f"ch-{ctx.job_id}", amount=data.amount)

    return handler


def body(data: Any, *, key: str = KEY, **fields: Any) -> bytes:
    return Envelope(task="charge-card", input=data, idempotency_key=key, **fields).encode()


def fingerprint(data: Charge, task: str = "charge-card") -> str:
    return input_fingerprint(task, data, converter=make_converter(), input_type=Charge)


@pytest.fixture(params=BACKENDS)
def leg(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend under test, fresh: messages delivered one at a time."""
    with open_backend(str(request.param), request) as chosen:
        yield chosen


# -- the scenario, dispatched as a user would -----------------------------------------


def test_a_charge_of_99999_under_the_key_of_a_charge_of_100_is_refused(
    app: App, harness: Any
) -> None:
    """100 then 99999 under one key: the second is rejected with a clear error, the first kept."""
    runs: list[int] = []
    bound = app.implement(charge, pay(runs))
    first = bound.dispatch(Charge(amount=100), idempotency_key=KEY)
    assert first.result(10) == Charged(f"ch-{first.id}", 100)
    second = bound.dispatch(Charge(amount=99999), idempotency_key=KEY)
    with pytest.raises(TaskRejected) as caught:
        second.result(10)
    error = caught.value.error
    assert error.type == "IdempotencyKeyMismatch"
    assert not error.retryable
    assert key_digest(KEY) in error.message
    assert first.id in error.message
    assert "input differs" in error.message
    for secret in (KEY, "ann@example.com", "99999", "amount"):
        assert secret not in error.message
    assert runs == [100]  # the handler never ran for the second charge
    assert first.result(10) == Charged(f"ch-{first.id}", 100)  # untouched
    record = second.record()
    assert record is not None
    assert (record.status, record.duplicate_of, record.result) == (JobStatus.REJECTED, None, None)
    harness.join()
    assert harness.dead_letters == []  # rejected with a store: recorded, not dead-lettered


# -- the outcome, per delivery ---------------------------------------------------------------


def test_a_mismatch_is_rejected_once_and_never_retried(leg: Backend) -> None:
    """The refused job's outcome is REJECTED with reason key_mismatch; its message is deleted."""
    runs: list[int] = []
    leg.app.implement(charge, pay(runs))
    first = leg.process(body({"amount": 100}))
    assert first.kind is OutcomeKind.SUCCEEDED
    refused = leg.process(body({"amount": 99999}))
    assert refused.kind is OutcomeKind.REJECTED
    assert refused.reason is Reason.KEY_MISMATCH
    assert refused.error is not None
    assert refused.error.type == "IdempotencyKeyMismatch"
    assert (refused.retry_after, refused.dead_letter) == (None, False)
    actions = queue_actions(refused, has_dlq=True)
    assert actions.delete
    assert not actions.dead_letter
    assert runs == [100]
    assert leg.dead_letters() == []


def test_the_same_charge_in_another_field_order_and_spacing_gets_the_first_result(
    leg: Backend,
) -> None:
    """Field order, whitespace and a default written out do not make a different input."""
    runs: list[int] = []
    leg.app.implement(charge, pay(runs))
    first = leg.process(body({"amount": 100, "currency": "usd"}))
    assert first.kind is OutcomeKind.SUCCEEDED
    reordered = json.loads(body({"currency": "usd", "amount": 100}))
    spaced = json.dumps(reordered, indent=4).encode()  # the same envelope, laid out otherwise
    again = leg.process(spaced)
    implicit = leg.process(body({"amount": 100}))  # currency left to its default
    for duplicate in (again, implicit):
        assert duplicate.kind is OutcomeKind.SUCCEEDED
        assert duplicate.reason is Reason.DUPLICATE_KEY
        assert duplicate.result == first.result
    assert runs == [100]


def test_the_key_option_lets_the_key_alone_decide(leg: Backend) -> None:
    """With idempotency="key", a different input under the key gets the first result."""
    runs: list[int] = []
    leg.app.implement(charge, pay(runs), ImplementOptions(idempotency="key"))
    first = leg.process(body({"amount": 100, "note": "sent at 10:00"}))
    second = leg.process(body({"amount": 100, "note": "sent at 10:05"}))
    assert second.kind is OutcomeKind.SUCCEEDED
    assert second.reason is Reason.DUPLICATE_KEY
    assert second.result == first.result
    assert runs == [100]


def test_a_running_holder_with_another_input_is_refused_not_waited_for(leg: Backend) -> None:
    """A key held by a running job with a different input rejects at once (no retry)."""
    runs: list[int] = []
    leg.app.implement(charge, pay(runs))
    leg.store.claim_key(
        KEY, "running-job", lease_until=time.time() + 60, fingerprint=fingerprint(Charge(100))
    )
    refused = leg.process(body({"amount": 99999}))
    assert refused.kind is OutcomeKind.REJECTED
    assert refused.reason is Reason.KEY_MISMATCH
    assert refused.error is not None
    assert "running-job" in refused.error.message
    assert runs == []


def test_a_running_holder_with_the_same_input_is_still_waited_for(leg: Backend) -> None:
    """Same input, holder running: retried later with DuplicateJobInProgress, as before."""
    leg.app.implement(charge, pay([]))
    leg.store.claim_key(
        KEY, "running-job", lease_until=time.time() + 60, fingerprint=fingerprint(Charge(100))
    )
    waiting = leg.process(body({"amount": 100}))
    assert waiting.kind is OutcomeKind.RETRY
    assert waiting.error is not None
    assert waiting.error.type == "DuplicateJobInProgress"


def test_a_dead_holders_key_is_not_taken_over_by_another_input(leg: Backend) -> None:
    """A lapsed claim stays bound to its input: another input is refused, not run."""
    runs: list[int] = []
    leg.app.implement(charge, pay(runs))
    leg.store.claim_key(
        KEY, "dead-job", lease_until=time.time() - 1, fingerprint=fingerprint(Charge(100))
    )
    refused = leg.process(body({"amount": 99999}))
    assert refused.kind is OutcomeKind.REJECTED
    assert refused.reason is Reason.KEY_MISMATCH
    taken_over = leg.process(body({"amount": 100}))  # the same input may take it over
    assert taken_over.kind is OutcomeKind.SUCCEEDED
    assert runs == [100]


def legacy_key(leg: Backend, state: str) -> None:
    """A key item as the previous version wrote it: holder ``old-job``, no fingerprint."""
    if leg.name == "memory":
        leg.store.claim_key(KEY, "old-job", lease_until=time.time() + 60)
        if state == "completed":
            leg.store.complete_key(KEY, "old-job", {"charge_id": "ch-old", "amount": 100})
        return
    store: Any = leg.store
    item: dict[str, Any] = {
        "pk": {"S": f"key#{KEY}"},
        "holder": {"S": "old-job"},
        "state": {"S": state},
        "expires_at": {"N": str(int(time.time()) + 3600)},
    }
    if state == "completed":
        item["result"] = {"S": '{"charge_id":"ch-old","amount":100}'}
    else:
        item["lease"] = {"N": str(time.time() + 60)}
    store.client.put_item(TableName=store.table, Item=item)


def test_a_completed_key_without_a_fingerprint_answers_its_result(leg: Backend) -> None:
    """A key completed by the previous version (no fingerprint) is never refused."""
    runs: list[int] = []
    leg.app.implement(charge, pay(runs))
    legacy_key(leg, "completed")
    duplicate = leg.process(body({"amount": 99999}))
    assert duplicate.kind is OutcomeKind.SUCCEEDED
    assert duplicate.reason is Reason.DUPLICATE_KEY
    assert duplicate.result == {"charge_id": "ch-old", "amount": 100}
    assert runs == []


def test_a_running_key_without_a_fingerprint_is_waited_for(leg: Backend) -> None:
    """A key held under the previous version (no fingerprint) makes a duplicate wait."""
    leg.app.implement(charge, pay([]))
    legacy_key(leg, "in_progress")
    waiting = leg.process(body({"amount": 99999}))
    assert waiting.kind is OutcomeKind.RETRY
    assert waiting.error is not None
    assert waiting.error.type == "DuplicateJobInProgress"


def test_the_holders_own_redelivery_is_never_refused(leg: Backend) -> None:
    """A job that completed its key and stopped before its record gets its own result back.

    Even if its fingerprint changed meanwhile (a worker deployed with a new input type): the
    key is its own, so there is nothing to refuse.
    """
    runs: list[int] = []
    leg.app.implement(charge, pay(runs))
    message = body({"amount": 100})
    job_id = Envelope.decode(message).id
    leg.store.claim_key(KEY, job_id, lease_until=time.time() + 60, fingerprint="sha256:old")
    leg.store.complete_key(KEY, job_id, {"charge_id": "ch-own", "amount": 100})
    outcome = leg.process(message)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert outcome.result == {"charge_id": "ch-own", "amount": 100}
    assert runs == []


def test_an_offloaded_input_is_compared_as_loaded(leg: Backend) -> None:
    """An input behind ``input_ref`` is fingerprinted by its content, never by its reference."""
    runs: list[int] = []
    payloads = leg.payloads()
    leg.app.implement(charge, pay(runs))
    first = leg.process(body({"amount": 100}))
    same_ref = payloads.put("same", b'{"amount": 100}')
    same = leg.process(body(None, input_ref=same_ref))
    assert same.kind is OutcomeKind.SUCCEEDED
    assert same.result == first.result
    other_ref = payloads.put("other", b'{"amount": 99999}')
    refused = leg.process(body(None, input_ref=other_ref))
    assert refused.kind is OutcomeKind.REJECTED
    assert refused.reason is Reason.KEY_MISMATCH
    assert runs == [100]


# -- configuration and edges (in memory: no store round trip is involved) ------------------


def test_the_inline_task_form_takes_the_option_too() -> None:
    """``@app.task(..., options=ImplementOptions(idempotency="key"))`` lets the key decide."""
    with create_app() as app:
        runs: list[int] = []

        @app.task("tip", options=ImplementOptions(idempotency="key"))
        def tip(data: Charge, ctx: JobContext) -> Charged:
            runs.append(data.amount)
            return Charged("t", data.amount)

        first = tip.dispatch(Charge(1), idempotency_key="tip-1").result(5)
        second = tip.dispatch(Charge(2), idempotency_key="tip-1").result(5)
        assert first == second == Charged("t", 1)
        assert runs == [1]


def test_the_default_refuses_and_is_the_same_for_every_form() -> None:
    """Without options, a task's keys compare inputs (the documented default)."""
    assert ImplementOptions().idempotency == "input"
    with create_app() as app:
        bound = app.implement(charge, pay([]))
        bound.dispatch(Charge(1), idempotency_key="k").result(5)
        with pytest.raises(TaskRejected, match="IdempotencyKeyMismatch"):
            bound.dispatch(Charge(2), idempotency_key="k").result(5)


def test_an_unknown_idempotency_option_is_refused_at_implement() -> None:
    """A misspelt mode fails when the task is implemented, naming the task and the option."""
    app = create_app(queue=MemoryQueue())
    bogus = ImplementOptions(idempotency=cast(Any, "inputs"))
    with pytest.raises(ContractError, match=r"charge-card: options.idempotency must be"):
        app.implement(charge, pay([]), bogus)


def test_a_worker_without_a_store_compares_nothing() -> None:
    """Without a store keys are not enforced, so no fingerprint is computed or compared."""
    app = create_app(queue=MemoryQueue())
    runs: list[int] = []
    app.implement(charge, pay(runs))
    worker = app.worker()
    outcomes = [worker.process(body({"amount": n})) for n in (100, 99999)]
    assert [o.kind for o in outcomes] == [OutcomeKind.SUCCEEDED] * 2
    assert runs == [100, 99999]


class Token:
    """A type the app structures from a string but cannot unstructure back."""

    def __init__(self, value: str) -> None:
        self.value = value


@attrs.define
class Secret:
    token: Token


def test_an_input_that_cannot_be_fingerprinted_falls_back_to_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A converter that cannot unstructure the input leaves the key alone to decide, logged
    with the error's type and never its message (it may quote the input)."""
    app = create_app()
    app.converter.register_structure_hook(Token, lambda value, _: Token(value))

    def refuse(value: Token) -> str:
        raise ValueError(f"cannot write {value.value}")

    app.converter.register_unstructure_hook(Token, refuse)
    contract = define_task("use-secret", input=Secret, output=str)
    runs: list[str] = []

    def use(data: Secret, ctx: JobContext) -> str:
        runs.append(data.token.value)
        return "done"

    app.implement(contract, use)
    worker = app.worker()
    with caplog.at_level(logging.WARNING, logger="taskhop.worker"):
        for token in ("tok-one", "tok-two"):
            envelope = Envelope(task="use-secret", input={"token": token}, idempotency_key="s")
            assert worker.process(envelope.encode()).kind is OutcomeKind.SUCCEEDED
    app.close()
    assert runs == ["tok-one"]  # the second got the first result, as before fingerprints
    assert "cannot fingerprint the input (PayloadError)" in caplog.text
    assert "tok-" not in caplog.text


def test_the_error_is_in_the_tree_and_names_only_digest_and_holder() -> None:
    """``IdempotencyKeyMismatch`` is a TaskhopError keeping the key, digest-only in its text."""
    error = IdempotencyKeyMismatch(KEY, "job-1")
    assert isinstance(error, TaskhopError)
    assert (error.key, error.holder) == (KEY, "job-1")
    assert key_digest(KEY) in str(error)
    assert KEY not in str(error)


# -- the fingerprint itself -----------------------------------------------------------------


def test_the_fingerprint_is_a_full_sha256_of_the_canonical_task_and_input() -> None:
    """It hashes ``{"input": ..., "task": ...}`` with sorted keys and no whitespace."""
    import hashlib

    canonical = '{"input":{"amount":100,"currency":"usd","note":null},"task":"charge-card"}'
    expected = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert fingerprint(Charge(100)) == expected
    assert len(expected) == len("sha256:") + 64


def test_the_fingerprint_tells_inputs_and_tasks_apart() -> None:
    """A different amount, or the same input for another task, gives another fingerprint."""
    assert fingerprint(Charge(100)) != fingerprint(Charge(99999))
    assert fingerprint(Charge(100)) != fingerprint(Charge(100), task="refund")
    assert fingerprint(Charge(100)) == fingerprint(Charge(100, currency="usd"))


def test_the_fingerprint_takes_any_text() -> None:
    """Non-ASCII text and a lone surrogate (legal in JSON escapes) are hashed, not refused."""
    first = fingerprint(Charge(1, note="café ☕"))
    second = fingerprint(Charge(1, note="\ud800"))
    assert first != second
    assert first.startswith("sha256:")
    assert second.startswith("sha256:")
