"""A handle from ``App.retry`` answers for the run it started, never the earlier end."""

from __future__ import annotations

import asyncio

import pytest
from taskhop.sdk import JobStatus, ResultTimeout, gather
from test_redrive import World, world  # noqa: F401  (the fixture, shared)


def test_a_retry_handle_waits_for_its_own_run(world: World) -> None:  # noqa: F811
    """Until a worker begins the restart, the record's FAILED end is not the handle's answer."""
    job = world.failed_into_dlq()
    world.failing = False
    handle = world.app.retry(job)
    assert handle.restart is not None
    assert handle.status() is JobStatus.QUEUED  # the record still says failed
    with pytest.raises(ResultTimeout):
        handle.result(timeout=0.2)
    with pytest.raises(ResultTimeout):
        gather([handle], timeout=0.2)
    assert asyncio.run(handle.astatus()) is JobStatus.QUEUED
    world.drain()
    assert handle.status() is JobStatus.SUCCEEDED
    assert handle.result(timeout=5) == {"n": 7}
    assert gather([handle], timeout=5) == [{"n": 7}]
    assert asyncio.run(handle.aresult(timeout=5)) == {"n": 7}


def test_a_retry_handle_reads_a_failed_rerun_as_failed(world: World) -> None:  # noqa: F811
    """A restart that fails again is this handle's answer (its token began the run)."""
    from taskhop.sdk import TaskFailed

    job = world.failed_into_dlq()
    handle = world.app.retry(job)
    world.drain()
    with pytest.raises(TaskFailed):
        handle.result(timeout=5)


def test_an_end_whose_envelope_is_not_json_is_recorded_without_it(world: World) -> None:  # noqa: F811
    """A direct invocation may carry ``inf``: the rejection is recorded, retry says why not."""
    from taskhop.sdk import Envelope, OutcomeKind, TaskhopError

    envelope = Envelope(id="job-inf", task="redriven", input={"plan": "charge", "n": float("inf")})
    outcome = world.app.worker().process(envelope)
    assert outcome.kind is OutcomeKind.REJECTED
    record = world.store.get("job-inf")
    assert record is not None
    assert record.status is JobStatus.REJECTED
    assert record.envelope is None
    assert record.envelope_note is not None
    assert "input.n" in record.envelope_note
    with pytest.raises(TaskhopError, match="cannot be written as JSON"):
        world.app.retry("job-inf")
