"""An example CDK app: one taskhop worker; `cdk deploy` from this folder (docs/deploy.md).

The parameters come from your contracts: merge what ``taskhop infra render --format cdk-json``
prints into ``cdk.json`` (its ``context.taskhop``), and this app reads them from there: the
sizes, the schedules, the events (topic, subscriber queues, outbox relay) and the table
triggers. Each watched table's stream ARN is yours to give, in ``context.stream_arns`` (by
table name).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from taskhop.infra.cdk import TaskhopWorker


def build(app: cdk.App, code_path: str = "../../build/worker") -> cdk.Stack:
    """A stack with one worker whose code is in ``code_path``, sized by the rendered context."""
    rendered: dict[str, Any] = app.node.try_get_context("taskhop") or {}
    parameters: dict[str, Any] = rendered.get("parameters", {})
    stream_arns: dict[str, str] = app.node.try_get_context("stream_arns") or {}
    stack = cdk.Stack(app, "TaskhopWorker")
    worker = TaskhopWorker(
        stack,
        "Worker",
        code=lambda_.Code.from_asset(code_path),
        handler="worker.main.handler",
        function_timeout=cdk.Duration.seconds(int(parameters.get("FunctionTimeout", 30))),
        max_receive_count=int(parameters.get("MaxReceiveCount", 20)),
        payload_bucket=True,
        schedules=[(s["name"], s["expression"]) for s in rendered.get("schedules", [])],
        subscriptions=rendered.get("events"),
        triggers=rendered.get("triggers", []),
        stream_arns=stream_arns,
    )
    cdk.CfnOutput(stack, "QueueUrl", value=worker.queue.queue_url)
    cdk.CfnOutput(stack, "DeadLetterQueueUrl", value=worker.dead_letter_queue.queue_url)
    cdk.CfnOutput(stack, "JobTableName", value=worker.table.table_name)
    cdk.CfnOutput(stack, "ProducerPolicyArn", value=worker.producer_policy.managed_policy_arn)
    cdk.CfnOutput(stack, "AlarmTopicArn", value=worker.alarm_topic.topic_arn)
    if worker.event_topic is not None:
        cdk.CfnOutput(stack, "EventTopicArn", value=worker.event_topic.topic_arn)
    if worker.event_producer_policy is not None:
        policy = worker.event_producer_policy.managed_policy_arn
        cdk.CfnOutput(stack, "EventProducerPolicyArn", value=policy)
    return stack


if __name__ == "__main__":
    application = cdk.App()
    build(application)
    application.synth()
