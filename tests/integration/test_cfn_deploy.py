"""The template deploys: translated offline by SAM, then created by moto's CloudFormation.

moto cannot run the SAM transform, so the template is translated first (samtranslator, a region, s3:// code URIs,
see test_least_privilege.translate). moto then creates the queues (with their redrive policies), tables (keys and
index), topic, secrets, log groups, roles and functions. It skips CloudWatch alarms, the HTTP API and SNS subscriptions while
still reporting CREATE_COMPLETE; those come from the local stack's provisioner (prfleet_local.stack.LocalStack),
which reads the very same template - the second test shows both halves together cover every resource.
"""

from __future__ import annotations

import ast
import io
import json
import zipfile
from typing import Any

import boto3
import pytest
from moto import mock_aws

from prfleet_local.stack import template as tpl
from tests.integration.test_least_privilege import REGION, translate

STACK = "prfleet"
BUCKET = "prfleet-artifacts"
# Types moto's CloudFormation accepts but does not create (DESIGN.md, checked with moto 5.2.5).
MOTO_SKIPS = {
    "AWS::CloudWatch::Alarm",
    "AWS::SNS::Subscription",
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Stage",
}
# Types moto's CloudFormation leaves out even when nothing depends on a skipped resource (found by the test below).
MOTO_ALSO_SKIPS = {
    "AWS::SecretsManager::Secret",
    "AWS::Logs::QueryDefinition",
    "AWS::Lambda::LayerVersion",
    "AWS::Lambda::Permission",
    "AWS::SQS::QueuePolicy",
    "AWS::Lambda::EventInvokeConfig",
    "AWS::S3::BucketPolicy",  # moto 5: "not supported by moto's CloudFormation implementation"
}


def _mentions(value: Any, names: set[str]) -> bool:
    text = json.dumps(value)
    return any(f'"{n}"' in text or "${" + n + "}" in text or "${" + n + "." in text for n in names)


def for_moto(cfn: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The translated template without what moto skips, and without what refers to those (moto then fails on the
    dangling reference: the dashboard names the alarms, the API's invoke permission names the API)."""
    cfn = json.loads(json.dumps(cfn))
    removed = {n for n, r in cfn["Resources"].items() if r["Type"] in MOTO_SKIPS}
    while True:
        more = {n for n, r in cfn["Resources"].items() if n not in removed and _mentions(r, removed)}
        if not more:
            break
        removed |= more
    for n in removed:
        del cfn["Resources"][n]
    cfn["Outputs"] = {k: v for k, v in cfn.get("Outputs", {}).items() if not _mentions(v, removed)}
    return cfn, removed


def _policy_document(value: Any) -> dict[str, Any]:
    """GetRolePolicy's document: moto's CloudFormation stores an inline policy as the Python repr of the dict."""
    if isinstance(value, dict):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return ast.literal_eval(value)


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def lambda_handler(event, context):\n    return {}\n")
    return buf.getvalue()


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return translate(tpl.load())


@pytest.fixture
def deployed(cfn, monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        for res in cfn["Resources"].values():
            code = res["Properties"].get("Code") or res["Properties"].get("Content") or {}
            key = code.get("S3Key")
            if key:
                s3.put_object(Bucket=BUCKET, Key=key, Body=_zip())
        cf = boto3.client("cloudformation", region_name=REGION)
        body, _ = for_moto(cfn)
        cf.create_stack(
            StackName=STACK,
            TemplateBody=json.dumps(body),
            Parameters=[{"ParameterKey": "AlertEmail", "ParameterValue": "oncall@example.com"}],
            Capabilities=["CAPABILITY_IAM"],
        )
        yield cf


def _client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)


def test_translated_template_creates_queues_tables_topic_roles_and_functions(cfn, deployed):
    stack = deployed.describe_stacks(StackName=STACK)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    resources = {
        r["LogicalResourceId"]: r
        for r in deployed.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
    }
    by_type: dict[str, set[str]] = {}
    for logical, res in cfn["Resources"].items():
        by_type.setdefault(res["Type"], set()).add(logical)

    # Queues, with the DLQ redrive and the template's receive count.
    urls = _client("sqs").list_queues()["QueueUrls"]
    assert (
        len(urls) == len(by_type["AWS::SQS::Queue"]) == 5
    )  # two work queues, their DLQs, the schedules' DLQ
    jobs_url = resources["JobsQueue"]["PhysicalResourceId"]
    attrs = _client("sqs").get_queue_attributes(QueueUrl=jobs_url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(
        resources["JobsDLQ"]["PhysicalResourceId"].rsplit("/", 1)[1]
    )
    assert int(redrive["maxReceiveCount"]) == 3
    assert attrs["VisibilityTimeout"] == "1800"

    # Tables, with their keys and the status index the sweeper queries.
    tables = set(_client("dynamodb").list_tables()["TableNames"])
    assert {resources[t]["PhysicalResourceId"] for t in by_type["AWS::DynamoDB::Table"]} == tables
    state = _client("dynamodb").describe_table(TableName=resources["StateTable"]["PhysicalResourceId"])[
        "Table"
    ]
    assert [k["AttributeName"] for k in state["KeySchema"]] == ["pk", "sk"]
    assert [i["IndexName"] for i in state["GlobalSecondaryIndexes"]] == ["status-index"]

    # The tables holding state and money refuse DeleteTable and keep point-in-time recovery (docs/security.md).
    for logical in ("StateTable", "LedgerTable"):
        name = resources[logical]["PhysicalResourceId"]
        assert (
            _client("dynamodb").describe_table(TableName=name)["Table"]["DeletionProtectionEnabled"] is True
        )
        with pytest.raises(_client("dynamodb").exceptions.ClientError, match="DeletionProtectionEnabled"):
            _client("dynamodb").delete_table(TableName=name)

    # The alert topic, encrypted with the stack's own key (AlertKey), whose policy lets CloudWatch publish.
    topics = [t["TopicArn"] for t in _client("sns").list_topics()["Topics"]]
    assert topics == [resources["AlertTopic"]["PhysicalResourceId"]]
    key_id = resources["AlertKey"]["PhysicalResourceId"]
    attrs = _client("sns").get_topic_attributes(TopicArn=topics[0])["Attributes"]
    assert attrs["KmsMasterKeyId"] == key_id
    # moto's CloudFormation keeps the KeyPolicy as the template's dict (GetKeyPolicy returns it unserialized)
    policy = _policy_document(_client("kms").get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert {"Service": "cloudwatch.amazonaws.com"} in [s["Principal"] for s in policy["Statement"]]

    # One explicit role per function (template.yaml <Function>Role), carrying only the inline policy the
    # least-privilege test checks (no managed policy), and the functions under their template names.
    iam = _client("iam")
    roles = {r["RoleName"]: r for r in iam.list_roles()["Roles"]}
    assert set(roles) == {resources[r]["PhysicalResourceId"] for r in by_type["AWS::IAM::Role"]}
    assert {f"{fn}Role" for fn in by_type["AWS::Lambda::Function"]} == by_type["AWS::IAM::Role"]
    functions = {f["FunctionName"]: f for f in _client("lambda").list_functions()["Functions"]}
    assert set(functions) == {f"{STACK}-{fn}" for fn in by_type["AWS::Lambda::Function"]}
    log_groups = {g["logGroupName"]: g for g in _client("logs").describe_log_groups()["logGroups"]}
    for logical in by_type["AWS::Lambda::Function"]:
        assert resources[logical]["PhysicalResourceId"] == f"{STACK}-{logical}"
        fn = functions[f"{STACK}-{logical}"]
        role_name = fn["Role"].rsplit("/", 1)[1]
        assert role_name in roles
        assert role_name == resources[f"{logical}Role"]["PhysicalResourceId"]
        assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
        assert iam.list_role_policies(RoleName=role_name)["PolicyNames"] == ["least-privilege"]
        document = iam.get_role_policy(RoleName=role_name, PolicyName="least-privilege")["PolicyDocument"]
        document = _policy_document(document)
        # A statement under a false Condition (!If ... AWS::NoValue) stays in moto's copy as None.
        (logs,) = [s for s in document["Statement"] if s and s.get("Sid") == "WriteOwnLogs"]
        # Lambda writes to /aws/lambda/<function name>: the stack's group, and the role may write only there.
        group = log_groups[f"/aws/lambda/{STACK}-{logical}"]
        # DescribeLogGroups' arn ends in ":*", as CloudFormation's Arn attribute does in AWS (the form IAM needs to
        # cover the group's streams); moto's CloudFormation returns it without the ":*" (moto 5.2.5).
        assert group["arn"] == f"arn:aws:logs:{REGION}:123456789012:log-group:/aws/lambda/{STACK}-{logical}:*"
        assert logs["Resource"] in (group["arn"], group["arn"].removesuffix(":*"))
        assert logs["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]

    # The queues feed the planner and the agent through event source mappings.
    mappings = _client("lambda").list_event_source_mappings()["EventSourceMappings"]
    assert len(mappings) == 2

    # What was left out for moto is exactly the skipped types, the dashboard (it names the alarms) and the API's
    # invoke permission; the next test shows the local stack creates them from the same template.
    _, removed = for_moto(cfn)
    assert {cfn["Resources"][n]["Type"] for n in removed} == MOTO_SKIPS | {
        "AWS::CloudWatch::Dashboard",
        "AWS::Lambda::Permission",
    }
    assert _client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    # moto also silently leaves out the secrets and saved queries (CREATE_COMPLETE all the same) and gives the layer
    # and the schedule's invoke permission no physical id.
    absent = {n for n in for_moto(cfn)[0]["Resources"] if not resources.get(n, {}).get("PhysicalResourceId")}
    assert {cfn["Resources"][n]["Type"] for n in absent} == MOTO_ALSO_SKIPS
    assert _client("secretsmanager").list_secrets()["SecretList"] == []


@pytest.mark.e2e
def test_what_moto_skips_the_local_stack_creates_from_the_same_template(cfn, tmp_path):
    """Alarms, the HTTP API and the e-mail subscription: provisioned by LocalStack from template.yaml itself."""
    from prfleet_local.stack.local_stack import LocalStack

    sam = tpl.load()
    skipped = {logical for logical, res in cfn["Resources"].items() if res["Type"] in MOTO_SKIPS}
    alarms = {logical for logical in skipped if cfn["Resources"][logical]["Type"] == "AWS::CloudWatch::Alarm"}
    assert alarms == {n for n, r in tpl.load()["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    local = LocalStack(
        tmp_path,
        github_url="http://127.0.0.1:9",
        model_url="http://127.0.0.1:9",
        parameters={"AlertEmail": "oncall@example.com"},
        sweep_interval=None,
    )
    with local:
        # Every alarm of the template exists in (moto's) CloudWatch, configured as written, and notifies the topic.
        described = {a["AlarmName"]: a for a in local.client("cloudwatch").describe_alarms()["MetricAlarms"]}
        assert {f"{local.stack_name}-{a}" for a in alarms} == set(described)
        topic = local.ctx.refs["AlertTopic"]
        assert all(a["AlarmActions"] == [topic] for a in described.values())
        # ... a topic encrypted with the stack's key, which CloudWatch may use (as the local evaluator checks).
        from prfleet_local.stack.alerts import cloudwatch_cannot_publish

        attrs = local.client("sns").get_topic_attributes(TopicArn=topic)["Attributes"]
        assert attrs["KmsMasterKeyId"] == local.ctx.refs["AlertKey"] and local.created["AlertKey"]
        assert cloudwatch_cannot_publish(topic) is None
        for table in ("StateTable", "LedgerTable"):
            described_table = local.client("dynamodb").describe_table(TableName=local.ctx.refs[table])[
                "Table"
            ]
            assert described_table["DeletionProtectionEnabled"] is True, table
        # The e-mail subscription (moto skipped it) and the API (a local HTTP server in place of API Gateway).
        subs = local.client("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", "oncall@example.com")]
        assert local.created["WebhookApi"] == "AWS::Serverless::HttpApi"
        # The schedules' DLQ policy (moto's CloudFormation skips it) and the schedules, run by the stack itself
        # with each function's failure destination (EventInvokeConfig, skipped too).
        policy = local.client("sqs").get_queue_attributes(
            QueueUrl=local.queue_url("ScheduleDLQ"), AttributeNames=["Policy"]
        )["Attributes"]["Policy"]
        assert json.loads(policy)["Statement"][0]["Principal"] == {"Service": "events.amazonaws.com"}
        dlq = local.ctx.attrs[("ScheduleDLQ", "Arn")]
        assert {(s.function, s.on_failure) for s in local.schedules.schedules} == {
            ("SweeperFunction", dlq),
            ("ReconcileFunction", dlq),
        }
        assert local.outputs["WebhookUrl"].endswith("/webhook")
        # The secrets (as the template declares them: GitHub and Anthropic filled by the stack, webhook generated),
        # the dashboard and the saved queries under the names the runbook uses.
        names = {s["Name"] for s in local.client("secretsmanager").list_secrets()["SecretList"]}
        assert names == {
            f"{local.stack_name}/{n}"
            for n, r in tpl.load()["Resources"].items()
            if r["Type"] == "AWS::SecretsManager::Secret" and n in local.created
        }
        assert {"WebhookSecret", "GitHubSecret", "AnthropicSecret"} <= set(local.created)
        dashboards = local.client("cloudwatch").list_dashboards()["DashboardEntries"]
        assert [d["DashboardName"] for d in dashboards] == [f"{local.stack_name}-fleet"]
        assert set(local.query_definitions) == {
            f"{local.stack_name}/{q}"
            for q in ("cost-by-agent-and-repository", "errors", "slowest-runs", "run-story", "webhook-access")
        }
        # The functions' roles (moto's IAM, as written; moto does not enforce them - the least-privilege test checks
        # the statements), and each function's log group under the name Lambda writes to.
        iam = local.client("iam")
        groups = {g["logGroupName"] for g in local.client("logs").describe_log_groups()["logGroups"]}
        for fn in local.functions:
            role = local.ctx.refs[f"{fn}Role"]
            assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["least-privilege"]
            assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
            assert f"/aws/lambda/{local.functions[fn].name}" in groups
        # Together: every SAM resource is created by one or the other (functions and layer: LocalStack loads them).
        assert set(local.created) == set(sam["Resources"]) - {
            n for n, r in sam["Resources"].items() if r.get("Condition") and n not in local.created
        }


def test_template_as_a_product_parameters_are_described_and_constrained_outputs_name_what_to_do():
    sam = tpl.load()
    for name, p in sam["Parameters"].items():
        assert p.get("Description"), name
        assert "Default" in p, name  # `sam deploy --guided` can be answered with Enter throughout
        constraints = {"AllowedPattern", "AllowedValues", "MinValue", "MaxValue"} & set(p)
        assert constraints, f"{name} has no constraint"
        if "AllowedPattern" in p:
            assert p.get("ConstraintDescription"), name
    outputs = sam["Outputs"]
    for name in ("WebhookUrl", "AlertTopicArn", "DashboardUrl", "WebhookSecretArn", "GitHubSecretArn"):
        assert outputs[name].get("Description"), name
    assert "AnthropicSecretArn" in outputs
