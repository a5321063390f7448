"""Lambda's DynamoDB Streams event source mapping, emulated: table triggers run locally.

``LocalStreamPoller`` is to a table's stream what ``LocalEventSourceMapping`` is to a queue.
It lists the stream's shards (DescribeStream), reads each from TRIM_HORIZON (or LATEST) with
one iterator per shard (GetRecords), shapes records as Lambda does (``eventSource``,
``eventSourceARN``, ``ApproximateCreationDateTime`` in epoch seconds, binary as base64
text), drops the records no pattern of the filter criteria matches (they pass the
checkpoint, as on AWS: nothing invokes for them), and calls the handler with
``{"Records": [...]}``. A closed shard's children are read once it is read to its end.

The checkpoint follows the partial batch response: a ``batchItemFailures`` entry naming
sequence number S moves the shard's checkpoint to just before S (an iterator opened
AT_SEQUENCE_NUMBER S), so the records before S never come again and S onwards come on the
next poll; no failure moves it past the batch; a handler that raises, or names a record not
in the batch, gets the whole batch again. After ``max_retries`` failed deliveries starting
at the same record, that record (the whole batch, when the handler raised) goes to the
on-failure destination and the shard moves past it, as with the mapping's
``MaximumRetryAttempts`` and ``DestinationConfig.OnFailure``.

What moto 5 (checked on 5.2) gives and does not: one shard per table that never closes, the
record ids, sequence numbers, images and ``ApproximateCreationDateTime``; iterators
TRIM_HORIZON, AT_ and AFTER_SEQUENCE_NUMBER work. It never expires items by TTL, so no
record carries the ``userIdentity`` of a TTL removal; and it writes a MODIFY record even
for a put that changes nothing (DynamoDB writes none). It keeps numbers as written
(``"10.0"``, ``"1e3"``) where DynamoDB stores them canonical (``"10"``, ``"1000"``), so the
poller rewrites them as AWS's stream carries them: a filter ``F.total == 10`` and an ``int``
field see on dev what they see on AWS.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, cast

from taskhop.sdk import App, matches
from taskhop.static_contracts.limits import STREAM_MAPPING_RETRIES

from ._local import LocalContext

__all__ = ["LocalStreamPoller", "canonical_numbers", "table_criteria"]

_log = logging.getLogger("taskhop.local")


def table_criteria(app: App, table: str) -> dict[str, Any]:
    """The mapping's ``FilterCriteria`` for ``table``: its triggers' filters, each once."""
    return app.triggers.mapping_criteria(table)


class LocalStreamPoller:
    """Poll one DynamoDB stream and feed batches to ``handler`` as Lambda would.

    Args:
        handler: the Lambda handler (``make_handler(app)``).
        stream_arn: the table's ``LatestStreamArn``.
        streams_client: a boto3 ``dynamodbstreams`` client.
        batch_size: records per GetRecords, so at most per invocation (Lambda: 1-10000).
        criteria: the mapping's ``FilterCriteria`` (``table_criteria(app, name)``); None
            delivers every record.
        max_retries: failed deliveries from one record before it is discarded (the mapping's
            ``MaximumRetryAttempts``; taskhop deploys ``STREAM_MAPPING_RETRIES``).
        on_failure: called with each discarded batch's description (the on-failure
            destination); every one is also kept in ``discarded``.
        function_timeout: the remaining time each invocation's context starts with.
        starting_position: where a shard seen for the first time is read from: its oldest
            record (``TRIM_HORIZON``) or only what is written from now on (``LATEST``), as
            the mapping's ``StartingPosition``.

    """

    def __init__(
        self,
        handler: Callable[[dict[str, Any], Any], Any],
        stream_arn: str,
        streams_client: Any,
        *,
        batch_size: int = 100,
        criteria: Mapping[str, Any] | None = None,
        max_retries: int = STREAM_MAPPING_RETRIES,
        on_failure: Callable[[dict[str, Any]], None] | None = None,
        function_timeout: float = 30.0,
        starting_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON",
    ) -> None:
        if not 1 <= batch_size <= 1000:  # GetRecords returns 1000 at most
            raise ValueError(f"batch_size: 1..1000, got {batch_size}")
        if max_retries < 0:
            raise ValueError(f"max_retries: 0 or more, got {max_retries}")
        if starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError(f"starting_position: TRIM_HORIZON or LATEST, got {starting_position}")
        self.handler = handler
        self.stream_arn = stream_arn
        self.client = streams_client
        self.batch_size = batch_size
        self.criteria = criteria
        self.max_retries = max_retries
        self.on_failure = on_failure
        self.function_timeout = function_timeout
        self.starting_position = starting_position
        self.region = stream_arn.split(":")[3]
        self.invocations = 0
        self.records = 0
        """Records read from the stream, those the filter dropped too."""
        self.discarded: list[dict[str, Any]] = []
        self._iterators: dict[str, str] = {}  # open shard -> where its next read starts
        self._closed: set[str] = set()
        self._parents: dict[str, str | None] = {}
        self._failures: dict[str, tuple[str, int]] = {}  # shard -> (first record, deliveries)
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop after the batch in flight."""
        self._stop.set()

    def open(self) -> None:
        """Open each shard's iterator now, so LATEST means from here, not from the first poll."""
        if not self._iterators:
            self._discover()

    @property
    def retrying(self) -> bool:
        """Whether a shard waits on a failed record (its next poll delivers it again)."""
        return bool(self._failures)

    def run(self, *, idle_exit: float | None = None, interval: float = 0.25) -> None:
        """Poll until ``stop()`` (or ``idle_exit`` seconds with nothing to read)."""
        idle_since = time.monotonic()
        failures = 0
        while not self._stop.is_set():
            try:
                got = self.poll_once()
            except Exception:  # the stream unreachable: try again, as the mapping does
                failures += 1
                _log.exception("stream polling failed; trying again (%d in a row)", failures)
                self._stop.wait(min(20.0, 0.5 * 2 ** min(failures, 6)))
                continue
            failures = 0
            if got:
                idle_since = time.monotonic()
                continue
            if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                return
            self._stop.wait(interval)

    def poll_once(self) -> int:
        """Read one batch from each open shard and deliver it; return how many records read."""
        if not self._iterators:
            self._discover()
        read = 0
        for shard in list(self._iterators):
            if self._parents.get(shard) in self._iterators:
                continue  # a child waits until its parent is read to its end, as Lambda does
            read += self._poll_shard(shard)
        return read

    # -- one shard --------------------------------------------------------------------------

    def _discover(self) -> None:
        """Open an iterator for each shard not seen yet (a child of a known shard: its start)."""
        answer = self.client.describe_stream(StreamArn=self.stream_arn)
        for shard in answer["StreamDescription"].get("Shards", []):
            shard_id = shard["ShardId"]
            if shard_id in self._iterators or shard_id in self._closed:
                continue
            parent = self._parents[shard_id] = shard.get("ParentShardId")
            known = parent in self._closed or parent in self._iterators
            start = "TRIM_HORIZON" if known else self.starting_position
            self._iterators[shard_id] = self._iterator(shard_id, start)

    def _iterator(self, shard: str, kind: str, sequence: str | None = None) -> str:
        extra = {} if sequence is None else {"SequenceNumber": sequence}
        answer = self.client.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=shard, ShardIteratorType=kind, **extra
        )
        return str(answer["ShardIterator"])

    def _poll_shard(self, shard: str) -> int:
        answer = self.client.get_records(
            ShardIterator=self._iterators[shard], Limit=self.batch_size
        )
        records = [self._record(r) for r in answer.get("Records", [])]
        self.records += len(records)
        following = answer.get("NextShardIterator")
        batch = [r for r in records if self.criteria is None or matches(self.criteria, r)]
        failed = self._deliver(batch) if batch else None
        if failed is None:
            self._failures.pop(shard, None)
            if following is None:  # the shard is closed and read to its end: look for children
                del self._iterators[shard]
                self._closed.add(shard)
                self._discover()
            else:
                self._iterators[shard] = str(following)
            return len(records)
        self._retry(shard, batch, failed)
        return len(records)

    def _deliver(self, batch: list[dict[str, Any]]) -> slice | None:
        """Invoke the handler; the records that failed (all of them when it raised), or None."""
        self.invocations += 1
        try:
            answer = self.handler({"Records": batch}, LocalContext(timeout=self.function_timeout))
        except Exception:  # the function failed: Lambda retries the whole batch
            _log.exception("the stream handler raised; the batch is delivered again")
            return slice(0, len(batch))
        response: dict[str, Any] = answer or {}
        reported: list[dict[str, Any]] = response.get("batchItemFailures") or []
        if not reported:
            return None
        positions = {r["dynamodb"]["SequenceNumber"]: i for i, r in enumerate(batch)}
        named = [positions.get(f.get("itemIdentifier")) for f in reported]
        if None in named:  # Lambda: an identifier not in the batch fails the whole batch
            return slice(0, len(batch))
        first = min(i for i in named if i is not None)
        return slice(first, first + 1)

    def _retry(self, shard: str, batch: list[dict[str, Any]], failed: slice) -> None:
        """Re-open the shard at the failed record, or discard the failed ones past their retries."""
        gone = batch[failed]
        first = gone[0]["dynamodb"]["SequenceNumber"]
        seen, deliveries = self._failures.get(shard, (first, 0))
        deliveries = deliveries + 1 if seen == first else 1
        if deliveries <= self.max_retries:
            self._failures[shard] = (first, deliveries)
            self._iterators[shard] = self._iterator(shard, "AT_SEQUENCE_NUMBER", first)
            return
        self._failures.pop(shard, None)
        last = gone[-1]["dynamodb"]["SequenceNumber"]
        self._discard(shard, gone, deliveries)
        self._iterators[shard] = self._iterator(shard, "AFTER_SEQUENCE_NUMBER", last)

    def _discard(self, shard: str, records: list[dict[str, Any]], deliveries: int) -> None:
        """Hand the records to the on-failure destination, described as AWS describes them."""
        start = str(records[0]["dynamodb"]["SequenceNumber"])
        end = str(records[-1]["dynamodb"]["SequenceNumber"])
        info: dict[str, Any] = {
            "requestContext": {
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": deliveries,
            },
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": start,
                "endSequenceNumber": end,
                "batchSize": len(records),
                "streamArn": self.stream_arn,
            },
            "records": records,  # not in AWS's message (it names the range): local only
        }
        _log.warning(
            "stream records %s..%s of shard %s discarded after %d deliveries",
            start, end, shard, deliveries,
        )  # fmt: skip
        self.discarded.append(info)
        if self.on_failure is not None:
            self.on_failure(info)

    def _record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One GetRecords record shaped like Lambda's DynamoDB event record."""
        shaped: dict[str, Any] = _as_event_json(record)
        stream = shaped.get("dynamodb")
        if isinstance(stream, dict):
            for part in ("Keys", "NewImage", "OldImage"):
                attributes = cast("dict[str, Any]", stream).get(part)
                if isinstance(attributes, dict):
                    items = cast("dict[str, Any]", attributes)
                    stream[part] = {k: canonical_numbers(v) for k, v in items.items()}
        shaped["eventSource"] = "aws:dynamodb"
        shaped["eventSourceARN"] = self.stream_arn
        shaped.setdefault("awsRegion", self.region)
        return shaped


def canonical_numbers(value: Any) -> Any:
    """An attribute value with its numbers as DynamoDB stores them (``N``, ``NS``, nested too).

    ``"10.0"`` is ``"10"``, ``"1e3"`` ``"1000"``, ``"0010"`` ``"10"``, ``"-0"`` ``"0"``.
    """
    if not isinstance(value, Mapping):
        return value
    tagged = cast("Mapping[str, Any]", value)
    if len(tagged) != 1:
        return tagged
    [(tag, inner)] = tagged.items()
    if tag == "N":
        return {"N": _canonical(inner)}
    if tag == "NS" and isinstance(inner, list):
        members: list[Any] = inner  # pyright: ignore[reportUnknownVariableType]
        return {"NS": list(dict.fromkeys(_canonical(v) for v in members))}
    if tag == "M" and isinstance(inner, Mapping):
        fields = cast("Mapping[str, Any]", inner)
        return {"M": {k: canonical_numbers(v) for k, v in fields.items()}}
    if tag == "L" and isinstance(inner, list):
        elements: list[Any] = inner  # pyright: ignore[reportUnknownVariableType]
        return {"L": [canonical_numbers(v) for v in elements]}
    return tagged


def _canonical(text: Any) -> Any:
    """One number's canonical text: no exponent, no leading or trailing zeros.

    The SDK's filters compile numbers the same way; what is not a finite number is left as
    it is, for the decoder to refuse.
    """
    if not isinstance(text, str):
        return text
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    if not number.is_finite():
        return text
    return format(number.normalize(), "f") if number else "0"


def _as_event_json(value: Any) -> Any:
    """boto3's parsed values as Lambda's JSON has them: bytes base64, times epoch seconds."""
    if isinstance(value, Mapping):
        items = cast("Mapping[str, Any]", value)
        return {k: _as_event_json(v) for k, v in items.items()}
    if isinstance(value, list):
        elements: list[Any] = value  # pyright: ignore[reportUnknownVariableType]
        return [_as_event_json(v) for v in elements]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return value.timestamp()
    return value
