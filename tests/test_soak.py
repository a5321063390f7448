"""The reliability soak in each configuration (``make soak`` runs 10,000 jobs in each).

``dlq-url`` runs 1,000 jobs, each other configuration 300 (enough for every kind of fault:
the smaller plans still hold a dozen jobs that exhaust their attempts, a kill, poison and
duplicates), to keep ``make test`` short. See ``tests/soak.py``. The soak's moto server has
two FIFO receive bugs fixed (``soak.serve_moto``); the last tests show each, and that the
local event source mapping's concurrent invocations keep FIFO order over it, retries too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, TypedDict, cast

import pytest
from soak import CONFIGS, Plan, handler_run_problems, moto_server, plan, run_soak
from taskhop.sdk import JobContext, create_app, static_contract

JOBS = {"dlq-url": 1_000, "no-dlq-url": 300, "fifo": 300}
KINDS = {"ok", "recovers", "exhausts", "permanent", "invalid", "charge", "killed", "poison"}


def test_every_configuration_is_soaked() -> None:
    """``make test`` runs the soak in every configuration ``make soak`` runs."""
    assert set(JOBS) == set(CONFIGS)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("config", list(JOBS))
def test_soak_accounts_for_every_job_exactly(config: str) -> None:
    """Every job ends as its plan says, with every fault injected, in each configuration."""
    account = run_soak(JOBS[config], config=config, seed=11)
    print(account.table())
    assert account.problems == []
    assert account.figures["workers killed (pid, job in flight)"]
    assert sum(account.figures["throttles injected"].values()) > 0
    kinds = {row[0]: row for row in account.rows}
    assert set(kinds) >= KINDS
    in_dlq = 5  # the column of the account's table
    assert int(kinds["exhausts"][in_dlq]) == int(kinds["exhausts"][1]) > 0
    if CONFIGS[config].fifo:
        assert account.figures["group order"].endswith(" 0 out of order")


@pytest.fixture
def fifo_queue() -> Iterator[tuple[Any, str]]:
    """A FIFO queue on the soak's moto server, with m0..m4 sent to one message group."""
    import boto3

    with moto_server() as endpoint:
        factory: Any = boto3
        client = factory.client(
            "sqs",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="soak",
            aws_secret_access_key="soak",
        )
        attributes = {"FifoQueue": "true", "VisibilityTimeout": "30"}
        url = client.create_queue(QueueName="order.fifo", Attributes=attributes)["QueueUrl"]
        yield client, url


def _send(client: Any, url: str, count: int) -> None:
    for i in range(count):
        client.send_message(
            QueueUrl=url, MessageBody=f"m{i}", MessageGroupId="g", MessageDeduplicationId=f"m{i}"
        )


def test_soak_moto_holds_a_fifo_group_against_a_second_long_poll(
    fifo_queue: tuple[Any, str],
) -> None:
    """While one receiver holds a group's first message, another's long poll gets none of it."""
    client, url = fifo_queue
    got: list[str] = []

    def poll() -> None:
        until = time.monotonic() + 3
        while time.monotonic() < until:
            answer = client.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
            got.extend(m["Body"] for m in answer.get("Messages", []))

    pollers = [threading.Thread(target=poll) for _ in range(2)]
    for poller in pollers:
        poller.start()
    time.sleep(0.3)  # both long polls wait on the empty queue
    _send(client, url, 5)
    for poller in pollers:
        poller.join()
    assert got == ["m0"]  # in flight for 30 s: the group gives nothing else meanwhile


def test_soak_moto_gives_a_fifo_batch_back_in_order(fifo_queue: tuple[Any, str]) -> None:
    """A batch whose visibility ran out is received again from its first message, in order."""
    client, url = fifo_queue
    _send(client, url, 5)
    batch = client.receive_message(QueueUrl=url, MaxNumberOfMessages=3, VisibilityTimeout=2)
    assert [m["Body"] for m in batch["Messages"]] == ["m0", "m1", "m2"]
    first = batch["Messages"][0]["ReceiptHandle"]
    client.change_message_visibility(QueueUrl=url, ReceiptHandle=first, VisibilityTimeout=1)
    time.sleep(2.5)  # m0 visible after 1 s, m1 and m2 after 2 s
    again = client.receive_message(QueueUrl=url, MaxNumberOfMessages=3)
    assert [m["Body"] for m in again["Messages"]] == ["m0", "m1", "m2"]


def _planned_runs(the_plan: Plan) -> dict[str, list[int]]:
    """The attempts each job's handler runs when nothing unplanned happens."""
    runs: dict[str, list[int]] = {}
    for envelope in the_plan.envelopes:
        kind, data = the_plan.kinds[envelope.id], cast("dict[str, Any]", envelope.input)
        last = {"recovers": data.get("fail_until", 0), "exhausts": 3, "killed": 2}
        planned = 0 if kind in ("invalid", "charge-again") else last.get(kind, 1)
        runs[envelope.id] = list(range(1, planned + 1))
    return runs


def test_soak_account_allows_a_rerun_only_after_a_run_stopped_at_its_deadline() -> None:
    """An extra run is accounted for only when the attempt before it was stopped at its deadline."""
    the_plan = plan(200, seed=3)
    runs = _planned_runs(the_plan)
    assert handler_run_problems(the_plan, runs, {}) == []
    ok = next(i for i, kind in the_plan.kinds.items() if kind == "ok")
    charged = next(i for i, kind in the_plan.kinds.items() if kind == "charge")
    runs[ok], runs[charged] = [1, 2], [1, 2]
    assert len(handler_run_problems(the_plan, runs, {})) == 3  # two jobs, and one key
    assert handler_run_problems(the_plan, runs, {ok: {1}, charged: {1}}) == []
    # Stopped on the second run, not the first: the first run's rerun is unexplained (the
    # key may still run again, for the job that takes it over).
    assert len(handler_run_problems(the_plan, runs, {ok: {2}, charged: {2}})) == 2
    runs[ok] = [1, 2, 3]  # stopped once: one attempt more, not two
    assert len(handler_run_problems(the_plan, runs, {ok: {1}, charged: {1}})) == 1


def test_soak_account_allows_a_killed_batch_s_mates_one_lost_attempt_each() -> None:
    """A batch-mate of the killed job began beside it: attempt 1 used, never run; at most 9."""
    the_plan = plan(200, seed=3)
    runs = _planned_runs(the_plan)
    oks = [i for i, kind in the_plan.kinds.items() if kind == "ok"]
    for job in oks[:9]:
        runs[job] = [2]
    assert len(handler_run_problems(the_plan, runs, {})) == 1  # no kill: unexplained
    assert handler_run_problems(the_plan, runs, {}, kills=1) == []
    runs[oks[9]] = [2]  # a tenth: more than the rest of one batch
    assert len(handler_run_problems(the_plan, runs, {}, kills=1)) == 1
    runs[oks[9]] = [3]  # two attempts gone without a run: never explained
    assert len(handler_run_problems(the_plan, runs, {}, kills=1)) == 1


class Step(TypedDict):
    group: str
    n: int


def test_concurrent_local_invocations_keep_fifo_order_through_retries(
    fifo_queue: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four invocations at once, real handler and store: a retried job holds back its group."""
    import boto3
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue
    from taskhop.lambda_worker import LocalEventSourceMapping, make_handler

    client, _ = fifo_queue
    endpoint = client.meta.endpoint_url
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "soak",
        "AWS_SECRET_ACCESS_KEY": "soak",
    }.items():
        monkeypatch.setenv(name, value)  # fmt: skip
    session = boto3.Session()
    # A failed record's batch-mates are reported failed too, and come back after the queue's
    # visibility timeout, as on Lambda: short here, so the test waits for little.
    attributes = {"FifoQueue": "true", "VisibilityTimeout": "2"}
    url = client.create_queue(QueueName="steps.fifo", Attributes=attributes)["QueueUrl"]
    store = DynamoStore("steps", session=session)
    store.create_table()
    queue = SqsQueue(url, session=session, message_group=lambda e: str(e.input["group"]))
    app = create_app(queue=queue, store=store)
    runs: list[tuple[str, int, int]] = []  # (group, n, attempt) as each run began
    lock = threading.Lock()

    def step(data: Step, ctx: JobContext) -> int:
        with lock:
            runs.append((data["group"], data["n"], ctx.attempt))
        time.sleep(0.01)
        if data["n"] % 4 == 1 and ctx.attempt == 1:
            raise ConnectionError("flaky")  # retried after 0 s: its group waits for it
        return data["n"]

    retry = {"attempts": 3, "delay": 0, "jitter": False}
    bound = app.implement(static_contract("step", input=Step, output=int, retry=retry), step)
    groups = [f"g{g}" for g in range(5)]
    bound.dispatch_many([{"group": g, "n": n} for n in range(12) for g in groups])
    handler = make_handler(app, sqs_client=client)
    esm = LocalEventSourceMapping(handler, url, client, batch_size=4, wait_time=1, concurrency=4)
    esm.run(install_signals=False, idle_exit=5)
    for group in groups:
        order = [(n, attempt) for g, n, attempt in runs if g == group]
        expected = [(n, 1) for n in range(12)]
        expected += [(n, 2) for n in range(12) if n % 4 == 1]
        assert order == sorted(expected), group  # each job done before the next one began
    app.close()
