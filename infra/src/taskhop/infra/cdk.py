"""``TaskhopWorker``: the CDK construct for one taskhop worker (same resources as the SAM template).

Guardrails are checked when the construct is built: the queue's visibility timeout is 6x the
function timeout, ``max_receive_count`` is at least 5, and every IAM statement names its
actions and resources (no wildcards).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from ._guardrails import DEFAULT_RECEIVES, VISIBILITY_FACTOR, GuardrailError, check_parameters

__all__ = ["TaskhopWorker"]


class TaskhopWorker(Construct):
    """A queue, its DLQ, the worker function, the job table, and alarms.

    Args:
        code: the worker's code (compile it with ``python -m compileall`` first).
        handler: ``module.attribute`` of ``make_handler(app)``.
        function_timeout: at least the largest contract timeout plus 3 s.
        max_receive_count: receives before the DLQ (at least 5; default 20, a backstop: the
            runtime dead-letters jobs itself when their attempts run out).
        batch_size, batching_window, max_concurrency: the event source mapping.
        fifo: FIFO queues (ordering per message group).
        payload_bucket: an S3 bucket for payloads and results too large for SQS / DynamoDB.
        http_endpoint: ``"enqueue"`` or ``"run"`` adds a Function URL for signed HTTP delivery.
        signing_secret: the HMAC secret (required with ``http_endpoint``).
        schedules: ``(name, expression)`` pairs from ``taskhop infra render``: one
            EventBridge rule each, invoking the worker with ``{"taskhop_schedule": name}``.

    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.Code,
        handler: str,
        function_timeout: Duration | None = None,
        max_receive_count: int = DEFAULT_RECEIVES,
        batch_size: int = 10,
        batching_window: Duration | None = None,
        max_concurrency: int = 10,
        memory_size: int = 512,
        fifo: bool = False,
        payload_bucket: bool = False,
        http_endpoint: str | None = None,
        signing_secret: secretsmanager.ISecret | None = None,
        schedules: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        function_timeout = function_timeout or Duration.seconds(30)
        batching_window = batching_window or Duration.seconds(0)
        timeout_s = function_timeout.to_seconds()
        check_parameters(
            {
                "FunctionTimeout": timeout_s,
                "VisibilityTimeout": VISIBILITY_FACTOR * timeout_s,
                "MaxReceiveCount": max_receive_count,
            }
        )
        if http_endpoint is not None and signing_secret is None:
            raise GuardrailError("http_endpoint needs signing_secret (the HMAC signing secret)")
        fifo_props: dict[str, Any] = {"fifo": True} if fifo else {}
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            **fifo_props,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            visibility_timeout=Duration.seconds(VISIBILITY_FACTOR * timeout_s),
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=max_receive_count, queue=self.dead_letter_queue
            ),
            **fifo_props,
        )
        self.table = dynamodb.Table(
            self,
            "JobTable",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute="expires_at",
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket: s3.Bucket | None = None
        if payload_bucket:
            self.bucket = s3.Bucket(
                self,
                "Payloads",
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                encryption=s3.BucketEncryption.S3_MANAGED,
                enforce_ssl=True,
                lifecycle_rules=[s3.LifecycleRule(prefix="taskhop/", expiration=Duration.days(14))],
            )
        environment = {
            "TASKHOP_QUEUE_URL": self.queue.queue_url,
            "TASKHOP_DLQ_URL": self.dead_letter_queue.queue_url,
            "TASKHOP_TABLE": self.table.table_name,
            "TASKHOP_HTTP_MODE": http_endpoint or "none",
        }
        if self.bucket is not None:
            environment["TASKHOP_BUCKET"] = self.bucket.bucket_name
        if signing_secret is not None:
            environment["TASKHOP_SIGNING_SECRET_ARN"] = signing_secret.secret_arn
        self.function = lambda_.Function(
            self,
            "Worker",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler,
            code=code,
            timeout=function_timeout,
            memory_size=memory_size,
            environment=environment,
        )
        self.function.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=batch_size,
                max_batching_window=batching_window,
                report_batch_item_failures=True,
                max_concurrency=max_concurrency,
            )
        )
        self._grant_least_privilege(signing_secret)
        self.url: lambda_.FunctionUrl | None = None
        if http_endpoint is not None:
            self.url = self.function.add_function_url(auth_type=lambda_.FunctionUrlAuthType.NONE)
        for name, expression in schedules:  # (rule name, "rate(...)" or "cron(...)")
            events.Rule(
                self,
                f"Schedule-{name}",
                rule_name=name,
                schedule=events.Schedule.expression(expression),
                # jsii's generated protocols differ from their classes in parameter names
                # (``id`` / ``_id``), which pyright's strict protocol check refuses.
                targets=[
                    targets.LambdaFunction(
                        self.function,  # pyright: ignore[reportArgumentType]
                        event=events.RuleTargetInput.from_object({"taskhop_schedule": name}),
                    )
                ],
            )
        self._alarms()

    def _grant_least_privilege(self, secret: secretsmanager.ISecret | None) -> None:
        # Named statements rather than grant_* helpers, which add actions the worker never
        # uses (Scan, Query, BatchWriteItem) and index ARNs ending in "/*".
        add = self.function.add_to_role_policy
        add(
            iam.PolicyStatement(
                actions=[
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                    "sqs:SendMessage",
                ],
                resources=[self.queue.queue_arn],
            )
        )
        add(
            iam.PolicyStatement(
                actions=[
                    "sqs:SendMessage",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                ],
                resources=[self.dead_letter_queue.queue_arn],
            )
        )
        add(
            iam.PolicyStatement(
                actions=[
                    "dynamodb:GetItem",
                    "dynamodb:BatchGetItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:PutItem",
                    "dynamodb:DeleteItem",
                ],
                resources=[self.table.table_arn],
            )
        )
        if self.bucket is not None:
            add(
                iam.PolicyStatement(
                    actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                    resources=[self.bucket.arn_for_objects("taskhop/*")],
                )
            )
        if secret is not None:
            add(
                iam.PolicyStatement(
                    actions=["secretsmanager:GetSecretValue"], resources=[secret.secret_arn]
                )
            )

    def _alarms(self) -> None:
        minute = Duration.minutes(1)
        dead = self.dead_letter_queue.metric_approximate_number_of_messages_visible
        oldest = self.queue.metric_approximate_age_of_oldest_message
        for name, metric, threshold, periods, description in [
            ("DeadLetters", dead(period=minute, statistic="Maximum"), 0, 1,
             "Jobs are in the dead-letter queue"),
            ("OldestMessage", oldest(period=minute, statistic="Maximum"), 900, 5,
             "Jobs wait in the queue longer than 15 minutes"),
            ("FunctionErrors", self.function.metric_errors(period=Duration.minutes(5)), 0, 1,
             "The worker function itself fails"),
        ]:  # fmt: skip
            cloudwatch.Alarm(
                self,
                name,
                metric=metric,
                threshold=threshold,
                evaluation_periods=periods,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
