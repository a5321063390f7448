"""``taskhop dev``: a whole worker stack on this machine, with no AWS account.

Starts a moto server on ``127.0.0.1:5055`` (``--port``, ``$TASKHOP_DEV_PORT``; ``0`` picks a
free port), or uses ``AWS_ENDPOINT_URL`` when it names another endpoint, creates the queue,
its DLQ (redrive after 20 receives, the templates' backstop) and the job table, exports where
they are, imports the app, and runs the local event source mapping until SIGTERM/SIGINT,
``DEV_CONCURRENCY`` invocations at once (as Lambda runs several for a busy queue).

A moto server started here gets ``_moto_speedups`` (same answers, without stock moto's
per-request work that grows with queue depth), on the moto versions they were checked on;
on another version it runs as shipped, and says so.

The app module and any producer read the resources from the environment this sets and
prints as ``export`` lines (``DevStack.env``)::

    AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    TASKHOP_QUEUE_URL, TASKHOP_DLQ_URL, TASKHOP_TABLE, TASKHOP_APP

State across restarts: moto 5 keeps everything in memory, and its recorder replays every
request (the worker's receives and deletes too, with receipt handles that no longer exist),
so it cannot restore a queue. Instead, when the stack stops, the messages of both queues
(with what is left of their delay or visibility) and the table's items are written to a
state file (``.taskhop/dev/state.json``), and put back when it starts; ``--fresh`` starts
empty. A restored message is a new SQS message: its receive count starts again at 0.

Streams (table triggers and the outbox) are polled as the deployed mappings do: see
``_dev_streams``.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import math
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from taskhop.infra import DEFAULT_RECEIVES

from ._dev_streams import StreamWatch, app_streams, stream_arns

_log = logging.getLogger("taskhop.dev")

__all__ = ["DEFAULT_PORT", "DevStack", "dev_env", "dev_port", "dev_stack"]

DEFAULT_PORT = 5055
"""The dev stack's port: fixed, so a producer's environment holds across restarts.

Not 4566 (LocalStack's) nor 5000 (moto's own default, taken by AirPlay on macOS).
"""
PORT_ENV = "TASKHOP_DEV_PORT"
STATE_FILE = Path(".taskhop") / "dev" / "state.json"
"""Where the stack's queues and table are saved on stop, relative to the working directory."""
DEFAULT_REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "taskhop-dev", "AWS_SECRET_ACCESS_KEY": "taskhop-dev"}
"""moto accepts any keys; fixed fake ones keep real credentials away from the local server."""
MOTO_ACCOUNT = "123456789012"
"""The account moto puts every resource in unless told otherwise (its queue URLs carry it)."""
_MAX_DELAY = 900  # SQS: DelaySeconds is 0..900
DEV_CONCURRENCY = 4
"""Invocations the dev stack's worker runs at once, each with a batch of its own.

Lambda starts five pollers for a standard queue and scales up from there; on a laptop, with
moto in this same process, four keep both a busy moto and the handlers fed.
"""


@dataclass(frozen=True)
class DevStack:
    """Where the dev stack's resources are."""

    endpoint: str
    queue_url: str
    dlq_url: str
    table: str
    region: str = DEFAULT_REGION

    def env(self, app: str | None = None) -> dict[str, str]:
        """The environment a producer (or the app module) needs to reach this stack."""
        env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": self.region}
        env |= FAKE_CREDENTIALS  # never the caller's own keys: they are not needed here
        env |= {
            "TASKHOP_QUEUE_URL": self.queue_url,
            "TASKHOP_DLQ_URL": self.dlq_url,
            "TASKHOP_TABLE": self.table,
        }
        if app:
            env["TASKHOP_APP"] = app
        return env


def dev_port(port: int | None = None, environ: Mapping[str, str] | None = None) -> int:
    """``port``, else ``$TASKHOP_DEV_PORT``, else 5055.

    Raises:
        SystemExit: ``$TASKHOP_DEV_PORT`` or ``port`` is not a port number.

    """
    env = os.environ if environ is None else environ
    if port is None:
        text = env.get(PORT_ENV, "").strip()
        if not text:
            return DEFAULT_PORT
        if not (text.isascii() and text.isdecimal()):
            raise SystemExit(f"taskhop dev: ${PORT_ENV}={text!r} is not a port number")
        port = int(text)
    if not 0 <= port <= 65535:
        raise SystemExit(f"taskhop dev: port {port} is not in 0..65535")
    return port


def dev_env(stack: DevStack, app: str | None = None) -> str:
    """``export NAME=value`` lines, for ``eval "$(taskhop dev --print-env)"``."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in stack.env(app).items())


def planned_stack(name: str = "taskhop-dev", *, port: int | None = None) -> DevStack:
    """The stack ``dev_stack`` serves on ``port``, computed without starting anything."""
    endpoint = f"http://127.0.0.1:{dev_port(port)}"
    region = os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    return DevStack(
        endpoint=endpoint,
        queue_url=f"{endpoint}/{MOTO_ACCOUNT}/{name}",
        dlq_url=f"{endpoint}/{MOTO_ACCOUNT}/{name}-dlq",
        table=name,
        region=region,
    )


@contextmanager
def dev_stack(
    name: str = "taskhop-dev",
    *,
    port: int | None = None,
    state_file: Path | None = STATE_FILE,
    fresh: bool = False,
    max_receive_count: int = DEFAULT_RECEIVES,
) -> Generator[DevStack]:
    """Start (or reuse) an endpoint, create the resources, export them; stop what we started.

    Args:
        name: the queue and table name (the DLQ is ``<name>-dlq``).
        port: where the moto server listens on 127.0.0.1 (default ``dev_port()``).
        state_file: where the state is saved on stop and restored from on start; ``None``
            keeps nothing. Only for a server started here.
        fresh: start empty even when a state file exists.
        max_receive_count: the queue's redrive policy.

    Raises:
        SystemExit: the port is taken, or not a port number.

    """
    import boto3

    from . import _moto_speedups

    server = None
    sped_up = False  # the speed-ups went in here, so they come out with the server
    wanted = dev_port(port)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").rstrip("/")
    os.environ.setdefault("AWS_DEFAULT_REGION", DEFAULT_REGION)
    if _serves_itself(wanted):
        from moto.server import ThreadedMotoServer

        _refuse_taken(wanted)
        # On other moto versions: stock moto, and a logged note.
        sped_up = not _moto_speedups.applied() and _moto_speedups.apply()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=wanted, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        os.environ.update(FAKE_CREDENTIALS)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    stack: DevStack | None = None
    started: DevStack | None = None
    factory: Any = boto3
    try:
        sqs = factory.client("sqs")
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
        queue_url = sqs.create_queue(
            QueueName=name,
            Attributes={"RedrivePolicy": json.dumps(redrive), "VisibilityTimeout": "30"},
        )["QueueUrl"]
        from taskhop.backends.dynamodb import DynamoStore

        DynamoStore(name).create_table()
        stack = DevStack(
            endpoint=endpoint,
            queue_url=queue_url,
            dlq_url=dlq_url,
            table=name,
            region=os.environ["AWS_DEFAULT_REGION"],
        )
        os.environ.update(TASKHOP_QUEUE_URL=queue_url, TASKHOP_DLQ_URL=dlq_url, TASKHOP_TABLE=name)
        if server is not None and state_file is not None and not fresh and state_file.exists():
            _restore(stack, _load(state_file), sqs, factory.client("dynamodb"))
        started = stack  # from here on, what the stack holds replaces the state file
        yield stack
    finally:
        if server is not None:
            try:
                if state_file is not None and started is not None:
                    _save(started, state_file, factory.client("dynamodb"))
            finally:
                if stack is not None:  # moto's backends outlive the server in this process
                    _forget(stack, factory.client("sqs"), factory.client("dynamodb"))
                server.stop()
                if sped_up:
                    _moto_speedups.undo()


def _serves_itself(port: int) -> bool:
    """Whether ``dev_stack`` starts its own moto server rather than use ``$AWS_ENDPOINT_URL``.

    An endpoint that names this stack's own address is a shell that ran ``eval "$(taskhop dev
    --print-env)"``: the server is still started here.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "").rstrip("/")
    return not endpoint or endpoint == f"http://127.0.0.1:{port}"


def _refuse_taken(port: int) -> None:
    """Bind the port as werkzeug will (SO_REUSEADDR) and refuse it with a message if taken.

    ``ThreadedMotoServer.start`` waits forever when its thread cannot bind, so the check
    comes first.
    """
    if port == 0:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise SystemExit(
                f"taskhop dev: 127.0.0.1:{port} is in use (another taskhop dev?): stop it,"
                f" or choose a port with --port N or ${PORT_ENV}"
            ) from None


def _forget(stack: DevStack, sqs: Any, dynamodb: Any) -> None:
    """Delete the stack's own queues and table: what is kept is in the state file only."""
    for url in (stack.queue_url, stack.dlq_url):
        sqs.delete_queue(QueueUrl=url)
    dynamodb.delete_table(TableName=stack.table)


def _save(stack: DevStack, path: Path, dynamodb: Any) -> None:
    """Write both queues' messages and the table's items to ``path`` (atomically)."""
    try:
        queues = {url: _messages(url, stack.region) for url in (stack.queue_url, stack.dlq_url)}
    except (ImportError, AttributeError, KeyError) as exc:  # moto's internals moved
        print(f"taskhop dev: queue state not saved ({exc!r})", file=sys.stderr)
        queues = {}
    items: list[Any] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=stack.table):
        items += [_encode(item) for item in page["Items"]]
    state: dict[str, Any] = {
        "version": 1,
        "saved_at": time.time(),
        "queues": {url.rsplit("/", 1)[-1]: messages for url, messages in queues.items()},
        "table": items,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(state))
    partial.replace(path)
    counts = ", ".join(f"{len(v)} in {k}" for k, v in state["queues"].items())
    print(
        f"taskhop dev: saved {counts}, {len(items)} table items to {path}",
        file=sys.stderr,
        flush=True,
    )


def _messages(queue_url: str, region: str) -> list[dict[str, Any]]:
    """Every message of a queue, in flight and delayed ones too, read from moto's backend.

    The SQS API cannot list invisible messages, and the server runs in this process, so the
    backend is read directly (read only).
    """
    from moto.sqs.models import sqs_backends

    account, name = queue_url.rsplit("/", 2)[-2:]
    queue = sqs_backends[account][region].queues[name]
    now = time.time() * 1000
    return [
        {
            "body": message.body,
            "attributes": {
                key: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
                for key, value in message.message_attributes.items()
                if value.get("StringValue") is not None
            },
            "delay": min(
                _MAX_DELAY,
                math.ceil(max(0.0, message.visible_at - now, message.delayed_until - now) / 1000),
            ),
        }
        for message in list(queue._messages)  # pyright: ignore[reportPrivateUsage]
    ]


def _load(path: Path) -> dict[str, Any]:
    """The saved state; one that cannot be read stops the stack, and is left as it was."""
    try:
        raw: object = json.loads(path.read_text())
        state = cast("dict[str, Any]", raw) if isinstance(raw, dict) else {}
        if state.get("version") != 1:
            raise ValueError("not a version 1 state file")
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"taskhop dev: cannot restore {path} ({exc}): start with --fresh, or move it away"
        ) from None
    return state


def _restore(stack: DevStack, state: dict[str, Any], sqs: Any, dynamodb: Any) -> None:
    urls = {stack.queue_url.rsplit("/", 1)[-1]: stack.queue_url}
    urls[stack.dlq_url.rsplit("/", 1)[-1]] = stack.dlq_url
    for name, messages in state.get("queues", {}).items():
        url = urls.get(name)
        if url is None:
            continue
        for start in range(0, len(messages), 10):  # SQS: 10 entries per SendMessageBatch
            entries = [
                {"Id": str(i), "MessageBody": m["body"], "DelaySeconds": m["delay"]}
                | ({"MessageAttributes": m["attributes"]} if m["attributes"] else {})
                for i, m in enumerate(messages[start : start + 10])
            ]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
    items = state.get("table", [])
    for start in range(0, len(items), 25):  # DynamoDB: 25 items per BatchWriteItem
        chunk = [{"PutRequest": {"Item": _decode(item)}} for item in items[start : start + 25]]
        pending: Any = {stack.table: chunk}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems")
    restored = sum(len(v) for v in state.get("queues", {}).values())
    print(
        f"taskhop dev: restored {restored} messages and {len(items)} table items"
        " (--fresh to start empty)",
        file=sys.stderr,
        flush=True,
    )


def _encode(value: Any) -> Any:
    """DynamoDB JSON with bytes as base64 (``B``/``BS``), so the item fits in a JSON file."""
    return _binary(value, lambda raw: base64.b64encode(raw).decode())


def _decode(value: Any) -> Any:
    return _binary(value, base64.b64decode)


def _binary(value: object, convert: Callable[[Any], Any]) -> object:
    """``value`` (DynamoDB JSON) with each ``B`` and ``BS`` value passed through ``convert``."""
    if isinstance(value, list):
        items = cast("list[object]", value)
        return [_binary(v, convert) for v in items]
    if not isinstance(value, dict):
        return value
    fields = cast("dict[str, Any]", value)
    out: dict[str, object] = {}
    for key, field in fields.items():
        if key == "B":
            out[key] = convert(field)
        elif key == "BS":
            out[key] = [convert(b) for b in field]
        else:
            out[key] = _binary(field, convert)
    return out


def run_dev(
    app_spec: str | None,
    *,
    idle_exit: float | None = None,
    port: int | None = None,
    fresh: bool = False,
    state_file: Path | None = STATE_FILE,
    concurrency: int = DEV_CONCURRENCY,
    stop: threading.Event | None = None,
) -> int:
    """Bring the stack up, print where it is (a JSON line, then export lines), run the worker.

    ``idle_exit`` stops it once the queue and every stream polled have been idle that long;
    ``stop``, set from another thread, stops it as SIGTERM does.
    """
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from taskhop.sdk import load_app

    app_spec = app_spec or os.environ.get("TASKHOP_APP") or None
    if app_spec is None:
        load_app(None)  # the usage error, before anything starts
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # until the worker's own handler takes over
    try:
        return _serve(
            app_spec, idle_exit, port=port, fresh=fresh, state_file=state_file,
            concurrency=concurrency, stop=stop,
        )  # fmt: skip
    except KeyboardInterrupt:  # stopped while starting: dev_stack has saved and stopped
        print("taskhop dev: stopped while starting", file=sys.stderr, flush=True)
        return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM before the worker polls: unwind as Ctrl-C does, so the state is saved."""
    raise KeyboardInterrupt


def _serve(
    app_spec: str | None,
    idle_exit: float | None,
    *,
    port: int | None,
    fresh: bool,
    state_file: Path | None,
    concurrency: int,
    stop: threading.Event | None = None,
) -> int:
    import boto3
    from taskhop.sdk import load_app

    from ._handler import make_handler
    from ._local import LocalEventSourceMapping

    local = _serves_itself(dev_port(port))
    with dev_stack(port=port, fresh=fresh, state_file=state_file) as stack:
        env = stack.env(app_spec)
        print(json.dumps({"taskhop_dev": asdict(stack) | {"env": env}}), flush=True)
        print(
            '# a producer in another shell: eval "$(taskhop dev --print-env)"\n'
            + dev_env(stack, app_spec),
            end="",
            flush=True,
        )
        print(
            f"taskhop dev: AWS on {stack.endpoint}, queue {stack.queue_url}, table {stack.table}",
            file=sys.stderr,
            flush=True,
        )
        factory: Any = boto3
        sqs = factory.client("sqs")
        dynamodb = factory.client("dynamodb")
        old_streams = stream_arns(dynamodb)  # before the app's import creates any table
        app = load_app(app_spec)
        handler = make_handler(app, dlq_url=stack.dlq_url, sqs_client=sqs)
        streams = app_streams(app, stack, handler, old_streams, local=local)
        esm = LocalEventSourceMapping(
            handler, stack.queue_url, sqs, wait_time=1, concurrency=concurrency
        )
        try:
            for watch in streams:
                watch.start()
            _run(esm, streams, idle_exit, stop)
        finally:
            for watch in streams:
                watch.stop()
            for watch in streams:
                watch.join()
        app.close()
        counts = ", ".join(
            f"{w.table} {_count(w.invocations, 'batch')} of {_count(w.records, 'record')}"
            for w in streams
        )
        print(
            f"taskhop dev: stopped after {_count(esm.invocations, 'batch')}"
            + (f"; streams: {counts}" if counts else ""),
            file=sys.stderr,
            flush=True,
        )
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'es' if noun.endswith('h') else 's'}" if n != 1 else f"1 {noun}"


def _run(
    esm: Any, streams: list[StreamWatch], idle_exit: float | None, stop: threading.Event | None
) -> None:
    """Run the queue's mapping until a signal, ``stop``, or the queue and streams are idle."""
    stopping = threading.Event()

    def halt(*_: object) -> None:
        stopping.set()
        esm.stop()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, halt)
    if stop is not None:

        def watch_stop() -> None:
            while not stopping.is_set():
                if stop.wait(0.1):
                    halt()

        threading.Thread(target=watch_stop, name="taskhop-dev-stop", daemon=True).start()
    try:
        while not stopping.is_set():
            esm.run(install_signals=False, idle_exit=idle_exit)
            if idle_exit is None or all(w.idle_for() > idle_exit for w in streams):
                return  # stopped, or the queue idle and the streams too
    finally:
        stopping.set()
