"""The AWS Lambda runtime for taskhop workers.

In your worker module::

    from taskhop.lambda_worker import make_handler
    from myapp.worker import app

    handler = make_handler(app)  # Lambda handler string: "mymodule.handler"

It serves SQS batches (with partial batch responses), direct invocations and EventBridge
schedules, and leaves a seam for HTTP events. ``LocalEventSourceMapping`` runs the same
handler against a real (or moto) queue, the way Lambda's event source mapping does;
``LocalStreamPoller`` does the same for a table's DynamoDB stream (``app.on_change``).
"""

from typing import TYPE_CHECKING, Any

from ._handler import LambdaContext, LambdaHandler, UnrecognisedEvent, make_handler

if TYPE_CHECKING:
    from ._http import HttpEndpoint
    from ._local import LocalContext, LocalEventSourceMapping
    from ._stream_poller import LocalStreamPoller, table_criteria

# Loaded on first use, not by a Lambda's init: the local event source mapping is for laptops
# and tests, and only a function behind an HTTP endpoint (with its signature checks) needs
# HttpEndpoint, which it builds at module level, so its init still pays for it.
_LAZY = {
    "HttpEndpoint": "_http",
    "LocalContext": "_local",
    "LocalEventSourceMapping": "_local",
    "LocalStreamPoller": "_stream_poller",
    "table_criteria": "_stream_poller",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value  # the next lookup finds it without this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "HttpEndpoint",
    "LambdaContext",
    "LambdaHandler",
    "LocalContext",
    "LocalEventSourceMapping",
    "LocalStreamPoller",
    "UnrecognisedEvent",
    "make_handler",
    "table_criteria",
]
