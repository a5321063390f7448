"""``TaskhopWorker``: the CDK construct for one taskhop worker (same resources as the SAM template).

Guardrails are checked when the construct is built: the queue's visibility timeout is 6x the
function timeout, ``max_receive_count`` is at least 5, and every IAM statement names its
actions and resources (no wildcards, no managed policies on the function's role; X-Ray, which
has no resource-level permissions, is the one ``"*"``, and only with tracing on).

With ``subscriptions=`` and ``triggers=`` (the ``events`` and ``triggers`` sections
``taskhop infra render --format cdk-json`` prints) it builds what the SAM render adds: the
event topic, each subscriber's filtered queue, DLQ (the subscription's too), queue policies,
mapping and DLQ alarm, the outbox relay from the job table's stream, and each watched
table's stream mapping, with an alarm on their on-failure queue, checked by the same
guardrails (``check_subscriptions``, ``check_stream_mapping``, ``check_stream_consumers``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import CfnResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from taskhop.static_contracts import subscriber_queue_name
from taskhop.static_contracts.limits import SQS_FIFO_MAX_BATCH

from ._guardrails import (
    DEFAULT_RECEIVES,
    VISIBILITY_FACTOR,
    GuardrailError,
    check_parameters,
    check_stream_consumers,
    check_stream_mapping,
    check_subscriptions,
)

__all__ = ["FAILED_JOBS_QUERY", "TaskhopWorker"]

JOB_TABLE = "JobTable"
"""The job table, as ``stream_consumers`` names it (the outbox relay reads its stream)."""
SNS_MANAGED_KEY = "alias/aws/sns"
"""The event topic's key without ``encryption_key`` (``taskhop infra render`` uses the same)."""
OPEN_WORKFLOWS_INDEX = "open-workflows"
"""The job table's sparse GSI of open workflows (``taskhop.backends.dynamodb`` makes the same)."""
FAILED_JOBS_QUERY = "SELECT SUM(jobs_failed) FROM SCHEMA(taskhop, task)"
"""Failed jobs of every task: taskhop's EMF metric (namespace ``taskhop``, dimension ``task``).

Handler failures are reported per job (partial batch responses), never as Lambda ``Errors``.
"""
_RUNTIMES = {"python3.12": lambda_.Runtime.PYTHON_3_12, "python3.13": lambda_.Runtime.PYTHON_3_13}


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
        runtime: ``"python3.12"`` or ``"python3.13"``.
        url_auth: the Function URL's auth type (requests are HMAC-signed either way).
        log_retention, log_format, log_level: the worker's log group and Lambda log format
            (the level applies to the JSON format only, as in Lambda).
        tracing: X-Ray tracing of the worker function (``Tracing.ACTIVE``; the default adds no
            X-Ray permission).
        encryption_key: a customer-managed KMS key for the queue, DLQ, table and bucket
            (default: AWS-managed encryption); the roles get ``kms:Decrypt`` and
            ``kms:GenerateDataKey`` on this key only.
        alarm_topic: where the alarms notify; ``None`` creates a topic (``alarm_topic``).
        subscriptions: the ``events`` section ``taskhop infra render`` prints: an event topic
            and per subscriber a filtered queue, its DLQ and mapping (``event_producer_policy``
            lets producers publish), and the outbox relay's mapping.
        triggers: its ``triggers`` section: per watched table a stream mapping.
        stream_arns: each watched table's stream ARN, by table name (the table is yours).
        stream_consumers: the readers each watched table's stream has besides this worker
            (a stream takes at most 2); the job table's as ``"JobTable"``.

    Attributes:
        producer_policy: a managed policy to attach to producers' roles (send jobs, read
            results).

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
        runtime: str = "python3.12",
        url_auth: lambda_.FunctionUrlAuthType = lambda_.FunctionUrlAuthType.NONE,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        log_format: lambda_.LoggingFormat = lambda_.LoggingFormat.TEXT,
        log_level: lambda_.ApplicationLogLevel = lambda_.ApplicationLogLevel.INFO,
        tracing: lambda_.Tracing = lambda_.Tracing.DISABLED,
        encryption_key: kms.IKey | None = None,
        alarm_topic: sns.ITopic | None = None,
        subscriptions: Mapping[str, Any] | None = None,
        triggers: Sequence[Mapping[str, Any]] = (),
        stream_arns: Mapping[str, str] | None = None,
        stream_consumers: Mapping[str, int] | None = None,
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
        if runtime not in _RUNTIMES:
            raise GuardrailError(f"runtime: one of {sorted(_RUNTIMES)}, got {runtime!r}")
        self.encryption_key = encryption_key
        fifo_props: dict[str, Any] = {"fifo": True} if fifo else {}
        queue_encryption: dict[str, Any] = (
            {"encryption": sqs.QueueEncryption.SQS_MANAGED}
            if encryption_key is None
            else {"encryption": sqs.QueueEncryption.KMS, "encryption_master_key": encryption_key}
        )
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            retention_period=Duration.days(14),
            **queue_encryption,
            **fifo_props,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            visibility_timeout=Duration.seconds(VISIBILITY_FACTOR * timeout_s),
            retention_period=Duration.days(14),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=max_receive_count, queue=self.dead_letter_queue
            ),
            **queue_encryption,
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
            # Job state and results outlive the stack: DeletionPolicy and UpdateReplacePolicy.
            removal_policy=RemovalPolicy.RETAIN,
            encryption=None
            if encryption_key is None
            else dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=encryption_key,
            # Always on: the outbox relay publishes from it; unread it costs nothing.
            stream=dynamodb.StreamViewType.NEW_IMAGE,
        )
        # Open workflows by due time (sparse: only running workflows with a due time have the
        # keys), read by the workflow sweeper (DynamoStore.due_workflows).
        self.table.add_global_secondary_index(
            index_name=OPEN_WORKFLOWS_INDEX,
            partition_key=dynamodb.Attribute(name="wf_open", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="wf_due", type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        self.bucket: s3.Bucket | None = None
        if payload_bucket:
            self.bucket = s3.Bucket(
                self,
                "Payloads",
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                encryption=s3.BucketEncryption.S3_MANAGED
                if encryption_key is None
                else s3.BucketEncryption.KMS,
                encryption_key=encryption_key,
                bucket_key_enabled=encryption_key is not None,
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
        self.log_group = logs.LogGroup(self, "WorkerLogs", retention=log_retention)
        # The function's own role, with no managed policy: AWSLambdaBasicExecutionRole
        # would allow logs on "*".
        # (jsii's protocols vs their classes: see the schedules' targets below.)
        self.role = iam.Role(
            self,
            "WorkerRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),  # pyright: ignore[reportArgumentType]
        )
        json_logs = log_format == lambda_.LoggingFormat.JSON
        self.function = lambda_.Function(
            self,
            "Worker",
            runtime=_RUNTIMES[runtime],
            role=self.role,  # pyright: ignore[reportArgumentType]
            log_group=self.log_group,
            logging_format=log_format,
            application_log_level_v2=log_level if json_logs else None,
            tracing=tracing,
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
            self.url = self.function.add_function_url(auth_type=url_auth)
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
        self.producer_policy = self._producer_policy()
        self._batch = {
            "batch_size": batch_size,
            "window": int(batching_window.to_seconds()),
            "concurrency": max_concurrency,
        }
        self.event_topic: sns.Topic | None = None
        self.event_producer_policy: iam.ManagedPolicy | None = None
        # (construct id, queue, description): alarms on any message in these queues.
        self._watched: list[tuple[str, sqs.IQueue, str]] = []
        section = subscriptions or {}
        if section.get("subscriptions") or section.get("relay"):
            self._events(section, timeout_s, max_receive_count, queue_encryption)
        streams: list[tuple[Mapping[str, Any], str]] = []
        if triggers:
            arns = stream_arns or {}
            missing = [t["table"] for t in triggers if t["table"] not in arns]
            if missing:
                raise GuardrailError(f"triggers: stream_arns has no stream ARN for {missing}")
            streams += [(t, arns[t["table"]]) for t in triggers]
        if section.get("relay"):
            streams.append((section["relay"], self._job_stream_arn()))
        if streams:
            others = stream_consumers or {}
            check_stream_consumers({s["table"]: 1 + others.get(s["table"], 0) for s, _ in streams})
            self._streams(streams, queue_encryption)
        self.alarm_topic = alarm_topic or sns.Topic(self, "AlarmTopic")
        self._alarms()

    def _job_stream_arn(self) -> str:
        arn = self.table.table_stream_arn
        assert arn is not None  # the table is made with a stream
        return arn

    def _events(
        self,
        section: Mapping[str, Any],
        timeout_s: float,
        receives: int,
        encryption: dict[str, Any],
    ) -> None:
        """The topic and, per subscriber, its queue, DLQ, queue policy, subscription, mapping."""
        subs: list[Mapping[str, Any]] = list(section["subscriptions"])
        check_subscriptions([s["filter_policy"] for s in subs])
        stack = Stack.of(self).stack_name
        fifo_topic = bool(section["fifo_topic"])
        topic = sns.Topic(
            self,
            "EventTopic",
            fifo=fifo_topic or None,
            topic_name=f"{stack}-events" + (".fifo" if fifo_topic else ""),
            master_key=self.encryption_key
            or kms.Alias.from_alias_name(self, "SnsManagedKey", SNS_MANAGED_KEY),
        )
        self.event_topic = topic
        consumed: list[str] = []
        for sub in subs:
            logical, slug, fifo = sub["logical_id"], sub["slug"], bool(sub["fifo"])
            suffix = ".fifo" if fifo else ""
            if subscriber_queue_name(sub["task"], f"{stack}-ev-") != f"{stack}-ev-{slug}":
                # The worker would look for a name cut to fit SQS's 80 characters.
                raise GuardrailError(
                    f"stack name {stack!r} is too long for subscriber {sub['task']!r}'s queue"
                    " names: shorten the stack's name or the task's"
                )
            extra: dict[str, Any] = {"fifo": True} if fifo else {}
            dlq = sqs.Queue(
                self,
                f"{logical}DeadLetterQueue",
                queue_name=f"{stack}-evdlq-{slug}{suffix}",
                retention_period=Duration.days(14),
                **encryption,
                **extra,
            )
            queue = sqs.Queue(
                self,
                f"{logical}Queue",
                queue_name=f"{stack}-ev-{slug}{suffix}",
                visibility_timeout=Duration.seconds(VISIBILITY_FACTOR * timeout_s),
                retention_period=Duration.days(14),
                dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=receives, queue=dlq),
                **encryption,
                **extra,
            )
            consumed += [queue.queue_arn, dlq.queue_arn]
            for target in (queue, dlq):  # the DLQ is the subscription's too
                target.add_to_resource_policy(
                    iam.PolicyStatement(
                        sid="FromTheTopicOnly",
                        principals=[iam.ServicePrincipal("sns.amazonaws.com")],  # pyright: ignore[reportArgumentType]
                        actions=["sqs:SendMessage"],
                        resources=[target.queue_arn],
                        conditions={"ArnEquals": {"aws:SourceArn": topic.topic_arn}},
                    )
                )
            self._watched.append(
                (
                    f"{logical}DeadLetters",
                    dlq,
                    f"Events for subscriber {sub['task']} are in its dead-letter queue",
                )
            )
            sns.CfnSubscription(
                self,
                f"{logical}Subscription",
                topic_arn=topic.topic_arn,
                protocol="sqs",
                endpoint=queue.queue_arn,
                raw_message_delivery=True,
                filter_policy_scope="MessageAttributes",
                filter_policy=dict(sub["filter_policy"]),
                # What SNS cannot deliver to the queue goes to the DLQ, not away.
                redrive_policy={"deadLetterTargetArn": dlq.queue_arn},
            )
            self._mapping(
                f"{logical}Mapping",
                {
                    "FunctionName": self.function.function_name,
                    "EventSourceArn": queue.queue_arn,
                    # FIFO: at most 10 a batch and no batching window (Lambda refuses both).
                    **(
                        {"BatchSize": min(self._batch["batch_size"], SQS_FIFO_MAX_BATCH)}
                        if fifo
                        else {
                            "BatchSize": self._batch["batch_size"],
                            "MaximumBatchingWindowInSeconds": self._batch["window"],
                        }
                    ),
                    "FunctionResponseTypes": ["ReportBatchItemFailures"],
                    "ScalingConfig": {"MaximumConcurrency": self._batch["concurrency"]},
                },
            )
        if subs:
            self.function.add_environment("TASKHOP_EVENT_QUEUE_PREFIX", f"{stack}-ev-")
            self._events_policy.add_statements(
                iam.PolicyStatement(
                    sid="EventQueues",
                    actions=[
                        "sqs:ReceiveMessage",
                        "sqs:DeleteMessage",
                        "sqs:ChangeMessageVisibility",
                        "sqs:GetQueueAttributes",
                        "sqs:SendMessage",
                    ],
                    resources=consumed,
                )
            )
        self.function.add_environment("TASKHOP_EVENT_TOPIC_ARN", topic.topic_arn)
        self._events_policy.add_statements(
            iam.PolicyStatement(
                sid="EmitEvents", actions=["sns:Publish"], resources=[topic.topic_arn]
            ),
        )
        statements = [
            iam.PolicyStatement(sid="Emit", actions=["sns:Publish"], resources=[topic.topic_arn])
        ]
        if self.encryption_key is not None:
            statements.append(self._key_statement(self.encryption_key))
        self.event_producer_policy = iam.ManagedPolicy(
            self,
            "EventProducerPolicy",
            description="Emit events to this taskhop worker's topic",
            statements=statements,
        )

    def _streams(
        self, streams: Sequence[tuple[Mapping[str, Any], str]], encryption: dict[str, Any]
    ) -> None:
        """The on-failure queue and one mapping per (section, stream ARN): triggers, relay."""
        failures = sqs.Queue(
            self, "StreamFailureQueue", retention_period=Duration.days(14), **encryption
        )
        self._watched.append(
            (
                "StreamFailures",
                failures,
                "A stream mapping gave up on records (triggers or outbox relay)",
            )
        )
        for section, arn in streams:
            self._mapping(
                section["logical_id"] + "Mapping",
                {
                    "FunctionName": self.function.function_name,
                    "EventSourceArn": arn,
                    **section["mapping"],
                    "DestinationConfig": {"OnFailure": {"Destination": failures.queue_arn}},
                },
                stream=True,
            )
        self._events_policy.add_statements(
            iam.PolicyStatement(
                sid="ReadStreams",
                actions=[
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                    "dynamodb:DescribeStream",
                    "dynamodb:ListStreams",
                ],
                resources=[arn for _, arn in streams],
            ),
            iam.PolicyStatement(
                sid="StreamFailures", actions=["sqs:SendMessage"], resources=[failures.queue_arn]
            ),
        )

    @property
    def _events_policy(self) -> iam.Policy:
        """The worker's rights on the event queues and streams (made on first use)."""
        found = self.node.try_find_child("WorkerEventsPolicy")
        if isinstance(found, iam.Policy):
            return found
        return iam.Policy(self, "WorkerEventsPolicy", roles=[self.role])  # pyright: ignore[reportArgumentType]

    def _mapping(self, name: str, properties: dict[str, Any], *, stream: bool = False) -> None:
        """An event source mapping in CloudFormation's words, as ``taskhop infra render``'s."""
        if stream:
            check_stream_mapping(properties)
        mapping = CfnResource(
            self, name, type="AWS::Lambda::EventSourceMapping", properties=properties
        )
        # Lambda checks the role's rights when the mapping is created.
        mapping.node.add_dependency(self._events_policy)

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
        add(
            iam.PolicyStatement(
                actions=["dynamodb:Query"],
                resources=[f"{self.table.table_arn}/index/{OPEN_WORKFLOWS_INDEX}"],
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
        add(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        if self.encryption_key is not None:
            add(self._key_statement(self.encryption_key))

    @staticmethod
    def _key_statement(key: kms.IKey) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[key.key_arn]
        )

    def _producer_policy(self) -> iam.ManagedPolicy:
        statements = [
            iam.PolicyStatement(
                actions=["sqs:SendMessage", "sqs:GetQueueAttributes"],
                resources=[self.queue.queue_arn],
            ),
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:BatchGetItem"],
                resources=[self.table.table_arn],
            ),
        ]
        if self.bucket is not None:
            statements.append(
                iam.PolicyStatement(
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[self.bucket.arn_for_objects("taskhop/*")],
                )
            )
        if self.encryption_key is not None:
            statements.append(self._key_statement(self.encryption_key))
        return iam.ManagedPolicy(
            self,
            "ProducerPolicy",
            description="Dispatch jobs to this taskhop worker and read their results",
            statements=statements,
        )

    def _alarms(self) -> None:
        minute = Duration.minutes(1)
        dead = self.dead_letter_queue.metric_approximate_number_of_messages_visible
        oldest = self.queue.metric_approximate_age_of_oldest_message
        failed = cloudwatch.MathExpression(
            expression=FAILED_JOBS_QUERY, period=Duration.minutes(5), using_metrics={}
        )
        action = cw_actions.SnsAction(self.alarm_topic)  # pyright: ignore[reportArgumentType]
        alarms: list[tuple[str, cloudwatch.IMetric, int, int, str]] = [
            ("DeadLetters", dead(period=minute, statistic="Maximum"), 0, 1,
             "Jobs are in the dead-letter queue"),
            ("OldestMessage", oldest(period=minute, statistic="Maximum"), 900, 5,
             "Jobs wait in the queue longer than 15 minutes"),
            ("FunctionErrors", self.function.metric_errors(period=Duration.minutes(5)), 0, 1,
             "The worker function itself fails"),
            ("FailedJobs", failed, 0, 1,
             "Jobs failed (their handler raised on the last attempt)"),
        ]  # fmt: skip
        for name, queue, description in self._watched:
            visible = queue.metric_approximate_number_of_messages_visible
            alarms.append((name, visible(period=minute, statistic="Maximum"), 0, 1, description))
        for name, metric, threshold, periods, description in alarms:
            alarm = cloudwatch.Alarm(
                self,
                name,
                metric=metric,
                threshold=threshold,
                evaluation_periods=periods,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            alarm.add_alarm_action(action)  # pyright: ignore[reportArgumentType]
            alarm.add_ok_action(action)  # pyright: ignore[reportArgumentType]
