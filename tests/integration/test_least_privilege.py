"""Least privilege, checked on what CloudFormation will really create: the template translated offline by SAM.

For each function, the effective permissions of its execution role (inline statements plus the managed policies SAM
attaches) must be exactly what its code calls: NEEDS below, derived from the library (each entry names the code that
makes the call). Two directions:

* static: translated template == NEEDS, no `*` action, no `*` resource in any statement we write, and only the
  managed policies SAM itself attaches (their documents are listed here); a widened copy of the template fails;
* dynamic: the whole pipeline runs on the local stack with every AWS call recorded per function; each call must be
  granted by NEEDS, and NEEDS must contain nothing the run did not use except the paths listed in NOT_EXERCISED.

samtranslator refuses local code paths and needs a region: code URIs become s3:// URIs and the region is given.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from prfleet_local import template as tpl

REGION = "us-east-1"
FUNCTIONS = ("WebhookFunction", "PlannerFunction", "AgentFunction", "SweeperFunction")

# (IAM action, resource) per function; resources are logical ids (a table's or queue's Arn, a secret's or topic's
# Ref), an index as "<table>/index/<name>". SendMessageBatch is authorized by sqs:SendMessage
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-api-permissions-reference.html).
NEEDS: dict[str, set[tuple[str, str]]] = {
    "WebhookFunction": {
        ("dynamodb:PutItem", "DeliveriesTable"),  # deliveries.first_seen
        ("dynamodb:DeleteItem", "DeliveriesTable"),  # deliveries.forget (enqueue failed)
        ("sqs:SendMessage", "PrQueue"),  # queue.send_pr_job
        ("secretsmanager:GetSecretValue", "WebhookSecret"),  # secrets.webhook_secret
    },
    "PlannerFunction": {
        ("dynamodb:PutItem", "StateTable"),  # state.set_head, state.record_plan
        ("dynamodb:GetItem", "StateTable"),  # fanin.post_if_ready (no job planned): head_record, current_head
        ("dynamodb:UpdateItem", "StateTable"),  # ... claim_post, add_posted_fingerprints
        ("dynamodb:Query", "StateTable"),  # ... runs_of_head
        ("sqs:SendMessage", "JobsQueue"),  # queue.send_file_jobs
        ("secretsmanager:GetSecretValue", "GitHubSecret"),  # github.client_for
    },
    "AgentFunction": {
        ("dynamodb:GetItem", "StateTable"),  # state.head_record, current_head, get_run, posted_fingerprints
        ("dynamodb:PutItem", "StateTable"),  # state.finish_run, defer
        ("dynamodb:UpdateItem", "StateTable"),  # state.start_run, heartbeat, record_outcome, claim_post
        ("dynamodb:Query", "StateTable"),  # state.runs_of_head (fan-in)
        ("dynamodb:GetItem", "ResultsTable"),  # cache.get
        ("dynamodb:PutItem", "ResultsTable"),  # cache.put
        ("dynamodb:GetItem", "LedgerTable"),  # Ledger refusal state
        ("dynamodb:UpdateItem", "LedgerTable"),  # Ledger.reserve / settle / release / _mark_80
        ("sqs:SendMessage", "JobsQueue"),  # queue.send_raw (rate-limited job re-sent with a delay)
        ("sns:Publish", "AlertTopic"),  # runner._spend_signal (80 % notice)
        ("secretsmanager:GetSecretValue", "GitHubSecret"),  # github.client_for
        ("secretsmanager:GetSecretValue", "AnthropicSecret"),  # secrets.anthropic_api_key
    },
    "SweeperFunction": {
        ("dynamodb:Query", "StateTable/index/status-index"),  # state.runs_with_status
        ("dynamodb:Query", "StateTable"),  # state.deferred_jobs; fan-in runs_of_head after runner.fail
        ("dynamodb:UpdateItem", "StateTable"),  # state.mark_stuck; fan-in
        ("dynamodb:DeleteItem", "StateTable"),  # state.drop_deferred
        ("dynamodb:GetItem", "StateTable"),  # fan-in after runner.fail
        ("dynamodb:PutItem", "StateTable"),  # state.finish_run in runner.fail
        ("dynamodb:Query", "LedgerTable"),  # Ledger.release_expired
        ("dynamodb:UpdateItem", "LedgerTable"),  # Ledger._release
        ("dynamodb:GetItem", "LedgerTable"),  # Ledger.status (spend metric)
        ("sqs:SendMessage", "JobsQueue"),  # queue.send_raw (stuck once, deferred after the reset)
        ("secretsmanager:GetSecretValue", "GitHubSecret"),  # github.client_for (runner.fail posts)
    },
}

# Paths the recorded run below does not take (each is covered by its own unit/integration test).
NOT_EXERCISED: dict[str, set[tuple[str, str]]] = {
    "WebhookFunction": {("dynamodb:DeleteItem", "DeliveriesTable")},  # only when SQS refuses the job
    "PlannerFunction": {  # only for a PR with nothing to review (fanin.post_if_ready)
        ("dynamodb:Query", "StateTable"),
        ("dynamodb:UpdateItem", "StateTable"),
    },
    "AgentFunction": {
        ("sqs:SendMessage", "JobsQueue"),  # only on a 429/529 from the model API
        ("sns:Publish", "AlertTopic"),  # only when the day crosses 80 % of the budget
        ("dynamodb:GetItem", "LedgerTable"),  # only when a reservation is refused
    },
    "SweeperFunction": {
        ("dynamodb:UpdateItem", "StateTable"),  # stuck runs
        ("dynamodb:DeleteItem", "StateTable"),  # deferred jobs after a budget day
        ("dynamodb:GetItem", "StateTable"),  # runner.fail of a twice-stuck run
        ("dynamodb:PutItem", "StateTable"),
        ("dynamodb:UpdateItem", "LedgerTable"),  # stranded reservations
        ("sqs:SendMessage", "JobsQueue"),
        ("secretsmanager:GetSecretValue", "GitHubSecret"),
    },
}

# The managed policies SAM attaches to the roles it generates, with their documents:
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaBasicExecutionRole.html
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaSQSQueueExecutionRole.html
# Their Resource is "*" (AWS writes them); removing them needs explicit AWS::IAM::Role resources (see docs/deploy.md).
LOGS = {("logs:CreateLogGroup", "*"), ("logs:CreateLogStream", "*"), ("logs:PutLogEvents", "*")}
MANAGED = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": LOGS,
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": LOGS
    | {("sqs:ReceiveMessage", "*"), ("sqs:DeleteMessage", "*"), ("sqs:GetQueueAttributes", "*")},
}
BASIC, SQS_POLLER = sorted(MANAGED)
EXPECTED_MANAGED = {
    "WebhookFunction": {BASIC},
    "PlannerFunction": {BASIC, SQS_POLLER},  # SQS event source
    "AgentFunction": {BASIC, SQS_POLLER},
    "SweeperFunction": {BASIC},
}
# AWS managed policy names a widened template could use (the translator looks names up; offline we supply them).
MANAGED_NAMES = {"AmazonDynamoDBFullAccess": "arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess"}


# ------------------------------------------------------------------------------------------------ translation


def translate(sam: dict[str, Any]) -> dict[str, Any]:
    """The SAM template as CloudFormation, offline: s3:// code URIs, a region on the session."""
    sam = copy.deepcopy(sam)
    for name, res in sam["Resources"].items():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = f"s3://prfleet-artifacts/{name}.zip"
        elif res["Type"] == "AWS::Serverless::LayerVersion":
            res["Properties"]["ContentUri"] = f"s3://prfleet-artifacts/{name}.zip"
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    return translator.translate(sam, parameter_values={}, get_managed_policy_map=lambda: MANAGED_NAMES)


def _resource(value: Any) -> str:
    """A policy Resource as a logical id (or the literal string, e.g. "*")."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return value["Ref"]
    if "Fn::GetAtt" in value:
        logical, attr = value["Fn::GetAtt"]
        assert attr == "Arn", value
        return logical
    if "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        return value["Fn::Sub"].replace("${", "").replace(".Arn}", "")
    if (
        "Fn::Sub" in value
    ):  # SAM policy templates: ["arn:...:table/${tableName}", {"tableName": {"Ref": ...}}]
        text, variables = value["Fn::Sub"]
        for name, ref in variables.items():
            text = text.replace("${" + name + "}", _resource(ref))
        return text.split(":table/", 1)[-1]
    raise AssertionError(f"unexpected resource form {value!r}")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_of(cfn: dict[str, Any], function: str) -> dict[str, Any]:
    role = cfn["Resources"][function]["Properties"]["Role"]
    logical = role["Fn::GetAtt"][0]
    return cfn["Resources"][logical]["Properties"]


def effective(cfn: dict[str, Any], function: str) -> tuple[set[tuple[str, str]], set[str], list[str]]:
    """(inline grants, managed policy ARNs, problems) of a function's role."""
    props = role_of(cfn, function)
    grants: set[tuple[str, str]] = set()
    problems: list[str] = []
    for policy in props.get("Policies", []):
        for st in _as_list(policy["PolicyDocument"]["Statement"]):
            where = f"{function}/{policy['PolicyName']}/{st.get('Sid', '?')}"
            if st.get("Effect") != "Allow":
                continue
            if "NotAction" in st or "NotResource" in st:
                problems.append(f"{where}: NotAction/NotResource grants everything else")
                continue
            actions = [a for a in _as_list(st["Action"])]
            resources = [_resource(r) for r in _as_list(st["Resource"])]
            for a in actions:
                if "*" in a:
                    problems.append(f"{where}: wildcard action {a!r}")
            for r in resources:
                if r == "*" or r.endswith("/*") or r.endswith(":*"):
                    problems.append(f"{where}: wildcard resource {r!r}")
            grants |= {(a, r) for a in actions for r in resources}
    return grants, set(props.get("ManagedPolicyArns", [])), problems


def check(sam: dict[str, Any]) -> list[str]:
    """Every way the translated template differs from least privilege; empty when it is exactly right."""
    cfn = translate(sam)
    problems: list[str] = []
    for fn in FUNCTIONS:
        grants, managed, found = effective(cfn, fn)
        problems += found
        for extra in sorted(grants - NEEDS[fn]):
            problems.append(f"{fn}: grants {extra} that its code never calls")
        for missing in sorted(NEEDS[fn] - grants):
            problems.append(f"{fn}: lacks {missing} that its code calls")
        for arn in sorted(managed - EXPECTED_MANAGED[fn]):
            problems.append(f"{fn}: managed policy {arn}")
        for arn in sorted(EXPECTED_MANAGED[fn] - managed):
            problems.append(f"{fn}: SAM no longer attaches {arn}: update MANAGED/EXPECTED_MANAGED")
    return problems


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return tpl.load()


def test_every_function_is_checked(sam):
    assert set(tpl.resources(sam, "AWS::Serverless::Function")) == set(FUNCTIONS)


def test_each_function_has_exactly_the_permissions_its_code_needs(sam):
    assert check(sam) == []


def test_effective_permissions_including_sam_managed_policies(sam):
    """What each role can do in total: our statements plus the documented managed policies, nothing else."""
    cfn = translate(sam)
    for fn in FUNCTIONS:
        grants, managed, _ = effective(cfn, fn)
        total = grants | set().union(*(MANAGED[a] for a in managed))
        services = {a.split(":")[0] for a, _ in total}
        assert services <= {"dynamodb", "sqs", "sns", "secretsmanager", "logs"}, (fn, services)
        assert not any(r == "*" for a, r in grants), fn
    # The webhook can neither read the GitHub nor the Anthropic key, nor touch the work queue.
    webhook, _, _ = effective(cfn, "WebhookFunction")
    assert not {r for _, r in webhook} & {"GitHubSecret", "AnthropicSecret", "JobsQueue", "StateTable"}


def _statements(sam: dict[str, Any], fn: str) -> list[dict[str, Any]]:
    return sam["Resources"][fn]["Properties"]["Policies"][0]["Statement"]


def _widen_action(sam: dict[str, Any]) -> None:
    _statements(sam, "WebhookFunction")[0]["Action"] = "dynamodb:*"


def _widen_resource(sam: dict[str, Any]) -> None:
    _statements(sam, "AgentFunction")[0]["Resource"] = "*"


def _widen_index(sam: dict[str, Any]) -> None:
    for st in _statements(sam, "SweeperFunction"):
        if st.get("Sid") == "RunsByStatus":
            st["Resource"] = {"Fn::Sub": "${StateTable.Arn}/index/*"}


def _extra_action(sam: dict[str, Any]) -> None:
    _statements(sam, "PlannerFunction")[0]["Action"].append("dynamodb:Scan")


def _extra_secret(sam: dict[str, Any]) -> None:
    _statements(sam, "WebhookFunction").append(
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "AnthropicSecret"}}
    )


def _managed_policy(sam: dict[str, Any]) -> None:
    sam["Resources"]["SweeperFunction"]["Properties"]["Policies"].append("AmazonDynamoDBFullAccess")


def _policy_template(sam: dict[str, Any]) -> None:
    sam["Resources"]["SweeperFunction"]["Properties"]["Policies"].append(
        {"DynamoDBCrudPolicy": {"TableName": {"Ref": "LedgerTable"}}}
    )


def _not_action(sam: dict[str, Any]) -> None:
    st = _statements(sam, "WebhookFunction")[1]
    st["NotAction"] = st.pop("Action")


@pytest.mark.parametrize(
    "widen, expected",
    [
        (_widen_action, "wildcard action 'dynamodb:*'"),
        (_widen_resource, "wildcard resource '*'"),
        (_widen_index, "wildcard resource 'StateTable/index/*'"),
        (_extra_action, "('dynamodb:Scan', 'StateTable') that its code never calls"),
        (_extra_secret, "('secretsmanager:GetSecretValue', 'AnthropicSecret') that its code never calls"),
        (_managed_policy, "managed policy arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess"),
        (_policy_template, "('dynamodb:BatchWriteItem', 'LedgerTable') that its code never calls"),
        (_not_action, "NotAction/NotResource"),
    ],
    ids=lambda v: v.__name__ if callable(v) else "",
)
def test_a_widened_copy_of_the_template_fails(sam, widen, expected):
    wide = copy.deepcopy(sam)
    widen(wide)
    problems = check(wide)
    assert any(expected in p for p in problems), problems


def test_a_narrowed_copy_fails_too(sam):
    """Dropping a permission the code needs is caught as well (it would fail in AWS with AccessDenied)."""
    narrow = copy.deepcopy(sam)
    _statements(narrow, "PlannerFunction")[0]["Action"].remove("dynamodb:Query")
    assert "PlannerFunction: lacks ('dynamodb:Query', 'StateTable') that its code calls" in check(narrow)


# ------------------------------------------------------------------------------------------------ recorded run

_ACTIONS = {"SendMessageBatch": "SendMessage"}  # operations authorized by another action


def _recorder(stack: Any, calls: dict[str, set[tuple[str, str]]], current: threading.local) -> Any:
    by_physical: dict[str, str] = {}
    for logical, ref in stack.ctx.refs.items():
        by_physical[str(ref)] = logical
    for (logical, attr), value in stack.ctx.attrs.items():
        if attr == "Arn":
            by_physical[str(value)] = logical

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        fn = getattr(current, "function", None)
        if fn is None:
            return
        service = model.service_model.signing_name or model.service_model.endpoint_prefix
        op = _ACTIONS.get(model.name, model.name)
        target = (
            params.get("TableName")
            or params.get("QueueUrl")
            or params.get("SecretId")
            or params.get("TopicArn")
            or "?"
        )
        logical = by_physical.get(target, target)
        if params.get("IndexName"):
            logical = f"{logical}/index/{params['IndexName']}"
        calls.setdefault(fn, set()).add((f"{service}:{op}", logical))

    return record


@pytest.mark.e2e
def test_every_call_of_a_real_review_is_granted_and_nothing_else_is(tmp_path, monkeypatch):
    from prfleet import aws, github, secrets
    from prfleet_local.demo import sandbox
    from prfleet_local.stack import Function

    calls: dict[str, set[tuple[str, str]]] = {}
    current = threading.local()
    original = Function.invoke

    def invoke(self: Function, event: dict[str, Any], stack: Any) -> Any:
        # In AWS each function has its own containers: no secret or GitHub client cached by another function.
        secrets.reset()
        github.reset_clients()
        current.function = self.logical_id
        try:
            return original(self, event, stack)
        finally:
            current.function = None

    monkeypatch.setattr(Function, "invoke", invoke)
    with sandbox(tmp_path, sweep_interval=None, visibility_timeout=2) as box:
        hook = _recorder(box.stack, calls, current)
        for service in ("dynamodb", "sqs", "sns", "secretsmanager"):
            aws.client(service).meta.events.register("before-parameter-build", hook)
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        status, reply = box.deliver("pull_request", payload)
        assert status == 202, reply
        assert box.wait_for_review(number, head_sha=payload["pull_request"]["head"]["sha"], timeout=120)
        box.stack.sweep()

    assert set(calls) == set(FUNCTIONS), calls
    not_granted = {fn: sorted(calls[fn] - NEEDS[fn]) for fn in FUNCTIONS if calls[fn] - NEEDS[fn]}
    assert not_granted == {}, "calls the template does not grant (AccessDenied in AWS)"
    unused = {fn: sorted(NEEDS[fn] - calls[fn]) for fn in FUNCTIONS}
    assert unused == {fn: sorted(NOT_EXERCISED[fn]) for fn in FUNCTIONS}
