"""``taskhop dev`` polls the tables its app's triggers watch, and the job table's outbox.

Each test runs the real ``run_dev`` in a thread of this process (its moto server too), with
an app module written for it, and writes to the local tables with boto3 as a producer would.
The handlers append ``<task> <key>`` lines to a file, read back here. In this process moto's
tables outlive a stopped stack, as tables on an endpoint of your own do across restarts.
"""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from taskhop.lambda_worker._dev import run_dev

APP = """
    import os
    import attrs
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue
    from taskhop.sdk import (
        Change, Event, F, JobContext, create_app, define_event, define_table,
    )

    LOG = {log!r}

    def note(task, key):
        with open(LOG, "a") as out:
            out.write(f"{{task}} {{key}}\\n")

    @attrs.frozen
    class Order:
        pk: str
        status: str

    @attrs.frozen
    class Placed:
        pk: str

    orders = define_table({table!r}, item=Order, key="pk")
    placed = define_event("order.placed", payload=Placed)
    app = create_app(
        queue=SqsQueue(os.environ["TASKHOP_QUEUE_URL"]),
        store=DynamoStore(os.environ["TASKHOP_TABLE"]),
    )
    app.event(placed)
    failing = {{"s2"}}

    @app.on_change(orders, where=F.status == "paid")
    def paid(change: Change[Order], ctx: JobContext) -> None:
        note("paid", change.keys["pk"])

    @app.on_change(orders, on={{"insert"}}, where=F.status == "ship", mode="inline", retry=3)
    def ship(change: Change[Order], ctx: JobContext) -> None:
        note("ship", change.keys["pk"])
        if change.keys["pk"] in failing:
            failing.discard(change.keys["pk"])
            raise RuntimeError("the carrier is down")

    @app.on(placed)
    def bill(event: Event[Placed], ctx: JobContext) -> None:
        note("bill", event.payload.pk)
"""

MODULE = "devstreams_app"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Dev:
    """``run_dev`` on a thread, started and stopped at will; its stderr kept."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.port = free_port()
        self.state = tmp_path / "state.json"
        self.log = tmp_path / "runs.txt"
        self.table = f"orders-{uuid.uuid4().hex[:10]}"
        self.err = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._exit: list[object] = []
        (tmp_path / f"{MODULE}.py").write_text(
            textwrap.dedent(APP).format(log=str(self.log), table=self.table)
        )

    def start(self, *, ready: str) -> None:
        """Start the stack (a fresh import of the app) and wait for ``ready`` on stderr."""
        sys.modules.pop(MODULE, None)
        self._stop = threading.Event()
        self._exit = []

        def serve() -> None:
            spec = f"{MODULE}:app"
            try:
                code = run_dev(spec, port=self.port, state_file=self.state, stop=self._stop)
            except BaseException as exc:  # reported by stop()
                self._exit.append(exc)
            else:
                self._exit.append(code)

        self._thread = threading.Thread(target=serve, name="dev", daemon=True)
        self._thread.start()
        self.wait_for(lambda: ready in self.stderr(), f"{ready!r} on stderr")

    def stop(self) -> str:
        """Stop it as SIGTERM would; return everything it printed on stderr."""
        assert self._thread is not None
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "taskhop dev did not stop"
        assert self._exit == [0], self._exit
        return self.stderr()

    def close(self) -> None:
        """Stop it if a failed test left it running."""
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join(30)

    def stderr(self) -> str:
        self.err += self.capsys.readouterr().err
        return self.err

    def runs(self, task: str) -> list[str]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line.split(" ", 1)[1] for line in lines if line.startswith(task + " ")]

    def wait_for(self, done: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        ends = time.monotonic() + timeout
        while not done():
            if time.monotonic() > ends:
                raise AssertionError(f"timed out waiting for {what}; stderr:\n{self.stderr()}")
            time.sleep(0.05)

    def client(self, service: str) -> Any:
        import boto3

        factory: Any = boto3
        return factory.client(service)

    def create_table(self, *, stream: bool) -> None:
        fields: dict[str, Any] = {}
        if stream:
            spec = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
            fields["StreamSpecification"] = spec
        self.client("dynamodb").create_table(
            TableName=self.table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            **fields,
        )

    def put(self, pk: str, status: str) -> None:
        self.client("dynamodb").put_item(TableName=self.table, Item=item(pk, status))

    def stream_records(self) -> list[dict[str, Any]]:
        """Every record on the table's stream, oldest first (read here, not by dev)."""
        dynamodb, streams = self.client("dynamodb"), self.client("dynamodbstreams")
        arn = dynamodb.describe_table(TableName=self.table)["Table"]["LatestStreamArn"]
        [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records: list[dict[str, Any]] = streams.get_records(ShardIterator=iterator)["Records"]
        return records


def item(pk: str, status: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "status": {"S": status}}


@pytest.fixture
def dev(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Dev]:
    """A dev stack for one test: no AWS variable from outside, every one it sets undone."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith(("AWS_", "TASKHOP_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    running = Dev(tmp_path, capsys)
    try:
        yield running
    finally:
        running.close()
        sys.modules.pop(MODULE, None)
        os.environ.clear()
        os.environ.update(saved)


def test_a_trigger_runs_for_each_matching_change_of_a_table_created_later(dev: Dev) -> None:
    """The table is waited for; ``where`` drops a change before any job is made for it."""
    dev.start(ready=f"table {dev.table} does not exist yet")
    dev.create_table(stream=True)
    dev.put("o1", "new")  # filtered out: no job
    dev.put("o2", "paid")
    dev.put("o1", "paid")  # a modify that now matches
    dev.wait_for(lambda: sorted(dev.runs("paid")) == ["o1", "o2"], "the two paid changes")

    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.sdk import JobStatus, trigger_job_id

    store = DynamoStore(os.environ["TASKHOP_TABLE"])
    statuses = [
        (r["eventName"], r["dynamodb"]["NewImage"]["status"]["S"], store.get(job))
        for r in dev.stream_records()
        for job in [trigger_job_id(r["eventID"], "paid")]
    ]
    assert [(name, status) for name, status, _ in statuses] == [
        ("INSERT", "new"),
        ("INSERT", "paid"),
        ("MODIFY", "paid"),
    ]
    assert statuses[0][2] is None  # the filtered change made no job
    assert [r.status if r else None for _, _, r in statuses[1:]] == [JobStatus.SUCCEEDED] * 2
    time.sleep(0.5)  # nothing more comes
    assert sorted(dev.runs("paid")) == ["o1", "o2"]
    err = dev.stop()
    from taskhop.lambda_worker import table_criteria

    filters = len(table_criteria(sys.modules[MODULE].app, dev.table)["Filters"])
    assert (
        f"polling the stream of table {dev.table} for triggers paid, ship ({filters} filters,"
        in err
    )
    assert f"streams: {dev.table} " in err
    assert f"polling the stream of table {dev.table} for the outbox" not in err


def test_a_failing_trigger_is_retried_from_its_record_on_a_stream_dev_turned_on(
    dev: Dev,
) -> None:
    """A table made without a stream gets one here; a failure resumes at its record only."""
    dev.start(ready=f"table {dev.table} does not exist yet")
    dev.create_table(stream=False)
    dev.wait_for(lambda: f"polling the stream of table {dev.table}" in dev.stderr(), "the poller")
    dev.client("dynamodb").transact_write_items(
        TransactItems=[
            {"Put": {"TableName": dev.table, "Item": item(pk, "ship")}} for pk in ("s1", "s2")
        ]
    )
    dev.put("s3", "ship")
    dev.wait_for(lambda: len(dev.runs("ship")) >= 4, "four runs of ship")
    time.sleep(0.5)
    assert dev.runs("ship") == ["s1", "s2", "s2", "s3"]  # s1 before the checkpoint: once
    err = dev.stop()
    assert f"table {dev.table} had no stream: turned it on here (NEW_AND_OLD_IMAGES)" in err


def test_the_outbox_publishes_once_and_nothing_fires_again_after_a_restart(dev: Dev) -> None:
    """An outbox item runs its subscriber once; restored state and old records replay nothing."""
    dev.start(ready="polling the stream of table taskhop-dev for the outbox (1 filter,")
    dev.create_table(stream=True)
    app: Any = sys.modules[MODULE].app
    placed: Any = sys.modules[MODULE].placed
    payload = sys.modules[MODULE].Placed("p1")
    dev.client("dynamodb").transact_write_items(
        TransactItems=[
            {"Put": {"TableName": dev.table, "Item": item("p1", "paid")}},
            app.outbox(placed, payload),
        ]
    )
    dev.wait_for(lambda: dev.runs("bill") == ["p1"] and dev.runs("paid") == ["p1"], "p1 served")
    first = dev.stop()
    assert "saved" in first

    dev.err = ""
    dev.start(ready=f"polling the stream of table {dev.table} for triggers paid, ship")
    assert "restored" in dev.err
    assert f"table {dev.table} for triggers paid, ship (3 filters, new records only)" in dev.err
    dev.wait_for(lambda: "polling the stream of table taskhop-dev" in dev.stderr(), "the outbox")
    dev.put("p2", "paid")
    dev.wait_for(lambda: dev.runs("paid") == ["p1", "p2"], "the new change only")
    time.sleep(0.5)
    assert dev.runs("paid") == ["p1", "p2"]
    assert dev.runs("bill") == ["p1"]  # the restored outbox item was not published again
    dev.client("dynamodb").delete_table(TableName=dev.table)
    stopped = dev.stop().rsplit("taskhop dev: stopped after", 1)[1]
    # Read from LATEST: p2's insert only, not p1's records again (their jobs would be skipped
    # as done, but nothing is even delivered); the restored outbox item is on no stream.
    assert f"{dev.table} 1 batch of 1 record" in stopped
    assert "taskhop-dev 0 batches of " in stopped


@pytest.fixture
def endpoint(dev: Dev, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An endpoint of your own (this session's moto server): dev makes only its own resources.

    They are deleted afterwards, as the stack deletes them from a server it started.
    """
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield moto_server
    factory: Any = boto3
    sqs, dynamodb = factory.client("sqs"), factory.client("dynamodb")
    for queue in ("taskhop-dev", "taskhop-dev-dlq"):
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"])
    for table in ("taskhop-dev", dev.table):
        dynamodb.delete_table(TableName=table)


def test_on_an_endpoint_of_your_own_a_table_without_a_stream_is_named_not_changed(
    dev: Dev, endpoint: str
) -> None:
    """No stream: a line says how to turn it on, and dev waits; a restart reads from LATEST."""
    dev.create_table(stream=False)
    dev.start(ready=f"table {dev.table} has no stream, so triggers paid, ship cannot run")
    assert "StreamViewType=NEW_AND_OLD_IMAGES" in dev.err
    dynamodb = dev.client("dynamodb")
    assert "LatestStreamArn" not in dynamodb.describe_table(TableName=dev.table)["Table"]
    dev.put("e1", "paid")  # on no stream: never served
    spec = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    dynamodb.update_table(TableName=dev.table, StreamSpecification=spec)
    dev.wait_for(lambda: "its oldest record on" in dev.stderr(), "the poller")
    dev.put("e2", "paid")
    dev.wait_for(lambda: dev.runs("paid") == ["e2"], "e2 served")
    dev.stop()

    dev.err = ""
    dev.start(ready=f"polling the stream of table {dev.table} for triggers paid, ship")
    assert "new records only" in dev.err.split(f"polling the stream of table {dev.table}", 1)[1]
    dev.put("e3", "paid")
    dev.wait_for(lambda: dev.runs("paid") == ["e2", "e3"], "e3 served, e2 not again")
    dev.stop()
