"""The fault matrix on the embedded default: ``MemoryQueue`` + ``MemoryStore`` worker threads.

The same kinds of faults as ``test_fault_matrix`` at the job store's calls (the memory queue
itself makes no call that can fail): each call fails, or lands with its answer lost, at its
first three occurrences. A crash is not a case here: the embedded queue lives and dies with
its process. Real time runs, so leases are shortened to a fraction of a second.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from faults import ATTEMPTS, Done, Fault, Faults, Work, work_task
from taskhop.sdk import ImplementOptions, JobContext, JobStatus, create_app
from taskhop.sdk.memory import MemoryQueue, MemoryStore

work = work_task("work-memory", delay=0.01)
PLANS = {
    "ok": JobStatus.SUCCEEDED,
    "flaky": JobStatus.SUCCEEDED,
    "doomed": JobStatus.FAILED,
    "keyed-a": JobStatus.SUCCEEDED,
    "keyed-b": JobStatus.SUCCEEDED,
    "keyed-flaky": JobStatus.SUCCEEDED,
    "invalid": JobStatus.REJECTED,
    "delayed": JobStatus.SUCCEEDED,
}
POINTS = ("begin", "claim_key", "complete", "complete_key", "release_key")
CASES = [
    None,
    *(Fault(f"store.{p}", kind, n) for p in POINTS for kind in ("fail", "lost") for n in (1, 2, 3)),
]


@pytest.mark.parametrize(
    "fault", CASES, ids=lambda f: "none" if f is None else f"{f.point}-{f.kind}-{f.occurrence}"
)
def test_fault_matrix_on_the_memory_queue(
    fault: Fault | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One store fault, then the threads run on: every job ends as planned, once."""
    import taskhop.sdk._worker as worker_module

    monkeypatch.setattr(worker_module, "DEFAULT_LEASE", 0.15)
    monkeypatch.setattr(worker_module, "LEASE_MARGIN", 0.0)
    monkeypatch.setattr(worker_module, "_AFTER_HANDLER_TRIES", (0.01, 0.01, 0.01))
    faults = Faults(fault)
    store = MemoryStore()
    points = {p: f"store.{p}" for p in POINTS}
    queue = MemoryQueue(workers=2, visibility=0.05, max_receives=50)
    app = create_app(queue=queue, store=faults.wrap(store, points))
    runs: list[tuple[str, int, str]] = []

    def handler(data: Work, ctx: JobContext) -> Done:
        runs.append((ctx.job_id, ctx.attempt, data["plan"]))
        first = sum(1 for r in runs if r[0] == ctx.job_id) == 1
        if data["plan"] == "doomed" or (data["plan"] in ("flaky", "keyed-flaky") and first):
            raise RuntimeError("this run fails")
        return Done(n=data["n"])

    # keyed-a and keyed-b share key K with different inputs: the key alone decides here
    # (the refusal of a mismatch is tests/test_idempotency_fingerprint.py's).
    app.implement(work, handler, ImplementOptions(idempotency="key"))
    queue.serve(app)
    jobs: dict[str, str] = {}
    keys = {"keyed-a": "K", "keyed-b": "K", "keyed-flaky": "K2"}
    for n, plan in enumerate(PLANS):
        data: Any = {"plan": plan} if plan == "invalid" else {"plan": plan, "n": n}
        envelope = app.envelope(work.name, data, idempotency_key=keys.get(plan))
        if plan == "delayed":
            envelope = envelope.with_delay(0.05)
        jobs[plan] = envelope.id
        queue.send(envelope)
    queue.join(timeout=20)
    app.close()

    where = f"memory {fault}"
    assert max(Counter((j, a) for j, a, _ in runs).values()) == 1, f"{where}: {runs}"
    assert max(Counter(j for j, _, _ in runs).values()) <= ATTEMPTS, where
    assert sum(1 for r in runs if r[2] in ("keyed-a", "keyed-b")) == 1, where
    for plan, expected in PLANS.items():
        record = store.get(jobs[plan])
        assert record is not None, f"{where}: {plan}"
        assert record.status is expected, f"{where}: {plan} ended {record.status}"
    assert [d.job_id for d in queue.dead_letters] == [jobs["doomed"]], where
    assert not [k for k, c in store._keys.items() if c.state == "in_progress"], where
