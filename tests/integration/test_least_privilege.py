"""Least privilege, checked on what CloudFormation will really create: the template translated offline by SAM.

Each function has its own explicit AWS::IAM::Role (template.yaml: `Role: !GetAtt <Function>Role.Arn`), so SAM
generates no role and attaches no AWS managed policy (AWSLambdaBasicExecutionRole and AWSLambdaSQSQueueExecutionRole
grant logs:* and sqs:* actions on "*"). The role's inline statements must be exactly what the function needs: NEEDS
below (the calls its code makes, derived from the library; each entry names the code that makes the call) plus
LAMBDA_NEEDS (what the Lambda service does with the role on the function's behalf: write its logs, poll its queue).
Two directions:

* static: translated template == NEEDS | LAMBDA_NEEDS, no `*` action, no `*` resource, no managed policy and no
  other IAM policy resource on the role, trust policy lambda.amazonaws.com only; a widened copy of the template fails;
* dynamic: the whole pipeline runs on the local stack with every AWS call recorded per function; each call must be
  granted by NEEDS, and NEEDS must contain nothing the run did not use except the paths listed in NOT_EXERCISED.

samtranslator refuses local code paths and needs a region: code URIs become s3:// URIs and the region is given.
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
from typing import Any

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from prfleet_local.stack import template as tpl

REGION = "us-east-1"
FUNCTIONS = ("WebhookFunction", "PlannerFunction", "AgentFunction", "SweeperFunction", "ReconcileFunction")

# The snapshot objects (issue 23): grants on key patterns of SnapshotBucket, the only wildcard resources allowed.
MANIFESTS = "SnapshotBucket/snapshots/*.json"
ARCHIVES = "SnapshotBucket/snapshots/*.tar.gz"
OBJECT_PATTERNS = {MANIFESTS, ARCHIVES}
# Grants that must carry exactly this condition: the planner lists only under snapshots/.
CONDITIONED = {("s3:ListBucket", "SnapshotBucket"): {"StringLike": {"s3:prefix": "snapshots/*"}}}

# (IAM action, resource) per function; resources are logical ids (a table's or queue's Arn, a secret's or topic's
# Ref), an index as "<table>/index/<name>". SendMessageBatch is authorized by sqs:SendMessage
# (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-api-permissions-reference.html).
NEEDS: dict[str, set[tuple[str, str]]] = {
    "WebhookFunction": {
        ("dynamodb:PutItem", "DeliveriesTable"),  # deliveries.first_seen
        ("dynamodb:DeleteItem", "DeliveriesTable"),  # deliveries.forget (enqueue failed)
        ("sqs:SendMessage", "PrQueue"),  # queue.send_pr_job
        ("secretsmanager:GetSecretValue", "WebhookSecret"),  # secret_store.webhook_secret
    },
    "PlannerFunction": {
        ("dynamodb:PutItem", "StateTable"),  # heads.set_head, heads.record_plan, headfiles.save
        ("dynamodb:GetItem", "StateTable"),  # fanin.post_if_ready (no job planned): head_record, current_head
        ("dynamodb:UpdateItem", "StateTable"),  # ... claim_post, record_fingerprints
        ("dynamodb:Query", "StateTable"),  # ... runs_of_head; reactions.read_reactions: runs_of_head (models)
        # reactions.after_new_head: store.reactions.schedule_quiet (Put, Update, the replaced entry's Delete),
        # stored (BatchGetItem), record (Update)
        ("dynamodb:BatchGetItem", "StateTable"),
        ("dynamodb:DeleteItem", "StateTable"),
        ("sqs:SendMessage", "JobsQueue"),  # queue.send_file_jobs
        ("sqs:SendMessage", "PrQueue"),  # planner app: a GitHub rate limit longer than the time left
        ("secretsmanager:GetSecretValue", "GitHubSecret"),  # github.client_for
        # repository.snapshot.store_snapshot (issue 23): is the head's manifest there (a listing of its exact key),
        # what it says, else the archive then the manifest
        ("s3:ListBucket", "SnapshotBucket"),
        ("s3:GetObject", MANIFESTS),
        ("s3:PutObject", MANIFESTS),
        ("s3:PutObject", ARCHIVES),
    },
    "AgentFunction": {
        ("dynamodb:GetItem", "StateTable"),  # fan-in: current_head, get_run, recorded_fingerprints
        # runner._job_reads: the head record, current head and head file list's first chunk, with the cache
        ("dynamodb:BatchGetItem", "StateTable"),
        ("dynamodb:PutItem", "StateTable"),  # job_runs.finish_run, deferrals.defer
        ("dynamodb:UpdateItem", "StateTable"),  # start_run, heartbeat, record_outcome, claim_post
        ("dynamodb:Query", "StateTable"),  # job_runs.runs_of_head (fan-in), headfiles.load
        ("dynamodb:BatchGetItem", "ResultsTable"),  # runner._job_reads (the cached result)
        ("dynamodb:PutItem", "ResultsTable"),  # cache.put
        ("dynamodb:GetItem", "LedgerTable"),  # Ledger statuses after a settle, refusal state; circuit.read
        (
            "dynamodb:UpdateItem",
            "LedgerTable",
        ),  # Ledger transactions (day/PR totals, usage), _mark_80, circuit
        ("dynamodb:PutItem", "LedgerTable"),  # Ledger transactions: reservation and closure items
        ("dynamodb:DeleteItem", "LedgerTable"),  # Ledger transactions: the open reservation item on close
        (
            "sqs:SendMessage",
            "JobsQueue",
        ),  # queue.send_raw (rate-limited or budget-pressed job re-sent with a delay); the fan-in's verify job
        (
            "sns:Publish",
            "AlertTopic",
        ),  # circuit.open_circuit (spend-limit notice)
        # ... to the topic encrypted with AlertKey: SNS uses the key as the publisher, who needs both
        # (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#send-to-encrypted-topic)
        ("kms:GenerateDataKey", "AlertKey"),
        ("kms:Decrypt", "AlertKey"),
        ("secretsmanager:GetSecretValue", "GitHubSecret"),  # github.client_for
        ("s3:GetObject", MANIFESTS),  # repository.snapshot.open_snapshot: the head's manifest
        ("s3:GetObject", ARCHIVES),  # ... and its archive, once per head per container
    },
    "SweeperFunction": {
        ("dynamodb:Query", "StateTable/index/status-index"),  # job_runs.runs_with_status
        ("dynamodb:Query", "StateTable"),  # deferrals.waiting; fan-in runs_of_head after runner.fail
        ("dynamodb:UpdateItem", "StateTable"),  # job_runs.mark_stuck; fan-in; deferrals.move_legacy
        ("dynamodb:DeleteItem", "StateTable"),  # deferrals.drop_deferred, move_legacy (its Delete)
        ("dynamodb:GetItem", "StateTable"),  # fan-in after runner.fail
        ("dynamodb:Query", "LedgerTable"),  # Ledger.release_expired (open reservations)
        ("dynamodb:UpdateItem", "LedgerTable"),  # Ledger._close transaction (expired), circuit probe/close
        ("dynamodb:PutItem", "LedgerTable"),  # ... its closure item
        ("dynamodb:DeleteItem", "LedgerTable"),  # ... the open reservation item
        ("dynamodb:GetItem", "LedgerTable"),  # Ledger.status (spend metric), circuit.read
        ("sqs:SendMessage", "JobsQueue"),  # queue.send_raw (stuck once, deferred after the reset)
        ("secretsmanager:GetSecretValue", "GitHubSecret"),  # github.client_for (runner.fail posts, reactions)
        # reactions.sweep_quiet: stored counts, the next round's entry (take_quiet: Delete + Get; record: Update)
        ("dynamodb:BatchGetItem", "StateTable"),
        ("dynamodb:PutItem", "StateTable"),
    },
    "ReconcileFunction": {
        ("secretsmanager:GetSecretValue", "AdminKeySecret"),  # reconcile.admin_getter
        ("dynamodb:Query", "LedgerTable"),  # Ledger.usage
        ("dynamodb:GetItem", "LedgerTable"),  # Ledger.adjust (the marker it applied)
        ("dynamodb:PutItem", "LedgerTable"),  # Ledger.adjust transaction: the marker
        ("dynamodb:UpdateItem", "LedgerTable"),  # ... the day total
    },
}

# What Lambda itself does with the execution role (no code of ours makes these calls).
# * Logs: the runtime creates one log stream per execution environment in the function's log group and writes to it.
#   The stack creates the group (template.yaml, <Function>LogGroup), so no logs:CreateLogGroup. The grant is on the
#   group's Arn attribute, `arn:...:log-group:<name>:*`: the form CloudWatch Logs documents for IAM policies, covering
#   the group's log streams `...:log-group:<name>:log-stream:<stream>` and nothing else (log group names cannot
#   contain ":"); https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/iam-access-control-overview-cwl.html
# * SQS: the event source mapping polls the queue with the function's role: ReceiveMessage, DeleteMessage (also for
#   DeleteMessageBatch), GetQueueAttributes - exactly what AWSLambdaSQSQueueExecutionRole grants, here on one queue
#   (https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaSQSQueueExecutionRole.html,
#   https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html). No sqs:ChangeMessageVisibility: the
#   mapping does not need it (the managed policy SAM attached until now has none) and no code of ours calls it.
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
POLL_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
LAMBDA_NEEDS: dict[str, set[tuple[str, str]]] = {
    fn: {(a, fn.replace("Function", "LogGroup")) for a in LOG_ACTIONS} for fn in FUNCTIONS
}
# * X-Ray (Tracing: Active): the function's role sends the trace segments, xray:PutTraceSegments and
#   xray:PutTelemetryRecords; X-Ray has no resource-level permissions for them, so Resource "*" is the only form
#   (https://docs.aws.amazon.com/lambda/latest/dg/services-xray.html#services-xray-permissions,
#   https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsx-ray.html).
TRACE_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
for _fn in FUNCTIONS:
    LAMBDA_NEEDS[_fn] |= {(a, "*") for a in TRACE_ACTIONS}
LAMBDA_NEEDS["PlannerFunction"] |= {(a, "PrQueue") for a in POLL_ACTIONS}
LAMBDA_NEEDS["AgentFunction"] |= {(a, "JobsQueue") for a in POLL_ACTIONS}
# * The scheduled functions' OnFailure destination (EventInvokeConfig): Lambda sends the invocation record of a run
#   that failed all its attempts to ScheduleDLQ with the function's execution role ("your function's execution
#   role needs permission", https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html).
#   EventBridge's own dead letters need no role grant: the queue policy lets its service principal send
#   (test_only_the_stacks_schedule_rules_may_send_to_the_schedule_dlq).
SCHEDULED = ("SweeperFunction", "ReconcileFunction")
for _fn in SCHEDULED:
    LAMBDA_NEEDS[_fn] |= {("sqs:SendMessage", "ScheduleDLQ")}

# ------------------------------------------------------------------------------- the model provider (issue 15)
# What the agent needs to reach Claude, per template parameter ModelProvider (prfleet.model_client). Resources
# are the ARNs the template builds from the parameters below (account 123456789012, region us-east-1 as in
# translate()). Nothing else of any provider may be granted: no secret unless `anthropic`, no model but the
# configured ones.
ACCOUNT = "123456789012"
PROVIDER_PARAMS: dict[str, dict[str, str]] = {
    "anthropic": {},
    "claude-platform-aws": {
        "ModelProvider": "claude-platform-aws",
        "ModelRegion": "us-west-2",
        "AnthropicAwsWorkspaceId": "wrkspc_01LeastPriv",
    },
    "bedrock": {
        "ModelProvider": "bedrock",
        "ReviewModel": "global.anthropic.claude-sonnet-4-6",
        "TestsModel": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        "DocsModel": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
    },
}
_PROFILES = [
    f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/global.anthropic.claude-sonnet-4-6",
    f"arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0",
]
_FOUNDATION_MODELS = [
    "arn:aws:bedrock:*::foundation-model/anthropic.claude-sonnet-4-6",
    "arn:aws:bedrock:::foundation-model/anthropic.claude-sonnet-4-6",  # the global profile's region-less ARN
    "arn:aws:bedrock:*::foundation-model/anthropic.claude-haiku-4-5-20251001-v1:0",
]
_INVOKE = ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream")
PROVIDER_NEEDS: dict[str, set[tuple[str, str]]] = {
    "anthropic": {("secretsmanager:GetSecretValue", "AnthropicSecret")},  # secret_store.anthropic_api_key
    "claude-platform-aws": {  # POST /v1/messages = CreateInference on the workspace; the gateway's token
        (
            "aws-external-anthropic:CreateInference",
            f"arn:aws:aws-external-anthropic:us-west-2:{ACCOUNT}:workspace/wrkspc_01LeastPriv",
        ),
        ("sts:GetWebIdentityToken", "*"),
        ("sts:TagGetWebIdentityToken", "*"),
    },
    "bedrock": {(a, r) for a in _INVOKE for r in _PROFILES + _FOUNDATION_MODELS},
}
# The only "*" resources allowed, each only with exactly these conditions (sts:GetWebIdentityToken has no resource
# type; https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AnthropicInferenceAccess.html).
STAR_ALLOWED = {
    ("sts:GetWebIdentityToken", "*"): {
        "ForAnyValue:StringEquals": {
            "sts:IdentityTokenAudience": ["https://api.anthropic.com", "https://platform.claude.com"]
        },
        "StringEquals": {"aws:CalledViaLast": "aws-external-anthropic.amazonaws.com"},
    },
}
STAR_ALLOWED[("sts:TagGetWebIdentityToken", "*")] = STAR_ALLOWED[("sts:GetWebIdentityToken", "*")]
# X-Ray's two write actions, unconditioned (above, TRACE_ACTIONS): nothing narrower exists.
STAR_ALLOWED.update({(a, "*"): None for a in TRACE_ACTIONS})


# The sweeper's circuit probe (functions/sweeper) calls the model through the provider whose spend limits open the
# circuit: the Claude API and Claude Platform on AWS; Bedrock's errors never open it (the circuit closes by time,
# see prfleet.sweeper), so it needs nothing there.
SWEEPER_PROVIDER_NEEDS: dict[str, set[tuple[str, str]]] = {
    "anthropic": PROVIDER_NEEDS["anthropic"],
    "claude-platform-aws": PROVIDER_NEEDS["claude-platform-aws"],
    "bedrock": set(),
}


def code_needs(provider: str) -> dict[str, set[tuple[str, str]]]:
    """What each function's code calls with `provider`."""
    out = {fn: set(NEEDS[fn]) for fn in FUNCTIONS}
    out["AgentFunction"] |= PROVIDER_NEEDS[provider]
    out["SweeperFunction"] |= SWEEPER_PROVIDER_NEEDS[provider]
    return out


def grants_for(provider: str) -> dict[str, set[tuple[str, str]]]:
    needs = code_needs(provider)
    return {fn: needs[fn] | LAMBDA_NEEDS[fn] for fn in FUNCTIONS}


GRANTS = grants_for("anthropic")

# Paths the recorded run below does not take (each is covered by its own unit/integration test).
NOT_EXERCISED: dict[str, set[tuple[str, str]]] = {
    "WebhookFunction": {("dynamodb:DeleteItem", "DeliveriesTable")},  # only when SQS refuses the job
    "PlannerFunction": {  # only for a PR with nothing to review (fanin.post_if_ready)
        ("dynamodb:Query", "StateTable"),
        ("dynamodb:BatchGetItem", "StateTable"),  # reactions: only at a later head, once findings are posted
        ("dynamodb:DeleteItem", "StateTable"),  # ... and the quiet read a later head replaces
        ("sqs:SendMessage", "PrQueue"),  # only when GitHub rate-limits the planner past its time left
        ("s3:GetObject", MANIFESTS),  # only when the head's snapshot is already stored (a re-plan)
    },
    "AgentFunction": {
        ("sns:Publish", "AlertTopic"),  # only when the API's spend limit opens the circuit
        ("kms:GenerateDataKey", "AlertKey"),  # ... the same publish's use of the topic's key
        ("kms:Decrypt", "AlertKey"),
        ("dynamodb:PutItem", "StateTable"),  # deferrals.defer: only when the budget defers a job
    },
    "SweeperFunction": {
        ("dynamodb:UpdateItem", "StateTable"),  # stuck runs
        ("dynamodb:DeleteItem", "StateTable"),  # deferred jobs after a budget day
        ("dynamodb:GetItem", "StateTable"),  # runner.fail of a twice-stuck run
        ("dynamodb:UpdateItem", "LedgerTable"),  # stranded reservations, the circuit
        ("dynamodb:PutItem", "LedgerTable"),
        ("dynamodb:DeleteItem", "LedgerTable"),
        ("sqs:SendMessage", "JobsQueue"),
        ("secretsmanager:GetSecretValue", "GitHubSecret"),
        ("secretsmanager:GetSecretValue", "AnthropicSecret"),  # only while the spend-limit circuit is open
        # reactions of a PR quiet for a day (tests/e2e/test_reactions.py)
        ("dynamodb:BatchGetItem", "StateTable"),
        ("dynamodb:PutItem", "StateTable"),  # ... its next quiet read
    },
    "ReconcileFunction": {  # the recorded run has no Admin API key: reconciliation is off (tests/integration/test_reconcile.py)
        ("dynamodb:Query", "LedgerTable"),
        ("dynamodb:GetItem", "LedgerTable"),
        ("dynamodb:PutItem", "LedgerTable"),
        ("dynamodb:UpdateItem", "LedgerTable"),
    },
}

# What SAM attaches to a role it generates (a function without Role), with Resource "*" (AWS writes them):
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaBasicExecutionRole.html
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaSQSQueueExecutionRole.html
BASIC = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
TRUST = {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
# IAM resources that could add permissions to a role besides its own Policies (all forbidden on the function roles).
POLICY_TYPES = {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"}
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


_NO_VALUE = object()


def settle(cfn: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """The translated template as CloudFormation deploys it with these parameter values: resources whose
    Condition is false left out, Fn::If decided, AWS::NoValue removed, Fn::Sub over parameters and pseudo
    parameters substituted (a Sub naming a resource stays as it is, for _resource)."""
    ctx = tpl.Context(cfn, parameters=dict(parameters), region=REGION, account=ACCOUNT)
    ctx.check_rules()

    def sub_text(text: str, variables: dict[str, Any]) -> str | None:
        names = set(re.findall(r"\$\{([^}!]+)\}", text))
        known = {**ctx.parameters, **ctx.pseudo(), **variables}
        if not names <= set(known):
            return None
        return re.sub(r"\$\{([^}!]+)\}", lambda m: str(known[m.group(1)]), text)

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (walk(v) for v in value) if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if value == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        if list(value) == ["Fn::If"]:
            cond, yes, no = value["Fn::If"]
            return walk(yes if ctx.condition(cond) else no)
        if list(value) == ["Ref"] and value["Ref"] in ctx.parameters:
            return ctx.parameters[value["Ref"]]
        if list(value) == ["Fn::Sub"]:
            arg = value["Fn::Sub"]
            try:
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], ctx.resolve(arg[1]))
            except tpl.Unresolved:  # a variable names a resource: left for _resource
                text, variables = None, {}
            done = sub_text(text, variables) if text is not None else None
            if done is not None:
                return done
        out = {k: walk(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}

    resources = {
        name: res
        for name, res in cfn["Resources"].items()
        if "Condition" not in res or ctx.condition(res["Condition"])
    }
    return {**cfn, "Resources": walk(resources)}


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


def role_logical_id(cfn: dict[str, Any], function: str) -> str:
    role = cfn["Resources"][function]["Properties"]["Role"]
    return role["Fn::GetAtt"][0]


def role_of(cfn: dict[str, Any], function: str) -> dict[str, Any]:
    return cfn["Resources"][role_logical_id(cfn, function)]["Properties"]


def effective(cfn: dict[str, Any], function: str) -> tuple[set[tuple[str, str]], set[str], list[str]]:
    """(inline grants, managed policy ARNs, problems) of a function's role."""
    logical = role_logical_id(cfn, function)
    props = role_of(cfn, function)
    grants: set[tuple[str, str]] = set()
    problems: list[str] = []
    via_profiles: list[tuple[str, Any]] = []
    if logical != f"{function}Role" or cfn["Resources"][logical]["Type"] != "AWS::IAM::Role":
        problems.append(
            f"{function}: role {logical} is not its own {function}Role (SAM generated it, or shared)"
        )
    trust = _as_list(props["AssumeRolePolicyDocument"]["Statement"])
    if trust != [TRUST]:
        problems.append(f"{function}: trust policy {trust!r} is not lambda.amazonaws.com only")
    for other, res in cfn["Resources"].items():
        if res["Type"] in POLICY_TYPES and f'"{logical}"' in json.dumps(res["Properties"]):
            problems.append(f"{function}: {res['Type']} {other} adds permissions to {logical}")
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
                allowed = all(
                    (a, r) in STAR_ALLOWED and STAR_ALLOWED[(a, r)] == st.get("Condition") for a in actions
                )
                if r in OBJECT_PATTERNS:
                    continue
                if (r == "*" and not allowed) or r.endswith("/*") or r.endswith(":*"):
                    problems.append(f"{where}: wildcard resource {r!r}")
                for a in actions:
                    if (a, r) in CONDITIONED and st.get("Condition") != CONDITIONED[(a, r)]:
                        problems.append(f"{where}: {a} on {r} without its condition {CONDITIONED[(a, r)]}")
            if any(r.startswith("arn:aws:bedrock:") and "foundation-model/" in r for r in resources):
                via_profiles.append((where, st.get("Condition")))
            grants |= {(a, r) for a in actions for r in resources}
    # Foundation models only through the role's own inference profiles (bedrock:InferenceProfileArn).
    profiles = {r for _, r in grants if ":inference-profile/" in r}
    for where, cond in via_profiles:
        arns = (
            (cond or {}).get("ArnEquals", {}).get("bedrock:InferenceProfileArn")
            if list(cond or {}) == ["ArnEquals"]
            else None
        )
        if not arns or set(arns) != profiles:
            problems.append(f"{where}: foundation models not limited to the configured profiles")
    return grants, set(props.get("ManagedPolicyArns", [])), problems


def check(sam: dict[str, Any], provider: str = "anthropic") -> list[str]:
    """Every way the translated template, deployed with `provider`'s parameters, differs from least privilege;
    empty when it is exactly right."""
    cfn = settle(translate(sam), PROVIDER_PARAMS[provider])
    expected = grants_for(provider)
    problems: list[str] = []
    for fn in FUNCTIONS:
        grants, managed, found = effective(cfn, fn)
        problems += found
        for extra in sorted(grants - expected[fn]):
            problems.append(f"{fn}: grants {extra} that neither its code nor Lambda uses")
        for missing in sorted(expected[fn] - grants):
            problems.append(
                f"{fn}: lacks {missing} that {'Lambda' if missing in LAMBDA_NEEDS[fn] else 'its code'} uses"
            )
        for arn in sorted(managed):
            problems.append(f"{fn}: managed policy {arn}")
    secrets = {n for n, r in cfn["Resources"].items() if r["Type"] == "AWS::SecretsManager::Secret"}
    if provider != "anthropic" and "AnthropicSecret" in secrets:
        problems.append(f"{provider}: the stack creates AnthropicSecret, which nothing reads")
    env = json.dumps(
        [r["Properties"].get("Environment") for r in cfn["Resources"].values() if "Properties" in r]
    )
    if provider != "anthropic" and "AnthropicSecret" in env:
        problems.append(f"{provider}: a function is given the AnthropicSecret id")
    return problems


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return tpl.load()


def test_every_function_is_checked(sam):
    assert set(tpl.resources(sam, "AWS::Serverless::Function")) == set(FUNCTIONS)


@pytest.mark.parametrize("provider", sorted(PROVIDER_PARAMS))
def test_each_function_has_exactly_the_permissions_its_code_needs(sam, provider):
    assert check(sam, provider) == []


PROVIDER_SERVICES = {
    "anthropic": set(),
    "claude-platform-aws": {"aws-external-anthropic", "sts"},
    "bedrock": {"bedrock"},
}


@pytest.mark.parametrize("provider", sorted(PROVIDER_PARAMS))
def test_effective_permissions_no_managed_policy_no_star(sam, provider):
    """What each role can do in total: its own inline statements, nothing else (no managed policy, no "*" but
    the conditioned token grant of Claude Platform on AWS)."""
    cfn = settle(translate(sam), PROVIDER_PARAMS[provider])
    for fn in FUNCTIONS:
        grants, managed, _ = effective(cfn, fn)
        assert managed == set(), fn
        services = {a.split(":")[0] for a, _ in grants}
        allowed = {"dynamodb", "sqs", "sns", "secretsmanager", "logs", "xray", "kms", "s3"}
        reaches_claude = fn == "AgentFunction" or (
            fn == "SweeperFunction" and SWEEPER_PROVIDER_NEEDS[provider]
        )
        assert services <= allowed | (PROVIDER_SERVICES[provider] if reaches_claude else set()), (
            fn,
            services,
        )
        assert not any(r == "*" and (a, r) not in STAR_ALLOWED for a, r in grants), fn
        # Logs only into its own group; only the planner and the agent may consume, each its own queue.
        assert {r for a, r in grants if a.startswith("logs:")} == {fn.replace("Function", "LogGroup")}, fn
        # Traces: exactly X-Ray's two write actions (on "*", the only form they have), nothing else of X-Ray.
        assert {(a, r) for a, r in grants if a.startswith("xray:")} == {(a, "*") for a in TRACE_ACTIONS}, fn
        # A key only for publishing to the encrypted alert topic: the agent's, on the topic's key.
        keys = {r for a, r in grants if a.startswith("kms:")}
        assert keys == ({"AlertKey"} if fn == "AgentFunction" else set()), fn
        # Snapshots: the planner writes them (and finds its manifests), the agent reads them; nobody else.
        s3 = {(a, r) for a, r in grants if a.startswith("s3:")}
        assert s3 == {g for g in NEEDS.get(fn, set()) if g[0].startswith("s3:")}, fn
        assert fn in ("PlannerFunction", "AgentFunction") or not s3, fn
        consumed = {r for a, r in grants if a in POLL_ACTIONS}
        assert consumed == {"PlannerFunction": {"PrQueue"}, "AgentFunction": {"JobsQueue"}}.get(fn, set()), fn
    # SAM generated no role of its own (one role per function, all explicit).
    roles = {n for n, r in cfn["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    assert roles == {f"{fn}Role" for fn in FUNCTIONS}
    # The webhook can neither read the GitHub nor the Anthropic key, nor touch the work queue.
    webhook, _, _ = effective(cfn, "WebhookFunction")
    assert not {r for _, r in webhook} & {"GitHubSecret", "AnthropicSecret", "JobsQueue", "StateTable"}


def _statements(sam: dict[str, Any], fn: str) -> list[dict[str, Any]]:
    return sam["Resources"][f"{fn}Role"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]


def _statement(sam: dict[str, Any], fn: str, sid: str) -> dict[str, Any]:
    (st,) = [s for s in _statements(sam, fn) if s.get("Sid") == sid]
    return st


def _widen_action(sam: dict[str, Any]) -> None:
    _statement(sam, "WebhookFunction", "DedupeDeliveries")["Action"] = "dynamodb:*"


def _widen_resource(sam: dict[str, Any]) -> None:
    _statement(sam, "AgentFunction", "RunsAndFanIn")["Resource"] = "*"


def _logs_star(sam: dict[str, Any]) -> None:
    _statement(sam, "SweeperFunction", "WriteOwnLogs")["Resource"] = "*"


def _logs_create_group(sam: dict[str, Any]) -> None:
    _statement(sam, "WebhookFunction", "WriteOwnLogs")["Action"].append("logs:CreateLogGroup")


def _logs_other_group(sam: dict[str, Any]) -> None:
    _statement(sam, "WebhookFunction", "WriteOwnLogs")["Resource"] = {"Fn::GetAtt": ["AgentLogGroup", "Arn"]}


def _poll_star(sam: dict[str, Any]) -> None:
    _statement(sam, "PlannerFunction", "PollOwnQueue")["Resource"] = "*"


def _poll_other_queue(sam: dict[str, Any]) -> None:
    _statement(sam, "AgentFunction", "PollOwnQueue")["Resource"] = {"Fn::GetAtt": ["PrQueue", "Arn"]}


def _sam_generated_role(sam: dict[str, Any]) -> None:
    """Back to SAM's generated role (Policies on the function): SAM attaches its managed policies again."""
    props = sam["Resources"]["SweeperFunction"]["Properties"]
    props.pop("Role")
    props["Policies"] = [{"Statement": _statements(sam, "SweeperFunction")}]
    del sam["Resources"]["SweeperFunctionRole"]


def _shared_role(sam: dict[str, Any]) -> None:
    sam["Resources"]["SweeperFunction"]["Properties"]["Role"] = {"Fn::GetAtt": ["AgentFunctionRole", "Arn"]}


def _trust_widened(sam: dict[str, Any]) -> None:
    trust = sam["Resources"]["AgentFunctionRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    trust["Principal"] = {"AWS": "*"}


def _widen_index(sam: dict[str, Any]) -> None:
    for st in _statements(sam, "SweeperFunction"):
        if st.get("Sid") == "RunsByStatus":
            st["Resource"] = {"Fn::Sub": "${StateTable.Arn}/index/*"}


def _extra_action(sam: dict[str, Any]) -> None:
    _statement(sam, "PlannerFunction", "PrState")["Action"].append("dynamodb:Scan")


def _extra_secret(sam: dict[str, Any]) -> None:
    _statements(sam, "WebhookFunction").append(
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "AnthropicSecret"}}
    )


def _managed_policy(sam: dict[str, Any]) -> None:
    sam["Resources"]["SweeperFunctionRole"]["Properties"]["ManagedPolicyArns"] = [
        MANAGED_NAMES["AmazonDynamoDBFullAccess"]
    ]


def _second_inline_policy(sam: dict[str, Any]) -> None:
    sam["Resources"]["SweeperFunctionRole"]["Properties"]["Policies"].append(
        {
            "PolicyName": "more",
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "dynamodb:BatchWriteItem",
                        "Resource": {"Ref": "LedgerTable"},
                    }
                ],
            },
        }
    )


def _separate_policy_resource(sam: dict[str, Any]) -> None:
    sam["Resources"]["ExtraPolicy"] = {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": "extra",
            "Roles": [{"Ref": "WebhookFunctionRole"}],
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "dynamodb:Scan", "Resource": "*"}],
            },
        },
    }


def _not_action(sam: dict[str, Any]) -> None:
    st = _statement(sam, "WebhookFunction", "EnqueuePrJob")
    st["NotAction"] = st.pop("Action")


def _snapshots_whole_bucket(sam: dict[str, Any]) -> None:
    _statement(sam, "AgentFunction", "ReadSnapshots")["Resource"] = {"Fn::Sub": "${SnapshotBucket.Arn}/*"}


def _snapshots_list_unconditioned(sam: dict[str, Any]) -> None:
    del _statement(sam, "PlannerFunction", "FindSnapshotManifests")["Condition"]


def _snapshots_agent_writes(sam: dict[str, Any]) -> None:
    _statement(sam, "AgentFunction", "ReadSnapshots")["Action"] = ["s3:GetObject", "s3:PutObject"]


@pytest.mark.parametrize(
    "widen, expected",
    [
        (_snapshots_whole_bucket, "ReadSnapshots: wildcard resource 'SnapshotBucket/*'"),
        (_snapshots_list_unconditioned, "s3:ListBucket on SnapshotBucket without its condition"),
        (_snapshots_agent_writes, f"('s3:PutObject', '{ARCHIVES}') that neither its code nor Lambda uses"),
        (_widen_action, "wildcard action 'dynamodb:*'"),
        (_widen_resource, "wildcard resource '*'"),
        (_widen_index, "wildcard resource 'StateTable/index/*'"),
        (_logs_star, "SweeperFunction/least-privilege/WriteOwnLogs: wildcard resource '*'"),
        (
            _logs_create_group,
            "('logs:CreateLogGroup', 'WebhookLogGroup') that neither its code nor Lambda uses",
        ),
        (_logs_other_group, "('logs:PutLogEvents', 'AgentLogGroup') that neither its code nor Lambda uses"),
        (_poll_star, "PlannerFunction/least-privilege/PollOwnQueue: wildcard resource '*'"),
        (_poll_other_queue, "('sqs:ReceiveMessage', 'PrQueue') that neither its code nor Lambda uses"),
        (_extra_action, "('dynamodb:Scan', 'StateTable') that neither its code nor Lambda uses"),
        (
            _extra_secret,
            "('secretsmanager:GetSecretValue', 'AnthropicSecret') that neither its code nor Lambda",
        ),
        (_managed_policy, "managed policy arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess"),
        (_sam_generated_role, f"SweeperFunction: managed policy {BASIC}"),
        (_shared_role, "SweeperFunction: role AgentFunctionRole is not its own SweeperFunctionRole"),
        (_trust_widened, "AgentFunction: trust policy"),
        (
            _second_inline_policy,
            "('dynamodb:BatchWriteItem', 'LedgerTable') that neither its code nor Lambda",
        ),
        (_separate_policy_resource, "WebhookFunction: AWS::IAM::Policy ExtraPolicy adds permissions"),
        (_not_action, "NotAction/NotResource"),
    ],
    ids=lambda v: v.__name__ if callable(v) else "",
)
def test_a_widened_copy_of_the_template_fails(sam, widen, expected):
    wide = copy.deepcopy(sam)
    widen(wide)
    problems = check(wide)
    assert any(expected in p for p in problems), problems


def _provider_statement(sam: dict[str, Any], sid: str) -> dict[str, Any]:
    """A statement of the agent's role that sits inside `!If [Condition, statement, AWS::NoValue]`."""
    for st in _statements(sam, "AgentFunction"):
        if "Fn::If" in st and st["Fn::If"][1].get("Sid") == sid:
            return st["Fn::If"][1]
    raise KeyError(sid)


def _bedrock_all_models(sam: dict[str, Any]) -> None:
    _provider_statement(sam, "BedrockFoundationModelsViaProfiles")["Resource"] = {
        "Fn::Sub": "arn:${AWS::Partition}:bedrock:*::foundation-model/*"
    }


def _bedrock_any_anthropic_model(sam: dict[str, Any]) -> None:
    _provider_statement(sam, "BedrockFoundationModelsViaProfiles")["Resource"] = {
        "Fn::Sub": "arn:${AWS::Partition}:bedrock:*::foundation-model/anthropic.claude-opus-4-6-v1"
    }


def _bedrock_direct_model_use(sam: dict[str, Any]) -> None:
    del _provider_statement(sam, "BedrockFoundationModelsViaProfiles")["Condition"]


def _bedrock_every_profile(sam: dict[str, Any]) -> None:
    _provider_statement(sam, "BedrockInferenceProfiles")["Resource"] = {
        "Fn::Sub": "arn:${AWS::Partition}:bedrock:${AWS::Region}:${AWS::AccountId}:inference-profile/*"
    }


def _platform_every_workspace(sam: dict[str, Any]) -> None:
    _provider_statement(sam, "ClaudePlatformInference")["Resource"] = {
        "Fn::Sub": "arn:${AWS::Partition}:aws-external-anthropic:${AWS::Region}:${AWS::AccountId}:workspace/*"
    }


def _platform_unconditioned_token(sam: dict[str, Any]) -> None:
    del _provider_statement(sam, "ClaudePlatformIdentityToken")["Condition"]


def _secret_for_every_provider(sam: dict[str, Any]) -> None:
    del sam["Resources"]["AnthropicSecret"]["Condition"]
    for st in _statements(sam, "AgentFunction"):
        if "Fn::If" in st and st["Fn::If"][1].get("Sid") == "ReadAnthropicApiKey":
            st["Fn::If"][0] = "UsesBedrock"


@pytest.mark.parametrize(
    "provider, widen, expected",
    [
        ("bedrock", _bedrock_all_models, "wildcard resource 'arn:aws:bedrock:*::foundation-model/*'"),
        (
            "bedrock",
            _bedrock_any_anthropic_model,
            "foundation-model/anthropic.claude-opus-4-6-v1') that neither",
        ),
        ("bedrock", _bedrock_direct_model_use, "foundation models not limited to the configured profiles"),
        (
            "bedrock",
            _bedrock_every_profile,
            f"wildcard resource 'arn:aws:bedrock:{REGION}:{ACCOUNT}:inference-profile/*'",
        ),
        ("claude-platform-aws", _platform_every_workspace, "workspace/*'"),
        (
            "claude-platform-aws",
            _platform_unconditioned_token,
            "ClaudePlatformIdentityToken: wildcard resource '*'",
        ),
        (
            "bedrock",
            _secret_for_every_provider,
            "bedrock: the stack creates AnthropicSecret, which nothing reads",
        ),
        (
            "bedrock",
            _secret_for_every_provider,
            "('secretsmanager:GetSecretValue', 'AnthropicSecret') that neither",
        ),
    ],
    ids=lambda v: v.__name__ if callable(v) else None,
)
def test_a_widened_provider_grant_fails(sam, provider, widen, expected):
    wide = copy.deepcopy(sam)
    widen(wide)
    problems = check(wide, provider)
    assert any(expected in p for p in problems), problems


def _destination_other_queue(sam: dict[str, Any]) -> None:
    _statement(sam, "SweeperFunction", "RecordFailedSweeps")["Resource"] = {"Fn::GetAtt": ["JobsDLQ", "Arn"]}


def _destination_grant_on_webhook(sam: dict[str, Any]) -> None:
    _statements(sam, "WebhookFunction").append(
        {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": ["ScheduleDLQ", "Arn"]}}
    )


@pytest.mark.parametrize(
    "widen, expected",
    [
        (_destination_other_queue, "SweeperFunction: grants ('sqs:SendMessage', 'JobsDLQ') that neither"),
        (
            _destination_grant_on_webhook,
            "WebhookFunction: grants ('sqs:SendMessage', 'ScheduleDLQ') that neither",
        ),
    ],
    ids=lambda v: v.__name__ if callable(v) else "",
)
def test_the_failure_destination_grant_is_exactly_the_schedule_dlq(sam, widen, expected):
    wide = copy.deepcopy(sam)
    widen(wide)
    problems = check(wide)
    assert any(expected in p for p in problems), problems


def test_a_scheduled_function_without_its_destination_grant_fails(sam):
    """Without it Lambda cannot write the failure record: the failed run is dropped after all (DestinationDelivery-
    Failures), the very silence the destination exists to end."""
    for fn, sid in (
        ("SweeperFunction", "RecordFailedSweeps"),
        ("ReconcileFunction", "RecordFailedReconciliations"),
    ):
        narrow = copy.deepcopy(sam)
        statements = _statements(narrow, fn)
        statements.remove(_statement(narrow, fn, sid))
        assert f"{fn}: lacks ('sqs:SendMessage', 'ScheduleDLQ') that Lambda uses" in check(narrow)


def _schedule_events(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Logical id of each EventBridge rule SAM generates for a scheduled function -> its properties."""
    return {n: r["Properties"] for n, r in cfn["Resources"].items() if r["Type"] == "AWS::Events::Rule"}


def test_only_the_stacks_schedule_rules_may_send_to_the_schedule_dlq(sam):
    """EventBridge writes an undelivered event with its service principal, so the queue policy must allow it, but
    only for this stack's schedule rules (aws:SourceArn, the confused-deputy guard); each rule's target names the
    same DLQ and a retry policy, and each scheduled function's failures go there too (EventInvokeConfig)."""
    cfn = settle(translate(sam), {})
    rules = _schedule_events(cfn)
    assert len(rules) == len(SCHEDULED)
    rule_arns = set()
    for props in rules.values():
        [target] = props["Targets"]
        assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["ScheduleDLQ", "Arn"]}
        assert set(target["RetryPolicy"]) == {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"}
        rule_arns.add(f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{props['Name']}")
    policies = [r for r in cfn["Resources"].values() if r["Type"] == "AWS::SQS::QueuePolicy"]
    [policy] = [p for p in policies if p["Properties"]["Queues"] == [{"Ref": "ScheduleDLQ"}]]
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == {"Fn::GetAtt": ["ScheduleDLQ", "Arn"]}
    assert list(statement["Condition"]) == ["ArnEquals"]
    assert set(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == rule_arns
    configs = {
        r["Properties"]["FunctionName"]["Ref"]: r["Properties"]
        for r in cfn["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventInvokeConfig"
    }
    assert set(configs) == set(SCHEDULED)
    for fn, props in configs.items():
        assert props["DestinationConfig"]["OnFailure"]["Destination"] == {
            "Fn::GetAtt": ["ScheduleDLQ", "Arn"]
        }, fn
        assert 0 <= props["MaximumRetryAttempts"] <= 2, fn


def test_a_narrowed_copy_fails_too(sam):
    """Dropping a permission the code needs is caught as well (it would fail in AWS with AccessDenied)."""
    narrow = copy.deepcopy(sam)
    _statement(narrow, "PlannerFunction", "PrState")["Action"].remove("dynamodb:Query")
    assert "PlannerFunction: lacks ('dynamodb:Query', 'StateTable') that its code uses" in check(narrow)
    # ... and so is a role that cannot write the function's logs or poll its queue (Lambda would fail silently).
    narrow = copy.deepcopy(sam)
    _statement(narrow, "AgentFunction", "PollOwnQueue")["Action"].remove("sqs:DeleteMessage")
    _statement(narrow, "AgentFunction", "WriteOwnLogs")["Action"].remove("logs:PutLogEvents")
    problems = check(narrow)
    assert "AgentFunction: lacks ('sqs:DeleteMessage', 'JobsQueue') that Lambda uses" in problems
    assert "AgentFunction: lacks ('logs:PutLogEvents', 'AgentLogGroup') that Lambda uses" in problems


# ------------------------------------------------------------------------------------------------ recorded run

REVIEW_VISIBILITY_S = 120  # longer than any invocation of the sample review on a loaded machine
_ACTIONS = {"SendMessageBatch": "SendMessage"}  # operations authorized by another action
# Calls a service makes with the caller's permissions: a publish to the SSE topic uses its key as the publisher.
_IMPLIED = {("sns:Publish", "AlertTopic"): {("kms:GenerateDataKey", "AlertKey"), ("kms:Decrypt", "AlertKey")}}
# TransactWriteItems is authorized per item by the underlying action
# (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html).
_TRANSACT = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def _recorder(stack: Any, calls: dict[str, set[tuple[str, str]]], current: threading.local) -> Any:
    by_physical: dict[str, str] = {}
    for logical, ref in stack.ctx.refs.items():
        by_physical[str(ref)] = logical
    for (logical, attr), value in stack.ctx.attrs.items():
        if attr == "Arn":
            by_physical[str(value)] = logical

    from prfleet_local.stack.lambda_runtime import current_invocation

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        invocation = current_invocation()  # each invocation runs in a thread of its own
        fn = invocation.function if invocation is not None else None
        if fn is None:
            return
        service = model.service_model.signing_name or model.service_model.endpoint_prefix
        if model.name == "TransactWriteItems":
            for item in params.get("TransactItems", []):
                for kind, body in item.items():
                    table = by_physical.get(body.get("TableName"), body.get("TableName"))
                    calls.setdefault(fn, set()).add((f"{service}:{_TRANSACT[kind]}", table))
            return
        if model.name == "BatchGetItem":  # authorized per table it reads
            for table in params.get("RequestItems", {}):
                calls.setdefault(fn, set()).add((f"{service}:BatchGetItem", by_physical.get(table, table)))
            return
        if service == "s3":  # authorized on the bucket (a listing) or on the object's key (its pattern here)
            bucket = by_physical.get(params.get("Bucket"), params.get("Bucket"))
            if model.name == "ListObjectsV2":
                calls.setdefault(fn, set()).add(("s3:ListBucket", bucket))
                return
            key = str(params.get("Key") or "")
            suffix = next((x for x in (".json", ".tar.gz") if key.endswith(x)), "")
            where = (
                f"{bucket}/snapshots/*{suffix}"
                if key.startswith("snapshots/") and suffix
                else f"{bucket}/{key}"
            )
            calls.setdefault(fn, set()).add((f"s3:{model.name}", where))
            return
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
        calls[fn] |= _IMPLIED.get((f"{service}:{op}", logical), set())

    return record


@pytest.mark.e2e
def test_every_call_of_a_real_review_is_granted_and_nothing_else_is(tmp_path, monkeypatch):
    from prfleet import github
    from prfleet.config import aws, secret_store
    from prfleet_local.demo.run import sandbox
    from prfleet_local.stack.lambda_runtime import Function

    calls: dict[str, set[tuple[str, str]]] = {}
    current = threading.local()
    original = Function.invoke

    def invoke(self: Function, event: dict[str, Any], stack: Any) -> Any:
        # In AWS each function has its own containers: no secret or GitHub client cached by another function.
        secret_store.reset()
        github.reset_clients()
        current.function = self.logical_id
        try:
            return original(self, event, stack)
        finally:
            current.function = None

    monkeypatch.setattr(Function, "invoke", invoke)
    # No redelivery while an invocation still runs: on two loaded cores a 2 s visibility let a job come back
    # mid-run, and the second delivery exercised paths (RunInProgress, a delayed re-send) a review does not need,
    # which made the exact set of calls below differ once in six runs. AWS keeps 6 x the Timeout.
    with sandbox(tmp_path, sweep_interval=None, visibility_timeout=REVIEW_VISIBILITY_S) as box:
        hook = _recorder(box.stack, calls, current)
        for service in ("dynamodb", "sqs", "sns", "secretsmanager", "s3"):
            aws.client(service).meta.events.register("before-parameter-build", hook)
        number = box.open_sample_pr()
        payload = box.github.webhook_payload("opened", number)
        status, reply = box.deliver("pull_request", payload)
        assert status == 202, reply
        assert box.wait_for_review(number, head_sha=payload["pull_request"]["head"]["sha"], timeout=120)
        box.stack.sweep()
        box.stack.functions["ReconcileFunction"].invoke({"source": "aws.events"}, box.stack)

    assert set(calls) == set(FUNCTIONS), calls
    needs = code_needs("anthropic")  # the local stack runs the Claude API provider (the offline model server)
    not_granted = {fn: sorted(calls[fn] - needs[fn]) for fn in FUNCTIONS if calls[fn] - needs[fn]}
    assert not_granted == {}, "calls the template does not grant (AccessDenied in AWS)"
    unused = {fn: sorted(needs[fn] - calls[fn]) for fn in FUNCTIONS}
    assert unused == {fn: sorted(NOT_EXERCISED[fn]) for fn in FUNCTIONS}


@pytest.mark.e2e
@pytest.mark.parametrize("provider", ["claude-platform-aws", "bedrock"])
def test_every_model_call_through_an_aws_provider_is_granted_and_nothing_else_is(
    sam, tmp_path, provider, monkeypatch
):
    """The review run through the provider's wire: each call the offline endpoint authenticated needs exactly the
    IAM grants the template gives the agent for that provider (as AWS authorizes it), and every model grant of the
    template is used."""
    from prfleet import config
    from prfleet.config import aws
    from prfleet_local.demo.run import sandbox
    from prfleet_local.model.providers import local_parameters

    saved = dict(os.environ)  # the stack sets the provider's environment in this process: undone below
    params = local_parameters(provider)
    try:
        run = sandbox(
            tmp_path, parameters=params, sweep_interval=None, visibility_timeout=REVIEW_VISIBILITY_S
        )
        with run as box:
            number = box.open_sample_pr()
            payload = box.github.webhook_payload("opened", number)
            assert box.deliver("pull_request", payload)[0] == 202
            assert box.wait_for_review(number, head_sha=payload["pull_request"]["head"]["sha"], timeout=180)
            calls = list(box.model.aws.calls)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        config.settings.cache_clear()
        aws.client.cache_clear()
    assert calls
    needed: set[tuple[str, str]] = set()
    for call in calls:
        region = call["region"]
        if call["wire"] == "claude-platform-aws":
            arn = f"arn:aws:aws-external-anthropic:{region}:{ACCOUNT}:workspace/{call['workspace']}"
            needed |= {("aws-external-anthropic:CreateInference", arn), ("sts:GetWebIdentityToken", "*")}
        else:
            action = (
                "bedrock:InvokeModelWithResponseStream"
                if call["wire"].endswith("stream")
                else "bedrock:InvokeModel"
            )
            model = call["model"]
            base = model.split(".", 1)[1]
            # A profile call is authorized on the profile, then on the foundation model in the routed region.
            needed |= {
                (action, f"arn:aws:bedrock:{region}:{ACCOUNT}:inference-profile/{model}"),
                (action, f"arn:aws:bedrock:*::foundation-model/{base}"),
            }
            if model.startswith("global."):
                needed.add((action, f"arn:aws:bedrock:::foundation-model/{base}"))
    cfn = settle(translate(sam), params)
    granted, _, problems = effective(cfn, "AgentFunction")
    assert problems == []
    assert needed - granted == set(), "model calls the template does not grant (AccessDenied in AWS)"
    model_grants = {g for g in granted if g[0].startswith(("bedrock:", "aws-external-anthropic:"))}
    used = {g for g in needed if g[0].startswith(("bedrock:", "aws-external-anthropic:"))}
    # Every model the template grants was called (InvokeModel without streaming is not used by the streaming loop).
    assert {r for _, r in model_grants} == {r for _, r in used}
