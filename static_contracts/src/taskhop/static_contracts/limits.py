"""The AWS figures taskhop works within, each defined once (standard library only).

Every layer reads them from here: the SQS transports, the Lambda runtime, the DynamoDB store
and the deployment guardrails. Each constant cites the AWS quota it follows.
"""

from __future__ import annotations

__all__ = [
    "DYNAMODB_MAX_ITEM_BYTES",
    "DYNAMODB_MAX_TRANSACT_BYTES",
    "DYNAMODB_MAX_TRANSACT_ITEMS",
    "LAMBDA_MAX_FILTERS",
    "LAMBDA_MAX_TIMEOUT",
    "LAMBDA_SAFETY_MARGIN",
    "SNS_MAX_BATCH_ENTRIES",
    "SNS_MAX_FILTER_VALUES",
    "SNS_MAX_MESSAGE_BYTES",
    "SQS_FIFO_MAX_BATCH",
    "SQS_MAX_BATCH_ENTRIES",
    "SQS_MAX_DELAY",
    "SQS_MAX_MESSAGE_BYTES",
    "SQS_MAX_QUEUE_NAME",
    "SQS_MAX_VISIBILITY",
    "STREAM_MAPPING_RETRIES",
]

SQS_MAX_DELAY = 900
"""Seconds SQS can hold a message back (``DelaySeconds``, per message or per queue): 15 min."""

SQS_MAX_VISIBILITY = 43_200
"""The longest visibility timeout SQS allows (``ChangeMessageVisibility``): 12 h."""

SQS_MAX_MESSAGE_BYTES = 1024 * 1024
"""The largest SQS message, and the largest ``SendMessageBatch`` request in total: 1 MiB."""

SQS_FIFO_MAX_BATCH = 10
"""Records per Lambda batch from a FIFO queue; a FIFO mapping has no batching window."""

SQS_MAX_BATCH_ENTRIES = 10
"""Entries in one ``SendMessageBatch`` / ``DeleteMessageBatch`` request."""

DYNAMODB_MAX_ITEM_BYTES = 400 * 1024
"""The largest DynamoDB item, attribute names and values together: 400 KB."""

DYNAMODB_MAX_TRANSACT_ITEMS = 100
"""Actions in one ``TransactWriteItems`` request."""

DYNAMODB_MAX_TRANSACT_BYTES = 4 * 1024 * 1024
"""The items of one ``TransactWriteItems`` request together: 4 MB."""

LAMBDA_MAX_FILTERS = 5
"""Filters in one event source mapping's ``FilterCriteria`` (Lambda's default quota)."""

LAMBDA_MAX_TIMEOUT = 900
"""The longest a Lambda function may run: 15 min."""

LAMBDA_SAFETY_MARGIN = 3.0
"""Seconds before Lambda's deadline at which the runtime stops starting work and times out a
handler, so the batch response (and every settlement) is still sent in time."""

SQS_MAX_QUEUE_NAME = 80
"""The longest SQS queue name, ``.fifo`` included (``CreateQueue``)."""

SNS_MAX_MESSAGE_BYTES = 256 * 1024
"""The largest SNS message (body and attributes), and a PublishBatch's total: 256 KiB."""

SNS_MAX_BATCH_ENTRIES = 10
"""Entries in one ``PublishBatch`` request."""

SNS_MAX_FILTER_VALUES = 150
"""Values a subscription filter policy may list across its keys (SNS quota: 150 combinations)."""

STREAM_MAPPING_RETRIES = 10
"""The ``MaximumRetryAttempts`` taskhop deploys on every DynamoDB stream mapping (AWS allows
up to 10000): a failed record is delivered this many times more, then sent to the on-failure
queue. Not an AWS quota but taskhop's setting, which every layer must agree on: the rendered
mapping, the dev poller, and the inline triggers' attempts (which the deliveries bound)."""
