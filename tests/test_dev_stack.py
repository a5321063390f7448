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
