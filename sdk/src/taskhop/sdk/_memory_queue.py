"""The in-process queue and worker thread of the embedded default (see ``taskhop.sdk.memory``)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from taskhop.static_contracts import Envelope, Reason, TransportError

from ._errors import ErrorInfo
from ._settle import queue_actions
from ._worker import Outcome

if TYPE_CHECKING:
    from ._app import App

__all__ = ["DeadLetter", "MemoryQueue"]

_log = logging.getLogger("taskhop.memory")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message no worker could finish: the body as it arrived and why it stopped."""

    body: bytes
    reason: str
    job_id: str | None
    error: ErrorInfo | None


class MemoryQueue:
    """An in-process queue with delays, plus the worker threads that drain it.

    ``serve(app)`` starts ``workers`` threads running ``app``'s jobs; ``join()`` waits until
    every message (delayed ones included) is finished. Implements ``Transport`` and
    ``AsyncTransport``.

    It settles messages as SQS and Lambda do: each message counts its receives (the attempt
    number a worker without a job store goes by), a message whose processing raised (a store
    outage) comes back after ``visibility`` seconds, and one received ``max_receives`` times
    moves to ``dead_letters`` (SQS's redrive policy), so no message is ever dropped.

    Envelopes with a ``group`` header keep a FIFO queue's order within their group (an
    ordered subscriber's events per key): one message of a group is taken at a time, oldest
    first, and one hidden for a retry holds the group's later messages until it is done.

    Args:
        workers: worker threads.
        visibility: seconds before a message whose processing raised is delivered again.
        max_receives: receives after which a message is dead-lettered (``maxReceiveCount``).

    """

    def __init__(
        self, *, workers: int = 1, visibility: float = 1.0, max_receives: int = 10
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers: must be >= 1, got {workers}")
        if max_receives < 1:
            raise ValueError(f"max_receives: must be >= 1, got {max_receives}")
        self._workers = workers
        self.visibility = visibility
        self.max_receives = max_receives
        self._heap: list[_Message] = []
        self._busy_groups: set[str] = set()  # groups with a message in flight
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        self._app: App | None = None
        self._lazy = False
        self._stopping = False
        self._closed = False
        self.dead_letters: list[DeadLetter] = []
        """Messages that exhausted their retries or were not envelopes at all."""

    # -- Transport --------------------------------------------------------------------------

    def send(self, envelope: Envelope) -> None:
        """Queue one envelope; it becomes visible at ``envelope.not_before``."""
        self.send_many([envelope])

    def send_many(self, envelopes: Sequence[Envelope]) -> None:
        """Queue several envelopes at once."""
        now = time.monotonic()
        with self._cond:
            self._check_open([e.id for e in envelopes])
            for envelope in envelopes:
                group = (envelope.headers or {}).get("group")
                self._push(_Message(now + envelope.delay_seconds(), next(self._seq),
                                    envelope.encode(), 0, group))  # fmt: skip
            self._cond.notify_all()
            start = self._lazy and not self._threads
        if start:
            self._start()

    def send_raw(self, body: bytes, *, delay: float = 0.0) -> None:
        """Queue bytes as they are (to test what workers do with poison messages)."""
        with self._cond:
            self._check_open([])
            self._push(_Message(time.monotonic() + delay, next(self._seq), body, 0))
            self._cond.notify_all()
            start = self._lazy and not self._threads
        if start:
            self._start()

    async def asend(self, envelope: Envelope) -> None:
        """Async ``send`` (queueing in memory never blocks)."""
        self.send(envelope)

    async def asend_many(self, envelopes: Sequence[Envelope]) -> None:
        """Async ``send_many``."""
        self.send_many(envelopes)

    def close(self) -> None:
        """Stop the worker threads after the message each is on; the queue takes no more.

        Messages still queued stay in ``pending`` (and are lost with the process: this is
        the in-memory backend).
        """
        with self._cond:
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=30)
        with self._cond:
            self._stopping = False

    async def aclose(self) -> None:
        """Async ``close``."""
        self.close()

    # -- serving ----------------------------------------------------------------------------

    def serve(self, app: App, *, lazy: bool = False) -> None:
        """Run ``app``'s jobs from this queue on worker threads (at the first send if ``lazy``)."""
        with self._cond:
            self._check_open([])
            self._app = app
            self._lazy = lazy
            pending = bool(self._heap)
        if not lazy or pending:
            self._start()

    def join(self, timeout: float | None = 10.0) -> None:
        """Wait until no message is queued, delayed or in flight.

        Raises:
            TimeoutError: messages remain after ``timeout`` seconds (it says how many).
            RuntimeError: nothing serves this queue, so waiting could never end.

        """
        if self._app is None:
            raise RuntimeError("no app is served from this queue: call serve(app) first")
        if not self._threads:
            self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"join: {len(self._heap)} queued and {self._in_flight} in flight after"
                        f" {timeout}s"
                    )
                self._cond.wait(left)

    @property
    def pending(self) -> int:
        """Messages queued or delayed, not yet taken by a worker."""
        with self._cond:
            return len(self._heap)

    def _check_open(self, job_ids: list[str]) -> None:
        if self._closed:
            raise TransportError(
                "the memory queue is closed", job_ids=tuple(job_ids), retryable=False
            )

    def _push(self, message: _Message) -> None:
        heapq.heappush(self._heap, message)

    def _start(self) -> None:
        with self._cond:
            if self._threads or self._app is None:
                return
            for n in range(self._workers):
                thread = threading.Thread(
                    target=self._run, name=f"taskhop-memory-worker-{n}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _take(self) -> _Message | None:
        """The next visible message, its receive count raised by this receive."""
        with self._cond:
            while not self._stopping:
                message, wait = self._next(time.monotonic())
                if message is not None:
                    if message.receives >= self.max_receives:  # the redrive policy moves it
                        moved = DeadLetter(message.body, Reason.MAX_RECEIVES, None, None)
                        self.dead_letters.append(moved)
                        self._cond.notify_all()
                        continue
                    self._in_flight += 1
                    if message.group is not None:
                        self._busy_groups.add(message.group)
                    return replace(message, receives=message.receives + 1)
                self._cond.wait(wait)
            return None

    def _next(self, now: float) -> tuple[_Message | None, float | None]:
        """Pop the message to deliver now, or say how long until one may be (None: unknown).

        A grouped message may go only when it is its group's oldest and no other message of
        the group is in flight; ungrouped ones go by visibility alone.
        """
        if not any(m.group is not None for m in self._heap):  # the common case: a heap pop
            if not self._heap:
                return None, None
            if self._heap[0].ready_at <= now:
                return heapq.heappop(self._heap), None
            return None, self._heap[0].ready_at - now
        oldest: dict[str, int] = {}
        for m in self._heap:
            if m.group is not None and (m.group not in oldest or m.seq < oldest[m.group]):
                oldest[m.group] = m.seq
        eligible = [
            m
            for m in self._heap
            if m.group is None or (m.group not in self._busy_groups and oldest[m.group] == m.seq)
        ]
        if not eligible:
            return None, None  # a group's message in flight: its end notifies
        first = min(eligible)
        if first.ready_at > now:
            return None, first.ready_at - now
        self._heap.remove(first)
        heapq.heapify(self._heap)
        return first, None

    def _run(self) -> None:
        assert self._app is not None
        worker = self._app.worker()
        while (message := self._take()) is not None:
            try:
                outcome = worker.process(message.body, attempt=message.receives)
                self._apply(message, outcome)
            except Exception:  # a store outage, say: it comes back, as on SQS
                _log.exception("message could not be processed; delivering it again")
                self._requeue(message, self.visibility)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    if message.group is not None:
                        self._busy_groups.discard(message.group)
                    self._cond.notify_all()

    def _apply(self, message: _Message, outcome: Outcome) -> None:
        """Carry out the queue actions ``outcome`` calls for (``queue_actions``), SQS-style.

        The dead-letter list is this queue's DLQ. Hiding a message for a retry stands for
        ChangeMessageVisibility: the same message comes back, one receive later. A re-send is
        a new message, the body as it arrived, whose receive count starts again.
        """
        actions = queue_actions(outcome, has_dlq=True, receives=message.receives)
        if actions.dead_letter is not None:
            self.dead_letters.append(
                DeadLetter(message.body, actions.dead_letter, outcome.job_id, outcome.error)
            )
        if actions.resend_after is not None:  # a new message: the back of its group
            self._requeue(replace(message, seq=next(self._seq), receives=0), actions.resend_after)
        elif actions.hide_for is not None:
            self._requeue(message, actions.hide_for)

    def _requeue(self, message: _Message, delay: float) -> None:
        """Make ``message`` visible again after ``delay``; it keeps its place in its group."""
        with self._cond:
            self._push(replace(message, ready_at=time.monotonic() + delay))
            self._cond.notify_all()


@dataclass(frozen=True, slots=True, order=True)
class _Message:
    """A queued message, ordered by when it is visible, then by when it was sent."""

    ready_at: float
    seq: int
    body: bytes = field(compare=False)
    receives: int = field(compare=False)
    group: str | None = field(default=None, compare=False)
