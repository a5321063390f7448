"""The reliability soak: jobs with injected faults through the local stack, then an exact account.

``make soak`` runs 10,000 jobs (``python tests/soak.py --jobs 10000``); ``make test`` runs
1,000 (``tests/test_soak.py``). The stack is the one users run: a moto server on 127.0.0.1
in its own process, a queue with a DLQ, a DynamoDB job table, and two ``taskhop worker
--local`` processes (the Lambda handler behind the local event source mapping).

Faults injected:

- 10% of jobs fail retryably: half recover on attempt 2 or 3, half exhaust their 3 attempts;
- 2% fail permanently (``PermanentError``); 2% carry invalid input;
- 1% poison messages (bodies that are not jobs) and 1% duplicate deliveries (the same
  message body sent twice);
- 10% of jobs are an idempotent ``charge`` whose side effect is a plain counter, and 1% are
  a second dispatch of a charge under the same idempotency key;
- throttling answers to 2% of every AWS request the workers and the producer make;
- one worker is SIGKILLed mid-batch (while a job's handler runs) and a new one is started.

Then every job must be in exactly one final state (succeeded, failed, rejected; poison
dead-lettered), the DLQ must hold exactly one copy of each job that exhausted its attempts and
the poison (a permanent failure is recorded, not dead-lettered), the queue must be empty,
each handler must have run once per attempt it was given and no more (a duplicate delivery
runs nothing), and each charge's side effect must have happened exactly once.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from soak_contracts import charge, work  # noqa: E402
from taskhop.static_contracts import Envelope, make_envelope  # noqa: E402

EXPECTED = {
    "ok": "succeeded",
    "recovers": "succeeded",
    "exhausts": "failed",
    "permanent": "failed",
    "invalid": "rejected",
    "charge": "succeeded",
    "charge-again": "succeeded",
    "killed": "succeeded",
}
DEAD_LETTERED = {"exhausts"}  # docs/protocol.md: only a failed last attempt is dead-lettered;
# a permanent error or invalid input is recorded (with its error) and acknowledged.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "soak",
    "AWS_SECRET_ACCESS_KEY": "soak",
    "AWS_DEFAULT_REGION": "us-east-1",
}
VISIBILITY = 8  # seconds; the worker's function timeout is 6 (Lambda wants visibility above it)


@dataclass
class Plan:
    """What the producer sends: jobs with their kind, and the extra messages."""

    envelopes: list[Envelope] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    poison: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # bodies sent a second time


def plan(jobs: int, seed: int) -> Plan:
    """The job mix, reproducible from ``seed``."""
    rng = random.Random(seed)
    result = Plan()
    charges: list[Envelope] = []

    def add(envelope: Envelope, kind: str) -> None:
        result.envelopes.append(envelope)
        result.kinds[envelope.id] = kind

    trip_at = jobs // 3
    while len(result.envelopes) < jobs:
        n = len(result.envelopes)
        roll = rng.random()
        job = {"n": n, "fail_until": 0, "permanent": False, "trip": False}
        if n == trip_at:
            add(make_envelope(work, {**job, "trip": True}), "killed")
        elif roll < 0.05:
            add(make_envelope(work, {**job, "fail_until": rng.choice([2, 3])}), "recovers")
        elif roll < 0.10:
            add(make_envelope(work, {**job, "fail_until": 99}), "exhausts")
        elif roll < 0.12:
            add(make_envelope(work, {**job, "permanent": True}), "permanent")
        elif roll < 0.14:
            add(make_envelope(work, {**job, "n": "not a number"}), "invalid")
        elif roll < 0.24:
            key = f"charge-{seed}-{n}"
            envelope = make_envelope(
                charge, {"account": f"acct-{n % 97}", "cents": n}, idempotency_key=key
            )
            add(envelope, "charge")
            charges.append(envelope)
        elif roll < 0.25 and charges:
            first = rng.choice(charges)
            again = make_envelope(charge, first.input, idempotency_key=first.idempotency_key)
            add(again, "charge-again")
        else:
            add(make_envelope(work, job), "ok")
    for i in range(max(1, jobs // 100)):
        result.poison.append(
            rng.choice(
                [
                    f"not json at all #{i}",
                    json.dumps({"hello": "from another producer", "i": i}),
                    json.dumps({"taskhop": 99, "id": f"future-{i}", "task": "x", "input": {}}),
                    json.dumps({"taskhop": 1, "id": f"cut-{i}", "task": "soak-work"}),
                ]
            )
        )
    doubles = rng.sample(
        [e for e in result.envelopes if result.kinds[e.id] in ("ok", "charge")],
        max(1, jobs // 100),
    )
    result.duplicates = [e.encode().decode() for e in doubles]
    return result


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server in its own process on 127.0.0.1 (its own GIL, like a real endpoint)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Stack:
    endpoint: str
    queue_url: str
    dlq_url: str
    table: str
    effects_table: str
    directory: Path

    def env(self, throttle: float) -> dict[str, str]:
        return {
            **os.environ,
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "TASKHOP_QUEUE_URL": self.queue_url,
            "TASKHOP_DLQ_URL": self.dlq_url,
            "TASKHOP_TABLE": self.table,
            "SOAK_DIR": str(self.directory),
            "SOAK_EFFECTS_TABLE": self.effects_table,
            "SOAK_THROTTLE": str(throttle),
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }


def create_resources(endpoint: str, directory: Path) -> Stack:
    import boto3
    from taskhop.backends.dynamodb import DynamoStore

    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
    factory: Any = boto3
    sqs, dynamodb = factory.client("sqs"), factory.client("dynamodb")
    dlq_url = sqs.create_queue(QueueName="soak-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName="soak",
        Attributes={
            "VisibilityTimeout": str(VISIBILITY),
            # A backstop only: the worker dead-letters explicitly (--dlq-url) long before.
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 10}),
        },
    )["QueueUrl"]
    DynamoStore("soak-jobs").create_table()
    dynamodb.create_table(
        TableName="soak-effects",
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return Stack(endpoint, queue_url, dlq_url, "soak-jobs", "soak-effects", directory)


class Workers:
    """``taskhop worker --local`` processes; kills the one that trips, and starts another."""

    def __init__(self, stack: Stack, count: int, throttle: float) -> None:
        self.stack = stack
        self.env = stack.env(throttle)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed: list[tuple[int, str]] = []  # (pid, job id it was running)
        self._stop = threading.Event()
        for _ in range(count):
            self.start()
        self._watch = threading.Thread(target=self._kill_on_trip, daemon=True)
        self._watch.start()

    def start(self) -> None:
        n = len(self.procs)
        exe = Path(sys.executable).with_name("taskhop")
        args = [str(exe), "worker", "--local", "--app", "soak_app:app", "--wait-time", "1"]
        args += ["--function-timeout", str(VISIBILITY - 2)]
        with open(self.stack.directory / f"worker-{n}.log", "wb") as out:
            self.procs.append(subprocess.Popen(args, env=self.env, stdout=out, stderr=out))

    def _kill_on_trip(self) -> None:
        while not self._stop.wait(0.05):
            for marker in self.stack.directory.glob("tripped-*"):
                pid = int(marker.name.split("-")[1])
                os.kill(pid, signal.SIGKILL)  # mid-batch: its handler is running right now
                self.killed.append((pid, marker.read_text()))
                print(f"  killed worker {pid} at {time.strftime('%X')}", file=sys.stderr)
                marker.unlink()
                self.start()

    def stop(self) -> None:
        self._stop.set()
        self._watch.join()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def produce(
    stack: Stack, the_plan: Plan, throttle: float, rng: random.Random, deadline: float
) -> None:
    """Send every job, the duplicates and the poison, interleaved, with throttling injected.

    Past ``deadline`` it stops sending: what was not sent shows in the account as not final.
    """
    import boto3
    from soak_faults import inject_throttling
    from taskhop.backends.sqs import SqsQueue

    session = boto3.Session()
    inject_throttling(session, throttle, random.Random(rng.random()), stack.directory)
    queue = SqsQueue(stack.queue_url, session=session)
    raw: list[str] = the_plan.poison + the_plan.duplicates
    rng.shuffle(raw)
    step = max(1, len(the_plan.envelopes) // max(1, len(raw)))
    sent_raw = 0
    for i in range(0, len(the_plan.envelopes), 100):
        while queue_depth(queue.client, stack.queue_url) > 200:  # a steady producer:
            time.sleep(0.2)  # moto's SendMessage slows down as the queue grows (O(depth))
            if time.monotonic() > deadline:
                return
        queue.send_many(the_plan.envelopes[i : i + 100])
        upto = min(len(raw), (i + 100) // step)
        for body in raw[sent_raw:upto]:
            queue.client.send_message(QueueUrl=stack.queue_url, MessageBody=body)
        sent_raw = max(sent_raw, upto)
    for body in raw[sent_raw:]:  # each raw body is sent once
        queue.client.send_message(QueueUrl=stack.queue_url, MessageBody=body)


def queue_depth(sqs: Any, url: str) -> int:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message on a queue (hidden for a while once read, so each is read once)."""
    messages: dict[str, dict[str, Any]] = {}
    empty = 0
    while empty < 2:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=600,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        empty = 0 if got else empty + 1
        messages.update({m["MessageId"]: m for m in got})
    return list(messages.values())


@dataclass
class Account:
    """Where every job and message ended, and the checks that must all hold."""

    rows: list[tuple[str, ...]]
    problems: list[str]
    figures: dict[str, Any]

    def table(self) -> str:
        header = ("kind", "sent", "succeeded", "failed", "rejected", "in DLQ", "not final",
                  "handler runs", "as expected")  # fmt: skip
        widths = [max(len(str(r[i])) for r in [header, *self.rows]) for i in range(len(header))]
        lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                           for i, (c, w) in enumerate(zip(row, widths, strict=True)))
                 for row in [header, *self.rows]]  # fmt: skip
        lines.insert(1, "-" * len(lines[0]))
        lines.append("")
        lines += [f"{name}: {value}" for name, value in self.figures.items()]
        lines.append("")
        lines += [f"PROBLEM: {p}" for p in self.problems] or ["every job accounted for: yes"]
        return "\n".join(lines)


def account(stack: Stack, the_plan: Plan, workers: Workers, elapsed: float) -> Account:
    """Read the store, the DLQ, the effects table and the logs; check everything."""
    import boto3
    from taskhop.backends.dynamodb import DynamoStore

    factory: Any = boto3
    sqs, dynamodb = factory.client("sqs"), factory.client("dynamodb")
    ids = [e.id for e in the_plan.envelopes]
    records = DynamoStore(stack.table).get_many(ids)
    dead = receive_all(sqs, stack.dlq_url)
    dead_jobs = collections.Counter(
        m.get("MessageAttributes", {}).get("taskhop-job-id", {}).get("StringValue") for m in dead
    )
    dead_bodies = collections.Counter(m["Body"] for m in dead)
    attempts_run: dict[str, list[int]] = collections.defaultdict(list)  # job -> attempts run
    for line in _lines(stack.directory / "runs.log"):
        job_id, attempt = line.split()
        attempts_run[job_id].append(int(attempt))
    throttles = collections.Counter(
        line.split()[1] for line in _lines(stack.directory / "throttles.log")
    )
    effects = {
        item["key"]["S"]: int(item["applied"]["N"]) for item in _scan(dynamodb, stack.effects_table)
    }
    problems: list[str] = []
    rows: list[tuple[str, ...]] = []
    by_kind: dict[str, list[str]] = collections.defaultdict(list)
    for job_id, kind in the_plan.kinds.items():
        by_kind[kind].append(job_id)
    for kind, job_ids in by_kind.items():
        ends = collections.Counter(_end(records.get(i)) for i in job_ids)
        wrong = [i for i in job_ids if _end(records.get(i)) != EXPECTED[kind]]
        dlq_wrong = [i for i in job_ids if bool(dead_jobs[i]) != (kind in DEAD_LETTERED)]
        if wrong:
            problems.append(f"{kind}: {len(wrong)} jobs not {EXPECTED[kind]}, e.g. {wrong[:3]}")
        if dlq_wrong:
            problems.append(f"{kind}: {len(dlq_wrong)} jobs wrongly in or out of the DLQ")
        counts = [len(job_ids), *(ends[s] for s in ("succeeded", "failed", "rejected"))]
        counts += [sum(1 for i in job_ids if dead_jobs[i]), ends["not final"]]
        counts.append(sum(len(attempts_run[i]) for i in job_ids))
        ok = "yes" if not wrong and not dlq_wrong else "NO"
        rows.append((kind, *map(str, counts), ok))
    poison_dead = sum(1 for body in the_plan.poison if dead_bodies[body])
    rows.append(("poison", str(len(the_plan.poison)), "", "", "", str(poison_dead), "", "0",
                 "yes" if poison_dead == len(the_plan.poison) else "NO"))  # fmt: skip
    if poison_dead != len(the_plan.poison):
        problems.append(f"poison: {len(the_plan.poison) - poison_dead} not dead-lettered")
    strangers = [m for m in dead if m["Body"] not in the_plan.poison and not _job_id(m)]
    strangers += [m for m in dead if _job_id(m) and _job_id(m) not in the_plan.kinds]
    if strangers:
        problems.append(f"DLQ: {len(strangers)} messages that are neither poison nor our jobs")
    # A dead-lettered job is final in the store, so a redelivery is skipped, never sent again.
    # A poison body has no record: a redelivery of one (its worker killed between the DLQ
    # send and the delete) is dead-lettered again, and shows in the figures below.
    copies = {i: n for i, n in dead_jobs.items() if i and n > 1}
    if copies:
        problems.append(f"DLQ: jobs dead-lettered more than once: {copies}")
    problems += _handler_run_problems(the_plan, attempts_run)
    charges = [e for e in the_plan.envelopes if the_plan.kinds[e.id] == "charge"]
    once = sum(1 for e in charges if effects.get(str(e.idempotency_key)) == 1)
    if once != len(charges) or len(effects) != len(charges):
        twice = {k: v for k, v in effects.items() if v != 1}
        problems.append(f"charge effects: {once}/{len(charges)} exactly once; others {twice}")
    holders: dict[str, list[str]] = collections.defaultdict(list)  # key -> jobs holding it
    for envelope in the_plan.envelopes:
        record = records.get(envelope.id)
        if envelope.idempotency_key and record and not record.duplicate_of:
            holders[envelope.idempotency_key].append(envelope.id)
    for envelope in the_plan.envelopes:
        key, record = envelope.idempotency_key, records.get(envelope.id)
        if key and record and record.duplicate_of and holders[key] != [record.duplicate_of]:
            problems.append(
                f"{envelope.id}: duplicate of {record.duplicate_of}, not {holders[key]}"
            )
    if any(len(jobs) != 1 for jobs in holders.values()):
        problems.append("an idempotency key ran the handler for more than one job")
    depth = queue_depth(sqs, stack.queue_url)
    if depth:
        problems.append(f"queue: {depth} messages left")
    outcomes = collections.Counter(
        f"{line['outcome']}/{line.get('reason', '-')}"
        for path in stack.directory.glob("worker-*.log")
        for line in _json_lines(path)
        if line.get("event") == "job"
    )
    figures = {
        "elapsed": f"{elapsed:.1f} s ({len(ids) / elapsed:.0f} jobs/s)",
        "duplicate deliveries sent": len(the_plan.duplicates),
        "duplicate deliveries that ran a handler again": sum(
            1 for body in the_plan.duplicates if len(attempts_run[_body_id(body)]) > 1
        ),
        "attempt numbers used by a receive that ran nothing": sum(
            max(runs) - len(runs) for runs in attempts_run.values() if runs
        ),
        "charge side effects applied exactly once": f"{once} of {len(charges)}",
        "throttles injected": dict(throttles),
        "workers killed (pid, job in flight)": workers.killed,
        "extra DLQ copies (a dead letter sent again before its delete)": len(dead)
        - sum(1 for c in dead_jobs if c)
        - sum(1 for body in the_plan.poison if dead_bodies[body]),
        "worker outcomes (from the JSON job lines)": dict(sorted(outcomes.items())),
    }
    if not workers.killed:
        problems.append("no worker was killed: the trip job never ran")
    return Account(rows, problems, figures)


def _handler_run_problems(the_plan: Plan, attempts_run: dict[str, list[int]]) -> list[str]:
    """Each handler ran at most once per attempt, as many times as its kind calls for.

    Attempt numbers are SQS receive counts, so a receive that ran nothing still uses one:
    a record returned unprocessed when its invocation ran out of time, one in the killed
    worker's batch, one whose store write was throttled past botocore's retries. Runs may
    therefore skip numbers; they may never repeat one, nor go on after the job ended.
    """
    problems: list[str] = []
    by_key: dict[str, int] = collections.Counter()
    for envelope in the_plan.envelopes:
        kind, runs = the_plan.kinds[envelope.id], sorted(attempts_run[envelope.id])
        if len(runs) != len(set(runs)):
            problems.append(f"{kind} {envelope.id}: an attempt ran twice: {runs}")
        if kind == "invalid":
            if runs:
                problems.append(f"invalid {envelope.id}: the handler ran on invalid input")
        elif kind in ("charge", "charge-again"):  # one run per key, by whichever job was first
            by_key[str(envelope.idempotency_key)] += len(runs)
        elif kind == "recovers":  # failed below fail_until, succeeded on the first run past it
            data: Any = envelope.input
            early, last = runs[:-1], runs[-1] if runs else 0
            if last < data["fail_until"] or any(a >= data["fail_until"] for a in early):
                problems.append(f"recovers {envelope.id}: attempts run {runs}")
        elif kind == "exhausts":  # failed on every run, the last one on attempt 3
            if not runs or runs[-1] != 3:
                problems.append(f"exhausts {envelope.id}: attempts run {runs}, last must be 3")
        elif kind == "killed":  # the run the kill cut short, then one that finished
            if len(runs) != 2 or runs[0] != 1:
                problems.append(f"killed {envelope.id}: attempts run {runs}, not 1 and one more")
        elif len(runs) != 1:  # ok, permanent: one run, whatever its attempt number
            problems.append(f"{kind} {envelope.id}: the handler ran {len(runs)} times")
    wrong = {key: n for key, n in by_key.items() if n != 1}
    if wrong:
        problems.append(f"charge: handler runs per idempotency key not 1: {wrong}")
    return problems


def _body_id(body: str) -> str:
    return str(json.loads(body)["id"])


def _end(record: Any) -> str:
    """The job's final status, or "not final" (no record, or still running or retrying)."""
    return str(record.status.value) if record and record.status.is_final else "not final"


def _job_id(message: dict[str, Any]) -> str | None:
    value = message.get("MessageAttributes", {}).get("taskhop-job-id", {}).get("StringValue")
    return str(value) if value else None


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in _lines(path):
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue  # a line cut short by SIGKILL


def _scan(dynamodb: Any, table: str) -> Iterator[dict[str, Any]]:
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        yield from page["Items"]


def run_soak(jobs: int, *, seed: int = 7, throttle: float = 0.02, workers: int = 2,
             timeout: float | None = None, progress: bool = False) -> Account:  # fmt: skip
    """Run the whole soak and return its account.

    ``timeout`` bounds the whole run (default: 300 s plus 0.25 s a job, about 4x what moto
    needs on two shared cores); a run that hits it is reported, never hangs.
    """
    the_plan = plan(jobs, seed)
    timeout = 300 + 0.25 * jobs if timeout is None else timeout
    with ExitStack() as stack_:
        directory = Path(stack_.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        endpoint = stack_.enter_context(moto_server())
        stack = create_resources(endpoint, directory)
        pool = Workers(stack, workers, throttle)
        try:
            started = time.monotonic()
            produce(stack, the_plan, throttle, random.Random(seed), started + timeout)
            print(f"  dispatched in {time.monotonic() - started:.1f} s", file=sys.stderr)
            wait_until_settled(stack, the_plan, started + timeout, progress)
            elapsed = time.monotonic() - started
        finally:
            pool.stop()
        return account(stack, the_plan, pool, elapsed)


def wait_until_settled(stack: Stack, the_plan: Plan, deadline: float, progress: bool) -> None:
    """Until every job is final and the queue is empty (or ``deadline``)."""
    import boto3
    from taskhop.backends.dynamodb import DynamoStore

    factory: Any = boto3
    sqs = factory.client("sqs")
    store = DynamoStore(stack.table)
    pending = [e.id for e in the_plan.envelopes]
    started = time.monotonic()
    while time.monotonic() < deadline:
        depth = queue_depth(sqs, stack.queue_url)
        if depth == 0:  # the store is read only then: reads compete with the workers' writes
            records = store.get_many(pending)
            pending = [i for i in pending if i not in records or not records[i].status.is_final]
        if progress:
            print(f"  {time.monotonic() - started:5.1f}s {depth} messages on the queue",
                  file=sys.stderr, flush=True)  # fmt: skip
        if not pending and depth == 0:
            return
        time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--throttle", type=float, default=0.02)
    args = parser.parse_args()
    result = run_soak(args.jobs, seed=args.seed, throttle=args.throttle, progress=True)
    print(result.table())
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
