"""Table triggers: ``app.on_change(table, ...)`` and how a batch of stream records is served.

A trigger is a task whose input is a ``Change[Item]``. Its ``where`` filter is checked
against the item type when it is declared and compiled into the event source mapping's
filter criteria, so a change that does not match never invokes anything; the same patterns
are applied here (``matches``) for hosts with no AWS filtering in front (the dev poller, the
memory backend). ``changed=`` cannot be said in a filter and is checked here.

``serve_stream_records`` is the one path every host takes, and it also publishes the job
table's outbox (events put in the same transaction as a business write). Records are handled
in order and it stops at the first one that fails, reporting only that one, so Lambda retries
from it and no record that succeeded runs again (Powertools reports every failure and goes
on, so the records after the first failure run twice). Each matching change becomes one job whose id
derives from the stream record's id:

- ``mode="enqueue"`` (the default) sends the jobs through the app's transport, so a slow
  handler never holds the shard and the job has its retries, dead letters and idempotency;
- ``mode="inline"`` runs the job in the stream function itself, for small handlers. A retry
  stops the batch at its record, so the event source mapping delivers it again (its
  ``MaximumRetryAttempts`` and on-failure destination bound how often: a retry policy
  allowing more attempts than 1 + ``STREAM_MAPPING_RETRIES`` is refused). A job whose lease
  a crashed invocation still holds is handed to the queue instead, to run when it ends.

A malformed image becomes a job whose validation fails: the worker records it rejected with
the field paths, and the shard moves on.
"""

from __future__ import annotations

import logging
import time
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cattrs import Converter
from taskhop.static_contracts import (
    ContractError,
    Duration,
    Envelope,
    EventEnvelope,
    Reason,
    RetrySpec,
    TransportError,
)
from taskhop.static_contracts.limits import LAMBDA_MAX_FILTERS, STREAM_MAPPING_RETRIES

from ._contract import TaskContract
from ._errors import ValidationError
from ._store import outbox_of
from ._tables import (
    Change,
    ChangeKind,
    Table,
    Where,
    change_input,
    changed,
    check_where,
    filter_criteria,
    matches,
    structure_change,
)

if TYPE_CHECKING:
    from ._app import App
    from ._bound import BoundTask

__all__ = ["StreamAnswer", "Trigger", "Triggers", "serve_stream_records", "trigger_job_id"]

Mode = Literal["enqueue", "inline"]
_KINDS = frozenset({"insert", "modify", "remove"})
_MAX_JOB_ID = 128
_INLINE_ATTEMPTS = 1 + STREAM_MAPPING_RETRIES
"""The most attempts an inline trigger may allow: its record is delivered no more often."""
_UNTIMED_BUDGET = 1.0
"""Seconds an inline job without a timeout needs left to be started on a later record."""

_log = logging.getLogger("taskhop.worker")


@dataclass(frozen=True, slots=True)
class Trigger:
    """A task run once per matching change of one table.

    Args:
        task: the trigger task's name.
        table: the table it watches.
        on: the kinds of change it takes.
        criteria: the compiled ``FilterCriteria`` of ``on`` and ``where``.
        changed: attributes of which at least one must differ (modify), or empty.
        mode: ``"enqueue"`` (a job per change) or ``"inline"`` (run in the stream function).

    """

    task: str
    table: Table[Any]
    on: frozenset[str]
    criteria: Mapping[str, Any]
    changed: tuple[str, ...] = ()
    mode: Mode = "enqueue"

    def takes(self, record: Mapping[str, Any]) -> bool:
        """Whether this record is one the trigger runs for (the filter, then ``changed``)."""
        if not matches(self.criteria, record):
            return False
        return not self.changed or changed(record, self.changed)


def trigger_job_id(event_id: str, task: str) -> str:
    """The job of ``task`` for stream record ``event_id``: the same on every delivery."""
    from ._events import delivery_job_id

    return delivery_job_id(event_id, task)


class Triggers:
    """One app's table triggers (``app.triggers``)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._triggers: dict[str, Trigger] = {}

    @property
    def all(self) -> Mapping[str, Trigger]:
        """Every trigger by its task's name."""
        return dict(self._triggers)

    def of_table(self, name: str) -> list[Trigger]:
        """The triggers watching the table called ``name``."""
        return [t for t in self._triggers.values() if t.table.name == name]

    def mapping_criteria(self, name: str) -> dict[str, Any]:
        """The ``FilterCriteria`` of table ``name``'s one event source mapping.

        Every filter of its triggers, each once (two triggers may share a pattern): Lambda
        delivers a record any filter matches, and each trigger filters again (``takes``).
        """
        return {"Filters": _union(t.criteria for t in self.of_table(name))}

    def add(
        self,
        table: Table[Any],
        handler: Callable[..., Any],
        *,
        on: Collection[str],
        where: Where | None,
        changed: Sequence[str],
        mode: Mode,
        name: str | None,
        retry: RetrySpec,
        timeout: Duration | None,
    ) -> BoundTask[Any, Any]:
        """Declare ``handler`` as a trigger (see ``App.on_change``)."""
        if not isinstance(table, Table):
            raise TypeError(f"on_change() takes a table from define_table, got {table!r}")
        kinds = frozenset(on)
        if not kinds or not kinds <= _KINDS:
            raise ContractError(
                f"on_change({table.name!r}): on must name some of insert, modify, remove;"
                f" got {sorted(kinds)}"
            )
        if mode not in ("enqueue", "inline"):
            raise ContractError(f"on_change: mode must be 'enqueue' or 'inline', got {mode!r}")
        if where is not None:
            check_where(table, where)
        unknown = [f for f in changed if f not in table.fields]
        if unknown:
            raise ContractError(
                f"on_change({table.name!r}): changed= names unknown attribute {unknown[0]!r}"
                f" (fields: {', '.join(sorted(table.fields))})"
            )
        task = name or getattr(handler, "__name__", None)
        if not isinstance(task, str) or not task or task == "<lambda>":
            raise ContractError("a trigger needs name=... (its handler has no usable name)")
        _install_change_hook(self._app.converter)
        criteria = filter_criteria(
            table, on=typing.cast("frozenset[ChangeKind]", kinds), where=where
        )
        change_type: Any = Change[table.item]  # type: ignore[name-defined]  # a run-time alias
        contract = TaskContract(
            task, input=change_type, output=object, retry=retry, timeout=timeout
        )
        if task in self._app.tasks:
            raise ContractError(f"trigger {task!r}: a task of this name already exists")
        if mode == "inline" and contract.retry.attempts > _INLINE_ATTEMPTS:
            # Each attempt needs a delivery: past the mapping's, the job would wait for good.
            raise ContractError(
                f"trigger {task!r}: mode='inline' runs each attempt on a delivery of the record,"
                f" and the stream mapping delivers it {_INLINE_ATTEMPTS} times at most (1 +"
                f" {STREAM_MAPPING_RETRIES} retries); retry allows {contract.retry.attempts}"
                " attempts: allow fewer, or use mode='enqueue'"
            )
        filters = _union([*(t.criteria for t in self.of_table(table.name)), criteria])
        if len(filters) > LAMBDA_MAX_FILTERS:
            # One mapping per table: its filters are every trigger's, and Lambda takes 5.
            raise ContractError(
                f"trigger {task!r}: table {table.name!r}'s triggers would need {len(filters)}"
                f" filters, over Lambda's default of {LAMBDA_MAX_FILTERS} per event source mapping:"
                " merge their where= filters"
            )
        bound = self._app.implement(contract, handler)
        self._triggers[task] = Trigger(task, table, kinds, criteria, tuple(changed), mode)
        return bound

    def envelope(self, trigger: Trigger, record: Mapping[str, Any]) -> Envelope:
        """``trigger``'s job for one stream record (its input is the change, images raw)."""
        sequence = _sequence(record)
        try:
            data: dict[str, Any] = change_input(record)
        except ValidationError:  # the worker refuses it with the paths, and records that
            data = {
                "kind": record.get("eventName"),
                "event_id": record.get("eventID"),
                "sequence": sequence,
                "new": None,
                "old": None,
            }
        event_id = str(record.get("eventID") or sequence or "unknown")
        bound = self._app.get(trigger.task)
        return Envelope(
            task=trigger.task,
            input=data,
            id=trigger_job_id(event_id, trigger.task),
            version=bound.contract.version,
        )


@dataclass(frozen=True, slots=True)
class StreamAnswer:
    """What serving a batch of stream records did.

    ``failed`` is the sequence number of the first record that did not finish (reported to
    Lambda; the records after it were not attempted), or None. ``jobs`` counts the jobs sent
    or run, ``filtered`` the (record, trigger) pairs the filter or ``changed=`` dropped.
    """

    failed: str | None
    jobs: int = 0
    filtered: int = 0

    def response(self) -> dict[str, list[dict[str, str]]]:
        """The partial batch response Lambda expects (``ReportBatchItemFailures``)."""
        items = [] if self.failed is None else [{"itemIdentifier": self.failed}]
        return {"batchItemFailures": items}


def table_of(record: Mapping[str, Any]) -> str | None:
    """The table a stream record came from (``eventSourceARN``: ``...:table/NAME/stream/...``)."""
    arn = record.get("eventSourceARN")
    if not isinstance(arn, str) or ":table/" not in arn:
        return None
    return arn.split(":table/", 1)[1].split("/", 1)[0]


def serve_stream_records(
    app: App,
    records: Sequence[Mapping[str, Any]],
    *,
    table: str | None = None,
    deadline: float | None = None,
) -> StreamAnswer:
    """Serve one batch of DynamoDB stream records in order; stop at the first failure.

    ``table`` names the table when the records carry no ``eventSourceARN`` (a test's, the
    memory backend's). An enqueue trigger's jobs are sent once per record, before the next
    record is looked at, so a failed send stops the batch at the record it belongs to.

    ``deadline`` (``time.monotonic()``) bounds the inline jobs: one is started on a record
    after the first only if its timeout (or a second, without one) is left, else the batch
    stops there and the record comes first in the next invocation, with all its time. An
    inline job whose lease a crashed invocation still holds goes to the queue, with the
    same id, to run once the lease ends: the mapping's deliveries would run out before it.
    """
    from ._worker import OutcomeKind

    jobs = filtered = 0
    outbox = outbox_of(app.store)
    run: list[tuple[str, EventEnvelope]] = []  # consecutive outbox records, published together
    for position, record in enumerate(records):
        sequence = _sequence(record) or ""
        try:
            event = None if outbox is None else outbox.outbox_event(record)
        except Exception as exc:  # an unreadable outbox item: only this record fails
            _log.error(
                "stream record %s: an outbox item that cannot be read: %s",
                sequence,
                type(exc).__name__,
            )
            failed, sent = _publish_run(app, run)
            return StreamAnswer(failed or sequence, jobs + sent, filtered)
        if event is not None:  # the job table's outbox: published with its neighbours
            run.append((sequence, event))
            continue
        failed, sent = _publish_run(app, run)  # before this record: the batch stays in order
        jobs += sent
        if failed is not None:
            return StreamAnswer(failed, jobs, filtered)
        name = table or table_of(record)
        triggers = [] if name is None else app.triggers.of_table(name)
        outgoing: list[Envelope] = []
        for trigger in triggers:
            if not trigger.takes(record):
                filtered += 1
                continue
            envelope = app.triggers.envelope(trigger, record)
            if trigger.mode == "enqueue":
                outgoing.append(envelope)
                continue
            if position > 0 and not _time_for(app, trigger, deadline):
                _log.info(
                    "stream record %s: too little time left for %s; it comes first next time",
                    sequence,
                    trigger.task,
                )
                return StreamAnswer(sequence, jobs, filtered)
            try:
                outcome = app.worker().process(envelope, deadline=deadline)
            except Exception:  # the store is down: this record is tried again
                return StreamAnswer(sequence, jobs, filtered)
            jobs += 1
            if outcome.kind is OutcomeKind.RETRY and outcome.reason == Reason.ATTEMPT_IN_PROGRESS:
                try:  # one batch per shard is in flight: the lease is a dead invocation's
                    app.transport.send(envelope.with_delay(outcome.retry_after or 0.0))
                except TransportError:
                    return StreamAnswer(sequence, jobs, filtered)
                continue
            if outcome.kind in (OutcomeKind.RETRY, OutcomeKind.DEFERRED):
                return StreamAnswer(sequence, jobs, filtered)
        if outgoing:
            try:
                app.transport.send_many(outgoing)
            except TransportError:
                return StreamAnswer(sequence, jobs, filtered)
            jobs += len(outgoing)
    failed, sent = _publish_run(app, run)
    return StreamAnswer(failed, jobs + sent, filtered)


def _publish_run(app: App, run: list[tuple[str, EventEnvelope]]) -> tuple[str | None, int]:
    """Publish a run of outbox records' events in one call (the carrier batches them).

    Returns the sequence number of the first record whose event was not published (None if
    all were) and how many were before it. The run is emptied. Events after a refused one
    may have gone out too: they come again with it, and their subscribers still run once.
    """
    if not run:
        return None, 0
    events = [event for _, event in run]
    try:
        app.carrier.publish(events)
    except Exception as exc:  # the carrier is down, or refused some: they come again
        # A TransportError names the events it did not send; any other error, none of them.
        refused = set(exc.job_ids) if isinstance(exc, TransportError) else set[str]()
        first = next((i for i, (_, e) in enumerate(run) if e.id in refused), 0)
        sequence = run[first][0]
        _log.warning(
            "stream record %s: its outbox event was not published (%s); it comes again",
            sequence,
            type(exc).__name__,
        )
        run.clear()
        return sequence, first
    sent = len(run)
    run.clear()
    return None, sent


def _time_for(app: App, trigger: Trigger, deadline: float | None) -> bool:
    """Whether an inline job of ``trigger`` started now gets its whole timeout by ``deadline``."""
    if deadline is None:
        return True
    timeout = app.get(trigger.task).contract.timeout
    return deadline - time.monotonic() >= (_UNTIMED_BUDGET if timeout is None else timeout)


def _union(criteria: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The filters of several ``FilterCriteria``, in order, duplicates dropped."""
    filters: list[dict[str, Any]] = []
    for one in criteria:
        for found in one["Filters"]:
            if found not in filters:
                filters.append(found)
    return filters


def _sequence(record: Mapping[str, Any]) -> str | None:
    """The record's ``dynamodb.SequenceNumber`` (what a partial batch response names)."""
    stream: Any = record.get("dynamodb")
    if not isinstance(stream, Mapping):
        return None
    value: object = typing.cast("Mapping[str, object]", stream).get("SequenceNumber")
    return value if isinstance(value, str) else None


def _install_change_hook(converter: Converter) -> None:
    """Teach the converter ``Change[Item]``: images decoded from DynamoDB attribute values."""
    if getattr(converter, "_taskhop_changes", False):
        return
    setattr(converter, "_taskhop_changes", True)  # noqa: B010 -- a marker cattrs knows nothing of

    def is_change(tp: Any) -> bool:
        return typing.get_origin(tp) is Change

    def factory(tp: Any) -> Callable[[Any, Any], Any]:
        (item,) = typing.get_args(tp)

        def hook(data: Any, _: Any) -> Change[Any]:
            if not isinstance(data, Mapping):
                raise TypeError(f"a change must be an object, got {type(data).__name__}")
            return structure_change(
                converter, typing.cast("Mapping[str, Any]", data), item, task="change"
            )

        return hook

    converter.register_structure_hook_factory(is_change, factory)
