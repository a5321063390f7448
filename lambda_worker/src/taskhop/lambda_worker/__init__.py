"""The AWS Lambda runtime for taskhop workers.

In your worker module::

    from taskhop.lambda_worker import make_handler
    from myapp.worker import app

    handler = make_handler(app)  # Lambda handler string: "mymodule.handler"

It serves SQS batches (with partial batch responses), direct invocations and EventBridge
schedules, and leaves a seam for HTTP events. ``LocalEventSourceMapping`` runs the same
handler against a real (or moto) queue, the way Lambda's event source mapping does.
"""

from typing import TYPE_CHECKING, Any

from ._handler import LambdaContext, LambdaHandler, UnrecognisedEvent, make_handler
from ._http import HttpEndpoint

if TYPE_CHECKING:
    from ._local import LocalContext, LocalEventSourceMapping


def __getattr__(name: str) -> Any:
    # The local event source mapping is for laptops and tests: a Lambda's init never loads it.
    if name in ("LocalContext", "LocalEventSourceMapping"):
        from . import _local

        return getattr(_local, name)
    raise AttributeError(f"module 'lambda_worker' has no attribute {name!r}")


__all__ = [
    "HttpEndpoint",
    "LambdaContext",
    "LambdaHandler",
    "LocalContext",
    "LocalEventSourceMapping",
    "UnrecognisedEvent",
    "make_handler",
]
