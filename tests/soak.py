"""The reliability soak: jobs with injected faults through the local stack, then an exact account.

``make soak`` runs 10,000 jobs in every configuration (``python tests/soak.py --jobs 10000``;
``--config`` picks one); ``make test`` runs ``tests/test_soak.py``: 1,000 jobs in the first
configuration, 300 in each other. The stack is the one users run: a moto server on 127.0.0.1
in its own process (its FIFO receives fixed to hold message groups as SQS does:
``serve_moto``), a queue with a redrive policy to a DLQ, a DynamoDB job table, and two
``taskhop worker --local`` processes (the Lambda handler behind the local event source
mapping). Configurations (``CONFIGS``):

- ``dlq-url``: a standard queue; the worker sends dead letters to ``$TASKHOP_DLQ_URL``.
- ``no-dlq-url``: a standard queue; the worker has no ``dlq_url`` and no
  ``$TASKHOP_DLQ_URL``, so it finds the DLQ from the queue's redrive policy.
- ``fifo``: a FIFO queue and a FIFO DLQ (``$TASKHOP_DLQ_URL``); jobs spread round-robin over
  16 message groups. The account also checks order within each group (``_group_order``).

Faults injected, in every configuration:

- 10% of jobs fail retryably: half recover on attempt 2 or 3, half exhaust their 3 attempts;
- 2% fail permanently (``PermanentError``); 2% carry invalid input;
- 1% poison messages (bodies that are not jobs) and 1% duplicate deliveries (the same
  message body sent twice);
- 10% of jobs are an idempotent ``charge`` whose side effect is a plain counter, and 1% are
  a second dispatch of a charge under the same idempotency key;
- throttling answers to 2% of every AWS request the workers and the producer make;
- one worker is SIGKILLed mid-batch (while a job's handler runs) and a new one is started.

On FIFO the duplicates and the second dispatches get deduplication ids of their own: under
the first one's id SQS would drop them within its 5-minute window, and they would never reach
the worker, which is what they are there to test (a re-dispatch after the window arrives so).

Then every job must be in exactly one final state (succeeded, failed, rejected; poison
dead-lettered), the DLQ must hold exactly one copy of each job that exhausted its attempts and
the poison (a permanent failure is recorded, not dead-lettered) and nothing else, the queue
must be empty, no job record may be left running and no idempotency key held, each handler
must have run once for each attempt its plan calls for, numbered 1, 2, ... by the job store,
and no more (a duplicate delivery runs nothing), and each charge's side effect must have
happened exactly once. One fault no plan foresees is allowed for, and counted in the figures:
a run stopped at its deadline (``HandlerTimeout``: a batch on a busy moto can use up the
invocation's time) fails its attempt, so the next attempt runs the handler again, and a
charge's write may then land twice (at-least-once; see ``handler_run_problems``).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
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
from collections.abc import Generator, Iterator
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
GROUPS = 16  # FIFO message groups


@dataclass(frozen=True)
class Config:
    """One way to deploy the queue and the worker; every configuration runs the same plan."""

    name: str
    fifo: bool
    """A FIFO queue and a FIFO DLQ, jobs spread over ``GROUPS`` message groups."""
    dlq_url: bool
    """The worker is given the DLQ (``$TASKHOP_DLQ_URL``); else it reads the redrive policy."""


CONFIGS = {
    config.name: config
    for config in (
        Config("dlq-url", fifo=False, dlq_url=True),
        Config("no-dlq-url", fifo=False, dlq_url=False),
        Config("fifo", fifo=True, dlq_url=True),
    )
}


@dataclass
class Plan:
    """What the producer sends: jobs with their kind, and the extra messages."""

    envelopes: list[Envelope] = field(default_factory=list[Envelope])
    kinds: dict[str, str] = field(default_factory=dict[str, str])
    poison: list[str] = field(default_factory=list[str])
    duplicates: list[str] = field(default_factory=list[str])  # bodies sent a second time
    groups: dict[str, str] = field(default_factory=dict[str, str])
    """FIFO message group of each job (by id) and of each poison body (by body)."""


def plan(jobs: int, seed: int) -> Plan:
    """The job mix, reproducible from ``seed``; groups are round-robin in dispatch order."""
    rng = random.Random(seed)
    result = Plan()
    charges: list[Envelope] = []

    def add(envelope: Envelope, kind: str) -> None:
        result.groups[envelope.id] = f"g{len(result.envelopes) % GROUPS:02d}"
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
        result.groups[result.poison[-1]] = f"g{i % GROUPS:02d}"
    doubles = rng.sample(
        [e for e in result.envelopes if result.kinds[e.id] in ("ok", "charge")],
        max(1, jobs // 100),
    )
    result.duplicates = [e.encode().decode() for e in doubles]
    return result


@contextmanager
def moto_server() -> Generator[str]:
    """A moto server in its own process on 127.0.0.1 (its own GIL, like a real endpoint).

    It is ``serve_moto``'s: moto's own, with FIFO message groups held as SQS holds them.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "soak.py"), "--moto-server", str(port)],
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


def serve_moto(port: int) -> None:
    """Run moto's server on 127.0.0.1, its FIFO receives fixed to keep each group in order.

    SQS gives out no more messages of a FIFO message group while one of them is in flight,
    and gives them out in the order they were sent. moto 5's ``SQSBackend.receive_message``
    breaks both (``test_soak.py`` shows each):

    - It reads the groups in flight once per call, before its long poll waits: a long poll
      that began while a group had nothing to give returns the group's next message even
      when another receiver took the one before it meanwhile (two workers ran one group).
    - It notices that an in-flight message became visible again only on reaching it in the
      queue, and skips it while a later message of its group is still counted in flight;
      as the clock moves on during the scan, that later message may be visible by the time
      it is reached, and is handed out first. When a whole batch comes back, moto hands out
      its last message and those behind it before the rest (m2, m3, m4 before m0 and m1).

    Here a FIFO receive reads the clock once (a thread-local instant for moto's
    ``unix_time_millis``), forgets every in-flight message visible again at that instant,
    then scans; a long poll is a loop of such short receives, each reading the groups afresh;
    receives, deletes and visibility changes on a FIFO queue take turns, so none sees the
    in-flight set while another changes it. Standard queues are moto's own.

    Under both, the dev stack's moto speed-ups (``taskhop.lambda_worker._moto_speedups``), as
    ``taskhop dev`` runs moto: without them a send and a receive cost O(queue depth).
    """
    import threading

    import moto.sqs.models as sqs_models
    from moto.core.utils import unix_time_millis as clock
    from moto.server import main as moto_main
    from moto.sqs.models import SQSBackend
    from taskhop.lambda_worker import _moto_speedups

    _moto_speedups.apply()
    receive, delete, change = (
        SQSBackend.receive_message,
        SQSBackend.delete_message,
        SQSBackend.change_message_visibility,
    )
    instant = threading.local()  # .now: the time a receive in this thread reads, if set
    turns = threading.Lock()

    def unix_time_millis(dt: Any = None) -> float:
        now: float | None = getattr(instant, "now", None)
        return clock(dt) if now is None or dt is not None else now

    def receive_message(
        self: SQSBackend,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        queue = self.get_queue(queue_name)
        if not queue.fifo_queue:
            return receive(
                self, queue_name, count, wait_seconds_timeout, visibility_timeout,
                message_attribute_names,
            )  # fmt: skip
        until = time.monotonic() + wait_seconds_timeout
        while True:
            with turns:
                instant.now = clock()
                try:
                    back = [message for message in list(queue.pending_messages) if message.visible]
                    queue.pending_messages.difference_update(back)
                    got = receive(
                        self, queue_name, count, 0, visibility_timeout, message_attribute_names
                    )
                finally:
                    instant.now = None
            if got or time.monotonic() >= until:
                return got
            time.sleep(0.05)

    def delete_message(self: SQSBackend, queue_name: str, receipt_handle: str) -> None:
        if not self.get_queue(queue_name).fifo_queue:
            return delete(self, queue_name, receipt_handle)
        with turns:
            return delete(self, queue_name, receipt_handle)

    def change_message_visibility(
        self: SQSBackend, queue_name: str, receipt_handle: str, visibility_timeout: int
    ) -> None:
        if not self.get_queue(queue_name).fifo_queue:
            return change(self, queue_name, receipt_handle, visibility_timeout)
        with turns:
            return change(self, queue_name, receipt_handle, visibility_timeout)

    sqs_models.__dict__["unix_time_millis"] = unix_time_millis  # what its Message reads
    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]
    SQSBackend.delete_message = delete_message  # type: ignore[method-assign]
    SQSBackend.change_message_visibility = change_message_visibility  # type: ignore[method-assign]
    moto_main(["-H", "127.0.0.1", "-p", str(port)])


@dataclass
class Stack:
    """The resources of one run, and the environment its processes get."""

    config: Config
    endpoint: str
    queue_url: str
    dlq_url: str
    table: str
    effects_table: str
    directory: Path

    def env(self, throttle: float) -> dict[str, str]:
        env = {
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
        if not self.config.dlq_url:  # the worker must find the DLQ from the redrive policy
            del env["TASKHOP_DLQ_URL"]
        return env


def create_resources(endpoint: str, directory: Path, config: Config) -> Stack:
    import boto3
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.infra import DEFAULT_RECEIVES

    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
    factory: Any = boto3
    sqs, dynamodb = factory.client("sqs"), factory.client("dynamodb")
    suffix = ".fifo" if config.fifo else ""
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if config.fifo else {}
    dlq_url = sqs.create_queue(QueueName=f"soak-dlq{suffix}", Attributes=fifo)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    # The redrive policy is a backstop only, at the infra templates' default: the worker
    # dead-letters itself after 3 attempts, to the DLQ it is given or to this policy's.
    # A redrive by SQS itself would show in the account as a DLQ message with no reason.
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": DEFAULT_RECEIVES}
    queue_url = sqs.create_queue(
        QueueName=f"soak{suffix}",
        Attributes={
            **fifo,
            "VisibilityTimeout": str(VISIBILITY),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    DynamoStore("soak-jobs").create_table()
    dynamodb.create_table(
        TableName="soak-effects",
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return Stack(config, endpoint, queue_url, dlq_url, "soak-jobs", "soak-effects", directory)


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
) -> list[str]:
    """Send every job, the duplicates and the poison, interleaved, with throttling injected.

    Returns the job ids in the order their messages were sent (a duplicate's too; on FIFO
    each went to its job's group, and ``_group_order`` checks that order). Past ``deadline``
    it stops sending: what was not sent shows in the account as not final.
    """
    import boto3
    from soak_faults import inject_throttling
    from taskhop.backends.sqs import SqsQueue

    session = boto3.Session()
    inject_throttling(session, throttle, random.Random(rng.random()), stack.directory)
    fifo = stack.config.fifo
    queue = SqsQueue(
        stack.queue_url,
        session=session,
        message_group=(lambda e: the_plan.groups[e.id]) if fifo else None,
    )

    def send_raw(body: str, group: str, dedupe: str) -> None:
        fields: dict[str, Any] = {"QueueUrl": stack.queue_url, "MessageBody": body}
        if fifo:
            fields["MessageGroupId"] = group
            fields["MessageDeduplicationId"] = hashlib.sha256(dedupe.encode()).hexdigest()
        queue.client.send_message(**fields)

    sent: list[str] = []

    def send_jobs(envelopes: list[Envelope]) -> None:
        sent.extend(e.id for e in envelopes)
        if not fifo:
            queue.send_many(envelopes)
            return
        run: list[Envelope] = []
        for envelope in envelopes:  # in order: a second dispatch goes between its neighbours
            if the_plan.kinds[envelope.id] != "charge-again":
                run.append(envelope)
                continue
            if run:
                queue.send_many(run)
                run = []
            # SqsQueue deduplicates by the idempotency key, so SQS would drop this one: give
            # it the deduplication id a dispatch after SQS's 5-minute window would have.
            fields = queue.entries.entry(envelope, None).fields
            fields["MessageDeduplicationId"] = hashlib.sha256(envelope.id.encode()).hexdigest()
            queue.client.send_message(QueueUrl=stack.queue_url, **fields)
        if run:
            queue.send_many(run)

    def send_extra(body: str) -> None:
        if body in the_plan.groups:  # poison
            send_raw(body, the_plan.groups[body], f"poison {body}")
        else:  # a duplicate delivery, after its job in the job's group
            job_id = _body_id(body)
            send_raw(body, the_plan.groups[job_id], f"duplicate {job_id}")
            sent.append(job_id)

    raw: list[str] = the_plan.poison + the_plan.duplicates
    rng.shuffle(raw)
    step = max(1, len(the_plan.envelopes) // max(1, len(raw)))
    sent_raw = 0
    for i in range(0, len(the_plan.envelopes), 100):
        while queue_depth(queue.client, stack.queue_url) > 200:  # a steady producer:
            time.sleep(0.2)  # moto's SendMessage slows down as the queue grows (O(depth))
            if time.monotonic() > deadline:
                return sent
        send_jobs(the_plan.envelopes[i : i + 100])
        upto = min(len(raw), (i + 100) // step)
        for body in raw[sent_raw:upto]:
            send_extra(body)
        sent_raw = max(sent_raw, upto)
    for body in raw[sent_raw:]:  # each raw body is sent once
        send_extra(body)
    return sent


def queue_depth(sqs: Any, url: str) -> int:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


def receive_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message on a queue, each read once and then deleted.

    Deleted, not just hidden: a FIFO queue returns nothing more of a message group while
    one of its messages is in flight, so a hidden group would hide the rest of its letters.
    """
    messages: dict[str, dict[str, Any]] = {}
    empty = 0
    while empty < 2:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=600,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        empty = 0 if got else empty + 1
        messages.update({m["MessageId"]: m for m in got})
        if got:
            entries: Any = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ]
            sqs.delete_message_batch(QueueUrl=url, Entries=entries)
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


def account(
    stack: Stack, the_plan: Plan, sent: list[str], workers: Workers, elapsed: float
) -> Account:
    """Read the store, the DLQ, the effects table and the logs; check everything.

    ``sent`` is what ``produce`` returns: the job ids in the order their messages went out.
    """
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
    runs: list[tuple[str, int]] = []  # (job, attempt) per handler run, in the order they began
    attempts_run: dict[str, list[int]] = collections.defaultdict(list)  # job -> attempts run
    for line in _lines(stack.directory / "runs.log"):
        job_id, attempt = line.split()
        runs.append((job_id, int(attempt)))
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
    unexplained = [m for m in dead if "taskhop-reason" not in m.get("MessageAttributes", {})]
    if unexplained:  # moved by SQS's redrive (maxReceiveCount), not sent by the worker
        problems.append(f"DLQ: {len(unexplained)} messages without a taskhop-reason")
    # Every delivery of a dead-lettered job sends it to the DLQ again (its record keeps the
    # reason), and the worker deletes the message right after the send: a second copy takes
    # a crash or a lost delete between the two, which this soak does not inject. (A FIFO DLQ
    # would also drop a copy sent within 5 minutes: the deduplication id is the message id.)
    copies = {i: n for i, n in dead_jobs.items() if i and n > 1}
    if copies:
        problems.append(f"DLQ: jobs dead-lettered more than once: {copies}")
    job_lines = [
        line
        for path in stack.directory.glob("worker-*.log")
        for line in _json_lines(path)
        if line.get("event") == "job"
    ]
    stopped: dict[str, set[int]] = collections.defaultdict(set)  # job -> attempts stopped
    for job_line in job_lines:
        if job_line.get("error_type") == "HandlerTimeout" and job_line.get("job_id"):
            stopped[job_line["job_id"]].add(int(job_line["attempt"]))
    problems += handler_run_problems(the_plan, attempts_run, stopped, kills=len(workers.killed))
    problems += _store_problems(_scan(dynamodb, stack.table))
    charges = [e for e in the_plan.envelopes if the_plan.kinds[e.id] == "charge"]
    stopped_by_key: dict[str, int] = collections.Counter()
    for envelope in the_plan.envelopes:
        if envelope.idempotency_key:
            stopped_by_key[envelope.idempotency_key] += len(stopped[envelope.id])
    once = sum(1 for e in charges if effects.get(str(e.idempotency_key)) == 1)
    again = {k: n for k, n in effects.items() if 1 < n <= 1 + stopped_by_key[k]}
    if once + len(again) != len(charges) or len(effects) != len(charges):
        others = {k: n for k, n in effects.items() if n != 1 and k not in again}
        problems.append(f"charge effects: {once}/{len(charges)} exactly once; others {others}")
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
        f"{line['outcome']}/{line.get('reason', '-')}" for line in job_lines
    )
    figures: dict[str, Any] = {
        "configuration": stack.config.name,
        "elapsed": f"{elapsed:.1f} s ({len(ids) / elapsed:.0f} jobs/s)",
        "duplicate deliveries sent": len(the_plan.duplicates),
        "duplicate deliveries that ran a handler again": sum(
            1 for body in the_plan.duplicates if len(attempts_run[_body_id(body)]) > 1
        ),
        "attempt numbers used by a receive that ran nothing": sum(
            max(attempts) - len(attempts) for attempts in attempts_run.values() if attempts
        ),
        "charge side effects applied exactly once": f"{once} of {len(charges)}",
        "handler runs stopped at their deadline (HandlerTimeout), so run again": sum(
            len(attempts) for attempts in stopped.values()
        ),
        "charges applied twice so (the stopped run's write had landed)": sorted(again),
        "throttles injected": dict(throttles),
        "workers killed (pid, job in flight)": workers.killed,
        "extra DLQ copies (a dead letter sent again before its delete)": len(dead)
        - sum(1 for c in dead_jobs if c)
        - sum(1 for body in the_plan.poison if dead_bodies[body]),
        "worker outcomes (from the JSON job lines)": dict(sorted(outcomes.items())),
    }
    if stack.config.fifo:
        order_problems, figures["group order"] = _group_order(the_plan, sent, runs)
        problems += order_problems
    if not workers.killed:
        problems.append("no worker was killed: the trip job never ran")
    return Account(rows, problems, figures)


CRASH_MATES = 9
"""Jobs a SIGKILL may cost one attempt besides its own: the rest of a batch of 10, begun side by
side (a batch of first deliveries overlaps its store round trips; a job that began and never
reported used its attempt). Their redelivery runs one after another, so it happens once."""


def handler_run_problems(
    the_plan: Plan,
    attempts_run: dict[str, list[int]],
    stopped: dict[str, set[int]],
    *,
    kills: int = 0,
) -> list[str]:
    """Each handler ran once per attempt its plan calls for, attempts numbered 1, 2, ...

    The job store numbers the attempts (a receive that ran nothing uses none: a record left
    unprocessed when its invocation ran out of time, its batch-mates in the killed worker, a
    redelivery held off by a live lease, a FIFO record held back behind a failure in its
    group), so the runs of a job are exactly 1..n: never a repeat, never a gap.

    The one fault the plan cannot foresee is a run stopped at its deadline (``stopped``: the
    attempts whose job line says ``HandlerTimeout``; the invocation's remaining time bounds
    every handler, and a batch on a busy moto can use it up). Such an attempt fails, so the
    job runs one attempt more than planned (up to its 3), and a charge's key, released by the
    failure, runs the handler once more: at-least-once, as docs/protocol.md describes for a
    worker that stops after a side effect.

    The other is a batch-mate of the job whose worker was killed (``kills``): it had begun in
    the store, so its attempt 1 is used without a run, and its runs are 2, 3, ... instead (at
    most ``CRASH_MATES`` such jobs a kill). Every other extra or missing run is a problem.
    """
    problems: list[str] = []
    crash_mates: list[str] = []
    by_key: dict[str, int] = collections.Counter()
    allowed: dict[str, int] = collections.Counter()  # key -> runs it may take
    for envelope in the_plan.envelopes:
        kind, runs = the_plan.kinds[envelope.id], sorted(attempts_run[envelope.id])
        cut = stopped.get(envelope.id, set())
        if len(runs) != len(set(runs)):
            problems.append(f"{kind} {envelope.id}: an attempt ran twice: {runs}")
        data: Any = envelope.input
        if kind in ("charge", "charge-again"):  # one run per key, by whichever job was first
            key = str(envelope.idempotency_key)
            by_key[key] += len(runs)
            allowed[key] += len(cut & set(runs))
            # Each run but the last was stopped; after a stopped one, the key may have gone
            # to the other job, and this one found it completed (no further run).
            expected = list(range(1, len(runs) + 1))
            if runs and runs == [r + 1 for r in expected] and not set(runs[:-1]) - cut:
                crash_mates.append(envelope.id)  # its attempt 1 began in the killed batch
                continue
            if runs != expected or not set(runs[:-1]) <= cut:
                problems.append(f"{kind} {envelope.id}: attempts run {runs} (stopped: {cut})")
            continue
        last = {"invalid": 0, "recovers": data.get("fail_until", 0), "exhausts": 3, "killed": 2}
        planned = last.get(kind, 1)  # ok, permanent: one run
        while planned in cut and planned < 3:  # a stopped run failed: one attempt more
            planned += 1
        expected = list(range(1, planned + 1))
        if runs != expected and runs == list(range(2, max(planned, 2) + 1)):
            crash_mates.append(envelope.id)  # its attempt 1 began in the killed batch
        elif runs != expected:
            problems.append(f"{kind} {envelope.id}: attempts run {runs}, not {expected}")
    if len(crash_mates) > CRASH_MATES * kills:
        problems.append(
            f"{len(crash_mates)} jobs lost attempt 1 without a run, more than {CRASH_MATES}"
            f" batch-mates for each of {kills} killed workers: {crash_mates[:5]}"
        )
    wrong = {key: n for key, n in by_key.items() if n != 1 + allowed[key]}
    if wrong:
        problems.append(f"charge: handler runs per idempotency key not 1: {wrong}")
    return problems


def _store_problems(items: Iterator[dict[str, Any]]) -> list[str]:
    """Nothing left running in the job table: every job record final, every key completed.

    The whole table, not only the planned jobs: a record made for anything else (a poison
    body with an id, say) must not be left behind either.
    """
    from taskhop.sdk import JobStatus

    final = {status.value for status in JobStatus if status.is_final}
    open_jobs: list[str] = []
    held_keys = 0
    for item in items:
        pk, status = item["pk"]["S"], item.get("status", {}).get("S", "no status")
        if pk.startswith("job#") and status not in final:
            open_jobs.append(f"{pk.removeprefix('job#')} ({status})")
        elif pk.startswith("key#") and item.get("state", {}).get("S") != "completed":
            held_keys += 1
    problems: list[str] = []
    if open_jobs:
        problems.append(f"store: {len(open_jobs)} job records not final, e.g. {open_jobs[:3]}")
    if held_keys:
        problems.append(f"store: {held_keys} idempotency keys still held (not completed)")
    return problems


def _group_order(
    the_plan: Plan, sent: list[str], runs: list[tuple[str, int]]
) -> tuple[list[str], str]:
    """FIFO: within each message group, every job's runs came after those of the jobs before it.

    The check: for jobs A and B of one group, A's first message sent before B's, both with
    at least one handler run, B's first run began after A's last run began (the order of the
    lines in runs.log, one O_APPEND write as each run begins, so across processes too). It
    holds for every job that ran, failed ones included: a FIFO queue gives out no more of a
    group while one of its messages is in flight, a retry keeps its message, and the runtime
    reports the rest of a group failed unprocessed after a failure, so nothing overtakes a job
    that is still to run again. Jobs that never ran the handler (invalid input, a second
    dispatch of a key that had run) have no place in the order and are left out. Returns the
    problems and the figure.
    """
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index, (job_id, _) in enumerate(runs):
        first.setdefault(job_id, index)
        last[job_id] = index
    order: dict[str, list[str]] = collections.defaultdict(list)  # group -> jobs, as sent
    for job_id in dict.fromkeys(sent):  # a duplicate delivery sent first puts its job there
        if job_id in first:
            order[the_plan.groups[job_id]].append(job_id)
    problems: list[str] = []
    pairs = 0
    for group, job_ids in sorted(order.items()):
        for before, after in itertools.pairwise(job_ids):
            pairs += 1
            if last[before] > first[after]:
                problems.append(
                    f"group {group}: {after} ({the_plan.kinds[after]}) ran before"
                    f" {before} ({the_plan.kinds[before]}) was done, though sent after it"
                )
    ran = sum(len(job_ids) for job_ids in order.values())
    figure = (
        f"{ran} jobs that ran, in {len(order)} groups: {pairs} consecutive pairs checked,"
        f" {len(problems)} out of order"
    )
    return problems[:20], figure


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


def run_soak(jobs: int, *, config: str = "dlq-url", seed: int = 7, throttle: float = 0.02,
             workers: int = 2, timeout: float | None = None, progress: bool = False,
             keep: Path | None = None) -> Account:  # fmt: skip
    """Run the whole soak in one configuration (a ``CONFIGS`` name) and return its account.

    Each run has a stack of its own (moto server, queues, tables, workers). ``timeout``
    bounds the whole run (default: 300 s plus 0.25 s a job, about 4x what moto needs on two
    shared cores); a run that hits it is reported, never hangs. ``keep``: a directory for
    the run's logs (the workers' JSON job lines, runs.log, throttles.log), kept afterwards to
    look into a problem; by default they go to a temporary directory.
    """
    if config not in CONFIGS:
        raise ValueError(f"config: one of {sorted(CONFIGS)}, got {config!r}")
    the_plan = plan(jobs, seed)
    timeout = 300 + 0.25 * jobs if timeout is None else timeout
    with ExitStack() as stack_:
        if keep is None:
            directory = Path(stack_.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        else:
            directory = keep
            directory.mkdir(parents=True, exist_ok=False)  # the account reads every log there
        endpoint = stack_.enter_context(moto_server())
        stack = create_resources(endpoint, directory, CONFIGS[config])
        pool = Workers(stack, workers, throttle)
        try:
            started = time.monotonic()
            sent = produce(stack, the_plan, throttle, random.Random(seed), started + timeout)
            print(f"  dispatched in {time.monotonic() - started:.1f} s", file=sys.stderr)
            wait_until_settled(stack, the_plan, started + timeout, progress)
            elapsed = time.monotonic() - started
        finally:
            pool.stop()
        return account(stack, the_plan, sent, pool, elapsed)


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
    parser = argparse.ArgumentParser(description=str(__doc__).split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument(
        "--config",
        choices=[*CONFIGS, "all"],
        default="all",
        help="the queue and worker configuration to run (default: all, one after another)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--throttle", type=float, default=0.02)
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep each run's logs in DIR/<config> (a new directory) instead of a temporary one",
    )
    parser.add_argument("--moto-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.moto_server is not None:  # moto_server() starts this script as the server
        serve_moto(args.moto_server)
        return 0
    names = list(CONFIGS) if args.config == "all" else [args.config]
    failed: list[str] = []
    for name in names:
        print(f"== {name}: {args.jobs} jobs", file=sys.stderr, flush=True)
        keep = None if args.keep is None else args.keep / name
        result = run_soak(args.jobs, config=name, seed=args.seed, throttle=args.throttle,
                          progress=True, keep=keep)  # fmt: skip
        print(f"== {name}: {args.jobs} jobs\n{result.table()}\n", flush=True)
        if result.problems:
            failed.append(name)
    if len(names) > 1:
        print(f"configurations with problems: {failed}" if failed else "every configuration: yes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
