"""Contracts, the job envelope and the producer seam, on the standard library alone.

Import this in a producer that must stay small (an edge function, a Lambda with a tight
cold-start budget): declare contracts with ``static_contract``, build envelopes, and send
them through any ``Transport``. Nothing here imports a third-party package; a test runs this
import in a fresh interpreter to prove it.
"""

from typing import TYPE_CHECKING, Any

from ._contract import StaticContract, static_contract, type_ref
from ._durations import Duration, parse_duration
from ._envelope import PROTOCOL_VERSION, Envelope, format_timestamp, parse_timestamp
from ._errors import (
    ContractError,
    EnvelopeError,
    PayloadError,
    TaskhopError,
    TransportError,
    UnsupportedProtocolError,
)
from ._ids import new_job_id
from ._json import JsonValue, dumps, to_json_value
from ._policy import Backoff, RetryPolicy, RetrySpec
from ._reasons import Reason

if TYPE_CHECKING:
    from ._event import (
        DEFAULT_QUEUE_PREFIX,
        EVENT_ATTRIBUTE,
        EVENT_PROTOCOL_VERSION,
        EventEnvelope,
        EventSet,
        StaticEvent,
        check_pattern,
        filter_policy,
        pattern_matches,
        static_event,
        subscriber_queue_name,
    )
    from ._producer import (
        AsyncProducer,
        AsyncProducerTask,
        Producer,
        ProducerTask,
        make_envelope,
    )
    from ._signing import (
        SIGNATURE_HEADER,
        TIMESTAMP_HEADER,
        SignatureError,
        Verifier,
        sign,
        signed_headers,
    )
    from ._transport import AsyncTransport, PayloadStore, Transport

# Loaded by the first lookup, not by ``import taskhop.static_contracts``: a worker never uses
# the producer side, and only producers or endpoints that sign HTTP requests need signing
# (hashlib and hmac: ~2.5 ms). Type checkers see them through the imports above.
_LAZY = {
    "DEFAULT_QUEUE_PREFIX": "_event",
    "EVENT_ATTRIBUTE": "_event",
    "EVENT_PROTOCOL_VERSION": "_event",
    "subscriber_queue_name": "_event",
    "EventEnvelope": "_event",
    "EventSet": "_event",
    "StaticEvent": "_event",
    "check_pattern": "_event",
    "filter_policy": "_event",
    "pattern_matches": "_event",
    "static_event": "_event",
    "AsyncProducer": "_producer",
    "AsyncProducerTask": "_producer",
    "Producer": "_producer",
    "ProducerTask": "_producer",
    "make_envelope": "_producer",
    "SIGNATURE_HEADER": "_signing",
    "TIMESTAMP_HEADER": "_signing",
    "SignatureError": "_signing",
    "Verifier": "_signing",
    "sign": "_signing",
    "signed_headers": "_signing",
    "AsyncTransport": "_transport",
    "PayloadStore": "_transport",
    "Transport": "_transport",
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
    "AsyncProducer",
    "AsyncProducerTask",
    "AsyncTransport",
    "Backoff",
    "ContractError",
    "DEFAULT_QUEUE_PREFIX",
    "Duration",
    "EVENT_ATTRIBUTE",
    "EVENT_PROTOCOL_VERSION",
    "Envelope",
    "EnvelopeError",
    "EventEnvelope",
    "EventSet",
    "JsonValue",
    "PROTOCOL_VERSION",
    "PayloadError",
    "PayloadStore",
    "Producer",
    "ProducerTask",
    "Reason",
    "RetryPolicy",
    "RetrySpec",
    "SIGNATURE_HEADER",
    "SignatureError",
    "StaticContract",
    "StaticEvent",
    "TIMESTAMP_HEADER",
    "TaskhopError",
    "Transport",
    "TransportError",
    "UnsupportedProtocolError",
    "Verifier",
    "check_pattern",
    "dumps",
    "filter_policy",
    "format_timestamp",
    "make_envelope",
    "new_job_id",
    "parse_duration",
    "parse_timestamp",
    "pattern_matches",
    "sign",
    "signed_headers",
    "static_contract",
    "static_event",
    "subscriber_queue_name",
    "to_json_value",
    "type_ref",
]
