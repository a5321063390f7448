"""The DynamoDB job store: job state, results, idempotency keys and counters in one table.

Single-table schema (``create_table`` makes it; the infra templates make the same)::

    pk (S, partition key)   "job#<job id>" | "key#<idempotency key>" | "counter#<name>"
    job items               task, status, attempt, result (JSON text) or result_ref (s3://),
                            error (JSON text), idem, dup, lease, created, updated, expires_at
    key items               holder, state (in_progress | completed), result, lease, expires_at
    counter items           value (N)
    expires_at (N)          DynamoDB TTL attribute: records vanish ``retention`` after their end

Every status change is one conditional ``UpdateItem``; a failed condition returns the item as
it is (``ReturnValuesOnConditionCheckFailure=ALL_OLD``), so deciding "finished or busy" costs
no extra read. Values are stored as JSON text rather than DynamoDB maps: JSON round-trips
exactly (no Decimal, no empty-set rules) and producers in other languages can read it.

AWS requests per job on the happy path: 2 writes (begin, complete), plus 2 with an
idempotency key (claim, complete key), plus the producer's reads while it waits for a result.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import ClientError
from taskhop.sdk import (
    Begin,
    ErrorInfo,
    JobRecord,
    JobStatus,
    KeyClaim,
    StoreError,
    poll_for_final,
)
from taskhop.static_contracts import Duration, JsonValue, dumps, parse_duration
from taskhop.static_contracts.limits import DYNAMODB_MAX_ITEM_BYTES

from ._aws import aws_errors, error_code, make_client

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_s3.client import S3Client

__all__ = ["DynamoStore"]

RESULT_LIMIT = 350 * 1024
"""Results larger than this go to S3: the rest of the item needs headroom under the item limit."""
_BATCH_GET = 100
"""BatchGetItem reads at most 100 keys per request."""
_FINAL = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.REJECTED.value)


class DynamoStore:
    """A ``JobStore`` on one DynamoDB table.

    Args:
        table: the table name.
        client: a boto3 DynamoDB client to use as is (tests, custom endpoints).
        session: a boto3 session to make the client from (otherwise the environment's).
        config: botocore config merged over taskhop's default (standard retries, 8 tries).
        retention: how long finished jobs and idempotency keys are kept (DynamoDB TTL).
        s3_bucket: where results over ``result_limit`` bytes go; without it they are refused.
        s3_client: a boto3 S3 client for ``s3_bucket``.
        result_limit: results above this many bytes of JSON are offloaded to S3.

    """

    def __init__(
        self,
        table: str,
        *,
        client: Any | None = None,
        session: Any | None = None,
        config: Config | None = None,
        retention: Duration = "7d",
        s3_bucket: str | None = None,
        s3_client: Any | None = None,
        result_limit: int = RESULT_LIMIT,
    ) -> None:
        self.table = table
        with aws_errors(StoreError, f"DynamoDB table {table}"):
            self.client: DynamoDBClient = make_client(
                "dynamodb", client=client, session=session, config=config
            )
        self.retention = parse_duration(retention, field="retention")
        self.s3_bucket = s3_bucket
        self._s3: S3Client | None = s3_client
        self._s3_session = session
        self.result_limit = result_limit

    def __repr__(self) -> str:
        return f"DynamoStore({self.table!r})"

    # -- setup ------------------------------------------------------------------------------

    def create_table(self, *, wait: bool = True) -> None:
        """Create the table (on-demand capacity) and turn TTL on; no-op if it exists."""
        with aws_errors(StoreError, f"create table {self.table}"):
            try:
                self.client.create_table(
                    TableName=self.table,
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
            except ClientError as exc:
                if error_code(exc) != "ResourceInUseException":
                    raise
            if wait:
                self.client.get_waiter("table_exists").wait(TableName=self.table)
            self.client.update_time_to_live(
                TableName=self.table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
            )

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

    def wait(self, job_id: str, timeout: float | None) -> JobRecord | None:
        """Poll with strongly consistent reads and capped backoff until the job is final."""
        return poll_for_final(self, job_id, timeout, first=0.05, cap=1.0)

    # -- job state --------------------------------------------------------------------------

    def begin(
        self,
        job_id: str,
        *,
        task: str,
        attempt: int,
        lease_until: float,
        idempotency_key: str | None = None,
    ) -> Begin:
        """Start an attempt unless the job is final or another live attempt holds it."""
        now = time.time()
        names = {"#s": "status", "#t": "task", "#a": "attempt", "#l": "lease", "#u": "updated",
                 "#c": "created", "#e": "expires_at"}  # fmt: skip
        values = {
            ":t": {"S": task}, ":run": {"S": JobStatus.RUNNING.value}, ":a": _n(attempt),
            ":l": _n(lease_until), ":now": _n(now), ":e": _n(lease_until + self.retention),
            ":q": {"S": JobStatus.QUEUED.value}, ":r": {"S": JobStatus.RETRYING.value},
        }  # fmt: skip
        update = "SET #s = :run, #t = :t, #a = :a, #l = :l, #u = :now, #e = :e, "
        update += "#c = if_not_exists(#c, :now)"
        names.update({"#err": "error", "#res": "result", "#ref": "result_ref", "#dup": "dup"})
        remove = " REMOVE #err, #res, #ref, #dup"  # an earlier attempt's outcome is not ours
        if idempotency_key is not None:
            names["#i"] = "idem"
            values[":i"] = {"S": idempotency_key}
            update += ", #i = :i"
        update += remove
        condition = (
            "attribute_not_exists(pk) OR #s IN (:q, :r) OR (#s = :run AND (#l < :now OR #a < :a))"
        )
        with aws_errors(StoreError, f"begin job {job_id} in table {self.table}"):
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
                current = self._record(_old_item(exc))
                return Begin("finished" if current.status.is_final else "busy", current)
        return Begin("started", self._record(answer["Attributes"]))

    def complete(self, record: JobRecord) -> bool:
        """Write an outcome unless the job is final or a newer attempt owns it."""
        now = time.time()
        names = {"#s": "status", "#t": "task", "#a": "attempt", "#u": "updated", "#c": "created",
                 "#e": "expires_at", "#l": "lease"}  # fmt: skip
        values: dict[str, Any] = {
            ":s": {"S": record.status.value}, ":t": {"S": record.task}, ":a": _n(record.attempt),
            ":now": _n(now), ":e": _n(now + self.retention),
            ":f1": {"S": _FINAL[0]}, ":f2": {"S": _FINAL[1]}, ":f3": {"S": _FINAL[2]},
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
        stale = [a for a in ("error", "result", "result_ref", "dup") if a not in outcome]
        names.update({f"#{a}": a for a in stale})
        update = (
            "SET " + ", ".join(sets) + " REMOVE " + ", ".join(["#l"] + [f"#{a}" for a in stale])
        )
        condition = "attribute_not_exists(pk) OR (NOT #s IN (:f1, :f2, :f3) AND #a <= :a)"
        with aws_errors(StoreError, f"complete job {record.id} in table {self.table}"):
            try:
                self.client.update_item(
                    TableName=self.table, Key=_key("job", record.id), UpdateExpression=update,
                    ConditionExpression=condition, ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )  # fmt: skip
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                self._discard_offloaded(outcome)  # a newer outcome won: our upload is garbage
                return False
        return True

    # -- idempotency keys -------------------------------------------------------------------

    def claim_key(self, key: str, job_id: str, *, lease_until: float) -> KeyClaim:
        """Hold ``key`` for ``job_id`` unless another job holds it or already completed it."""
        names = {"#h": "holder", "#st": "state", "#l": "lease", "#e": "expires_at"}
        values = {
            ":j": {"S": job_id}, ":ip": {"S": "in_progress"}, ":l": _n(lease_until),
            ":now": _n(time.time()), ":e": _n(lease_until + self.retention),
        }  # fmt: skip
        condition = "attribute_not_exists(pk) OR (#st = :ip AND (#h = :j OR #l < :now))"
        with aws_errors(StoreError, f"claim idempotency key {key} in table {self.table}"):
            try:
                self.client.update_item(
                    TableName=self.table, Key=_key("key", key),
                    UpdateExpression="SET #h = :j, #st = :ip, #l = :l, #e = :e",
                    ConditionExpression=condition, ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )  # fmt: skip
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                item = _old_item(exc)
                holder = item["holder"]["S"]
                if item["state"]["S"] == "completed":
                    return KeyClaim("completed", holder, result=self._result(item))
                return KeyClaim("in_progress", holder, lease_until=float(item["lease"]["N"]))
        return KeyClaim("acquired", job_id, lease_until=lease_until)

    def complete_key(self, key: str, job_id: str, result: JsonValue) -> None:
        """Store the result for later duplicates of ``key`` (if ``job_id`` still holds it)."""
        names = {"#h": "holder", "#st": "state", "#l": "lease", "#e": "expires_at"}
        values: dict[str, Any] = {":j": {"S": job_id}, ":c": {"S": "completed"},
                                  ":e": _n(time.time() + self.retention)}  # fmt: skip
        sets = ["#h = :j", "#st = :c", "#e = :e"]
        for attr, value in self._result_attributes(result, f"key/{key}").items():
            names[f"#{attr}"] = attr
            values[f":{attr}"] = value
            sets.append(f"#{attr} = :{attr}")
        with aws_errors(StoreError, f"complete idempotency key {key} in table {self.table}"):
            try:
                self.client.update_item(
                    TableName=self.table, Key=_key("key", key),
                    UpdateExpression="SET " + ", ".join(sets) + " REMOVE #l",
                    ConditionExpression="attribute_not_exists(pk) OR #h = :j",
                    ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                )  # fmt: skip
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                # Another job took the key over after our lease ran out: the key is theirs.
                self._discard_offloaded(
                    {a: values[f":{a}"] for a in ("result_ref",) if f":{a}" in values}
                )

    def release_key(self, key: str, job_id: str) -> None:
        """Free ``key`` if ``job_id`` holds it and has not completed."""
        with aws_errors(StoreError, f"release idempotency key {key} in table {self.table}"):
            try:
                self.client.delete_item(
                    TableName=self.table, Key=_key("key", key),
                    ConditionExpression="#h = :j AND #st <> :c",
                    ExpressionAttributeNames={"#h": "holder", "#st": "state"},
                    ExpressionAttributeValues={":j": {"S": job_id}, ":c": {"S": "completed"}},
                )  # fmt: skip
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise

    def increment(self, counter: str, amount: int = 1) -> int:
        """Atomic ``ADD`` on a counter item; returns the value after the update."""
        with aws_errors(StoreError, f"increment counter {counter} in table {self.table}"):
            answer = self.client.update_item(
                TableName=self.table, Key=_key("counter", counter),
                UpdateExpression="ADD #v :n", ExpressionAttributeNames={"#v": "value"},
                ExpressionAttributeValues={":n": _n(amount)}, ReturnValues="ALL_NEW",
            )  # fmt: skip
        value: dict[str, Any] = dict(answer["Attributes"]["value"])
        return int(value["N"])

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
        return attrs

    def _result_attributes(self, result: JsonValue, name: str) -> dict[str, Any]:
        text = dumps(result)
        if len(text) <= self.result_limit:
            return {"result": {"S": text.decode()}}
        if self.s3_bucket is None:
            raise StoreError(
                f"result of {len(text)} bytes is over the {self.result_limit}-byte limit for a"
                f" DynamoDB item ({DYNAMODB_MAX_ITEM_BYTES} bytes at most):"
                " pass s3_bucket= to DynamoStore",
                retryable=False,
            )
        # A fresh key per write: a stale worker's upload can never replace the winner's.
        key = f"taskhop/results/{name}/{uuid.uuid4().hex}.json"
        with aws_errors(StoreError, f"offload result to s3://{self.s3_bucket}/{key}"):
            self._s3_client().put_object(Bucket=self.s3_bucket, Key=key, Body=text,
                                         ContentType="application/json")  # fmt: skip
        return {"result_ref": {"S": f"s3://{self.s3_bucket}/{key}"}}

    def _discard_offloaded(self, attributes: dict[str, Any]) -> None:
        ref = attributes.get("result_ref", {}).get("S")
        if ref is None:
            return
        bucket, _, key = ref.removeprefix("s3://").partition("/")
        with aws_errors(StoreError, f"delete unused result {ref}"):
            self._s3_client().delete_object(Bucket=bucket, Key=key)

    def _result(self, item: dict[str, Any]) -> JsonValue:
        if "result" in item:
            value: JsonValue = json.loads(item["result"]["S"])
            return value
        if "result_ref" in item:
            bucket, _, key = item["result_ref"]["S"].removeprefix("s3://").partition("/")
            with aws_errors(StoreError, f"read offloaded result s3://{bucket}/{key}"):
                body = self._s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
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
        )

    def _s3_client(self) -> S3Client:
        if self._s3 is None:
            client: S3Client = make_client("s3", client=None, session=self._s3_session, config=None)
            self._s3 = client
        return self._s3


def _key(kind: str, name: str) -> dict[str, Any]:
    return {"pk": {"S": f"{kind}#{name}"}}


def _n(number: float) -> dict[str, str]:
    return {"N": repr(round(number, 6)) if isinstance(number, float) else str(number)}


def _old_item(exc: ClientError) -> dict[str, Any]:
    """The item a failed condition saw (ReturnValuesOnConditionCheckFailure=ALL_OLD)."""
    response: dict[str, Any] = dict(exc.response)
    item: dict[str, Any] = response["Item"]
    return item
