"""`make demo`: the real flow on this machine, no AWS account.

1. `taskhop dev` starts a local AWS (a moto server on 127.0.0.1) with a queue, its DLQ and a
   job table, and runs the worker exactly as Lambda's event source mapping would.
2. A producer that imports only the static contracts (standard library) and the SQS
   transport dispatches a few hundred jobs: most valid, some invalid, some that fail once and
   are retried, some that fail every time, and a few bodies that are not jobs at all.
3. Progress is shown while the worker drains the queue; then a summary table: where every
   job ended, and the latency from dispatch to result.
4. A workflow: a chord of 12 resizes whose callback builds a contact sheet once all are done,
   dispatched from contracts, advanced by the worker alone; its steps and wall time are shown.
5. An event and a table change: the demo emits ``sheet.ready`` (the worker's subscriber runs
   once, even when the same event is emitted twice), then writes an album to its own DynamoDB
   table, whose stream the shipped Lambda handler serves: the trigger runs once per change of
   its ``photos``, and a change of anything else invokes nothing.
Everything started here is stopped at the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from demo_contracts import ResizeImage, resize_image
from taskhop.backends.sqs import SqsQueue
from taskhop.static_contracts import Producer

HERE = Path(__file__).resolve().parent
JOBS = int(os.environ.get("DEMO_JOBS", "300"))


def start_stack(state: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("AWS_ENDPOINT_URL", None)
    taskhop = Path(sys.executable).with_name("taskhop")
    # Any free port and a state file of its own: the demo never meets a `taskhop dev` of yours.
    command = [str(taskhop), "dev", "--app", "demo_worker:app"]
    proc = subprocess.Popen(
        [*command, "--port", "0", "--fresh", "--state", str(state)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith('{"taskhop_dev"'):
            # Keep reading the worker's JSON log lines (into DEMO_LOG, if set) so its
            # output pipe never fills up and blocks it.
            log = os.environ.get("DEMO_LOG")
            threading.Thread(target=drain, args=(proc.stdout, log), daemon=True).start()
            return proc, json.loads(line)["taskhop_dev"]
    raise SystemExit("taskhop dev did not start")


def drain(stream: IO[str], path: str | None) -> None:
    with open(path or os.devnull, "w") as sink:
        for line in stream:
            sink.write(line)


def payloads(rng: random.Random) -> list[tuple[str, ResizeImage]]:
    """(kind, payload) pairs: the mix of jobs the demo sends."""
    jobs: list[tuple[str, ResizeImage]] = []
    for n in range(JOBS):
        roll = rng.random()
        kind = (
            "invalid"
            if roll < 0.08
            else "flaky"
            if roll < 0.23
            else "broken"
            if roll < 0.27
            else "ok"
        )
        width: object = "wide" if kind == "invalid" else rng.choice([64, 128, 256, 512])
        payload = {
            "url": f"https://img.example.com/{n}.png",
            "width": width,
            "flaky": kind == "flaky",
            "broken": kind == "broken",
        }
        jobs.append((kind, payload))  # type: ignore[arg-type]  # invalid ones on purpose
    return jobs


def main() -> int:
    print("starting the dev stack (moto on 127.0.0.1 + local worker)...")
    scratch = tempfile.TemporaryDirectory(prefix="taskhop-demo-")
    proc, stack = start_stack(Path(scratch.name) / "state.json")
    try:
        # What `taskhop dev` prints as export lines: endpoint, region, fake keys, resources.
        os.environ.update(stack["env"])
        print(f"  queue {stack['queue_url']}\n  table {stack['table']}")
        queue = SqsQueue(stack["queue_url"])
        task = Producer(queue).register(resize_image)
        jobs = payloads(random.Random(7))
        sent_at = time.time()
        ids = task.dispatch_many([p for _, p in jobs])
        kinds = dict(zip(ids, (k for k, _ in jobs), strict=True))
        for body in ("not json at all", '{"hello": "from another producer"}'):
            queue.client.send_message(QueueUrl=stack["queue_url"], MessageBody=body)
        print(f"dispatched {len(ids)} jobs and 2 poison messages in {time.time() - sent_at:.2f}s")
        status = summarize(stack, ids, kinds, sent_at)
        return status or run_workflow(stack)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        scratch.cleanup()
        print("dev stack stopped")


def summarize(stack: dict[str, str], ids: list[str], kinds: dict[str, str], sent_at: float) -> int:
    from taskhop.backends.dynamodb import (
        DynamoStore,  # reading results needs the sdk; producing did not
    )

    store = DynamoStore(stack["table"])
    sqs = SqsQueue(stack["dlq_url"]).client
    deadline = time.monotonic() + 120
    records: dict[str, Any] = {}
    shown = ""
    while time.monotonic() < deadline:
        # Only the jobs not final yet: each read is work for the moto the worker is using.
        pending = [i for i in ids if i not in records]
        records |= {i: r for i, r in store.get_many(pending).items() if r.status.is_final}
        depth = sqs.get_queue_attributes(
            QueueUrl=stack["dlq_url"], AttributeNames=["ApproximateNumberOfMessages"]
        )
        dead = int(depth["Attributes"]["ApproximateNumberOfMessages"])
        done = len(records)
        bar = "#" * (30 * done // len(ids))
        line = f"  [{bar:<30}] {done}/{len(ids)} jobs final, {dead} in the DLQ"
        if line != shown:  # a fresh line each step when the output is not a terminal
            print(("\r" if sys.stdout.isatty() else "\n") + line, end="", flush=True)
            shown = line
        if done == len(ids) and dead >= 2 + sum(k == "broken" for k in kinds.values()):
            break
        time.sleep(0.25)
    print()
    statuses: dict[str, int] = {}
    for record in records.values():
        statuses[record.status.value] = statuses.get(record.status.value, 0) + 1
    retried = sum(1 for r in records.values() if r.status.value == "succeeded" and r.attempt > 1)
    latencies = sorted(
        r.updated_at - sent_at for r in records.values() if r.status.value == "succeeded"
    )
    p50 = statistics.median(latencies) if latencies else 0.0
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0
    rows = [
        ("succeeded", statuses.get("succeeded", 0), "of which retried first", retried),
        ("rejected (invalid input)", statuses.get("rejected", 0), "never retried", ""),
        ("failed (attempts exhausted)", statuses.get("failed", 0), "also in the DLQ", ""),
        ("dead-lettered", dead, "failed jobs + poison bodies", ""),
        ("not final", len(ids) - len(records), "", ""),
    ]
    print("\n  outcome                       jobs   note")
    print("  " + "-" * 64)
    for name, count, note, extra in rows:
        print(f"  {name:<28} {count:>5}   {note} {extra}".rstrip())
    print(f"\n  latency dispatch -> result: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    if records:
        # Every job is queued within the first second, so most of a job's latency here is its
        # wait behind the others, at the pace of the local worker (several invocations at
        # once, as Lambda scales) and the local moto server. A retried job also waits out its
        # backoff (SQS visibility: 1 s at least), so the last ones end a few seconds later;
        # the first-attempt rate is the jobs whose first attempt decided them.
        span = max(r.updated_at for r in records.values()) - sent_at
        first = [r for i, r in records.items() if kinds[i] in ("ok", "invalid")]
        first_span = max(r.updated_at for r in first) - sent_at if first else span
        print(
            f"  all final {span:.1f} s after the first dispatch: {len(records) / span:.0f} jobs/s"
            f" end to end; {len(first) / first_span:.0f} jobs/s on first attempts"
        )
    expected = {"ok": "succeeded", "flaky": "succeeded", "invalid": "rejected", "broken": "failed"}
    wrong = [i for i in ids if i in records and records[i].status.value != expected[kinds[i]]]
    lost = len(ids) - len(records)
    print(f"  every job accounted for: {not wrong and not lost}")
    return 0 if not wrong and not lost else 1


def run_workflow(stack: dict[str, str]) -> int:
    """A chord on the same stack: 12 resizes, then one contact sheet from their outputs."""
    from demo_contracts import contact_sheet
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.sdk import chord, create_app

    app = create_app(queue=SqsQueue(stack["queue_url"]), store=DynamoStore(stack["table"]))
    resize, sheet = app.register(resize_image), app.register(contact_sheet)
    images: list[ResizeImage] = [
        {"url": f"https://img.example.com/sheet/{n}.png", "width": 128, "flaky": n == 3,
         "broken": False}
        for n in range(12)
    ]  # fmt: skip
    started = time.monotonic()
    handle = chord([resize.s(image) for image in images], sheet.s()).dispatch(timeout=120)
    result = handle.result(timeout=120)
    took = time.monotonic() - started
    states: dict[str, int] = {}
    for step in handle.steps():
        states[step.state] = states.get(step.state, 0) + 1
    print(f"\nworkflow {handle.id}: chord of {len(images)} resizes -> contact sheet")
    print(f"  steps {states}, {result['images']} images on the sheet, {took:.2f} s end to end")
    assert app.store is not None
    attempts = {s.node: r.attempt for s in handle.steps() if (r := app.store.get(s.job_id))}
    print(
        f"  the flaky resize took {attempts['n3']} attempts; the sheet ran"
        f" {attempts['n12']} time(s), after all 12"
    )
    app.close()
    ok = result["images"] == len(images) and states == {"succeeded": 13}
    return run_events(stack, handle.id) if ok else 1


def run_events(stack: dict[str, str], workflow: str) -> int:
    """Emit an event twice (one run), then react to changes of a table through its stream."""
    import boto3
    from demo_contracts import ALBUMS_TABLE, sheet_ready
    from demo_worker import app  # the worker's app: its triggers serve the stream here
    from taskhop.lambda_worker import make_handler
    from taskhop.sdk import delivery_job_id, trigger_job_id

    assert app.store is not None
    event_id = app.emit(sheet_ready, {"workflow": workflow, "images": 12}, id=f"{workflow}-ready")
    app.emit(sheet_ready, {"workflow": workflow, "images": 12}, id=f"{workflow}-ready")
    announced = wait_final(app, delivery_job_id(event_id, "announce"))
    print(
        f"\nevent sheet.ready emitted twice: announce {announced.status.value} in"
        f" {announced.attempt} attempt ({announced.result!r})"
    )
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=ALBUMS_TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    item = {"pk": {"S": "a1"}, "title": {"S": "Sheet"}, "photos": {"N": "12"}}
    dynamodb.put_item(TableName=ALBUMS_TABLE, Item=item)
    dynamodb.put_item(TableName=ALBUMS_TABLE, Item={**item, "title": {"S": "Renamed"}})
    dynamodb.put_item(TableName=ALBUMS_TABLE, Item={**item, "photos": {"N": "13"}})
    records = stream_records(ALBUMS_TABLE)
    answer = make_handler(app)({"Records": records}, None)
    ran = [wait_final(app, trigger_job_id(r["eventID"], "on_album")) for r in records[::2]]
    skipped = app.store.get(trigger_job_id(records[1]["eventID"], "on_album"))
    print(
        f"table {ALBUMS_TABLE}: {len(records)} changes, answer {answer}; on_album ran for the"
        f" insert and the photos change ({[r.result for r in ran]}), not the rename"
        f" ({'no job' if skipped is None else skipped.status.value})"
    )
    good = announced.status.value == "succeeded" and [r.result for r in ran] == [12, 13]
    return 0 if good and skipped is None else 1


def wait_final(app: Any, job_id: str) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        record = app.store.get(job_id)
        if record is not None and record.status.is_final:
            return record
        time.sleep(0.1)
    raise SystemExit(f"job {job_id} did not end in 60 s")


def stream_records(table: str) -> list[dict[str, Any]]:
    """The table's stream as Lambda delivers it (what ``LocalStreamPoller`` reads)."""
    import boto3

    arn = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
    streams = boto3.client("dynamodbstreams")
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return [
        {**r, "eventSource": "aws:dynamodb", "eventSourceARN": arn}
        for r in streams.get_records(ShardIterator=iterator)["Records"]
    ]


if __name__ == "__main__":
    sys.exit(main())
