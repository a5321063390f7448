"""One batch of messages, its jobs' store round trips overlapped: a batch costs what its I/O costs.

On Lambda the bill is the batch's wall time, and with a job store that time is round trips:
two or three a job (begin, the key, the end), then a queue call or two for some outcomes. Run
one after another, ten jobs cost thirty round trips; here every job's steps go to a small pool
of I/O threads, so the batch costs about as many round trips as its longest job.

What runs where:

- Store and queue calls (``Worker._prepare``, ``_succeeded``/``_failed`` and the host's
  ``settle``) run on the I/O threads, each in its job's context (log fields, trace).
- ``async def`` handlers run concurrently on the worker's event loop, each under its own
  timeout.
- Sync handlers run one at a time on the calling thread, as they would without a batch: the
  timer-signal timeout still applies, and handler code need not be thread-safe. With
  ``handler_threads=N`` they run on N threads instead (a job's timeout then stops its thread
  at its next Python instruction; a call blocked inside C is abandoned, as ``_timeouts`` says).

Every job goes through the same steps and writes as ``Worker.process`` (the order of writes
that keeps a job alive is unchanged), so every guarantee holds per job. Lanes keep order: the
items of one FIFO message group run one at a time in order, and the group stops at its first
item that is not settled (its later items are left for redelivery, unprocessed); copies of one
job, and jobs sharing an idempotency key, run one at a time too (``_lanes``). Items not
started by the deadline are left.

A process-ending exception (not an ``Exception``) from any step stops the batch: no new step
starts, the steps in flight finish, and the exception is raised, as a crash at that point would
leave things. The host then answers nothing and every message comes back.

What a crash costs: a job that began in the store and never reported used an attempt (the
store cannot tell it from one that ran). Side by side, a process killed in one job's handler
(out of memory, a segfault) costs every job the batch had begun that attempt. So only a batch
of first deliveries runs side by side: a batch with a redelivery in it (receive count above 1:
the batch of a crashed process comes back so) runs one after another, where a job begins only
when it runs. A job that kills its process can cost each batch-mate at most one attempt, once,
and is then dead-lettered alone when its own attempts run out.
"""

# The batch runner is the worker's other half: it drives the worker's own steps.
# pyright: reportPrivateUsage=false

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from taskhop.static_contracts import Envelope

from ._logging import incoming_trace
from ._memory_store import MemoryStore
from ._worker import _HOST_EXITS, Outcome, _Prepared

if TYPE_CHECKING:
    import asyncio

    from ._app import App
    from ._worker import Worker

__all__ = ["BatchItem", "BatchRunner"]

_log = logging.getLogger("taskhop.worker")

DEFAULT_CONCURRENCY = 10
"""Jobs of one batch in flight at once by default: SQS's default batch size."""
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One message of a batch, as the host got it."""

    name: str
    """The host's id for the message (SQS message id), for log lines."""
    body: str | bytes
    attempt: int | None = None
    """The host's receive count (see ``Worker.process``)."""
    lane: str | None = None
    """Items of one lane run in order, one at a time (a FIFO message group); None: its own."""
    trace: Mapping[str, str] | None = None
    """The trace context the message arrived with (``incoming_trace``)."""


Settle = Callable[[BatchItem, Outcome], bool]
"""The host's part: act on an item's outcome; True when its message may be deleted."""


class BatchRunner:
    """Processes batches for one worker; keeps its threads across batches (Lambda invocations).

    Args:
        worker: the app's worker.
        concurrency: jobs of one batch in flight at once (1: one after another, no threads).
            None: ``DEFAULT_CONCURRENCY`` where overlapping pays off (a store that does I/O,
            ``async def`` handlers, handler threads), else 1.
        handler_threads: run sync handlers on this many threads (0: one at a time on the
            calling thread).

    """

    def __init__(
        self, worker: Worker, *, concurrency: int | None = None, handler_threads: int = 0
    ) -> None:
        if (concurrency is not None and concurrency < 1) or handler_threads < 0:
            raise ValueError("concurrency must be at least 1 and handler_threads at least 0")
        self.worker = worker
        self.concurrency = concurrency
        self.handler_threads = handler_threads
        self._io: ThreadPoolExecutor | None = None
        self._handlers: ThreadPoolExecutor | None = None
        self._pools_lock = threading.Lock()

    def run(
        self, items: Sequence[BatchItem], settle: Settle, *, deadline: float | None
    ) -> list[bool]:
        """Process ``items``; for each, whether its message may be deleted (in their order)."""
        limit = self.concurrency
        if limit is None:
            limit = DEFAULT_CONCURRENCY if self._worth_overlapping() else 1
        if limit == 1 or len(items) < 2 or any((item.attempt or 1) > 1 for item in items):
            return self._run_in_order(items, settle, deadline)
        batch = self._run_overlapped(items, settle, deadline, limit)
        if _has_async_handlers(self.worker.app):  # on the worker's loop, kept across batches,
            return self.worker._loop().run(batch)  # where the handlers' async clients live
        import asyncio

        with asyncio.Runner() as runner:  # only the batch's own steps: a loop for this batch
            return runner.run(batch)

    def close(self) -> None:
        """Stop the threads (the next batch starts new ones)."""
        with self._pools_lock:
            pools, self._io, self._handlers = (self._io, self._handlers), None, None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)

    def _worth_overlapping(self) -> bool:
        """Threads pay off only for a store that waits on I/O, or handlers that can overlap."""
        app = self.worker.app
        store_waits = app.store is not None and not _in_process(app.store)
        return store_waits or self.handler_threads > 0 or _has_async_handlers(app)

    # -- one after another ------------------------------------------------------------------

    def _run_in_order(
        self, items: Sequence[BatchItem], settle: Settle, deadline: float | None
    ) -> list[bool]:
        done = [False] * len(items)
        stopped: set[str] = set()  # lanes whose earlier item is not settled
        for i, item in enumerate(items):
            if (item.lane is not None and item.lane in stopped) or _past(deadline):
                continue
            with incoming_trace(item.trace):
                done[i] = self._one_in_order(item, settle, deadline)
            if not done[i] and item.lane is not None:
                stopped.add(item.lane)
        return done

    def _one_in_order(self, item: BatchItem, settle: Settle, deadline: float | None) -> bool:
        try:
            outcome = self.worker.process(item.body, attempt=item.attempt, deadline=deadline)
        except Exception:  # a store outage, say: the message comes back after its visibility
            _log.exception("record %s could not be processed", item.name)
            return False
        return _settled(settle, item, outcome)

    # -- overlapped ---------------------------------------------------------------------------

    async def _run_overlapped(
        self, items: Sequence[BatchItem], settle: Settle, deadline: float | None, limit: int
    ) -> list[bool]:
        import asyncio

        done = [False] * len(items)
        bodies = [_decoded(item.body) for item in items]
        run = _Overlapped(self, settle, deadline, asyncio.Semaphore(limit))

        async def lane(indices: list[int]) -> None:
            stopped: set[str] = set()  # FIFO groups whose earlier item is not settled
            for i in indices:
                group = items[i].lane
                if group in stopped:
                    continue  # it waits behind its group's failure, unprocessed
                started = await run.one(items[i], bodies[i])
                if started is None:
                    return  # stopping, or out of time: this item and the lane's rest are left
                done[i] = started
                if not started and group is not None:
                    stopped.add(group)

        lanes = _lanes(items, bodies)
        tasks = [asyncio.ensure_future(lane(indices)) for indices in lanes]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        run.stopping = True  # a step raised past ``Exception``: start nothing new
        await asyncio.wait(tasks)
        for task in tasks:
            error = task.exception()
            if error is not None:
                raise error
        return done

    def _io_pool(self) -> ThreadPoolExecutor:
        with self._pools_lock:  # hosts may run several batches at once, on their own threads
            if self._io is None:
                size = self.concurrency or DEFAULT_CONCURRENCY
                self._io = ThreadPoolExecutor(size, thread_name_prefix="taskhop-io")
            return self._io

    def _handler_pool(self) -> ThreadPoolExecutor | None:
        with self._pools_lock:
            if self.handler_threads and self._handlers is None:
                self._handlers = ThreadPoolExecutor(
                    self.handler_threads, thread_name_prefix="taskhop-handler"
                )
            return self._handlers


class _Overlapped:
    """One overlapped batch's shared state: its slots, and whether it is stopping."""

    def __init__(
        self,
        runner: BatchRunner,
        settle: Settle,
        deadline: float | None,
        slots: asyncio.Semaphore,
    ) -> None:
        self.worker = runner.worker
        self.settle = settle
        self.deadline = deadline
        self.slots = slots
        self.io = runner._io_pool()
        self.handlers = runner._handler_pool()
        self.stopping = False

    async def one(self, item: BatchItem, body: str | bytes | Envelope) -> bool | None:
        """Run one item through the worker's steps, its I/O on the pool; True once settled.

        None when it was not started: the batch is stopping, or its deadline has passed.
        """
        async with self.slots:
            if self.stopping or _past(self.deadline):
                return None
            with incoming_trace(item.trace):  # this task's context: copied into each step
                return await self._steps(item, body)

    async def _steps(self, item: BatchItem, body: str | bytes | Envelope) -> bool:
        worker = self.worker
        try:
            step = await self._off(worker._prepare, body, item.attempt, self.deadline)
        except Exception:
            _log.exception("record %s could not be processed", item.name)
            return False
        if isinstance(step, _Prepared):
            if self.stopping:
                return False  # as if the process had stopped here: the lease runs out
            try:
                outcome = await self._after_handler(step)
            except Exception:
                _log.exception("record %s could not be processed", item.name)
                return False
        else:
            outcome = step
        if self.stopping:
            return False
        return await self._off(_settled, self.settle, item, outcome)

    async def _after_handler(self, step: _Prepared) -> Outcome:
        worker = self.worker
        try:
            if step.entry.implementation.is_async:
                value = await worker._await_handler(step)
            elif self.handlers is not None:
                value = await self._off(worker._call_handler, step, pool=self.handlers)
            else:
                value = _outside_loop(worker._call_handler, step)  # this thread, one at a time
        except (Exception, *_HOST_EXITS) as exc:
            return await self._off(worker._failed, step, exc)
        return await self._off(worker._succeeded, step, value)

    async def _off(
        self, fn: Callable[..., _T], *args: Any, pool: ThreadPoolExecutor | None = None
    ) -> _T:
        import asyncio

        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(pool or self.io, call)


def _outside_loop(call: Callable[[_Prepared], _T], step: _Prepared) -> _T:
    """Run a sync handler as it runs outside a batch: with no event loop running in its thread.

    The batch's loop is this thread's; hidden for the call, a handler's own ``asyncio.run``
    works as it does everywhere else (``_set_running_loop`` is asyncio's hook for this).
    """
    import asyncio

    loop = asyncio.events._get_running_loop()
    asyncio.events._set_running_loop(None)
    try:
        return call(step)
    finally:
        asyncio.events._set_running_loop(loop)


def _decoded(body: str | bytes) -> str | bytes | Envelope:
    """The envelope, decoded once here to find its lane; the body itself if it is not one."""
    try:
        return Envelope.decode(body)
    except Exception:  # the worker's own decode records it as poison, with its reason
        return body


def _lanes(items: Sequence[BatchItem], bodies: Sequence[str | bytes | Envelope]) -> list[list[int]]:
    """The batch split into lanes: items that must not run side by side share one, in order.

    Those are a FIFO group's items (order), copies of one job (a duplicate delivery would find
    the first copy's live lease and wait for it, instead of finding it done) and jobs sharing an
    idempotency key (the second would find the first's claim in progress and use an attempt
    waiting, instead of getting its result).
    """
    lane_of: dict[object, int] = {}  # a tag (group, job, key) -> the lane that holds it
    lanes: list[list[int]] = []
    for i, (item, body) in enumerate(zip(items, bodies, strict=True)):
        tags: list[object] = [] if item.lane is None else [("group", item.lane)]
        if isinstance(body, Envelope):
            tags.append(("job", body.id))
            if body.idempotency_key is not None:
                tags.append(("key", body.idempotency_key))
        joined = sorted({lane_of[tag] for tag in tags if tag in lane_of})
        if not joined:
            lanes.append([])
            joined = [len(lanes) - 1]
        target = joined[0]
        for other in joined[1:]:  # this item ties earlier lanes together: merge them, in order
            lanes[target] = sorted(lanes[target] + lanes[other])
            lane_of.update({tag: target for tag, at in lane_of.items() if at == other})
            lanes[other] = []
        lanes[target].append(i)
        lane_of.update(dict.fromkeys(tags, target))
    return [lane for lane in lanes if lane]


def _in_process(store: object) -> bool:
    """A store whose calls never wait (the memory store, or one that says ``in_process``)."""
    return isinstance(store, MemoryStore) or getattr(store, "in_process", False) is True


def _has_async_handlers(app: App) -> bool:
    for name in app.implemented_names():
        entry = app.implementation(name)
        if entry is not None and entry.implementation.is_async:
            return True
    return False


def _settled(settle: Settle, item: BatchItem, outcome: Outcome) -> bool:
    try:
        return settle(item, outcome)
    except Exception:  # the settling call failed: leaving the message is always safe
        _log.exception("record %s could not be settled", item.name)
        return False


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
