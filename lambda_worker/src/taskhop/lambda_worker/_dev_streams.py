"""``taskhop dev``'s streams: table triggers and the outbox, polled on threads.

Streams, as the deployed stack's stream mappings (``_infra``: batches of 100, 10 retries,
partial batch responses) but polled here (``LocalStreamPoller``), one daemon thread each:

- every table the app's triggers watch, with ``table_criteria``. A table that does not exist
  yet is looked for every second (the app or a script may make it later), and one deleted or
  given a new stream is followed to it. A table of the server started here that has no
  stream gets one (NEW_AND_OLD_IMAGES, what triggers read), since it is a throwaway: a line
  says so, and that on AWS the table needs it. On an endpoint of your own, dev changes none of
  your tables: a line says the triggers cannot run and how to turn the stream on, and dev
  waits for it.
- the job table, when the app registers an event: its stream (new images) is turned on after
  the app is imported, and its outbox items (``app.outbox``, and a job's events in outbox
  mode) are published from it. Only then: a stream gives every job write a record to keep.

Where a stream is read from: a stream that existed before the app was imported (a table on
an endpoint of your own, or one kept by moto in this process) from LATEST, since an earlier
run served what it holds; one made since (the job table's, a table the app or you create, a
stream dev turned on) from its oldest record. The restored job table items are written
before its stream exists, so no outbox item is published twice and no restored job record is
a change to anyone. When the stack stops, each stream is read to its end (for up to 5 s,
stopping at a record that fails) before the state is saved, so what a trigger enqueues is
saved with the queue; a change written after that, as the stack saves, is saved (the job
table) but not served, and a restart reads nothing from before it. Tables of your own on the
server started here are not saved: they stop with it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ._dev import DevStack

__all__ = ["StreamWatch", "app_streams", "stream_arns"]

_log = logging.getLogger("taskhop.dev")


_TRIGGER_VIEWS = ("NEW_AND_OLD_IMAGES",)
_OUTBOX_VIEWS = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
_WAIT = 1.0  # seconds between looks for a table or stream not there yet
_RECHECK = 2.0  # seconds of quiet after which a polled table is looked at again
_DRAIN = 5.0  # seconds a stop gives the streams to serve what was written before it


def stream_arns(dynamodb: Any) -> set[str]:
    """Every table's current stream: what dev reads of these from now on only (LATEST)."""
    arns: set[str] = set()
    for page in dynamodb.get_paginator("list_tables").paginate():
        for name in page.get("TableNames", []):
            try:
                arn = dynamodb.describe_table(TableName=name)["Table"].get("LatestStreamArn")
            except Exception:  # deleted since it was listed
                continue
            if arn:
                arns.add(str(arn))
    return arns


def app_streams(
    app: Any, stack: DevStack, handler: Any, old_streams: set[str], *, local: bool
) -> list[StreamWatch]:
    """One watch per table the app's triggers read, and the job table's for the outbox."""
    import boto3

    from ._infra import OUTBOX_FILTER
    from ._stream_poller import table_criteria

    factory: Any = boto3
    clients = (factory.client("dynamodb"), factory.client("dynamodbstreams"))
    watches: dict[str, StreamWatch] = {}
    for name in sorted({t.table.name for t in app.triggers.all.values()}):
        tasks = ", ".join(t.task for t in app.triggers.of_table(name))
        watches[name] = StreamWatch(name, handler, clients, old_streams)
        watches[name].serve(f"triggers {tasks}", table_criteria(app, name), _TRIGGER_VIEWS)
        watches[name].may_enable = local
    if app.events.registered and getattr(app.store, "table", None) == stack.table:
        watch = watches.get(stack.table) or StreamWatch(stack.table, handler, clients, old_streams)
        outbox = {"Filters": [{"Pattern": json.dumps(OUTBOX_FILTER)}]}
        watch.serve("the outbox", outbox, _OUTBOX_VIEWS)
        watch.may_enable = watch.own = True  # the stack's own table: no note needed
        watches[stack.table] = watch
    return list(watches.values())


class StreamWatch:
    """One table's stream, polled on a daemon thread once the table and its stream exist.

    A table not there yet is looked for every second; one deleted, or whose stream is
    replaced, is followed to its new stream. ``may_enable`` turns a missing stream on (a
    table of the moto server started here); otherwise a line says how, and it waits.
    """

    def __init__(
        self, table: str, handler: Any, clients: tuple[Any, Any], old_streams: set[str]
    ) -> None:
        self.table = table
        self.handler = handler
        self.dynamodb, self.streams = clients
        self.old_streams = old_streams
        self.may_enable = False
        self.own = False
        self.criteria: dict[str, Any] = {"Filters": []}
        self.views: tuple[str, ...] = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")  # narrowed by serve
        self.purposes: list[str] = []
        self.pollers: list[Any] = []  # one per stream followed, the current one last
        self._stop = threading.Event()
        self._last_read = time.monotonic()
        self._thread = threading.Thread(
            target=self._follow, name=f"taskhop-dev-stream-{table}", daemon=True
        )

    def serve(self, purpose: str, criteria: dict[str, Any], views: tuple[str, ...]) -> None:
        """Deliver the records ``criteria`` takes too, from a stream of one of ``views``."""
        self.purposes.append(purpose)
        self.criteria["Filters"] += criteria["Filters"]
        self.views = tuple(v for v in self.views if v in views)

    @property
    def purpose(self) -> str:
        return " and ".join(self.purposes)

    @property
    def invocations(self) -> int:
        return sum(int(p.invocations) for p in self.pollers)

    @property
    def records(self) -> int:
        return sum(int(p.records) for p in self.pollers)

    def idle_for(self) -> float:
        """Seconds since a record was last read (or since the watch began)."""
        return time.monotonic() - self._last_read

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        """Wait for the batch in flight, then serve what the stream still holds (``_DRAIN``)."""
        if self._thread.ident is not None:  # started
            self._thread.join()
        if not self.pollers:
            return
        poller = self.pollers[-1]
        ends = time.monotonic() + _DRAIN
        try:
            while time.monotonic() < ends and poller.poll_once() and not poller.retrying:
                pass
        except Exception as exc:  # the stack is stopping: what is left is said, not retried
            print(f"taskhop dev: stream of {self.table} not drained ({exc!r})", file=sys.stderr)

    # -- the thread ---------------------------------------------------------------------------

    def _follow(self) -> None:
        from ._infra import STREAM_BATCH, STREAM_RETRIES
        from ._stream_poller import LocalStreamPoller

        while not self._stop.is_set():
            arn = self._wait_for_stream()
            if arn is None:
                return
            start: Literal["LATEST", "TRIM_HORIZON"] = (
                "LATEST" if arn in self.old_streams else "TRIM_HORIZON"
            )
            poller = LocalStreamPoller(
                self.handler, arn, self.streams, batch_size=STREAM_BATCH,
                criteria=self.criteria, max_retries=STREAM_RETRIES, starting_position=start,
            )  # fmt: skip
            try:
                poller.open()  # where LATEST starts: before the line saying it polls
            except Exception:  # the endpoint is unreachable: the polls open it later
                _log.warning("stream of %s: could not list its shards yet", self.table)
            self.pollers.append(poller)
            count = len(self.criteria["Filters"])
            where = "new records only" if start == "LATEST" else "its oldest record on"
            print(
                f"taskhop dev: polling the stream of table {self.table} for {self.purpose}"
                f" ({count} filter{'s' * (count != 1)}, {where})",
                file=sys.stderr,
                flush=True,
            )
            self._poll(poller, arn)

    def _poll(self, poller: Any, arn: str) -> None:
        """Poll until stopped, or until the table no longer has this stream."""
        failures = 0
        looked = time.monotonic()
        while not self._stop.is_set():
            try:
                got = poller.poll_once()
            except Exception:  # the endpoint is unreachable: try again, as the mapping does
                failures += 1
                _log.exception("stream of %s: polling failed (%d in a row)", self.table, failures)
                self._stop.wait(min(20.0, 0.5 * 2 ** min(failures, 6)))
                continue
            failures = 0
            if got:
                self._last_read = looked = time.monotonic()
                if not poller.retrying:
                    continue  # more may be waiting; a failed record waits a little
            elif time.monotonic() - looked > _RECHECK:
                looked = time.monotonic()
                if self._current_stream() != arn:
                    print(
                        f"taskhop dev: table {self.table} was deleted or its stream replaced:"
                        " following the new one",
                        file=sys.stderr,
                        flush=True,
                    )
                    return
            self._stop.wait(0.25)

    def _current_stream(self) -> str | None:
        try:
            table = self.dynamodb.describe_table(TableName=self.table)["Table"]
        except Exception:  # gone: followed once it is back
            return None
        spec: dict[str, Any] = table.get("StreamSpecification") or {}
        arn = table.get("LatestStreamArn")
        return str(arn) if arn and spec.get("StreamEnabled") else None

    def _wait_for_stream(self) -> str | None:
        """The table's stream ARN once there is one (turned on here if it may), or None."""
        said: set[str] = set()

        def say(kind: str, line: str) -> None:
            if kind not in said:
                said.add(kind)
                print(f"taskhop dev: {line}", file=sys.stderr, flush=True)

        while not self._stop.is_set():
            try:
                table = self.dynamodb.describe_table(TableName=self.table)["Table"]
            except Exception as exc:
                if "ResourceNotFound" in repr(exc):
                    say("missing", f"table {self.table} does not exist yet: waiting for it"
                        f" ({self.purpose})")  # fmt: skip
                else:  # the endpoint is unreachable: said once, then tried every second
                    say("unreachable", f"cannot describe table {self.table} ({exc!r})")
                self._stop.wait(_WAIT)
                continue
            spec: dict[str, Any] = table.get("StreamSpecification") or {}
            arn = table.get("LatestStreamArn")
            if arn and spec.get("StreamEnabled"):
                view = spec.get("StreamViewType")
                if view not in self.views:
                    say("view", f"the stream of table {self.table} is {view}; {self.purpose}:"
                        f" {' or '.join(self.views)} needed, images will be missing")  # fmt: skip
                return str(arn)
            wanted = self.views[0]
            if self.may_enable:
                try:
                    self.dynamodb.update_table(
                        TableName=self.table,
                        StreamSpecification={"StreamEnabled": True, "StreamViewType": wanted},
                    )
                except Exception as exc:  # being made or changed (LocalStack): looked at again
                    _log.warning("could not turn on the stream of %s: %r", self.table, exc)
                    self._stop.wait(_WAIT)
                    continue
                if not self.own:
                    say("enabled", f"table {self.table} had no stream: turned it on here"
                        f" ({wanted}); earlier changes are not on it. On AWS its stream must be"
                        f" on ({wanted}) for {self.purpose} to run")  # fmt: skip
                continue
            say("no stream", f"table {self.table} has no stream, so {self.purpose} cannot run:"
                f" turn it on (StreamSpecification StreamEnabled=true, StreamViewType={wanted});"
                " waiting for it")  # fmt: skip
            self._stop.wait(_WAIT)
        return None
