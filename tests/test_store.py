"""The JobStore contract, run against every store that keeps state, and NoStore's promises.

Each store (``MemoryStore``, ``DynamoStore`` on moto in process) must answer exactly as
``BaseJobStore``'s ``may_*`` predicates decide: the grid tests set every reachable state up and
compare each answer with both a table written by hand and the predicate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from taskhop.sdk import (
    MAX_RESTARTS,
    BaseJobStore,
    ErrorInfo,
    JobRecord,
    JobStatus,
    JobStore,
    KeyClaim,
    NoStore,
    RestartEntry,
    poll_for_final,
)
from taskhop.sdk.memory import MemoryStore

STORES = ["memory", "dynamodb"]
WORKER_METHODS = {
    "accept",
    "begin",
    "claim_key",
    "complete",
    "complete_key",
    "get",
    "get_many",
    "release_key",
    "wait",
}
"""The methods the worker and the result handles call: the whole protocol, nothing more."""


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> BaseJobStore:
    """A fresh, empty store of each kind (DynamoDB on moto, in process)."""
    if request.param == "memory":
        return MemoryStore()
    request.getfixturevalue("mocked_aws")
    from taskhop.backends.dynamodb import DynamoStore

    dynamo = DynamoStore("taskhop-jobs")
    dynamo.create_table()
    return dynamo


def ahead(seconds: float = 60) -> float:
    return time.time() + seconds


def final(
    job_id: str, status: JobStatus = JobStatus.SUCCEEDED, attempt: int = 1, result: Any = None
) -> JobRecord:
    value = {"ok": True} if result is None else result
    return JobRecord(
        id=job_id,
        task="t",
        status=status,
        attempt=attempt,
        result=value if status is JobStatus.SUCCEEDED else None,
        error=None if status is JobStatus.SUCCEEDED else ErrorInfo("Boom", "no"),
    )


def retrying(job_id: str, attempt: int) -> JobRecord:
    error = ErrorInfo("ConnectionError", "blip", retryable=True)
    return JobRecord(id=job_id, task="t", status=JobStatus.RETRYING, attempt=attempt, error=error)


def requests_of(store: BaseJobStore) -> list[str]:
    """The DynamoDB operations ``store`` makes from now on (empty for other stores)."""
    calls: list[str] = []
    client: Any = getattr(store, "client", None)
    if client is not None:
        client.meta.events.register("before-call", lambda model, **_: calls.append(model.name))
    return calls


# -- the protocol ---------------------------------------------------------------------------


def test_store_implements_the_protocol(store: BaseJobStore) -> None:
    """Every stateful store satisfies the JobStore protocol and derives from BaseJobStore."""
    assert isinstance(store, JobStore)
    assert isinstance(store, BaseJobStore)


def test_the_protocol_is_exactly_what_the_worker_calls() -> None:
    """JobStore has the worker's eight methods and no others (no unused ``increment``)."""
    members = {n for n in vars(JobStore) if not n.startswith("_")}
    assert members == WORKER_METHODS
    for store_class in (BaseJobStore, MemoryStore, NoStore):
        assert not hasattr(store_class, "increment")


def test_base_store_needs_every_primitive() -> None:
    """A BaseJobStore that does not supply its primitives cannot be made."""
    incomplete: Any = BaseJobStore
    with pytest.raises(TypeError, match="abstract"):
        incomplete()


# -- begin ----------------------------------------------------------------------------------


def test_begin_starts_a_new_job_with_a_lease(store: BaseJobStore) -> None:
    """The first begin records RUNNING with the attempt, lease and idempotency key."""
    lease = ahead()
    begin = store.begin("j1", task="t", attempt=1, lease_until=lease, idempotency_key="k")
    assert begin.state == "started"
    assert begin.record.status is JobStatus.RUNNING
    stored = store.get("j1")
    assert stored is not None
    assert (stored.attempt, stored.idempotency_key) == (1, "k")
    assert stored.lease_until == pytest.approx(lease)
    assert stored.created_at == pytest.approx(begin.record.created_at)


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.REJECTED])
def test_begin_on_a_final_job_reports_finished(store: BaseJobStore, status: JobStatus) -> None:
    """A duplicate delivery of a finished job must not run again, even as a newer attempt."""
    store.complete(final("j1", status))
    begin = store.begin("j1", task="t", attempt=2, lease_until=ahead())
    assert begin.state == "finished"
    assert begin.record.status is status
    assert begin.record.result == (
        {"ok": True} if status is JobStatus.SUCCEEDED else None
    )  # the stored outcome, for the skipped delivery to report
    stored = store.get("j1")
    assert stored is not None
    assert (stored.status, stored.attempt) == (status, 1)


def test_begin_while_another_attempt_holds_a_live_lease_is_busy(store: BaseJobStore) -> None:
    """Any attempt, older, the same or newer, waits for a live lease and learns when it ends."""
    lease = ahead()
    store.begin("j1", task="t", attempt=2, lease_until=lease)
    for attempt in (1, 2, 3, 9):
        busy = store.begin("j1", task="t", attempt=attempt, lease_until=ahead(120))
        assert busy.state == "busy"
        assert busy.record.attempt == 2
        assert busy.record.lease_until == pytest.approx(lease)
    stored = store.get("j1")
    assert stored is not None
    assert stored.lease_until == pytest.approx(lease)  # the holder's lease is untouched


def test_begin_after_the_lease_expired_starts(store: BaseJobStore) -> None:
    """A holder that died (lease run out) does not block the same attempt's redelivery."""
    store.begin("j1", task="t", attempt=1, lease_until=time.time() - 1)
    begin = store.begin("j1", task="t", attempt=1, lease_until=ahead())
    assert (begin.state, begin.record.attempt) == ("started", 2)


def test_begin_keeps_the_first_creation_time(store: BaseJobStore) -> None:
    """Later attempts keep the job's created_at, and begin returns the stored one."""
    first = store.begin("j1", task="t", attempt=1, lease_until=time.time() - 1).record
    time.sleep(0.01)
    again = store.begin("j1", task="t", attempt=2, lease_until=ahead()).record
    assert again.created_at == pytest.approx(first.created_at)


def test_retrying_is_not_final(store: BaseJobStore) -> None:
    """A RETRYING record can be followed by the next attempt and its outcome."""
    assert store.complete(retrying("j1", 1))
    assert store.begin("j1", task="t", attempt=2, lease_until=ahead(9)).state == "started"
    assert store.complete(final("j1", attempt=2))


def test_a_new_attempt_and_its_outcome_replace_the_last_ones_fields(store: BaseJobStore) -> None:
    """An error from attempt 1 does not survive into attempt 2 or its success."""
    store.begin("j", task="t", attempt=1, lease_until=ahead())
    store.complete(retrying("j", 1))
    running = store.begin("j", task="t", attempt=2, lease_until=ahead()).record
    assert running.error is None
    assert store.complete(final("j", attempt=2))
    record = store.get("j")
    assert record is not None
    assert (record.error, record.result, record.lease_until) == (None, {"ok": True}, None)


JOB_STATES: dict[str, Callable[[BaseJobStore, str], object]] = {
    "absent": lambda store, job: None,
    "running-live": lambda store, job: store.begin(job, task="t", attempt=2, lease_until=ahead()),
    "running-expired": lambda store, job: store.begin(
        job, task="t", attempt=2, lease_until=time.time() - 1
    ),
    "retrying": lambda store, job: store.complete(retrying(job, 2)),
    "succeeded": lambda store, job: store.complete(final(job, attempt=2)),
    "failed": lambda store, job: store.complete(final(job, JobStatus.FAILED, attempt=2)),
    "rejected": lambda store, job: store.complete(final(job, JobStatus.REJECTED, attempt=2)),
}
"""Every state a job record can be in, each at attempt 2 (a lease of 60 s when live)."""

BEGIN_STARTS = {
    "absent": {1, 2, 3},
    "running-live": set(),
    "running-expired": {1, 2, 3},
    "retrying": {1, 2, 3},
    "succeeded": set(),
    "failed": set(),
    "rejected": set(),
}
"""Which attempts begin starts from each state (the rest are busy, or finished if final).

A live lease holds off every attempt, a newer one too (issue 15: a redelivery with a higher
receive count ran beside the first attempt)."""


@pytest.mark.parametrize("state", JOB_STATES)
def test_begin_answers_as_may_begin_decides(store: BaseJobStore, state: str) -> None:
    """From every state and for older, equal and newer attempts, begin answers the table."""
    for attempt in (1, 2, 3):
        job = f"{state}-{attempt}"
        JOB_STATES[state](store, job)
        current = store.get(job)
        allowed = BaseJobStore.may_begin(current, time.time())
        begin = store.begin(job, task="t", attempt=attempt, lease_until=ahead())
        expected = "started" if attempt in BEGIN_STARTS[state] else "busy"
        if current is not None and current.status.is_final:
            expected = "finished"
        assert (begin.state, allowed) == (expected, expected == "started"), attempt
        if expected == "started":  # the store numbers attempts: one past its last
            assert begin.record.attempt == BaseJobStore.next_attempt(current, attempt)
            assert begin.record.attempt == (attempt if current is None else 3)


def test_receives_that_never_ran_use_no_attempt(store: BaseJobStore) -> None:
    """Attempts are counted by the store: a high receive count does not skip any."""
    assert store.begin("j", task="t", attempt=1, lease_until=time.time() - 1).record.attempt == 1
    again = store.begin("j", task="t", attempt=7, lease_until=ahead())
    assert (again.state, again.record.attempt) == ("started", 2)
    assert store.complete(retrying("j", 2))
    assert store.begin("j", task="t", attempt=9, lease_until=ahead()).record.attempt == 3


def test_the_same_outcome_written_twice_is_accepted(store: BaseJobStore) -> None:
    """A write retried after its answer was lost answers True and keeps the first."""
    store.begin("j", task="t", attempt=1, lease_until=ahead())
    assert store.complete(final("j", attempt=1))
    assert store.complete(final("j", attempt=1))
    assert not store.complete(final("j", JobStatus.FAILED, attempt=1))
    record = store.get("j")
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED


def test_accept_records_a_job_once(store: BaseJobStore) -> None:
    """accept creates a QUEUED record once; later calls get the record; begin starts from it."""
    assert store.accept("j", task="t", idempotency_key="k") is None
    again = store.accept("j", task="t")
    assert again is not None
    assert (again.status, again.attempt, again.idempotency_key) == (JobStatus.QUEUED, 0, "k")
    begin = store.begin("j", task="t", attempt=1, lease_until=ahead())
    assert (begin.state, begin.record.attempt) == ("started", 1)
    assert store.accept("j", task="t") is not None


def test_a_dead_letter_reason_is_kept(store: BaseJobStore) -> None:
    """A dead-lettered end keeps its reason, so later deliveries dead-letter again."""
    store.begin("j", task="t", attempt=3, lease_until=ahead())
    record = final("j", JobStatus.FAILED, attempt=3)
    assert store.complete(replace(record, dead_letter="retries_exhausted"))
    stored = store.get("j")
    assert stored is not None
    assert stored.dead_letter == "retries_exhausted"
    begin = store.begin("j", task="t", attempt=4, lease_until=ahead())
    assert (begin.state, begin.record.dead_letter) == ("finished", "retries_exhausted")


# -- complete -------------------------------------------------------------------------------


def test_complete_by_a_stale_attempt_is_refused(store: BaseJobStore) -> None:
    """An older attempt cannot overwrite the record a newer attempt owns."""
    store.begin("j1", task="t", attempt=2, lease_until=ahead())
    assert not store.complete(final("j1", JobStatus.FAILED, attempt=1))
    record = store.get("j1")
    assert record is not None
    assert (record.status, record.attempt) == (JobStatus.RUNNING, 2)
    assert store.complete(final("j1", attempt=2))


def test_complete_twice_keeps_the_first_outcome(store: BaseJobStore) -> None:
    """A job completes exactly once, whatever the second outcome and its attempt."""
    store.begin("j1", task="t", attempt=1, lease_until=ahead())
    assert store.complete(final("j1", result={"v": "first"}))
    assert store.complete(final("j1", result={"v": "second"}))  # already_recorded: kept
    assert not store.complete(final("j1", JobStatus.FAILED, attempt=3))
    assert not store.complete(final("j1", JobStatus.FAILED, attempt=1))
    record = store.get("j1")
    assert record is not None
    assert (record.status, record.result, record.attempt) == (
        JobStatus.SUCCEEDED,
        {"v": "first"},
        1,
    )


def test_complete_without_begin_records_the_outcome(store: BaseJobStore) -> None:
    """A job rejected before it began (unknown task, bad input) still gets its record."""
    assert store.complete(final("j1", JobStatus.REJECTED))
    record = store.get("j1")
    assert record is not None
    assert record.status is JobStatus.REJECTED


def test_complete_ends_the_lease_and_keeps_the_creation_time(store: BaseJobStore) -> None:
    """An outcome drops the attempt's lease, even if the record passed one, and keeps created_at."""
    created = store.begin("j1", task="t", attempt=1, lease_until=ahead()).record.created_at
    outcome = JobRecord(
        id="j1",
        task="t",
        status=JobStatus.SUCCEEDED,
        attempt=1,
        result=1,
        lease_until=ahead(),
        created_at=created + 100,
    )
    assert store.complete(outcome)
    record = store.get("j1")
    assert record is not None
    assert record.lease_until is None
    assert record.created_at == pytest.approx(created)


COMPLETE_WRITES = {
    "absent": {1, 2, 3},
    "running-live": {2, 3},
    "running-expired": {2, 3},
    "retrying": {2, 3},
    "succeeded": set(),
    "failed": {2},  # the same outcome again: already_recorded
    "rejected": set(),
}
"""Which attempts' outcomes complete writes (or finds already written) from each state."""


@pytest.mark.parametrize("state", JOB_STATES)
def test_complete_answers_as_may_complete_decides(store: BaseJobStore, state: str) -> None:
    """From every state and for older, equal and newer attempts, complete answers the table."""
    for attempt in (1, 2, 3):
        job = f"{state}-{attempt}"
        JOB_STATES[state](store, job)
        before = store.get(job)
        outcome = final(job, JobStatus.FAILED, attempt=attempt)
        allowed = BaseJobStore.may_complete(before, outcome)
        allowed = allowed or BaseJobStore.already_recorded(before, outcome)
        written = store.complete(outcome)
        assert (written, allowed) == (attempt in COMPLETE_WRITES[state],) * 2, attempt
        after = store.get(job)
        assert after is not None
        if written:
            assert (after.status, after.attempt) == (JobStatus.FAILED, attempt)
        else:
            assert before is not None
            assert (after.status, after.attempt) == (before.status, before.attempt)


# -- idempotency keys -----------------------------------------------------------------------


def test_claim_key_by_another_job_while_held_is_in_progress(store: BaseJobStore) -> None:
    """A live holder keeps the key; others learn who holds it and until when."""
    lease = ahead()
    assert store.claim_key("k", "j1", lease_until=lease).state == "acquired"
    busy = store.claim_key("k", "j2", lease_until=ahead(120))
    assert (busy.state, busy.holder) == ("in_progress", "j1")
    assert busy.lease_until == pytest.approx(lease)


def test_claim_key_again_by_its_holder_is_acquired(store: BaseJobStore) -> None:
    """A retry of the holding job holds its key again, with the new lease."""
    store.claim_key("k", "j1", lease_until=ahead())
    again = store.claim_key("k", "j1", lease_until=ahead(120))
    assert again.state == "acquired"
    busy = store.claim_key("k", "j2", lease_until=ahead())
    assert busy.lease_until == pytest.approx(again.lease_until)


def test_claim_key_by_another_job_after_release_is_acquired(store: BaseJobStore) -> None:
    """A released key (its job failed) may run again under another job."""
    store.claim_key("k", "j1", lease_until=ahead())
    store.release_key("k", "j1")
    claim = store.claim_key("k", "j2", lease_until=ahead())
    assert (claim.state, claim.holder) == ("acquired", "j2")


def test_an_expired_key_lease_can_be_taken_over(store: BaseJobStore) -> None:
    """A holder that died (lease expired) does not block the key forever."""
    store.claim_key("k", "dead", lease_until=time.time() - 1)
    claim = store.claim_key("k", "alive", lease_until=ahead())
    assert (claim.state, claim.holder) == ("acquired", "alive")


def test_claim_key_by_another_job_after_complete_answers_the_result(store: BaseJobStore) -> None:
    """A duplicate of a succeeded key gets the first job's result instead of running."""
    store.claim_key("k", "j1", lease_until=ahead())
    store.complete_key("k", "j1", {"v": 1})
    done = store.claim_key("k", "j2", lease_until=ahead())
    assert (done.state, done.holder, done.result) == ("completed", "j1", {"v": 1})


def test_complete_key_then_claim_key_by_the_same_holder_is_completed(
    store: BaseJobStore,
) -> None:
    """A completed key is never acquired again, not even by its own job, and keeps its result."""
    store.claim_key("k", "j1", lease_until=ahead())
    store.complete_key("k", "j1", {"v": 1})
    same = store.claim_key("k", "j1", lease_until=ahead())
    assert (same.state, same.holder, same.result) == ("completed", "j1", {"v": 1})
    other = store.claim_key("k", "j2", lease_until=ahead())
    assert (other.state, other.holder, other.result) == ("completed", "j1", {"v": 1})


def test_complete_key_twice_keeps_the_first_result(store: BaseJobStore) -> None:
    """Every duplicate gets the first stored result, whoever completes the key again."""
    store.claim_key("k", "j1", lease_until=ahead())
    store.complete_key("k", "j1", {"v": "first"})
    store.complete_key("k", "j1", {"v": "second"})
    store.complete_key("k", "j2", {"v": "third"})
    done = store.claim_key("k", "j3", lease_until=ahead())
    assert (done.holder, done.result) == ("j1", {"v": "first"})


def test_complete_key_by_a_job_that_lost_the_key_is_ignored(store: BaseJobStore) -> None:
    """A holder whose lease ran out and was taken over cannot store a result for the key."""
    store.claim_key("k", "slow", lease_until=time.time() - 1)
    store.claim_key("k", "fast", lease_until=ahead())
    store.complete_key("k", "slow", {"v": "slow"})
    claim = store.claim_key("k", "j3", lease_until=ahead())
    assert (claim.state, claim.holder) == ("in_progress", "fast")


def test_complete_key_on_a_free_key_stores_the_result(store: BaseJobStore) -> None:
    """Finishing a key whose claim vanished still lets duplicates find the result."""
    store.complete_key("k", "j1", [1, 2])
    done = store.claim_key("k", "j2", lease_until=ahead())
    assert (done.state, done.holder, done.result) == ("completed", "j1", [1, 2])


def test_release_key_by_a_non_holder_changes_nothing(store: BaseJobStore) -> None:
    """Only the holder can let a key go."""
    store.claim_key("k", "j1", lease_until=ahead())
    store.release_key("k", "j2")
    claim = store.claim_key("k", "j3", lease_until=ahead())
    assert (claim.state, claim.holder) == ("in_progress", "j1")
    store.release_key("missing", "j1")  # releasing a key nobody holds is a no-op
    assert store.claim_key("missing", "j4", lease_until=ahead()).state == "acquired"


def test_release_key_after_complete_keeps_the_result(store: BaseJobStore) -> None:
    """A completed key stays completed, whoever releases it."""
    store.claim_key("k", "j1", lease_until=ahead())
    store.complete_key("k", "j1", {"v": 1})
    store.release_key("k", "j1")
    store.release_key("k", "j2")
    done = store.claim_key("k", "j4", lease_until=ahead())
    assert (done.state, done.result) == ("completed", {"v": 1})


KEY_STATES: dict[str, Callable[[BaseJobStore, str], object]] = {
    "free": lambda store, key: None,
    "held-live": lambda store, key: store.claim_key(key, "a", lease_until=ahead()),
    "held-expired": lambda store, key: store.claim_key(key, "a", lease_until=time.time() - 1),
    "completed": lambda store, key: store.complete_key(key, "a", {"by": "a"}),
}
"""Every state an idempotency key can be in; ``a`` is the holder."""

CLAIM_ACQUIRES = {"free": {"a", "b"}, "held-live": {"a"}, "held-expired": {"a", "b"}}
"""Who acquires a key from each state (nobody acquires a completed key)."""


def stored_claim(store: BaseJobStore, key: str) -> KeyClaim | None:
    """What a key holds, seen through the protocol: claim it under a lease already run out."""
    # may_claim_key lets a claim through only where any claimant may take the key, so a
    # probe that gets it has found no live holder and leaves nothing that blocks anyone.
    probe = store.claim_key(key, "probe", lease_until=time.time() - 1)
    return None if probe.state == "acquired" else probe


@pytest.mark.parametrize("state", KEY_STATES)
def test_claim_key_answers_as_may_claim_key_decides(store: BaseJobStore, state: str) -> None:
    """From every key state, the holder and another job get the answer in the table."""
    for claimant in ("a", "b"):
        key = f"{state}-{claimant}"
        KEY_STATES[state](store, key)
        before = {
            "free": None,
            "held-live": KeyClaim("in_progress", "a", lease_until=ahead()),
            "held-expired": KeyClaim("in_progress", "a", lease_until=time.time() - 1),
            "completed": KeyClaim("completed", "a", result={"by": "a"}),
        }[state]
        allowed = BaseJobStore.may_claim_key(before, claimant, time.time())
        claim = store.claim_key(key, claimant, lease_until=ahead())
        acquires = claimant in CLAIM_ACQUIRES.get(state, set())
        assert allowed == acquires, claimant
        if acquires:
            assert (claim.state, claim.holder) == ("acquired", claimant)
        elif state == "completed":
            assert (claim.state, claim.holder, claim.result) == ("completed", "a", {"by": "a"})
        else:
            assert (claim.state, claim.holder) == ("in_progress", "a")


def test_key_guards_complete_and_release_only_for_the_holder(store: BaseJobStore) -> None:
    """complete_key and release_key change a key exactly where their predicates allow."""
    for state in KEY_STATES:
        for job in ("a", "b"):
            key = f"{state}-{job}-complete"
            KEY_STATES[state](store, key)
            store.complete_key(key, job, {"by": job})
            writes = (state, job) in {("free", "a"), ("free", "b"), ("held-live", "a"),
                                      ("held-expired", "a")}  # fmt: skip
            seen = stored_claim(store, key)
            if writes:
                assert seen is not None
                assert (seen.state, seen.holder, seen.result) == ("completed", job, {"by": job})
            elif state == "completed":
                assert seen is not None
                assert (seen.holder, seen.result) == ("a", {"by": "a"})
            elif state == "held-live":
                assert seen is not None
                assert (seen.state, seen.holder) == ("in_progress", "a")
            else:  # expired and not written: no live holder, no result
                assert seen is None
            key = f"{state}-{job}-release"
            KEY_STATES[state](store, key)
            store.release_key(key, job)
            seen = stored_claim(store, key)
            if state == "held-live":
                assert (seen is None) == (job == "a"), job
            elif state == "completed":
                assert seen is not None
                assert seen.state == "completed"
            else:
                assert seen is None


def test_key_predicates_match_the_tables() -> None:
    """may_complete_key and may_release_key say what the stores were just shown to do."""
    now = time.time()
    live = KeyClaim("in_progress", "a", lease_until=now + 60)
    expired = KeyClaim("in_progress", "a", lease_until=now - 1)
    done = KeyClaim("completed", "a", result=1)
    assert BaseJobStore.may_complete_key(None, "b")
    assert BaseJobStore.may_complete_key(live, "a")
    assert BaseJobStore.may_complete_key(expired, "a")
    assert not BaseJobStore.may_complete_key(live, "b")
    assert not BaseJobStore.may_complete_key(expired, "b")
    assert not BaseJobStore.may_complete_key(done, "a")
    assert BaseJobStore.may_release_key(live, "a")
    assert BaseJobStore.may_release_key(expired, "a")
    assert not BaseJobStore.may_release_key(live, "b")
    assert not BaseJobStore.may_release_key(done, "a")
    assert not BaseJobStore.may_release_key(None, "a")


# -- idempotency keys: the input fingerprint --------------------------------------------------


def test_a_claim_keeps_its_fingerprint_and_completing_keeps_it(store: BaseJobStore) -> None:
    """Others see the holder's fingerprint while it runs and after it completed the key."""
    claim = store.claim_key("k", "j1", lease_until=ahead(), fingerprint="sha256:a")
    assert (claim.state, claim.fingerprint) == ("acquired", "sha256:a")
    busy = store.claim_key("k", "j2", lease_until=ahead(), fingerprint="sha256:b")
    assert (busy.state, busy.holder, busy.fingerprint) == ("in_progress", "j1", "sha256:a")
    store.complete_key("k", "j1", {"v": 1})
    done = store.claim_key("k", "j3", lease_until=ahead(), fingerprint="sha256:b")
    assert (done.state, done.result, done.fingerprint) == ("completed", {"v": 1}, "sha256:a")


def test_a_claim_without_a_fingerprint_keeps_none(store: BaseJobStore) -> None:
    """A claim made without one (an opted-out task) shows none, running or completed."""
    store.claim_key("k", "j1", lease_until=ahead())
    assert store.claim_key("k", "j2", lease_until=ahead(), fingerprint="x").fingerprint is None
    store.complete_key("k", "j1", 1)
    assert store.claim_key("k", "j2", lease_until=ahead(), fingerprint="x").fingerprint is None


def test_the_holder_reclaims_its_key_whatever_its_fingerprint(store: BaseJobStore) -> None:
    """A retry of the holding job holds its key again; the claim takes its new fingerprint."""
    store.claim_key("k", "j1", lease_until=ahead(), fingerprint="sha256:a")
    again = store.claim_key("k", "j1", lease_until=ahead(), fingerprint="sha256:b")
    assert (again.state, again.fingerprint) == ("acquired", "sha256:b")
    busy = store.claim_key("k", "j2", lease_until=ahead())
    assert busy.fingerprint == "sha256:b"


LAPSED_TAKEOVERS = [
    # (the lapsed holder's fingerprint, the claimant's, whether the claimant takes the key)
    (None, None, True),
    (None, "b", True),
    ("a", None, True),
    ("a", "a", True),
    ("a", "b", False),
]


@pytest.mark.parametrize(("held", "claimant", "takes"), LAPSED_TAKEOVERS)
def test_a_lapsed_claim_is_taken_over_only_without_a_conflict(
    store: BaseJobStore, held: str | None, claimant: str | None, takes: bool
) -> None:
    """A dead holder's key stays bound to its input: only a fingerprint that does not
    conflict takes it over, as ``may_claim_key`` decides; the taker's fingerprint replaces it."""
    store.claim_key("k", "dead", lease_until=time.time() - 1, fingerprint=held)
    before = KeyClaim("in_progress", "dead", lease_until=time.time() - 1, fingerprint=held)
    assert BaseJobStore.may_claim_key(before, "new", time.time(), claimant) is takes
    claim = store.claim_key("k", "new", lease_until=ahead(), fingerprint=claimant)
    if takes:
        assert (claim.state, claim.holder) == ("acquired", "new")
        seen = store.claim_key("k", "probe", lease_until=ahead())
        assert (seen.holder, seen.fingerprint) == ("new", claimant)
    else:
        assert (claim.state, claim.holder, claim.fingerprint) == ("in_progress", "dead", held)


def test_conflicts_with_needs_two_known_different_fingerprints() -> None:
    """Only two known fingerprints that differ conflict; a missing side never does."""
    assert KeyClaim("in_progress", "j", fingerprint="a").conflicts_with("b")
    assert not KeyClaim("in_progress", "j", fingerprint="a").conflicts_with("a")
    assert not KeyClaim("in_progress", "j", fingerprint="a").conflicts_with(None)
    assert not KeyClaim("completed", "j").conflicts_with("b")


def test_no_store_keeps_no_fingerprint() -> None:
    """Without state nothing is compared: every claim is acquired, with no fingerprint."""
    claim = NoStore().claim_key("k", "j", lease_until=ahead(), fingerprint="sha256:a")
    assert (claim.state, claim.fingerprint) == ("acquired", None)


def test_dynamodb_keeps_the_fingerprint_on_the_key_item(mocked_aws: None) -> None:
    """The key item holds a ``fingerprint`` attribute, kept when the key completes; one a
    previous version wrote without it reads as None and is taken over once lapsed."""
    from taskhop.backends.dynamodb import DynamoStore

    store = DynamoStore("taskhop-jobs")
    store.create_table()
    store.claim_key("k", "j1", lease_until=ahead(), fingerprint="sha256:a")
    store.complete_key("k", "j1", {"v": 1})
    item = store.client.get_item(TableName="taskhop-jobs", Key={"pk": {"S": "key#k"}})["Item"]
    assert item["fingerprint"] == {"S": "sha256:a"}
    assert item["state"] == {"S": "completed"}
    old = {"pk": {"S": "key#old"}, "holder": {"S": "j0"}, "state": {"S": "in_progress"},
           "lease": {"N": str(time.time() - 1)}}  # fmt: skip
    store.client.put_item(TableName="taskhop-jobs", Item=old)
    claim = store.claim_key("old", "j2", lease_until=ahead(), fingerprint="sha256:b")
    assert (claim.state, claim.holder) == ("acquired", "j2")
    taken = store.client.get_item(TableName="taskhop-jobs", Key={"pk": {"S": "key#old"}})["Item"]
    assert taken["fingerprint"] == {"S": "sha256:b"}


# -- restarts (App.retry, dlq redrive) -------------------------------------------------------


def failed_once(store: BaseJobStore, job_id: str = "j", attempts: int = 1) -> JobRecord:
    """A job that began ``attempts`` times and ended FAILED, dead-lettered, envelope kept."""
    for n in range(1, attempts + 1):
        store.begin(job_id, task="t", attempt=n, lease_until=ahead())
        if n < attempts:
            store.complete(retrying(job_id, n))
    ended = replace(
        final(job_id, JobStatus.FAILED, attempt=attempts),
        dead_letter="retries_exhausted",
        envelope='{"id": "j"}',
    )
    assert store.complete(ended)
    stored = store.get(job_id)
    assert stored is not None
    return stored


def test_a_new_token_restarts_a_failed_job_with_a_fresh_budget(store: BaseJobStore) -> None:
    """A restart runs on the same record: the next attempt, ``restart_base`` at the last one,
    the old end in the history, and the end's dead-letter mark and envelope gone."""
    ended = failed_once(store, attempts=3)
    assert (ended.dead_letter, ended.envelope) == ("retries_exhausted", '{"id": "j"}')
    begin = store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1")
    assert begin.state == "started"
    stored = store.get("j")
    assert stored is not None
    assert (stored.status, stored.attempt, stored.restart_base) == (JobStatus.RUNNING, 4, 3)
    assert (stored.restart, stored.dead_letter, stored.envelope, stored.error) == (
        "r1", None, None, None,
    )  # fmt: skip
    assert stored.created_at == pytest.approx(ended.created_at)
    (entry,) = stored.restarts
    assert (entry.token, entry.status, entry.attempt) == ("r1", JobStatus.FAILED, 3)
    assert (entry.error_type, entry.error_message) == ("Boom", "no")
    assert entry.at == pytest.approx(ended.updated_at)
    assert begin.record == stored


def test_a_restart_outcome_keeps_the_history(store: BaseJobStore) -> None:
    """Outcomes of the restarted run keep its token, base and history; a retry of the run
    (same token) begins the run's next attempt."""
    failed_once(store)
    store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1")
    assert store.complete(retrying("j", 2))
    again = store.begin("j", task="t", attempt=2, lease_until=ahead(), restart="r1")
    assert (again.state, again.record.attempt) == ("started", 3)
    assert store.complete(final("j", attempt=3))
    stored = store.get("j")
    assert stored is not None
    assert (stored.status, stored.restart, stored.restart_base) == (JobStatus.SUCCEEDED, "r1", 1)
    assert [e.token for e in stored.restarts] == ["r1"]


def test_the_current_token_on_a_final_job_is_finished(store: BaseJobStore) -> None:
    """The restarted run ended: its own token again is a duplicate delivery (``finished``)."""
    failed_once(store)
    store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1")
    store.complete(final("j", JobStatus.FAILED, attempt=2))
    assert store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1").state == (
        "finished"
    )


def test_a_used_token_that_is_not_current_is_stale(store: BaseJobStore) -> None:
    """A copy of an earlier restart runs nothing, whatever the job's state now."""
    failed_once(store)
    store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1")
    store.complete(final("j", JobStatus.FAILED, attempt=2))
    assert store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r2").state == (
        "started"
    )
    stale = store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1")
    assert (stale.state, stale.record.restart) == ("stale", "r2")
    stored = store.get("j")
    assert stored is not None
    assert [e.token for e in stored.restarts] == ["r1", "r2"]
    assert (stored.status, stored.attempt) == (JobStatus.RUNNING, 3)


def test_a_new_token_on_a_succeeded_job_is_finished(store: BaseJobStore) -> None:
    """There is nothing to run again: the record is left as it is."""
    store.begin("j", task="t", attempt=1, lease_until=ahead())
    store.complete(final("j"))
    begin = store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1")
    assert (begin.state, begin.record.status, begin.record.restarts) == (
        "finished", JobStatus.SUCCEEDED, (),
    )  # fmt: skip


def test_a_new_token_under_a_live_lease_is_busy(store: BaseJobStore) -> None:
    """A restart never runs beside a live attempt; once the lease ran out it restarts."""
    store.begin("j", task="t", attempt=1, lease_until=ahead())
    assert store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1").state == "busy"
    store.begin("k", task="t", attempt=1, lease_until=time.time() - 1)
    begin = store.begin("k", task="t", attempt=1, lease_until=ahead(), restart="r1")
    assert (begin.state, begin.record.attempt, begin.record.restart_base) == ("started", 2, 1)
    assert begin.record.restarts[0].status is JobStatus.RUNNING


def test_a_token_on_an_unknown_job_starts_it_with_the_token(store: BaseJobStore) -> None:
    """A retried job whose record expired runs as a new one and keeps the token."""
    begin = store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1")
    assert (begin.state, begin.record.attempt, begin.record.restart) == ("started", 1, "r1")
    assert begin.record.restarts == ()
    again = store.begin("j", task="t", attempt=1, lease_until=time.time() - 1, restart="r1")
    assert again.state == "busy"


def test_restarts_stop_at_max_restarts(store: BaseJobStore) -> None:
    """After ``MAX_RESTARTS`` restarts a new token restarts nothing (``finished``)."""
    failed_once(store)
    for n in range(MAX_RESTARTS):
        begin = store.begin("j", task="t", attempt=1, lease_until=ahead(), restart=f"r{n}")
        assert begin.state == "started", n
        store.complete(final("j", JobStatus.FAILED, attempt=begin.record.attempt))
    refused = store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="last")
    assert (refused.state, len(refused.record.restarts)) == ("finished", MAX_RESTARTS)
    assert not BaseJobStore.may_restart(refused.record, "last", time.time())


def test_two_restarts_from_one_sighting_let_one_through(store: BaseJobStore) -> None:
    """The restart write is guarded by the record as seen: the second of two racing
    restarts (or one whose token was used meanwhile) fails and answers the stored record."""
    seen = failed_once(store)
    now = time.time()
    first = JobRecord(id="j", task="t", status=JobStatus.RUNNING, attempt=1,
                      lease_until=ahead(), restart="a")  # fmt: skip
    second = replace(first, restart="b")
    restart = store._restart  # pyright: ignore[reportPrivateUsage]  # the primitive itself
    won, stored = restart(seen, BaseJobStore.restarted(seen, first), now)
    lost, current = restart(seen, BaseJobStore.restarted(seen, second), now)
    assert (won, lost) == (True, False)
    assert current.restart == "a" == stored.restart
    got = store.get("j")
    assert got is not None
    assert [e.token for e in got.restarts] == ["a"]


def test_restart_predicates_match_the_table() -> None:
    """``may_restart``: a fresh token, a job that did not succeed, no live lease, budget left."""
    failed = final("j", JobStatus.FAILED)
    assert BaseJobStore.may_restart(failed, "r", time.time())
    assert not BaseJobStore.may_restart(None, "r", time.time())
    assert not BaseJobStore.may_restart(final("j"), "r", time.time())
    assert not BaseJobStore.may_restart(replace(failed, restart="r"), "r", time.time())
    running = JobRecord(id="j", task="t", status=JobStatus.RUNNING, attempt=1,
                        lease_until=ahead())  # fmt: skip
    assert not BaseJobStore.may_restart(running, "r", time.time())
    assert BaseJobStore.may_restart(running, "r", ahead(120))
    assert not BaseJobStore.may_begin(failed, time.time(), "r")
    assert BaseJobStore.may_begin(replace(retrying("j", 1), restart="r"), time.time(), "r")
    assert not BaseJobStore.may_begin(retrying("j", 1), time.time(), "r")


def test_records_with_restarts_round_trip_through_dicts() -> None:
    """The restart fields and the kept envelope survive ``to_dict``/``from_dict``."""
    entry = RestartEntry("r1", JobStatus.FAILED, 3, 12.5, "Boom", "no")
    record = JobRecord(id="j", task="t", status=JobStatus.FAILED, attempt=4, restart="r1",
                       restart_base=3, restarts=(entry,), envelope="{}", envelope_note="n",
                       envelope_ref="s3://b/k")  # fmt: skip
    assert JobRecord.from_dict(record.to_dict()) == record


def test_a_final_end_keeps_its_envelope(store: BaseJobStore) -> None:
    """The envelope written with a failed end is read back, and ``load_envelope`` gives it."""
    stored = failed_once(store)
    assert store.load_envelope(stored) == b'{"id": "j"}'
    store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1")
    running = store.get("j")
    assert running is not None
    assert store.load_envelope(running) is None


def test_dynamodb_restart_items_and_envelope_offload(mocked_aws: None) -> None:
    """The item's restart attributes (rs, rbase, rh), and an envelope over the limit:
    offloaded to ``payloads`` (env_ref) or, without them, a note saying why (env_note)."""
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.sdk.memory import MemoryPayloads

    payloads = MemoryPayloads()
    store = DynamoStore("taskhop-jobs", payloads=payloads, result_limit=64)
    store.create_table()
    big = '{"input": "' + "x" * 100 + '"}'
    store.begin("j", task="t", attempt=1, lease_until=ahead())
    store.complete(replace(final("j", JobStatus.FAILED), envelope=big))
    stored = store.get("j")
    assert stored is not None
    assert (stored.envelope, stored.envelope_note) == (None, None)
    assert str(stored.envelope_ref).startswith("memory://")
    assert store.load_envelope(stored) == big.encode()
    store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r1")
    answer: dict[str, Any] = dict(
        store.client.get_item(TableName="taskhop-jobs", Key={"pk": {"S": "job#j"}})
    )
    item: dict[str, Any] = answer["Item"]
    assert (item["rs"], item["rbase"]) == ({"S": "r1"}, {"N": "1"})
    assert '"token": "r1"' in item["rh"]["S"]
    assert not {"env", "env_ref", "env_note", "error", "dl"} & set(item)

    bare = DynamoStore("taskhop-jobs", client=store.client, result_limit=64)
    bare.begin("k", task="t", attempt=1, lease_until=ahead())
    bare.complete(replace(final("k", JobStatus.FAILED), envelope=big))
    note = bare.get("k")
    assert note is not None
    assert (note.envelope, note.envelope_ref) == (None, None)
    assert "has no payloads=" in str(note.envelope_note)
    assert bare.load_envelope(note) is None


def test_dynamodb_restart_is_one_more_conditional_request(mocked_aws: None) -> None:
    """A restart costs the begin that failed its guard and one conditional restart write."""
    from taskhop.backends.dynamodb import DynamoStore

    store = DynamoStore("taskhop-jobs")
    store.create_table()
    failed_once(store)
    calls = requests_of(store)
    assert store.begin("j", task="t", attempt=1, lease_until=ahead(), restart="r").state == (
        "started"
    )
    assert calls == ["UpdateItem", "UpdateItem"]


def test_no_store_ignores_the_restart_token() -> None:
    """Without state a restart is a delivery like any other: it starts, with its attempt."""
    begin = NoStore().begin("j", task="t", attempt=1, lease_until=ahead(), restart="r")
    assert (begin.state, begin.record.attempt, begin.record.restart) == ("started", 1, None)


# -- atomicity ------------------------------------------------------------------------------


def test_every_decision_is_one_conditional_request(mocked_aws: None) -> None:
    """On DynamoDB each write is one conditional request, never a read and then a write."""
    from taskhop.backends.dynamodb import DynamoStore

    store = DynamoStore("taskhop-jobs")
    store.create_table()
    calls = requests_of(store)
    store.begin("j", task="t", attempt=1, lease_until=ahead())
    store.begin("j", task="t", attempt=1, lease_until=ahead())  # busy: the failed condition
    store.complete(final("j"))
    store.complete(final("j"))  # refused
    store.begin("j", task="t", attempt=2, lease_until=ahead())  # finished
    store.claim_key("k", "j", lease_until=ahead())
    store.claim_key("k", "other", lease_until=ahead())  # in progress
    store.complete_key("k", "j", 1)
    store.complete_key("k", "j", 2)  # refused
    store.claim_key("k", "other", lease_until=ahead())  # completed
    store.release_key("k", "j")  # refused
    assert calls == ["UpdateItem"] * 10 + ["DeleteItem"]


def test_concurrent_begins_and_claims_let_exactly_one_through() -> None:
    """Under contention one attempt starts and one job holds the key (the memory lock).

    DynamoDB's atomicity is the service's (one conditional request, tested above); moto in
    process is not thread-safe, so contention is tested where the atomicity is our code's.
    """
    store = MemoryStore()
    begins: list[str] = []
    claims: list[str] = []
    barrier = threading.Barrier(8)

    def race(n: int) -> None:
        barrier.wait()
        begins.append(store.begin("j", task="t", attempt=1, lease_until=ahead()).state)
        claims.append(store.claim_key("k", f"j{n}", lease_until=ahead()).state)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(begins) == ["busy"] * 7 + ["started"]
    assert sorted(claims) == ["acquired"] + ["in_progress"] * 7


# -- reads ----------------------------------------------------------------------------------


def test_get_of_an_unknown_job_is_none(store: BaseJobStore) -> None:
    """No record until a worker writes one."""
    assert store.get("missing") is None


def test_get_many_returns_only_known_ids(store: BaseJobStore) -> None:
    """Batch reads skip ids with no record and answer each repeated id once."""
    store.complete(final("a"))
    store.complete(final("b"))
    found = store.get_many(["a", "b", "missing", "a"])
    assert sorted(found) == ["a", "b"]
    assert found["a"].result == {"ok": True}
    assert store.get_many([]) == {}


def test_get_many_reads_more_than_one_batch(store: BaseJobStore) -> None:
    """Over 100 ids (BatchGetItem's limit per request) every known record still comes back."""
    known = [f"j{n}" for n in range(230)]
    for job in known:
        store.complete(final(job))
    asked = [*known, *(f"missing{n}" for n in range(20)), *known[:10]]
    calls = requests_of(store)
    found = store.get_many(asked)
    assert sorted(found) == sorted(known)
    if not isinstance(store, MemoryStore):
        assert calls == ["BatchGetItem"] * 3  # 250 distinct ids, 100 keys per request


# -- wait -----------------------------------------------------------------------------------


def test_wait_times_out_with_none(store: BaseJobStore) -> None:
    """``wait`` on a job that never ends returns None once the timeout has passed."""
    store.begin("running", task="t", attempt=1, lease_until=ahead())
    store.complete(retrying("retrying", 1))
    for job in ("missing", "running", "retrying"):
        started = time.monotonic()
        assert store.wait(job, 0.2) is None
        assert 0.2 <= time.monotonic() - started < 1.5, job


def test_wait_returns_a_final_record_at_once(store: BaseJobStore) -> None:
    """A job already final is returned without waiting."""
    store.complete(final("j1"))
    started = time.monotonic()
    record = store.wait("j1", 5)
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED
    assert time.monotonic() - started < 1


def test_wait_returns_when_the_job_becomes_final(store: BaseJobStore) -> None:
    """``wait`` wakes up on completion."""
    timer = threading.Timer(0.05, lambda: store.complete(final("j1")))
    timer.start()
    record = store.wait("j1", 5)
    timer.join()
    assert record is not None
    assert record.status is JobStatus.SUCCEEDED


def test_poll_for_final_backs_off_until_final(store: BaseJobStore) -> None:
    """The polling helper for stores without push returns the final record or None."""
    assert poll_for_final(store, "j1", 0.02, first=0.005) is None
    timer = threading.Timer(0.05, lambda: store.complete(final("j1")))
    timer.start()
    record = poll_for_final(store, "j1", 5, first=0.005)
    timer.join()
    assert record is not None


# -- records --------------------------------------------------------------------------------


def test_records_round_trip_through_dicts() -> None:
    """JobRecord and ErrorInfo serialize to JSON data and back."""
    from taskhop.sdk import FieldError

    record = JobRecord(
        id="j",
        task="t",
        status=JobStatus.REJECTED,
        attempt=1,
        error=ErrorInfo("ValidationError", "bad", (FieldError("input.a", "x"),)),
    )
    assert JobRecord.from_dict(record.to_dict()) == record


# -- NoStore --------------------------------------------------------------------------------


def test_no_store_satisfies_the_protocol_without_state() -> None:
    """NoStore is a JobStore that shares nothing with the stateful stores."""
    store = NoStore()
    assert isinstance(store, JobStore)
    assert not isinstance(store, BaseJobStore)


def test_no_store_starts_every_delivery() -> None:
    """Without state every begin starts, even a duplicate of the same attempt."""
    store = NoStore()
    lease = ahead()
    for _ in range(2):
        begin = store.begin("j", task="t", attempt=1, lease_until=lease, idempotency_key="k")
        assert begin.state == "started"
        assert (begin.record.status, begin.record.attempt) == (JobStatus.RUNNING, 1)
        assert (begin.record.lease_until, begin.record.idempotency_key) == (lease, "k")


def test_no_store_accepts_every_outcome_and_records_none() -> None:
    """complete always succeeds, and nothing can be read back."""
    store = NoStore()
    assert store.complete(final("j"))
    assert store.complete(final("j", JobStatus.FAILED, attempt=1))
    assert store.get("j") is None
    assert store.get_many(["j"]) == {}


def test_no_store_does_not_deduplicate_keys() -> None:
    """Every job holds its key, even after another completed it."""
    store = NoStore()
    lease = ahead()
    assert store.claim_key("k", "j1", lease_until=lease) == KeyClaim("acquired", "j1", None, lease)
    store.complete_key("k", "j1", 1)
    store.release_key("k", "j1")
    assert store.claim_key("k", "j2", lease_until=lease).state == "acquired"


def test_no_store_wait_returns_none_at_once() -> None:
    """There is nothing to wait for, so wait never blocks, even without a timeout."""
    started = time.monotonic()
    assert NoStore().wait("j", None) is None
    assert time.monotonic() - started < 0.5
