"""The DynamoDB job store: job state, results and idempotency keys in one table.

Single-table schema (``create_table`` makes it; the infra templates make the same)::

    pk (S, partition key)   "job#<job id>" | "key#<idempotency key>"
    job items               task, status, attempt, result (JSON text) or result_ref (s3://),
                            error (JSON text), idem, dup, dl (dead-letter reason), lease,
                            created, updated, expires_at; after a restart: rs (the current
                            restart token), rbase (N, the attempt it restarted after), rh
                            (the history, JSON text: earlier ends, oldest first); with a
                            failed or rejected end: env (the envelope, JSON text) or env_ref
                            (s3://, when offloaded) or env_note (why none was kept)
    key items               holder, state (in_progress | completed), result, lease,
                            fingerprint (the holder's input digest; absent if none), expires_at
    "wf#<workflow id>"      doc (the workflow document, compact JSON text), rev (N), created,
                            updated, expires_at (``retention`` after the last write); while
                            running with a due time: wf_open ("open#0".."open#7", a shard
                            of the id) and wf_due (N), the keys of the sparse GSI
                            ``open-workflows`` (KEYS_ONLY), so it holds only open workflows
    "outbox#<event id>"     event (the event envelope, JSON text), expires_at: an event to
                            publish, put by the caller in the transaction of its own write
                            (``outbox_item``) and published from the table's stream
    expires_at (N)          DynamoDB TTL attribute: records vanish ``retention`` after their end

``DynamoStore`` supplies ``BaseJobStore``'s primitives: each guard (``may_begin``,
``may_complete``, ``may_restart``, the key guards) is the ``ConditionExpression`` of one
``UpdateItem`` or ``DeleteItem``, so every status change stays one atomic conditional write. A
failed condition returns the item as it is (``ReturnValuesOnConditionCheckFailure=ALL_OLD``),
so deciding "finished or busy" costs no extra read. Values are stored as JSON text rather than
DynamoDB maps: JSON round-trips exactly (no Decimal, no empty-set rules) and producers in
other languages can read it.

AWS requests per job on the happy path: 2 writes (begin, complete), plus 2 with an
idempotency key (claim, complete key), plus the producer's reads while it waits for a result.
Per workflow call: create 1 PutItem, load 1 GetItem, save 1 conditional PutItem, and
``due_workflows`` 1 Query per shard per page of the index.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from botocore.config import Config
from botocore.exceptions import ClientError
from taskhop.sdk import (
    FINAL_STATUSES,
    MAX_RESTARTS,
    BaseJobStore,
    ErrorInfo,
    JobRecord,
    JobStatus,
    KeyClaim,
    RestartEntry,
    ResultTooLarge,
    StoredWorkflow,
    StoreError,
    key_digest,
)
from taskhop.static_contracts import (
    Duration,
    EnvelopeError,
    EventEnvelope,
    JsonValue,
    PayloadStore,
    TransportError,
    dumps,
    parse_duration,
)
from taskhop.static_contracts.limits import (
    DYNAMODB_MAX_ITEM_BYTES,
    DYNAMODB_MAX_TRANSACT_BYTES,
    DYNAMODB_MAX_TRANSACT_ITEMS,
)

from ._aws import aws_errors, error_code, make_client

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

__all__ = ["DynamoStore"]

_log = logging.getLogger("taskhop.dynamodb")

RESULT_LIMIT = 350 * 1024
"""Results larger than this go to S3: the rest of the item needs headroom under the item limit."""
_BATCH_GET = 100
"""BatchGetItem reads at most 100 keys per request."""
WORKFLOW_DOC_LIMIT = DYNAMODB_MAX_ITEM_BYTES - 2 * 1024
"""A workflow document's JSON may use this many bytes: the other attributes need the rest."""
OPEN_WORKFLOWS_INDEX = "open-workflows"
"""The sparse GSI of open workflows by due time (wf_open, wf_due), for the sweeper."""
OPEN_SHARDS = 8
"""Open workflows spread over this many index partitions, so no one partition runs hot."""
_FINAL = tuple(sorted(status.value for status in FINAL_STATUSES))


class DynamoStore(BaseJobStore):
    """A ``JobStore`` on one DynamoDB table (``wait`` polls with strongly consistent reads).

    Args:
        table: the table name.
        client: a boto3 DynamoDB client to use as is (tests, custom endpoints).
        session: a boto3 session to make the client from (otherwise the environment's).
        config: botocore config merged over taskhop's default (standard retries, 8 tries).
        retention: how long finished jobs and idempotency keys are kept (DynamoDB TTL).
        payloads: where results over ``result_limit`` bytes go (``S3Payloads(bucket)``): the
            same ``PayloadStore`` seam that carries large inputs, so one mechanism offloads
            both; without it such results are refused.
        result_limit: results above this many bytes of JSON are offloaded to ``payloads``.

    """

    def __init__(
        self,
        table: str,
        *,
        client: Any | None = None,
        session: Any | None = None,
        config: Config | None = None,
        retention: Duration = "7d",
        payloads: PayloadStore | None = None,
        result_limit: int = RESULT_LIMIT,
    ) -> None:
        self.table = table
        with aws_errors(StoreError, f"DynamoDB table {table}"):
            self.client: DynamoDBClient = make_client(
                "dynamodb", client=client, session=session, config=config
            )
        self.retention = parse_duration(retention, field="retention")
        self.payloads = payloads
        self.result_limit = result_limit

    def __repr__(self) -> str:
        return f"DynamoStore({self.table!r})"

    # -- setup ------------------------------------------------------------------------------

    def create_table(self, *, wait: bool = True, stream: bool = False) -> None:
        """Create the table (on-demand capacity) and turn TTL on; no-op if it exists.

        A table made before workflows gets the ``open-workflows`` index added. ``stream``
        turns on its stream (new images), which the outbox is published from.
        """
        attributes: list[Any] = [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "wf_open", "AttributeType": "S"},
            {"AttributeName": "wf_due", "AttributeType": "N"},
        ]
        index: Any = {
            "IndexName": OPEN_WORKFLOWS_INDEX,
            "KeySchema": [
                {"AttributeName": "wf_open", "KeyType": "HASH"},
                {"AttributeName": "wf_due", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
        with aws_errors(StoreError, f"create table {self.table}"):
            try:
                self.client.create_table(
                    TableName=self.table,
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=attributes,
                    GlobalSecondaryIndexes=[index],
                    BillingMode="PAY_PER_REQUEST",
                    **({"StreamSpecification": _NEW_IMAGES} if stream else {}),
                )
            except ClientError as exc:
                if error_code(exc) != "ResourceInUseException":
                    raise
                described = self.client.describe_table(TableName=self.table)["Table"]
                if stream:
                    self._ensure_stream(described)
                names = {i.get("IndexName") for i in described.get("GlobalSecondaryIndexes", [])}
                if OPEN_WORKFLOWS_INDEX not in names:
                    self.client.update_table(
                        TableName=self.table,
                        AttributeDefinitions=attributes,
                        GlobalSecondaryIndexUpdates=[{"Create": index}],
                    )
            if wait:
                self.client.get_waiter("table_exists").wait(TableName=self.table)
            self.client.update_time_to_live(
                TableName=self.table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
            )

    def _ensure_stream(self, described: Any) -> None:
        """Turn on the stream of an existing table asked for one; refuse one without images."""
        spec: Any = described.get("StreamSpecification") or {}
        if not spec.get("StreamEnabled"):
            self.client.update_table(TableName=self.table, StreamSpecification=_NEW_IMAGES)
            return
        if spec.get("StreamViewType") not in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
            raise StoreError(
                f"table {self.table}'s stream shows {spec.get('StreamViewType')}: the outbox"
                " needs new images (NEW_IMAGE or NEW_AND_OLD_IMAGES)",
                retryable=False,
            )

    # -- the outbox ---------------------------------------------------------------------------

    def outbox_item(self, event: EventEnvelope) -> dict[str, Any]:
        """A ``TransactWriteItems`` entry that puts ``event`` in this table's outbox.

        Put it in the same transaction as your own write: the event exists if, and only if,
        the write committed, and the table's stream publishes it (``outbox_event``). The same
        event put twice is one event: its id keys the item, and subscribers run it once.

        Raises:
            StoreError: the event is too large for an item (offload its payload first).

        """
        body = event.encode().decode()
        if len(body) + 200 > DYNAMODB_MAX_ITEM_BYTES:
            raise StoreError(
                f"event {event.id}: {len(body)} bytes, over what a DynamoDB item holds"
                f" ({DYNAMODB_MAX_ITEM_BYTES}); keep outbox events small"
            )
        item = {
            **_key("outbox", event.id),
            "event": {"S": body},
            "expires_at": _n(time.time() + self.retention),
        }
        return {"Put": {"TableName": self.table, "Item": item}}

    def outbox_event(self, record: Any) -> EventEnvelope | None:
        """The event a stream record of this table's outbox carries, or None for any other.

        Inserts and overwrites publish; a removal (the TTL's) publishes nothing.

        Raises:
            StoreError: an outbox record without its new image (the stream's view is not
                NEW_IMAGE or NEW_AND_OLD_IMAGES): never read past as if it were no event.
            EnvelopeError: the item's event is not one this version can read.

        """
        if not isinstance(record, dict):
            return None
        fields: dict[str, Any] = cast("dict[str, Any]", record)
        arn = fields.get("eventSourceARN")
        if not isinstance(arn, str) or f":table/{self.table}/stream/" not in arn:
            return None
        if fields.get("eventName") not in ("INSERT", "MODIFY"):
            return None
        stream: Any = fields.get("dynamodb") or {}
        keys: Any = stream.get("Keys") or {}
        key = str(keys.get("pk", {}).get("S", ""))  # the keys are in every view
        if not key.startswith("outbox#"):
            return None
        image: Any = stream.get("NewImage") or {}
        body: object = image.get("event", {}).get("S")
        if not isinstance(body, str):
            raise StoreError(
                f"stream record of {key} has no new image with its event: the table's stream"
                " must show new images (NEW_IMAGE or NEW_AND_OLD_IMAGES)",
                retryable=False,
            )
        return EventEnvelope.decode(body)

    def outbox_events(self, since: datetime | None = None) -> Iterator[EventEnvelope]:
        """The events the outbox holds, emitted at ``since`` or later (``republish_outbox``).

        Each stays until ``retention`` ends, so what the stream relay gave up on can be
        published again. A Scan of the whole table, paged: an operator's tool, not a hot path.
        """
        pages = self.client.get_paginator("scan").paginate(
            TableName=self.table,
            FilterExpression="begins_with(pk, :outbox)",
            ExpressionAttributeValues={":outbox": {"S": "outbox#"}},
            ProjectionExpression="pk, event",
        )
        with aws_errors(StoreError, f"read the outbox of table {self.table}"):
            for page in pages:
                items: list[dict[str, Any]] = cast("Any", page.get("Items", []))
                for item in items:
                    try:
                        event = EventEnvelope.decode(str(item["event"]["S"]))
                    except (KeyError, EnvelopeError) as exc:  # one bad item stops no other
                        _log.warning("outbox item %s cannot be read (%s): skipped",
                                     item["pk"]["S"], type(exc).__name__)  # fmt: skip
                        continue
                    if since is None or event.emitted_at >= since:
                        yield event

    # -- reads ------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, read with strong consistency."""
        with aws_errors(StoreError, f"get job {job_id} from table {self.table}"):
            answer = self.client.get_item(
                TableName=self.table, Key=_key("job", job_id), ConsistentRead=True
            )
        item = answer.get("Item")
        # Every job item we write has a status; one without is a key or a half-applied
        # update seen by a concurrent read (moto, in process), so there is no job yet.
        return None if item is None or "status" not in item else self._record(item)

    def get_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """Records for the ids that have one, 100 keys per BatchGetItem."""
        found: dict[str, JobRecord] = {}
        unique = list(dict.fromkeys(job_ids))
        for start in range(0, len(unique), _BATCH_GET):
            keys = [_key("job", i) for i in unique[start : start + _BATCH_GET]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(8):  # UnprocessedKeys: throttled part of a batch, try again
                with aws_errors(StoreError, f"batch get jobs from table {self.table}"):
                    answer = self.client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    if "status" in item:  # see get(): no status, no job yet
                        record = self._record(item)
                        found[record.id] = record
                request = dict(answer.get("UnprocessedKeys") or {})
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise StoreError("batch get jobs: keys still unprocessed after 8 tries")
        return found

    # -- job state: BaseJobStore's primitives ------------------------------------------------

    def _start_attempt(self, record: JobRecord, now: float) -> tuple[bool, JobRecord]:
        names = {"#s": "status", "#t": "task", "#a": "attempt", "#l": "lease", "#u": "updated",
                 "#c": "created", "#e": "expires_at"}  # fmt: skip
        lease = record.lease_until if record.lease_until is not None else now
        values = {
            ":t": {"S": record.task}, ":run": {"S": JobStatus.RUNNING.value},
            ":before": _n(record.attempt - 1), ":one": _n(1), ":l": _n(lease), ":now": _n(now),
            ":e": _n(lease + self.retention),
            ":q": {"S": JobStatus.QUEUED.value}, ":r": {"S": JobStatus.RETRYING.value},
            ":w": {"S": JobStatus.WAITING.value},
        }  # fmt: skip
        # BaseJobStore.next_attempt: one past the stored attempt, or the host's count if none.
        update = "SET #s = :run, #t = :t, #a = if_not_exists(#a, :before) + :one, #l = :l, "
        update += "#u = :now, #e = :e, #c = if_not_exists(#c, :now)"
        names.update({"#err": "error", "#res": "result", "#ref": "result_ref", "#dup": "dup"})
        remove = " REMOVE #err, #res, #ref, #dup"  # an earlier attempt's outcome is not ours
        if record.idempotency_key is not None:
            names["#i"] = "idem"
            values[":i"] = {"S": record.idempotency_key}
            update += ", #i = :i"
        update += remove
        # BaseJobStore.may_begin, evaluated server-side. A comparison with a missing attribute
        # is false in a condition expression, hence attribute_not_exists(#l) for "no lease".
        condition = "#s IN (:q, :r, :w) OR (#s = :run AND (attribute_not_exists(#l) OR #l <= :now))"
        if record.restart is not None:
            # Within the run this token started only; a new job stores it (if_not_exists:
            # an existing record's token is the one the condition matched).
            names["#rs"] = "rs"
            values[":rs"] = {"S": record.restart}
            update = update.replace(" REMOVE ", ", #rs = if_not_exists(#rs, :rs) REMOVE ")
            condition = f"({condition}) AND #rs = :rs"
        condition = f"attribute_not_exists(pk) OR ({condition})"
        stored, item = self._run_update(
            f"begin job {record.id}", record.id, update, condition, names, values
        )
        return stored, self._record(item)

    def _run_update(
        self,
        what: str,
        job_id: str,
        update: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
    ) -> tuple[bool, dict[str, Any]]:
        """One conditional UpdateItem of a job item, answering what happened.

        ``(True, the item as stored)`` or ``(False, the item that failed the condition)``,
        an empty item when there was none.
        """
        with aws_errors(StoreError, f"{what} in table {self.table}"):
            try:
                answer = self.client.update_item(
                    TableName=self.table, Key=_key("job", job_id), UpdateExpression=update,
                    ConditionExpression=condition, ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values, ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )  # fmt: skip
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                response: dict[str, Any] = dict(exc.response)
                return False, response.get("Item") or {}
        return True, answer["Attributes"]

    def _restart(self, seen: JobRecord, record: JobRecord, now: float) -> tuple[bool, JobRecord]:
        names = {"#s": "status", "#t": "task", "#a": "attempt", "#l": "lease", "#u": "updated",
                 "#e": "expires_at", "#rs": "rs", "#rb": "rbase", "#rh": "rh"}  # fmt: skip
        token = str(record.restart)
        lease = record.lease_until if record.lease_until is not None else now
        history = json.dumps([entry.to_dict() for entry in record.restarts])
        values = {
            ":t": {"S": record.task}, ":run": {"S": JobStatus.RUNNING.value},
            ":a": _n(record.attempt), ":l": _n(lease), ":now": _n(now),
            ":e": _n(lease + self.retention), ":rs": {"S": token},
            ":rb": _n(record.restart_base), ":rh": {"S": history},
            ":seen": _n(seen.attempt), ":seen_s": {"S": seen.status.value},
            ":ok": {"S": JobStatus.SUCCEEDED.value}, ":quoted": {"S": json.dumps(token)},
        }  # fmt: skip
        sets = "#s = :run, #t = :t, #a = :a, #l = :l, #u = :now, #e = :e, #rs = :rs, "
        sets += "#rb = :rb, #rh = :rh"
        if record.idempotency_key is not None:
            names["#i"] = "idem"
            values[":i"] = {"S": record.idempotency_key}
            sets += ", #i = :i"
        gone = ("error", "result", "result_ref", "dup", "dl", "env", "env_ref", "env_note")
        names.update({f"#{a}": a for a in gone})
        update = f"SET {sets} REMOVE " + ", ".join(f"#{a}" for a in gone)
        # BaseJobStore.may_restart, evaluated server-side, on the record as it was seen: the
        # same attempt and status (so two restarts from one sighting cannot both win), never
        # a success, no live lease, and a token the job never used (the history is JSON
        # text: its tokens appear quoted). The restart count is the seen record's, which the
        # attempt guard pins.
        condition = (
            "#a = :seen AND #s = :seen_s AND #s <> :ok"
            " AND (#s <> :run OR attribute_not_exists(#l) OR #l <= :now)"
            " AND (attribute_not_exists(#rs) OR #rs <> :rs)"
            " AND (attribute_not_exists(#rh) OR NOT contains(#rh, :quoted))"
        )
        if len(seen.restarts) >= MAX_RESTARTS:
            return False, seen
        stored, item = self._run_update(
            f"restart job {record.id}", record.id, update, condition, names, values
        )
        if not stored and "status" not in item:  # the item is gone: answer with what was seen
            return False, seen
        return stored, self._record(item)

    def load_envelope(self, record: JobRecord) -> bytes | None:
        """The envelope a failed or rejected end kept, read from ``payloads`` if offloaded."""
        if record.envelope is not None:
            return record.envelope.encode()
        if record.envelope_ref is None:
            return None
        ref = record.envelope_ref
        with _payload_errors(f"read offloaded envelope {ref}"):
            return self._payloads(ref).get(ref)

    def _create_queued(self, record: JobRecord) -> JobRecord | None:
        item = {
            **_key("job", record.id),
            "task": {"S": record.task},
            "status": {"S": JobStatus.QUEUED.value},
            "attempt": _n(record.attempt),
            "created": _n(record.created_at),
            "updated": _n(record.updated_at),
            "expires_at": _n(record.created_at + self.retention),
        }
        if record.idempotency_key is not None:
            item["idem"] = {"S": record.idempotency_key}
        with aws_errors(StoreError, f"accept job {record.id} in table {self.table}"):
            try:
                self.client.put_item(
                    TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )  # fmt: skip
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                return self._record(_old_item(exc))
        return None

    def outbox_entries(self, job_id: str, events: Sequence[EventEnvelope]) -> list[dict[str, Any]]:
        """The outbox entries of job ``job_id``'s completion (``complete_with_outbox``).

        Raises:
            ResultTooLarge: the events do not fit one transaction beside the job's record
                (100 actions, 4 MB) or one does not fit an item: the same run gives the
                same events, so the job fails rather than retries.

        """
        if len(events) + 1 > DYNAMODB_MAX_TRANSACT_ITEMS:
            raise ResultTooLarge(
                f"job {job_id} publishes {len(events)} events; its completion's transaction"
                f" holds {DYNAMODB_MAX_TRANSACT_ITEMS - 1} at most"
            )
        try:
            entries = [self.outbox_item(event) for event in events]
        except StoreError as exc:
            raise ResultTooLarge(f"job {job_id}: {exc}") from exc
        size = sum(len(entry["Put"]["Item"]["event"]["S"]) for entry in entries)
        if size + DYNAMODB_MAX_ITEM_BYTES > DYNAMODB_MAX_TRANSACT_BYTES:
            raise ResultTooLarge(
                f"job {job_id} publishes {size} bytes of events; with its record they do not"
                f" fit one transaction ({DYNAMODB_MAX_TRANSACT_BYTES} bytes)"
            )
        return entries

    def complete_with_outbox(self, record: JobRecord, entries: Sequence[dict[str, Any]]) -> bool:
        """``complete``, with the ``outbox_entries`` written by the same transaction.

        The events exist if, and only if, this outcome is the one recorded: a stale attempt,
        a lost race or a crash before the write leaves none, and the table's stream publishes
        each one that does (``outbox_event``).
        """
        if record.lease_until is not None:  # an outcome ends the attempt, and its lease
            record = replace(record, lease_until=None)
        return self._write_outcome(record, time.time(), entries)

    def complete_key_with_outbox(
        self,
        key: str,
        job_id: str,
        result: JsonValue,
        entries: Sequence[dict[str, Any]],
        *,
        attempt: int,
    ) -> None:
        """``complete_key``, with the ``outbox_entries`` written by the same transaction.

        For a job with an idempotency key, whose key is completed before its record: a crash
        between the two ends the job from the completed key, without running the handler
        again, so its events must already exist by then. The transaction also checks that
        ``attempt`` still owns the job (running, not superseded), so a stale attempt that
        finishes late writes neither the key nor its events.
        """
        owner = {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": _key("job", job_id),
                "ConditionExpression": "#s = :running AND #a = :a",
                "ExpressionAttributeNames": {"#s": "status", "#a": "attempt"},
                "ExpressionAttributeValues": {
                    ":running": {"S": JobStatus.RUNNING.value},
                    ":a": _n(attempt),
                },
            }
        }
        claim = KeyClaim("completed", job_id, result=result)
        self._complete_claim(key, claim, [owner, *entries])

    def _write_outcome(
        self, record: JobRecord, now: float, outbox: Sequence[dict[str, Any]] = ()
    ) -> bool:
        names = {"#s": "status", "#t": "task", "#a": "attempt", "#u": "updated", "#c": "created",
                 "#e": "expires_at", "#l": "lease"}  # fmt: skip
        values: dict[str, Any] = {
            ":s": {"S": record.status.value}, ":t": {"S": record.task}, ":a": _n(record.attempt),
            ":now": _n(now), ":e": _n(now + self.retention),
            **{f":f{i}": {"S": status} for i, status in enumerate(_FINAL)},
        }  # fmt: skip
        sets = [
            "#s = :s",
            "#t = :t",
            "#a = :a",
            "#u = :now",
            "#e = :e",
            "#c = if_not_exists(#c, :now)",
        ]
        outcome = self._outcome_attributes(record)
        for attr, value in outcome.items():
            names[f"#{attr}"] = attr
            values[f":{attr}"] = value
            sets.append(f"#{attr} = :{attr}")
        kinds = ("error", "result", "result_ref", "dup", "dl", "env", "env_ref", "env_note")
        stale = [a for a in kinds if a not in outcome]
        names.update({f"#{a}": a for a in stale})
        update = (
            "SET " + ", ".join(sets) + " REMOVE " + ", ".join(["#l"] + [f"#{a}" for a in stale])
        )
        # BaseJobStore.may_complete, evaluated server-side.
        finals = ", ".join(f":f{i}" for i in range(len(_FINAL)))
        condition = f"attribute_not_exists(pk) OR (NOT #s IN ({finals}) AND #a <= :a)"
        write: dict[str, Any] = {
            "TableName": self.table, "Key": _key("job", record.id), "UpdateExpression": update,
            "ConditionExpression": condition, "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values, "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }  # fmt: skip
        with aws_errors(StoreError, f"complete job {record.id} in table {self.table}"):
            try:
                if outbox:
                    _transact(self.client, [{"Update": write}, *outbox])
                else:
                    self.client.update_item(**write)
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                self._discard_offloaded(outcome)  # another outcome won: our upload is garbage
                return self.already_recorded(self._record(_old_item(exc)), record)
        return True

    # -- idempotency keys: BaseJobStore's primitives -----------------------------------------

    def _claim(self, key: str, claim: KeyClaim, now: float) -> KeyClaim | None:
        lease = claim.lease_until if claim.lease_until is not None else now
        names = {"#h": "holder", "#st": "state", "#l": "lease", "#e": "expires_at",
                 "#fp": "fingerprint"}  # fmt: skip
        values = {
            ":j": {"S": claim.holder}, ":ip": {"S": "in_progress"}, ":l": _n(lease),
            ":now": _n(now), ":e": _n(lease + self.retention),
        }  # fmt: skip
        update = "SET #h = :j, #st = :ip, #l = :l, #e = :e"
        lapsed = "(attribute_not_exists(#l) OR #l <= :now)"
        if claim.fingerprint is None:
            update += " REMOVE #fp"  # the claim is the new holder's, without a fingerprint
        else:
            values[":fp"] = {"S": claim.fingerprint}
            update += ", #fp = :fp"
            # A lapsed holder is taken over only by the same input, or where it has none.
            lapsed = f"({lapsed} AND (attribute_not_exists(#fp) OR #fp = :fp))"
        # BaseJobStore.may_claim_key, evaluated server-side: a completed key never matches.
        condition = f"attribute_not_exists(pk) OR (#st = :ip AND (#h = :j OR {lapsed}))"
        with aws_errors(
            StoreError, f"claim idempotency key {key_digest(key)} in table {self.table}"
        ):
            try:
                self.client.update_item(
                    TableName=self.table, Key=_key("key", key),
                    UpdateExpression=update,
                    ConditionExpression=condition, ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )  # fmt: skip
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                item = _old_item(exc)
                holder = item["holder"]["S"]
                # A key item written before fingerprints has none: it is never a conflict.
                fingerprint = item.get("fingerprint", {}).get("S")
                if item["state"]["S"] == "completed":
                    return KeyClaim(
                        "completed", holder, result=self._result(item), fingerprint=fingerprint
                    )
                held = float(item["lease"]["N"]) if "lease" in item else None
                return KeyClaim("in_progress", holder, lease_until=held, fingerprint=fingerprint)
        return None

    def _complete_claim(
        self, key: str, claim: KeyClaim, outbox: Sequence[dict[str, Any]] = ()
    ) -> bool:
        names = {"#h": "holder", "#st": "state", "#l": "lease", "#e": "expires_at"}
        values: dict[str, Any] = {":j": {"S": claim.holder}, ":c": {"S": "completed"},
                                  ":ip": {"S": "in_progress"},
                                  ":e": _n(time.time() + self.retention)}  # fmt: skip
        sets = ["#h = :j", "#st = :c", "#e = :e"]
        for attr, value in self._result_attributes(
            claim.result, f"key/{key_digest(key).removeprefix('sha256:')}"
        ).items():
            names[f"#{attr}"] = attr
            values[f":{attr}"] = value
            sets.append(f"#{attr} = :{attr}")
        # BaseJobStore.may_complete_key, evaluated server-side. The claim's fingerprint is
        # not in the update, so the completed key keeps it.
        condition = "attribute_not_exists(pk) OR (#st = :ip AND #h = :j)"
        with aws_errors(
            StoreError, f"complete idempotency key {key_digest(key)} in table {self.table}"
        ):
            write: dict[str, Any] = {
                "TableName": self.table, "Key": _key("key", key),
                "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE #l",
                "ConditionExpression": condition,
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            }  # fmt: skip
            try:
                if outbox:
                    _transact(self.client, [{"Update": write}, *outbox])
                else:
                    self.client.update_item(**write)
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                # Another job took the key over after our lease ran out, or a result is
                # stored already: the key is not ours to write, nor is our upload needed.
                self._discard_offloaded(
                    {a: values[f":{a}"] for a in ("result_ref",) if f":{a}" in values}
                )
                return False
        return True

    def _drop_claim(self, key: str, job_id: str) -> bool:
        with aws_errors(
            StoreError, f"release idempotency key {key_digest(key)} in table {self.table}"
        ):
            try:
                self.client.delete_item(
                    TableName=self.table, Key=_key("key", key),
                    # BaseJobStore.may_release_key, evaluated server-side.
                    ConditionExpression="#h = :j AND #st = :ip",
                    ExpressionAttributeNames={"#h": "holder", "#st": "state"},
                    ExpressionAttributeValues={":j": {"S": job_id}, ":ip": {"S": "in_progress"}},
                )  # fmt: skip
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                return False
        return True

    # -- workflows (WorkflowStore) ----------------------------------------------------------

    def create_workflow(self, doc: dict[str, Any]) -> StoredWorkflow | None:
        """Store a new workflow document at revision 1; the existing one if its id is taken."""
        now = time.time()
        item = self._workflow_item(doc, 1, now)
        item["created"] = _n(now)
        with aws_errors(StoreError, f"create workflow {doc['id']} in table {self.table}"):
            try:
                self.client.put_item(
                    TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )  # fmt: skip
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                return _stored_workflow(_old_item(exc))
        return None

    def load_workflow(self, workflow_id: str) -> StoredWorkflow | None:
        """The workflow document and its revision, read with strong consistency, or None."""
        with aws_errors(StoreError, f"load workflow {workflow_id} from table {self.table}"):
            answer = self.client.get_item(
                TableName=self.table, Key=_key("wf", workflow_id), ConsistentRead=True
            )
        item = answer.get("Item")
        return None if item is None or "doc" not in item else _stored_workflow(item)

    def save_workflow(self, doc: dict[str, Any], rev: int) -> bool:
        """Write ``doc`` as revision ``rev + 1`` if the stored one is still ``rev``."""
        item = self._workflow_item(doc, rev + 1, time.time())
        del item["pk"]
        names = {f"#{a}": a for a in item}
        values = {f":{a}": v for a, v in item.items()}
        update = "SET " + ", ".join(f"#{a} = :{a}" for a in item)
        if "wf_open" not in item:  # a final or undue document leaves the index
            names.update({"#wf_open": "wf_open", "#wf_due": "wf_due"})
            update += " REMOVE #wf_open, #wf_due"
        values[":seen"] = _n(rev)
        with aws_errors(StoreError, f"save workflow {doc['id']} in table {self.table}"):
            try:
                self.client.update_item(
                    TableName=self.table, Key=_key("wf", str(doc["id"])), UpdateExpression=update,
                    ConditionExpression="#rev = :seen", ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )  # fmt: skip
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                return False
        return True

    def due_workflows(self, now: float, limit: int) -> Sequence[str]:
        """Open workflows whose due time has come, soonest first (the index lags a little).

        Each shard's Query answers its ``limit`` soonest; the soonest of those are the answer.
        """
        if limit <= 0:
            return []
        due = [
            found for shard in range(OPEN_SHARDS) for found in self._due_in_shard(shard, now, limit)
        ]
        return [wf_id for _, wf_id in sorted(due)[:limit]]

    def _due_in_shard(self, shard: int, now: float, limit: int) -> list[tuple[float, str]]:
        found: list[tuple[float, str]] = []
        request: dict[str, Any] = {
            "TableName": self.table, "IndexName": OPEN_WORKFLOWS_INDEX,
            "KeyConditionExpression": "#o = :s AND #d <= :now",
            "ExpressionAttributeNames": {"#o": "wf_open", "#d": "wf_due"},
            "ExpressionAttributeValues": {":s": {"S": _shard(shard)}, ":now": _n(now)},
            "Limit": limit,
        }  # fmt: skip
        while len(found) < limit:
            with aws_errors(StoreError, f"query due workflows in table {self.table}"):
                answer = self.client.query(**request)
            for item in answer.get("Items", []):
                wf_id = item["pk"].get("S", "").removeprefix("wf#")
                found.append((float(item["wf_due"].get("N", "0")), wf_id))
            last = answer.get("LastEvaluatedKey")
            if not last:
                break
            request["ExclusiveStartKey"] = last
        return found[:limit]

    def _workflow_item(self, doc: dict[str, Any], rev: int, now: float) -> dict[str, Any]:
        wf_id = str(doc["id"])
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode())
        if size > WORKFLOW_DOC_LIMIT:
            raise StoreError(
                f"workflow {wf_id}: its document of {size} bytes is over the"
                f" {WORKFLOW_DOC_LIMIT}-byte limit for a DynamoDB item"
                f" ({DYNAMODB_MAX_ITEM_BYTES} bytes at most)",
                retryable=False,
            )
        item: dict[str, Any] = {
            **_key("wf", wf_id),
            "doc": {"S": text},
            "rev": _n(rev),
            "updated": _n(now),
            "expires_at": _n(now + self.retention),
        }
        if doc.get("status") == "running" and doc.get("due") is not None:
            item["wf_open"] = {"S": _shard(zlib.crc32(wf_id.encode()) % OPEN_SHARDS)}
            item["wf_due"] = _n(float(doc["due"]))
        return item

    # -- item <-> record --------------------------------------------------------------------

    def _outcome_attributes(self, record: JobRecord) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if record.status is JobStatus.SUCCEEDED:
            attrs.update(self._result_attributes(record.result, f"job/{record.id}"))
        if record.error is not None:
            attrs["error"] = {"S": json.dumps(record.error.to_dict())}
        if record.idempotency_key is not None:
            attrs["idem"] = {"S": record.idempotency_key}
        if record.duplicate_of is not None:
            attrs["dup"] = {"S": record.duplicate_of}
        if record.dead_letter is not None:
            attrs["dl"] = {"S": record.dead_letter}
        if record.status is JobStatus.WAITING:  # a resumption's fresh attempt budget
            attrs["rbase"] = _n(record.restart_base)
        if record.envelope is not None:
            attrs.update(self._envelope_attributes(record.id, record.envelope))
        elif record.envelope_note is not None:
            attrs["env_note"] = {"S": record.envelope_note}
        return attrs

    def _envelope_attributes(self, job_id: str, envelope: str) -> dict[str, Any]:
        """Where a failed or rejected end keeps its envelope: in the item, offloaded, or a note."""
        size = len(envelope.encode())
        if size <= self.result_limit:
            return {"env": {"S": envelope}}
        if self.payloads is None:
            note = (
                f"the envelope of {size} bytes is over the {self.result_limit}-byte limit for a"
                " DynamoDB item and this DynamoStore has no payloads= to offload it to:"
                " not kept, so this job cannot be retried by id"
            )
            return {"env_note": {"S": note}}
        with _payload_errors("offload envelope"):
            ref = self.payloads.put(f"envelopes/job/{job_id}/{uuid.uuid4().hex}", envelope.encode())
        return {"env_ref": {"S": ref}}

    def _result_attributes(self, result: JsonValue, name: str) -> dict[str, Any]:
        text = dumps(result)
        if len(text) <= self.result_limit:
            return {"result": {"S": text.decode()}}
        if self.payloads is None:
            raise ResultTooLarge(
                f"result of {len(text)} bytes is over the {self.result_limit}-byte limit for a"
                f" DynamoDB item ({DYNAMODB_MAX_ITEM_BYTES} bytes at most):"
                " pass payloads=S3Payloads(bucket) to DynamoStore"
            )
        # A fresh name per write: a stale worker's upload can never replace the winner's.
        with _payload_errors("offload result"):
            ref = self.payloads.put(f"results/{name}/{uuid.uuid4().hex}", text)
        return {"result_ref": {"S": ref}}

    def _discard_offloaded(self, attributes: dict[str, Any]) -> None:
        for attr in ("result_ref", "env_ref"):
            ref = attributes.get(attr, {}).get("S")
            if ref is not None:
                with _payload_errors(f"delete unused upload {ref}"):
                    self._payloads(ref).delete(ref)

    def _result(self, item: dict[str, Any]) -> JsonValue:
        if "result" in item:
            value: JsonValue = json.loads(item["result"]["S"])
            return value
        if "result_ref" in item:
            ref = item["result_ref"]["S"]
            with _payload_errors(f"read offloaded result {ref}"):
                body = self._payloads(ref).get(ref)
            loaded: JsonValue = json.loads(body)
            return loaded
        return None

    def _record(self, item: dict[str, Any]) -> JobRecord:
        error = item.get("error")
        return JobRecord(
            id=item["pk"]["S"].removeprefix("job#"),
            task=item["task"]["S"],
            status=JobStatus(item["status"]["S"]),
            attempt=int(item["attempt"]["N"]),
            result=self._result(item),
            error=None if error is None else ErrorInfo.from_dict(json.loads(error["S"])),
            idempotency_key=item.get("idem", {}).get("S"),
            duplicate_of=item.get("dup", {}).get("S"),
            lease_until=float(item["lease"]["N"]) if "lease" in item else None,
            created_at=float(item.get("created", {}).get("N", 0)),
            updated_at=float(item.get("updated", {}).get("N", 0)),
            dead_letter=item.get("dl", {}).get("S"),
            restart=item.get("rs", {}).get("S"),
            restart_base=int(item.get("rbase", {}).get("N", 0)),
            restarts=tuple(
                RestartEntry.from_dict(entry)
                for entry in json.loads(item.get("rh", {}).get("S", "[]"))
            ),
            envelope=item.get("env", {}).get("S"),
            envelope_note=item.get("env_note", {}).get("S"),
            envelope_ref=item.get("env_ref", {}).get("S"),
        )

    def _payloads(self, ref: str) -> PayloadStore:
        if self.payloads is None:
            raise StoreError(
                f"a result is stored at {ref}, but this DynamoStore has no payloads=",
                retryable=False,
            )
        return self.payloads


_NEW_IMAGES: Any = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}


def _key(kind: str, name: str) -> dict[str, Any]:
    return {"pk": {"S": f"{kind}#{name}"}}


def _n(number: float) -> dict[str, str]:
    return {"N": repr(round(number, 6)) if isinstance(number, float) else str(number)}


def _shard(number: int) -> str:
    return f"open#{number}"


def _stored_workflow(item: dict[str, Any]) -> StoredWorkflow:
    doc: dict[str, Any] = json.loads(item["doc"]["S"])
    return StoredWorkflow(doc, int(item["rev"]["N"]))


def _transact(client: Any, items: list[dict[str, Any]]) -> None:
    """``TransactWriteItems``, with a failed condition raised as ``update_item`` raises it.

    The first item is the guarded write, and later ones may be condition checks. A
    cancellation for any condition becomes ``ConditionalCheckFailedException`` carrying the item
    it saw, so the caller decides as it does for one write. Any other cancellation (a conflict
    with another transaction) is worth another try.
    """
    try:
        client.transact_write_items(TransactItems=items)
    except ClientError as exc:
        if error_code(exc) != "TransactionCanceledException":
            raise
        response: dict[str, Any] = dict(exc.response)
        reasons: list[Any] = response.get("CancellationReasons") or [{}]
        failed = [r for r in reasons if r.get("Code") == "ConditionalCheckFailed"]
        if failed:
            answer = {
                "Error": {"Code": "ConditionalCheckFailedException", "Message": str(exc)},
                "Item": failed[0].get("Item") or {},
            }
            raise ClientError(cast("Any", answer), "TransactWriteItems") from exc
        codes = ", ".join(str(r.get("Code")) for r in reasons)
        raise StoreError(f"transaction cancelled: {codes}", retryable=True) from exc


def _old_item(exc: ClientError) -> dict[str, Any]:
    """The item a failed condition saw (ReturnValuesOnConditionCheckFailure=ALL_OLD)."""
    response: dict[str, Any] = dict(exc.response)
    item: dict[str, Any] = response["Item"]
    return item


@contextmanager
def _payload_errors(what: str) -> Generator[None]:
    """A payload store's ``TransportError`` becomes the store's ``StoreError``."""
    try:
        yield
    except TransportError as exc:
        raise StoreError(f"{what}: {exc}", retryable=exc.retryable) from exc
