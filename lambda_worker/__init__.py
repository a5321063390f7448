"""The AWS Lambda worker runtime (SQS batches, HTTP events, direct invoke, schedules).

Not built yet: the runtime arrives with its own issue. The worker path it will host is
``sdk.Worker.process``, which already decodes, validates, runs and records every job.
"""
