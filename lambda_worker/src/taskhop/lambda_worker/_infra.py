"""Deployment parameters that follow from an app, and the guardrails they must keep.

``taskhop infra render --app module:app`` prints them for the SAM template
(``--format sam``: parameter overrides) or the CDK construct (``--format cdk-json``:
context); ``--format template`` writes the SAM template itself (``taskhop.infra``).
The numbers come from the contracts:

- the function timeout: the largest contract timeout plus the runtime's 3 s margin (30 s
  when no contract sets one); a contract whose timeout plus that margin exceeds Lambda's
  900 s is refused (``GuardrailError``), never clamped to 900 s;
- the queue visibility timeout: 6x the function timeout (AWS's advice for SQS-triggered
  functions, so a slow batch is not delivered twice while it runs);
- ``maxReceiveCount``: the most retry attempts any task allows, and at least 5;
- the contracts' ``queue`` names (one worker serves one queue: deploy one stack per name),
  and an EventBridge rule per schedule (``sam_events``, to merge into the function's
  ``Events``; the CDK construct takes ``schedules=``);
- events: an SNS topic (FIFO when a subscriber is ordered; the stack's KMS key, else
  ``alias/aws/sns``), per subscribing task a queue ``<stack>-ev-<task>`` (what the worker's
  ``$TASKHOP_EVENT_QUEUE_PREFIX`` plus ``subscriber_queue_name`` finds), its DLQ (also the
  subscription's, for what SNS cannot deliver), queue policies letting only the topic send,
  the filtered subscription, the queue's mapping and an alarm on the DLQ; and the outbox
  relay, a mapping from the job table's stream filtered to its outbox items;
- table triggers: per watched table, a stream mapping with finite retries, a maximum record
  age, an on-failure queue, partial batch responses and the union of its triggers' filters,
  reading the stream whose ARN is a parameter (``<Table>StreamArn``: the table is yours).
  Every stream mapping (the relay's too) sends what it gives up on to one on-failure queue,
  which has an alarm.

``sam_resources``, ``sam_parameters``, ``sam_outputs`` and ``sam_environment`` merge into the
SAM template's ``Resources``, ``Parameters``, ``Outputs`` and the worker's
``Environment.Variables`` (``merge_sam``);
``events`` and ``triggers`` are what the CDK construct takes (``subscriptions=``,
``triggers=``).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from taskhop.infra import MIN_RECEIVES, VISIBILITY_FACTOR, GuardrailError, check_parameters
from taskhop.infra._guardrails import (
    check_stream_consumers,
    check_stream_mapping,
    check_subscriptions,
)
from taskhop.sdk import App, Subscription, Trigger
from taskhop.static_contracts import filter_policy, subscriber_queue_name
from taskhop.static_contracts.limits import (
    LAMBDA_MAX_TIMEOUT,
    LAMBDA_SAFETY_MARGIN,
    SQS_FIFO_MAX_BATCH,
    SQS_MAX_QUEUE_NAME,
    STREAM_MAPPING_RETRIES,
)

__all__ = ["merge_sam", "merged_template_text", "render", "sam_schedule_events"]


def render(app: App, *, stream_consumers: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The parameters and resources an app needs, checked against the guardrails.

    ``stream_consumers`` counts the readers a watched table's stream has besides this worker
    (by table name; the job table's, which the outbox relay reads, as ``JobTable``), for the
    guardrail of two readers per stream.
    """
    contracts = [bound.contract for bound in app]
    timed = [c for c in contracts if c.timeout is not None]
    function_timeout = 30
    if timed:
        slowest = max(timed, key=lambda c: c.timeout or 0.0)
        function_timeout = math.ceil((slowest.timeout or 0.0) + LAMBDA_SAFETY_MARGIN)
        if function_timeout > LAMBDA_MAX_TIMEOUT:
            # Lambda stops an invocation at 900 s; the runtime stops a handler 3 s before the
            # invocation's deadline, so 897 s is the longest timeout a contract can keep.
            raise GuardrailError(
                f"task {slowest.name!r}: timeout {slowest.timeout:g}s plus the"
                f" {LAMBDA_SAFETY_MARGIN:g}s safety margin exceeds Lambda's"
                f" {LAMBDA_MAX_TIMEOUT}s maximum: give it at most"
                f" {LAMBDA_MAX_TIMEOUT - LAMBDA_SAFETY_MARGIN:g}s"
            )
    receives = max([c.retry.attempts for c in contracts] + [MIN_RECEIVES])
    parameters = {
        "FunctionTimeout": function_timeout,
        "VisibilityTimeout": VISIBILITY_FACTOR * function_timeout,
        "MaxReceiveCount": receives,
    }
    check_parameters(parameters)
    queues = sorted({c.queue or "default" for c in contracts})
    schedules = [
        {"name": s.name, "expression": s.expression, "task": s.contract.name}
        for s in app.schedules.values()
    ]
    return {
        "parameters": parameters,
        "queues": queues,
        "schedules": schedules,
        "sam_events": sam_schedule_events(schedules),
        **events_infra(app, stream_consumers or {}),
    }


def sam_schedule_events(schedules: list[dict[str, str]]) -> dict[str, Any]:
    """SAM ``Events`` for the worker function, one EventBridge rule per schedule.

    The rule's input names the schedule, which is how the Lambda runtime finds it.
    """
    events: dict[str, Any] = {}
    for schedule in schedules:
        key = "Schedule" + "".join(part.capitalize() for part in _words(schedule["name"]))
        events[key] = {
            "Type": "Schedule",
            "Properties": {
                "Schedule": schedule["expression"],
                "Name": schedule["name"],
                "Input": json.dumps({"taskhop_schedule": schedule["name"]}),
            },
        }
    return events


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]


# -- events and table triggers ------------------------------------------------------------

QUEUE_PREFIX = "${AWS::StackName}-ev-"
"""Subscriber queues' names start with the stack's name, so two stacks do not collide."""
STACK_NAME_ROOM = 32
"""The longest stack name every subscriber queue name is checked to fit with."""
STREAM_RETRIES = STREAM_MAPPING_RETRIES
"""A stream record is tried this many times more, then sent to the on-failure queue."""
STREAM_RECORD_AGE = 3600
"""Seconds after which a stream record is given up on (the stream keeps it 24 h)."""
STREAM_BATCH = 100
"""Records per stream batch (Lambda's default); the worker stops at the first failure."""
JOB_TABLE = "JobTable"
"""The job table, as ``stream_consumers`` names it (its name is the stack's, unknown here)."""
OUTBOX_FILTER = {
    "eventName": ["INSERT", "MODIFY"],
    "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "outbox#"}]}}},
}
"""The job table's outbox items (``taskhop.backends.dynamodb``: ``pk = "outbox#<event id>"``).

A removal (the TTL's) publishes nothing, and job records never invoke the relay.
"""
SNS_MANAGED_KEY = "alias/aws/sns"
"""The topic's key without a customer key: SNS's AWS-managed key, whose policy lets this
account's principals publish through SNS. (SNS delivers to the queues because they use
SQS-managed encryption: the AWS-managed ``alias/aws/sqs`` key's policy, which no one can
change, does not let SNS use it.)"""
_RETENTION = 1_209_600  # 14 days, SQS's longest
_NO_VALUE = {"Ref": "AWS::NoValue"}
_KEY = {"Fn::If": ["WithKey", {"Ref": "KmsKeyArn"}, _NO_VALUE]}
_TOPIC_KEY = {"Fn::If": ["WithKey", {"Ref": "KmsKeyArn"}, SNS_MANAGED_KEY]}
_ALARM_TOPIC = {"Fn::If": ["WithTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "AlarmTopic"}]}
_JOB_STREAM = {"Fn::GetAtt": [JOB_TABLE, "StreamArn"]}
_SSE = {"Fn::If": ["WithKey", _NO_VALUE, True]}
NOTES = {
    "events": "SNS takes up to 15 minutes to apply a changed filter policy: an event emitted"
    " meanwhile may reach (or miss) a subscriber by its old policy.",
    "stack": f"Subscriber queues are named <stack>-ev-<task>: keep the stack's name at most"
    f" {STACK_NAME_ROOM} characters.",
    "streams": "Pass each watched table's stream ARN (<Table>StreamArn): the table must have"
    " a stream with NEW_AND_OLD_IMAGES. A new mapping starts at TRIM_HORIZON, so its triggers"
    " run once for the changes the stream still holds (up to 24 h).",
}


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in _words(name))


def _queue_slug(task: str) -> str:
    """The queue name's part after the prefix: the worker's, for any stack name that fits."""
    slug = subscriber_queue_name(task, "")
    longest = SQS_MAX_QUEUE_NAME - STACK_NAME_ROOM - len("-evdlq-") - len(".fifo")
    if len(slug) > longest:  # the worker would cut it by the stack name's length
        raise GuardrailError(
            f"subscriber {task!r}: its queue names would not fit SQS's {SQS_MAX_QUEUE_NAME}"
            f" characters beside a {STACK_NAME_ROOM}-character stack name: give the task a"
            f" name of at most {longest} characters"
        )
    return slug


def events_infra(app: App, stream_consumers: Mapping[str, int]) -> dict[str, Any]:
    """The events and triggers sections, their SAM resources, parameters and notes."""
    subscriptions = sorted(app.events.subscriptions.values(), key=lambda s: s.task)
    by_table: dict[str, list[Trigger]] = {}
    for trigger in sorted(app.triggers.all.values(), key=lambda t: t.task):
        by_table.setdefault(trigger.table.name, []).append(trigger)
    events = _events_section(subscriptions, relay=bool(app.events.registered))
    triggers = [_trigger_section(app, table, found) for table, found in sorted(by_table.items())]
    parameters_of = [t["parameter"] for t in triggers]
    if len(set(parameters_of)) < len(parameters_of):
        raise GuardrailError(f"two watched tables share a parameter name: {parameters_of}")
    streams = [(t, {"Ref": t["parameter"]}) for t in triggers]
    if events["relay"]:
        streams.append((events["relay"], _JOB_STREAM))
    check_stream_consumers(
        {s["table"]: 1 + stream_consumers.get(s["table"], 0) for s, _ in streams}
    )
    resources: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    environment: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    notes: list[str] = []
    consume: list[Any] = []
    topic = bool(events["subscriptions"] or events["relay"])
    if topic:
        resources.update(_sam_events(events, consume))
        environment["TASKHOP_EVENT_TOPIC_ARN"] = {"Ref": "EventTopic"}
        outputs["EventTopicArn"] = {
            "Description": "Where events are emitted (SnsCarrier(arn))",
            "Value": {"Ref": "EventTopic"},
        }
        outputs["EventProducerPolicyArn"] = {
            "Description": "The managed policy a role attaches to emit events",
            "Value": {"Ref": "EventProducerPolicy"},
        }
    if events["subscriptions"]:
        environment["TASKHOP_EVENT_QUEUE_PREFIX"] = {"Fn::Sub": QUEUE_PREFIX}
        notes += [NOTES["events"], NOTES["stack"]]
    for section in triggers:
        parameters[section["parameter"]] = {
            "Type": "String",
            "AllowedPattern": "^arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:[0-9]{12}:table/"
            + re.escape(section["table"])
            + "/stream/.+$",
            "Description": f"The stream ARN of table {section['table']} (its triggers"
            f" {', '.join(section['tasks'])} read it)",
        }
    if triggers:
        notes.append(NOTES["streams"])
    if streams:
        resources.update(_sam_streams(streams))
    if topic or streams:
        resources["WorkerEventsPolicy"] = _worker_events_policy(
            consume, topic, [source for _, source in streams]
        )
    return {
        "events": events,
        "triggers": triggers,
        "sam_resources": resources,
        "sam_parameters": parameters,
        "sam_outputs": outputs,
        "sam_environment": environment,
        "notes": notes,
    }


def merge_sam(template: dict[str, Any], rendered: Mapping[str, Any]) -> dict[str, Any]:
    """The SAM template (as loaded) with a render's resources, parameters and schedules merged.

    A rendered name the template already has is an error, never an overwrite.
    """
    merged = copy.deepcopy(template)
    sections = (
        ("Resources", "sam_resources"),
        ("Parameters", "sam_parameters"),
        ("Outputs", "sam_outputs"),
    )
    for section, key in sections:
        adding = rendered.get(key, {})
        clash = set(merged.setdefault(section, {})) & set(adding)
        if clash:
            raise GuardrailError(f"rendered {section} clash with the template's: {sorted(clash)}")
        merged[section].update(copy.deepcopy(adding))
    worker = merged["Resources"]["Worker"]["Properties"]
    worker["Environment"]["Variables"].update(copy.deepcopy(rendered["sam_environment"]))
    worker["Events"].update(copy.deepcopy(rendered["sam_events"]))
    return merged


_INSERT_AFTER = {  # (rendered key, the template line its entries go under, their indent)
    "sam_parameters": ("Parameters:", 2),
    "sam_resources": ("Resources:", 2),
    "sam_outputs": ("Outputs:", 2),
    "sam_environment": ("        Variables:", 10),
    "sam_events": ("      Events:", 8),
}


def merged_template_text(template: str, rendered: Mapping[str, Any]) -> str:
    """The SAM template's text with a render merged in: ``merge_sam``'s template, as YAML.

    The template is kept as written (short-form tags, comments); each rendered entry goes
    under its section as one line of JSON, which YAML reads as a flow mapping. This needs no
    YAML library, which the Lambda worker's distribution does not require.
    """
    lines = template.splitlines(keepends=True)
    for key, (header, indent) in _INSERT_AFTER.items():
        entries: Mapping[str, Any] = rendered.get(key, {})
        [at] = [i for i, line in enumerate(lines) if line.rstrip("\n") == header]
        for name in entries:
            taken = re.compile(rf"^ {{{indent}}}{re.escape(name)}:", re.MULTILINE)
            if taken.search(template):
                raise GuardrailError(f"rendered {key} clash with the template's: [{name!r}]")
        added = [f"{' ' * indent}{name}: {json.dumps(value)}\n" for name, value in entries.items()]
        lines[at + 1 : at + 1] = added
    return "".join(lines)


def _events_section(subscriptions: list[Subscription], *, relay: bool) -> dict[str, Any]:
    """What the CDK construct takes as ``subscriptions=``: the topic, each queue, the relay.

    ``relay`` (the app registers events) adds the outbox relay's stream mapping.
    """
    fifo = any(s.ordered for s in subscriptions)
    section: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for sub in subscriptions:
        slug = _queue_slug(sub.task)
        logical = "Ev" + _camel(slug)
        if logical in seen or slug in seen.values():
            raise GuardrailError(
                f"subscribers {seen.get(logical, '?')!r} and {sub.task!r} would share a queue"
                f" ({slug}): rename one"
            )
        seen[logical] = slug
        try:
            policy = filter_policy(sub.events)
        except ValueError as exc:  # over SNS's 150 values: a guardrail, like the others
            raise GuardrailError(f"subscriber {sub.task!r}: {exc}") from exc
        section.append(
            {
                "task": sub.task,
                "slug": slug,
                "logical_id": logical,
                "fifo": sub.ordered,
                "filter_policy": policy,
            }
        )
    check_subscriptions([s["filter_policy"] for s in section])
    outbox = {"Filters": [{"Pattern": json.dumps(OUTBOX_FILTER)}]}
    return {
        "fifo_topic": fifo,
        "subscriptions": section,
        "relay": {
            "table": JOB_TABLE,
            "logical_id": "OutboxRelay",
            "mapping": _stream_mapping(outbox),
        }
        if relay
        else None,
    }


def _trigger_section(app: App, table: str, triggers: list[Trigger]) -> dict[str, Any]:
    """One watched table: its stream mapping's settings (the CDK construct's ``triggers=``)."""
    return {
        "table": table,
        "logical_id": "Stream" + _camel(table),
        "parameter": _camel(table) + "StreamArn",
        "tasks": [t.task for t in triggers],
        "mapping": _stream_mapping(app.triggers.mapping_criteria(table)),
    }


def _stream_mapping(criteria: dict[str, Any]) -> dict[str, Any]:
    """A stream mapping's settings, the same for every table's triggers and the relay."""
    return {
        "StartingPosition": "TRIM_HORIZON",
        "BatchSize": STREAM_BATCH,
        "ParallelizationFactor": 1,  # one batch per shard at a time: per-key order
        "MaximumRetryAttempts": STREAM_RETRIES,
        "MaximumRecordAgeInSeconds": STREAM_RECORD_AGE,
        "BisectBatchOnFunctionError": False,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "FilterCriteria": criteria,
    }


def _dead_letters_alarm(queue: str, description: str) -> dict[str, Any]:
    """An alarm on any message in ``queue``, in the template's own alarms' style."""
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}],
            "Statistic": "Maximum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [_ALARM_TOPIC],
            "OKActions": [_ALARM_TOPIC],
        },
    }


def _from_the_topic(queue: str) -> dict[str, Any]:
    """A queue policy letting only the event topic send to ``queue``."""
    return {
        "Type": "AWS::SQS::QueuePolicy",
        "Properties": {
            "Queues": [{"Ref": queue}],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "FromTheTopicOnly",
                        "Effect": "Allow",
                        "Principal": {"Service": "sns.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": {"Fn::GetAtt": [queue, "Arn"]},
                        "Condition": {"ArnEquals": {"aws:SourceArn": {"Ref": "EventTopic"}}},
                    }
                ],
            },
        },
    }


def _queue(name: Any, fifo: bool, **extra: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::SQS::Queue",
        "Properties": {
            **({"FifoQueue": True} if fifo else {}),
            "QueueName": name,
            "MessageRetentionPeriod": _RETENTION,
            "SqsManagedSseEnabled": _SSE,
            "KmsMasterKeyId": _KEY,
            **extra,
        },
    }


def _sam_events(events: dict[str, Any], consume: list[Any]) -> dict[str, Any]:
    """The topic, and per subscriber its queue, DLQ, queue policy, subscription, mapping."""
    fifo_topic: bool = events["fifo_topic"]
    topic = {"Ref": "EventTopic"}
    resources: dict[str, Any] = {
        "EventTopic": {
            "Type": "AWS::SNS::Topic",
            "Properties": {
                "TopicName": {
                    "Fn::Sub": "${AWS::StackName}-events" + (".fifo" if fifo_topic else "")
                },
                **({"FifoTopic": True} if fifo_topic else {}),
                "KmsMasterKeyId": _TOPIC_KEY,
            },
        },
        "EventProducerPolicy": {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "Description": "Emit events to this taskhop worker's topic",
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        # PublishBatch is authorized as sns:Publish.
                        {
                            "Sid": "Emit",
                            "Effect": "Allow",
                            "Action": ["sns:Publish"],
                            "Resource": topic,
                        },
                        _key_statement(),
                    ],
                },
            },
        },
    }
    for sub in events["subscriptions"]:
        logical, slug, fifo = sub["logical_id"], sub["slug"], sub["fifo"]
        suffix = ".fifo" if fifo else ""
        queue, dlq = f"{logical}Queue", f"{logical}DeadLetterQueue"
        resources[dlq] = _queue({"Fn::Sub": f"${{AWS::StackName}}-evdlq-{slug}{suffix}"}, fifo)
        resources[queue] = _queue(
            {"Fn::Sub": f"{QUEUE_PREFIX}{slug}{suffix}"},
            fifo,
            VisibilityTimeout={"Ref": "VisibilityTimeout"},
            RedrivePolicy={
                "deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]},
                "maxReceiveCount": {"Ref": "MaxReceiveCount"},
            },
        )
        queue_arn, dlq_arn = {"Fn::GetAtt": [queue, "Arn"]}, {"Fn::GetAtt": [dlq, "Arn"]}
        consume += [queue_arn, dlq_arn]
        resources[f"{logical}QueuePolicy"] = _from_the_topic(queue)
        resources[f"{logical}DeadLetterQueuePolicy"] = _from_the_topic(dlq)
        resources[f"{logical}DeadLettersAlarm"] = _dead_letters_alarm(
            dlq, f"Events for subscriber {sub['task']} are in its dead-letter queue"
        )
        resources[f"{logical}Subscription"] = {
            "Type": "AWS::SNS::Subscription",
            "Properties": {
                "TopicArn": topic,
                "Protocol": "sqs",
                "Endpoint": queue_arn,
                "RawMessageDelivery": True,  # the body is the event envelope itself
                "FilterPolicyScope": "MessageAttributes",
                "FilterPolicy": sub["filter_policy"],
                # What SNS cannot deliver to the queue (a KMS or queue policy fault) goes to
                # the DLQ rather than being dropped once SNS's retries run out.
                "RedrivePolicy": {"deadLetterTargetArn": dlq_arn},
            },
        }
        resources[f"{logical}Mapping"] = {
            "Type": "AWS::Lambda::EventSourceMapping",
            "DependsOn": "WorkerEventsPolicy",  # Lambda checks the role when it is created
            "Properties": {
                "FunctionName": {"Ref": "Worker"},
                "EventSourceArn": queue_arn,
                # FIFO: at most 10 a batch and no batching window (Lambda refuses both).
                **(
                    {"BatchSize": SQS_FIFO_MAX_BATCH}
                    if fifo
                    else {
                        "BatchSize": {"Ref": "BatchSize"},
                        "MaximumBatchingWindowInSeconds": {"Ref": "BatchingWindow"},
                    }
                ),
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "ScalingConfig": {"MaximumConcurrency": {"Ref": "MaximumConcurrency"}},
            },
        }
    return resources


def _sam_streams(streams: list[tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    """The on-failure queue, its alarm, and one mapping per (section, stream ARN)."""
    resources: dict[str, Any] = {
        "StreamFailureQueue": _queue({"Fn::Sub": "${AWS::StackName}-stream-failures"}, False),
        "StreamFailuresAlarm": _dead_letters_alarm(
            "StreamFailureQueue", "A stream mapping gave up on records (triggers or outbox relay)"
        ),
    }
    for section, source in streams:
        properties = {
            "FunctionName": {"Ref": "Worker"},
            "EventSourceArn": source,
            **section["mapping"],
            "DestinationConfig": {
                "OnFailure": {"Destination": {"Fn::GetAtt": ["StreamFailureQueue", "Arn"]}}
            },
        }
        check_stream_mapping(properties)
        resources[section["logical_id"] + "Mapping"] = {
            "Type": "AWS::Lambda::EventSourceMapping",
            "DependsOn": "WorkerEventsPolicy",
            "Properties": properties,
        }
    return resources


def _key_statement() -> dict[str, Any]:
    return {
        "Fn::If": [
            "WithKey",
            {
                "Sid": "EncryptionKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": {"Ref": "KmsKeyArn"},
            },
            _NO_VALUE,
        ]
    }


def _worker_events_policy(consume: list[Any], topic: bool, streams: list[Any]) -> dict[str, Any]:
    """The worker's rights on exactly the event queues, the topic and the streams it reads."""
    statements: list[Any] = []
    if consume:
        statements.append(
            {
                "Sid": "EventQueues",
                "Effect": "Allow",
                "Action": [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                    "sqs:SendMessage",
                ],
                "Resource": consume,
            }
        )
    if topic:
        statements.append(
            {
                "Sid": "EmitEvents",  # ctx.emit and domain events publish from the worker
                "Effect": "Allow",
                "Action": ["sns:Publish"],
                "Resource": {"Ref": "EventTopic"},
            }
        )
    if streams:
        statements.append(
            {
                "Sid": "ReadStreams",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                    "dynamodb:DescribeStream",
                    "dynamodb:ListStreams",
                ],
                "Resource": streams,
            }
        )
        statements.append(
            {
                "Sid": "StreamFailures",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage"],
                "Resource": {"Fn::GetAtt": ["StreamFailureQueue", "Arn"]},
            }
        )
    return {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": "taskhop-worker-events",
            "Roles": [{"Ref": "WorkerRole"}],
            "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
        },
    }
