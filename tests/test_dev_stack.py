"""``taskhop dev``: a fixed port, state that survives a restart, the producer's environment."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from taskhop.lambda_worker._dev import DEFAULT_PORT, dev_env, dev_port, dev_stack, planned_stack

TASKHOP = Path(sys.executable).with_name("taskhop")
OURS = ("AWS_", "TASKHOP_")


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No AWS or taskhop variable from outside; whatever ``dev_stack`` exports is undone."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith(OURS)]:
        monkeypatch.delenv(name)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_the_port_is_fixed_and_configurable() -> None:
    """5055 by default, ``$TASKHOP_DEV_PORT`` over it, ``--port`` over both; junk is refused."""
    assert dev_port(environ={}) == DEFAULT_PORT == 5055
    assert dev_port(environ={"TASKHOP_DEV_PORT": "6123"}) == 6123
    assert dev_port(7001, environ={"TASKHOP_DEV_PORT": "6123"}) == 7001
    with pytest.raises(SystemExit, match=r"\$TASKHOP_DEV_PORT='http' is not a port number"):
        dev_port(environ={"TASKHOP_DEV_PORT": "http"})
    with pytest.raises(SystemExit, match=r"port 70000 is not in 0\.\.65535"):
        dev_port(70000, environ={})


def test_a_taken_port_is_refused_with_a_message_not_a_hang(clean_env: None) -> None:
    """A port another process listens on stops the stack at once, naming the way out."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with (
            pytest.raises(SystemExit, match=rf"127.0.0.1:{port} is in use.*--port N or \$TASK"),
            dev_stack(port=port),
        ):
            pass


def test_queues_and_table_survive_a_restart(clean_env: None, tmp_path: Path) -> None:
    """Messages (delayed ones too) and table items are saved on stop, restored on start."""
    import boto3

    aws: Any = boto3
    state = tmp_path / "state.json"
    port = free_port()
    attributes = {"taskhop-reason": {"DataType": "String", "StringValue": "retries_exhausted"}}
    item: dict[str, Any] = {
        "pk": {"S": "job#1"},
        "status": {"S": "succeeded"},
        "blob": {"B": b"\x00\xff"},
    }
    with dev_stack(port=port, state_file=state) as stack:
        assert stack.endpoint == f"http://127.0.0.1:{port}"
        sqs = aws.client("sqs")
        sqs.send_message(QueueUrl=stack.queue_url, MessageBody='{"job": 1}')
        sqs.send_message(QueueUrl=stack.queue_url, MessageBody='{"job": 2}', DelaySeconds=600)
        sqs.send_message(QueueUrl=stack.dlq_url, MessageBody="dead", MessageAttributes=attributes)
        aws.client("dynamodb").put_item(TableName=stack.table, Item=item)
    assert json.loads(state.read_text())["version"] == 1

    with dev_stack(port=port, state_file=state) as stack:
        sqs = aws.client("sqs")
        got = sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10)["Messages"]
        assert [m["Body"] for m in got] == ['{"job": 1}']
        depth = sqs.get_queue_attributes(
            QueueUrl=stack.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
        )
        assert depth["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
        letter = sqs.receive_message(QueueUrl=stack.dlq_url, MessageAttributeNames=["All"])
        assert letter["Messages"][0]["MessageAttributes"]["taskhop-reason"]["StringValue"] == (
            "retries_exhausted"
        )
        read = aws.client("dynamodb").get_item(TableName=stack.table, Key={"pk": item["pk"]})
        assert read["Item"] == item

    with dev_stack(port=port, state_file=state, fresh=True) as stack:
        sqs = aws.client("sqs")
        assert "Messages" not in sqs.receive_message(QueueUrl=stack.queue_url, WaitTimeSeconds=0)
        assert "Item" not in aws.client("dynamodb").get_item(
            TableName=stack.table, Key={"pk": item["pk"]}
        )


def test_an_unreadable_state_file_stops_the_stack_and_is_kept(
    clean_env: None, tmp_path: Path
) -> None:
    """A state file that is not ours is named in the error and left untouched."""
    state = tmp_path / "state.json"
    state.write_text("{not json")
    with (
        pytest.raises(SystemExit, match=rf"cannot restore {state} .*--fresh"),
        dev_stack(port=free_port(), state_file=state),
    ):
        pass
    assert state.read_text() == "{not json"


def test_print_env_names_what_the_stack_serves(clean_env: None, tmp_path: Path) -> None:
    """``--print-env`` computes the same export lines as the running stack exports."""
    port = free_port()
    with dev_stack(port=port, state_file=None) as stack:
        assert dev_env(planned_stack(port=port), "m:app") == dev_env(stack, "m:app")
    lines = dev_env(stack, "m:app").splitlines()
    assert lines == [
        f"export AWS_ENDPOINT_URL=http://127.0.0.1:{port}",
        "export AWS_DEFAULT_REGION=us-east-1",
        "export AWS_ACCESS_KEY_ID=taskhop-dev",
        "export AWS_SECRET_ACCESS_KEY=taskhop-dev",
        f"export TASKHOP_QUEUE_URL=http://127.0.0.1:{port}/123456789012/taskhop-dev",
        f"export TASKHOP_DLQ_URL=http://127.0.0.1:{port}/123456789012/taskhop-dev-dlq",
        "export TASKHOP_TABLE=taskhop-dev",
        "export TASKHOP_APP=m:app",
    ]


APP = """
    import os
    from typing import TypedDict
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue
    from taskhop.sdk import create_app, static_contract

    class In(TypedDict):
        n: int

    double = static_contract("double", input=In, output=int)
    app = create_app(
        queue=SqsQueue(os.environ["TASKHOP_QUEUE_URL"]),
        store=DynamoStore(os.environ["TASKHOP_TABLE"]),
    )
    app.implement(double, lambda data, ctx: data["n"] * 2)
"""

PRODUCER = """
    import os
    from devapp import double
    from taskhop.backends.dynamodb import DynamoStore
    from taskhop.backends.sqs import SqsQueue
    from taskhop.sdk import create_app

    app = create_app(
        queue=SqsQueue(os.environ["TASKHOP_QUEUE_URL"]),
        store=DynamoStore(os.environ["TASKHOP_TABLE"]),
    )
    handle = app.register(double).dispatch({"n": 21})
    print(handle.id, handle.result(15))
"""


def start_dev(cwd: Path, env: dict[str, str], port: int) -> tuple[subprocess.Popen[str], str]:
    """``taskhop dev`` in ``cwd`` on ``port``; returns it and the export lines it printed."""
    proc = subprocess.Popen(
        [str(TASKHOP), "dev", "--app", "devapp:app", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    exports = ""
    for line in proc.stdout:
        if line.startswith("export "):
            exports += line
            if line.startswith("export TASKHOP_APP="):
                return proc, exports
    proc.kill()
    proc.stdout.close()
    raise AssertionError(f"taskhop dev did not start (exit {proc.wait()})")


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the one process this test started, as Ctrl-C would; it saves and exits."""
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_producer_in_another_shell_and_a_restart(tmp_path: Path) -> None:
    """Export lines let a producer dispatch; after a restart its job's record is still read."""
    (tmp_path / "devapp.py").write_text(textwrap.dedent(APP))
    (tmp_path / "producer.py").write_text(textwrap.dedent(PRODUCER))
    env = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    env["PYTHONPATH"] = str(tmp_path)
    port = free_port()
    proc, exports = start_dev(tmp_path, env, port)
    try:
        shell = f'exports="$({shlex.quote(str(TASKHOP))} dev --print-env --port {port} --app'
        shell += ' devapp:app)"; printf "%s\\n" "$exports" >printed; eval "$exports"; '
        shell += f"{shlex.quote(sys.executable)} producer.py"
        produced = subprocess.run(
            ["sh", "-c", shell], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )
        assert produced.returncode == 0, produced.stderr
        assert (tmp_path / "printed").read_text() == exports
        job_id, result = produced.stdout.split()
        assert result == "42"
    finally:
        stop(proc)
    assert (tmp_path / ".taskhop" / "dev" / "state.json").exists()

    proc, _ = start_dev(tmp_path, env, port)
    try:
        shell = f'eval "$({shlex.quote(str(TASKHOP))} dev --print-env --port {port})"; '
        shell += f"{shlex.quote(str(TASKHOP))} jobs status {job_id} --app devapp:app"
        status = subprocess.run(
            ["sh", "-c", shell], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )
        assert status.returncode == 0, status.stderr
        record = json.loads(status.stdout)
        assert (record["status"], record["result"]) == ("succeeded", 42)
    finally:
        stop(proc)


def test_dev_answers_an_app_that_fails_to_import(tmp_path: Path) -> None:
    """The stack comes up (the module reads its variables), the import fails: exit 3, stopped."""
    (tmp_path / "broken.py").write_text('import os\n\nDSN = os.environ["DATABASE_URL"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    env.pop("DATABASE_URL", None)
    env["PYTHONPATH"] = str(tmp_path)
    port = free_port()
    done = subprocess.run(
        [str(TASKHOP), "dev", "--app", "broken:app", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert 'DSN = os.environ["DATABASE_URL"]' in done.stderr  # the user's line, then ours
    assert done.stderr.endswith(
        "taskhop: --app broken:app: importing broken raised KeyError: 'DATABASE_URL'\n"
    )
    with socket.socket() as probe:  # the server it started is gone
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("port", "endpoint", "message"),
    [
        ("0", None, "--print-env needs the port the stack listens on"),
        ("5055", "http://127.0.0.1:4566", "not $AWS_ENDPOINT_URL=http://127.0.0.1:4566"),
    ],
    ids=["port 0", "another endpoint"],
)
def test_print_env_refuses_what_it_cannot_know(
    tmp_path: Path, port: str, endpoint: str | None, message: str
) -> None:
    """Any free port, or a stack on another endpoint: no export lines, a usage error (2)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    done = subprocess.run(
        [str(TASKHOP), "dev", "--print-env", "--port", port],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert message in done.stderr


def test_a_stop_while_starting_still_saves_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM before the worker polls (the app still importing) unwinds: state saved, exit 0."""
    (tmp_path / "slowapp.py").write_text("import time\n\ntime.sleep(2)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.Popen(
        [str(TASKHOP), "dev", "--app", "slowapp:app", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("export TASKHOP_APP="):  # printed before the app is imported
            break
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "taskhop dev: stopped while starting" in err
    assert json.loads((tmp_path / ".taskhop" / "dev" / "state.json").read_text())["version"] == 1


# -- the moto speed-ups: pinned, and the same answers as stock moto ---------------------------


@pytest.fixture
def stock_moto() -> Iterator[None]:
    """Stock moto for one test, even when the session's moto server runs with the speed-ups."""
    from taskhop.lambda_worker import _moto_speedups

    was = _moto_speedups.applied()
    _moto_speedups.undo()
    yield
    _moto_speedups.undo()
    if was:
        _moto_speedups.apply()


def test_the_moto_speedups_stay_off_on_a_moto_version_they_were_not_checked_on(
    stock_moto: None, caplog: pytest.LogCaptureFixture
) -> None:
    """On another moto version nothing is replaced: stock moto runs, and a note says why."""
    from moto.sqs.models import Queue
    from taskhop.lambda_worker import _moto_speedups

    stock = Queue.__dict__["attributes"]
    with (
        caplog.at_level("WARNING", logger="taskhop.dev"),
        _moto_speedups.speedups(version="5.1.0") as on,
    ):
        assert on is False
        assert Queue.__dict__["attributes"] is stock
    assert "moto 5.1.0" in caplog.text
    assert "running stock moto" in caplog.text
    with _moto_speedups.speedups() as on:  # the version installed here is the checked one
        assert on is True
        assert Queue.__dict__["attributes"] is not stock
    assert Queue.__dict__["attributes"] is stock  # undone with the block


def test_the_moto_speedups_are_pinned_to_the_installed_moto() -> None:
    """The pin names the moto this repository installs: a moto upgrade must re-check them."""
    import moto
    from taskhop.lambda_worker import _moto_speedups

    assert moto.__version__ in _moto_speedups.CHECKED_ON


UPDATES: list[tuple[str, dict[str, str]]] = [
    ("SET #a = :one, #b = :two REMOVE #c", {"#a": "a", "#b": "b", "#c": "c"}),
    ("SET a = :one ADD n :one", {}),
    ("ADD n :one SET a = :one, b = :one SET c = :one", {}),
    ("ADD x :one SET a = :one SET b = :one ADD y :one", {}),  # stock names SET, not ADD
    ("SET a = :one, a = :one", {}),
    ("SET a.b = :one, a = :one", {}),
    ("SET #a = :one, #a = :one", {"#a": "a"}),
    ("SET l = list_append(if_not_exists(l, :empty), :list), m = if_not_exists(m, :one)", {}),
    ("SET pk = :text", {}),
    ("REMOVE a, b SET c = c + :one", {}),
    ("SET a = :missing", {}),
]
"""Update expressions with every answer the replaced passes give: success and each error."""


def _moto_answers(queue_depth: int) -> list[Any]:
    """What moto (in process) answers to the ``UPDATES`` and to SQS calls on a busy queue."""
    import boto3
    from moto import mock_aws

    values: dict[str, Any] = {
        ":one": {"N": "1"},
        ":two": {"S": "x"},
        ":text": {"S": "t"},
        ":empty": {"L": []},
    }
    values[":list"] = {"L": [{"S": "q"}]}
    answers: list[Any] = []
    with mock_aws():
        factory: Any = boto3
        dynamodb = factory.client("dynamodb", region_name="us-east-1")
        dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.put_item(TableName="t", Item={"pk": {"S": "k"}, "c": {"N": "5"}})
        for n, (update, names) in enumerate(UPDATES):
            for key in ("k", f"new-{n}"):  # an item that exists, and one the update creates
                used = {k: v for k, v in values.items() if k in update}
                fields: dict[str, Any] = {"ExpressionAttributeNames": names} if names else {}
                try:
                    answer = dynamodb.update_item(
                        TableName="t", Key={"pk": {"S": key}}, UpdateExpression=update,
                        ExpressionAttributeValues=used or values, ReturnValues="ALL_NEW",
                        **fields,
                    )  # fmt: skip
                    answers.append(answer["Attributes"])
                except Exception as exc:
                    answers.append(str(exc))
        answers += _condition_answers(dynamodb)
        sqs = factory.client("sqs", region_name="us-east-1")
        for attributes in ({}, {"FifoQueue": "true", "ContentBasedDeduplication": "true"}):
            name = "q.fifo" if attributes else "q"
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            group = {"MessageGroupId": "g"} if attributes else {}
            for i in range(queue_depth):
                delay = {} if attributes else {"DelaySeconds": 60 * (i % 3 == 0)}
                sqs.send_message(QueueUrl=url, MessageBody=f"m{i % 7}", **group, **delay)
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=4, VisibilityTimeout=60)
            handles = [m["ReceiptHandle"] for m in got["Messages"]]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=handles[0])
            sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=handles[-1], VisibilityTimeout=0
            )
            try:
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=handles[0], VisibilityTimeout=0
                )
            except Exception as exc:  # deleted: no longer a valid handle
                answers.append(type(exc).__name__)
            counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            answers.append({k: v for k, v in counts.items() if "Timestamp" not in k})
            answers.append([m["Body"] for m in got["Messages"]])
    return answers


CONDITIONS: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    # taskhop's begin write: passes on a new item, on a queued one; fails on a running one.
    (
        "attribute_not_exists(pk) OR (#s IN (:q, :r) OR (#s = :run AND"
        " (attribute_not_exists(#l) OR #l <= :now)))",
        {"#s": "status", "#l": "lease"},
        {
            ":q": {"S": "queued"},
            ":r": {"S": "retrying"},
            ":run": {"S": "running"},
            ":now": {"N": "10"},
        },
    ),
    # The same text again, the names and values swapped: the kept tree is not theirs.
    (
        "attribute_not_exists(pk) OR (#s IN (:q, :r) OR (#s = :run AND"
        " (attribute_not_exists(#l) OR #l <= :now)))",
        {"#s": "lease", "#l": "status"},
        {":q": {"N": "3"}, ":r": {"S": "running"}, ":run": {"N": "3"}, ":now": {"S": "x"}},
    ),
    # taskhop's complete write.
    (
        "attribute_not_exists(pk) OR (NOT #s IN (:f1, :f2, :f3) AND #a <= :a)",
        {"#s": "status", "#a": "attempt"},
        {
            ":f1": {"S": "succeeded"},
            ":f2": {"S": "failed"},
            ":f3": {"S": "cancelled"},
            ":a": {"N": "2"},
        },
    ),
    (
        "size(#s) > :n AND begins_with(#s, :p) AND #a BETWEEN :n AND :a",
        {"#s": "status", "#a": "attempt"},
        {":n": {"N": "1"}, ":p": {"S": "r"}, ":a": {"N": "9"}},
    ),
    ("#a BETWEEN :n AND :a", {"#a": "attempt"}, {":n": {"NULL": True}, ":a": {"N": "9"}}),
    ("#s = :missing", {"#s": "status"}, {":q": {"S": "queued"}}),  # a value not given
    ("#missing = :q", {"#s": "status"}, {":q": {"S": "queued"}}),  # a name not given
    ("#s = :q", {"#s": "status"}, {":q": {"S": "queued"}, ":unused": {"N": "1"}}),
    ("status = :q", {}, {":q": {"S": "queued"}}),  # a reserved word
    ("#s = = :q", {"#s": "status"}, {":q": {"S": "queued"}}),
    ("((#s = :q))", {"#s": "status"}, {":q": {"S": "queued"}}),  # redundant parentheses
    ("#s IN :q", {"#s": "status"}, {":q": {"S": "queued"}}),
    ("#s = :q AND", {"#s": "status"}, {":q": {"S": "queued"}}),
    ("#s = :q & x", {"#s": "status"}, {":q": {"S": "queued"}}),
]
"""Condition expressions that pass, fail (with the item as it was), reuse one text, and fail
to parse, each on an item that does not exist, a queued one, and a running one."""


def _condition_answers(dynamodb: Any) -> list[Any]:
    """What moto answers to a conditional UpdateItem (ALL_NEW, ALL_OLD on failure) per case."""
    answers: list[Any] = []
    for n, (condition, names, values) in enumerate(CONDITIONS):
        for state in (None, "queued", "running"):
            key = {"pk": {"S": f"cond-{n}-{state}"}}
            if state is not None:
                item = {**key, "status": {"S": state}, "attempt": {"N": "2"}, "lease": {"N": "5"}}
                dynamodb.put_item(TableName="t", Item=item)
            try:
                answer = dynamodb.update_item(
                    TableName="t", Key=key, UpdateExpression="SET #s = :v, #n = :one",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={**names, "#s": names.get("#s", "status"),
                                              "#n": "n"},
                    ExpressionAttributeValues={**values, ":v": {"S": "running"},
                                               ":one": {"N": "1"}},
                    ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )  # fmt: skip
                answers.append(answer["Attributes"])
            except Exception as exc:
                response = getattr(exc, "response", {})
                answers.append((str(exc), response.get("Item")))
    return answers


def test_moto_answers_the_same_with_the_speedups(stock_moto: None) -> None:
    """Every answer the replaced code gives, errors word for word, is stock moto's."""
    from taskhop.lambda_worker import _moto_speedups

    stock = _moto_answers(queue_depth=30)
    with _moto_speedups.speedups() as on:
        assert on
        faster = _moto_answers(queue_depth=30)
    assert faster == stock
    assert any("can only be used once" in str(a) for a in stock)  # the errors were reached
    assert any("overlap" in str(a) for a in stock)
    assert any("ConditionalCheckFailed" in str(a) and a[1] for a in stock)  # with ALL_OLD
    assert any("redundant parentheses" in str(a) for a in stock)
    assert any("unused" in str(a) for a in stock)
