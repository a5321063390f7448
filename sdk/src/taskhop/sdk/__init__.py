"""taskhop's app: runtime schemas, dispatch, handlers, results, errors and the worker path.

Everything public is re-exported here; modules starting with ``_`` are private.
"""

import logging

from taskhop.static_contracts import (
    Duration,
    Envelope,
    EventEnvelope,
    EventSet,
    Reason,
    RetryPolicy,
    StaticContract,
    StaticEvent,
    static_contract,
    static_event,
)

from ._app import App, Registered, create_app, load_app
from ._batch import BatchItem, BatchRunner
from ._bound import BoundTask
from ._context import JobContext
from ._contract import Contract, TaskContract, define_task
from ._converter import make_converter
from ._errors import (
    AlreadyImplementedError,
    ContractError,
    DuplicateJobInProgress,
    EnvelopeError,
    ErrorInfo,
    FieldError,
    HandlerSignal,
    HandlerTimeout,
    IdempotencyKeyMismatch,
    JobNotFoundError,
    NonDeterminismError,
    PayloadError,
    PermanentError,
    ResultTimeout,
    ResultTooLarge,
    Retry,
    StepCancelled,
    StoreError,
    TaskFailed,
    TaskhopError,
    TaskRejected,
    TransportError,
    UnknownTaskError,
    UnsupportedProtocolError,
    ValidationError,
    WorkflowCancelled,
    WorkflowDefinitionError,
    WorkflowFailed,
)
from ._events import (
    DirectCarrier,
    Event,
    EventCarrier,
    EventContract,
    Subscription,
    UnknownEventError,
    define_event,
    delivery_envelope,
    delivery_job_id,
)
from ._handle import ResultHandle, gather
from ._implementation import Handler, Idempotency, Implementation, ImplementOptions, Migration
from ._logging import (
    JobLogFilter,
    configure_logging,
    current_job,
    incoming_trace,
    job_fields,
)
from ._middleware import Middleware
from ._redact import key_digest
from ._registered import InputValidator, MigrationError
from ._schedule import Schedule
from ._settle import QueueActions, queue_actions
from ._store import (
    FINAL_STATUSES,
    MAX_RESTARTS,
    BaseJobStore,
    Begin,
    JobRecord,
    JobStatus,
    JobStore,
    KeyClaim,
    NoStore,
    OutboxStore,
    RestartEntry,
    poll_for_final,
)
from ._tables import Change, ChangeKind, F, Table, Where, define_table, filter_criteria, matches
from ._triggers import StreamAnswer, Trigger, serve_stream_records, trigger_job_id
from ._typing import input_type, output_type
from ._worker import Outcome, OutcomeKind, Worker
from ._workflow_build import Flow, Signature, chain, chord, group
from ._workflow_engine import SweepReport
from ._workflow_handle import StepView, WorkflowHandle
from ._workflow_steps import Step, StepGraph
from ._workflow_store import StoredWorkflow, WorkflowStore

__all__ = [
    "AlreadyImplementedError",
    "App",
    "BaseJobStore",
    "BatchItem",
    "BatchRunner",
    "Begin",
    "BoundTask",
    "Change",
    "ChangeKind",
    "Contract",
    "ContractError",
    "DirectCarrier",
    "DuplicateJobInProgress",
    "Duration",
    "Envelope",
    "EnvelopeError",
    "ErrorInfo",
    "Event",
    "EventCarrier",
    "EventContract",
    "EventEnvelope",
    "EventSet",
    "F",
    "FINAL_STATUSES",
    "FieldError",
    "Flow",
    "Handler",
    "HandlerSignal",
    "HandlerTimeout",
    "Idempotency",
    "IdempotencyKeyMismatch",
    "ImplementOptions",
    "Implementation",
    "InputValidator",
    "JobContext",
    "JobLogFilter",
    "JobNotFoundError",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "KeyClaim",
    "MAX_RESTARTS",
    "Middleware",
    "Migration",
    "MigrationError",
    "NoStore",
    "NonDeterminismError",
    "OutboxStore",
    "Outcome",
    "OutcomeKind",
    "PayloadError",
    "PermanentError",
    "QueueActions",
    "Reason",
    "Registered",
    "RestartEntry",
    "ResultHandle",
    "ResultTimeout",
    "ResultTooLarge",
    "Retry",
    "RetryPolicy",
    "Schedule",
    "Signature",
    "StaticContract",
    "StaticEvent",
    "Step",
    "StepCancelled",
    "StepGraph",
    "StepView",
    "StoreError",
    "StoredWorkflow",
    "StreamAnswer",
    "Subscription",
    "SweepReport",
    "Table",
    "TaskContract",
    "TaskFailed",
    "TaskRejected",
    "TaskhopError",
    "TransportError",
    "Trigger",
    "UnknownEventError",
    "UnknownTaskError",
    "UnsupportedProtocolError",
    "ValidationError",
    "Where",
    "Worker",
    "WorkflowCancelled",
    "WorkflowDefinitionError",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowStore",
    "chain",
    "chord",
    "configure_logging",
    "create_app",
    "current_job",
    "define_event",
    "define_table",
    "define_task",
    "delivery_envelope",
    "delivery_job_id",
    "filter_criteria",
    "gather",
    "group",
    "incoming_trace",
    "input_type",
    "job_fields",
    "key_digest",
    "load_app",
    "make_converter",
    "matches",
    "output_type",
    "poll_for_final",
    "queue_actions",
    "serve_stream_records",
    "static_contract",
    "static_event",
    "trigger_job_id",
]

# A library never configures logging; without this, warnings would reach stderr through
# logging's last-resort handler in apps that set up no logging at all.
logging.getLogger("taskhop").addHandler(logging.NullHandler())
