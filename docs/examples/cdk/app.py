"""An example CDK app: one taskhop worker; `cdk deploy` from this folder (docs/deploy.md)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from taskhop.infra.cdk import TaskhopWorker


def build(app: cdk.App, code_path: str = "../../build/worker") -> cdk.Stack:
    """A stack with one worker whose code is in ``code_path``."""
    stack = cdk.Stack(app, "TaskhopWorker")
    worker = TaskhopWorker(
        stack,
        "Worker",
        code=lambda_.Code.from_asset(code_path),
        handler="worker.main.handler",
        function_timeout=cdk.Duration.seconds(
            int(app.node.try_get_context("FunctionTimeout") or 30)
        ),
        max_receive_count=int(app.node.try_get_context("MaxReceiveCount") or 5),
        payload_bucket=True,
        schedules=[("hourly-digest", "rate(1 hour)")],
    )
    cdk.CfnOutput(stack, "QueueUrl", value=worker.queue.queue_url)
    cdk.CfnOutput(stack, "JobTableName", value=worker.table.table_name)
    return stack


if __name__ == "__main__":
    application = cdk.App()
    build(application)
    application.synth()
