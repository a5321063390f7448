"""Contracts, the job envelope and the producer seam, on the standard library alone.

Import this in a producer that must stay small (an edge function, a Lambda with a tight
cold-start budget): declare contracts with ``static_contract``, build envelopes, and send
them through any ``Transport``. Nothing here imports a third-party package; a test runs this
import in a fresh interpreter to prove it.
"""

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
from ._producer import AsyncProducer, AsyncProducerTask, Producer, ProducerTask, make_envelope
from ._reasons import Reason
from ._signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    Verifier,
    sign,
    signed_headers,
)
from ._transport import AsyncTransport, PayloadStore, Transport

__all__ = [
    "AsyncProducer",
    "AsyncProducerTask",
    "AsyncTransport",
    "Backoff",
    "ContractError",
    "Duration",
    "Envelope",
    "EnvelopeError",
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
    "TIMESTAMP_HEADER",
    "TaskhopError",
    "Transport",
    "TransportError",
    "UnsupportedProtocolError",
    "Verifier",
    "dumps",
    "format_timestamp",
    "make_envelope",
    "new_job_id",
    "parse_duration",
    "parse_timestamp",
    "sign",
    "signed_headers",
    "static_contract",
    "to_json_value",
    "type_ref",
]
