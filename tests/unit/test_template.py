"""template.yaml as a product: the properties the design promises, read from the template itself."""

from __future__ import annotations

import json
import re

import pytest

from prfleet.observability.metrics import METRIC_UNITS
from prfleet_local.stack import template as tpl

T = tpl.load()
RES = T["Resources"]


def _sqs_events():
    for name, fn in tpl.resources(T, "AWS::Serverless::Function").items():
        for ev in fn["Properties"].get("Events", {}).values():
            if ev["Type"] == "SQS":
                yield name, ev["Properties"]


def test_queue_visibility_is_at_least_six_times_the_consumer_timeout():
    pairs = list(_sqs_events())
    assert {n for n, _ in pairs} == {"PlannerFunction", "AgentFunction"}
    for name, props in pairs:
        queue = props["Queue"]["Fn::GetAtt"][0]
        timeout = tpl.function_setting(T, name, "Timeout")
        assert RES[queue]["Properties"]["VisibilityTimeout"] >= 6 * timeout, queue


def test_consumers_report_batch_item_failures_with_capped_concurrency():
    for _name, props in _sqs_events():
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert props["ScalingConfig"]["MaximumConcurrency"] == {
            "Ref": props["ScalingConfig"]["MaximumConcurrency"]["Ref"]
        }
        assert props["ScalingConfig"]["MaximumConcurrency"]["Ref"] in T["Parameters"]


def test_work_queues_have_dead_letter_queues_with_parameterised_receive_count():
    for queue in ("PrQueue", "JobsQueue"):
        redrive = RES[queue]["Properties"]["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
        assert RES[redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]]["Type"] == "AWS::SQS::Queue"


def test_every_parameter_has_a_description_and_a_constraint():
    for name, p in T["Parameters"].items():
        assert p.get("Description"), name
        assert any(k in p for k in ("AllowedPattern", "AllowedValues", "MinValue")), name


@pytest.mark.parametrize("name", sorted(tpl.resources(T, "AWS::CloudWatch::Alarm")))
def test_every_alarm_notifies_the_topic_and_names_the_service_dimension(name):
    props = RES[name]["Properties"]
    assert props["AlarmActions"] == [{"Ref": "AlertTopic"}] and props["OKActions"] == [{"Ref": "AlertTopic"}]
    metrics = [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m] or [props]
    expected = {
        "prfleet": {"service"},
        "AWS/SQS": {"QueueName"},
        "AWS/Lambda": {"FunctionName"},
        "AWS/ApiGateway": {"ApiId"},
    }
    for metric in metrics:
        dims = {d["Name"] for d in metric["Dimensions"]}
        assert dims == expected[metric["Namespace"]], name


def test_tables_expire_records_with_ttl():
    for name in tpl.resources(T, "AWS::DynamoDB::Table"):
        assert RES[name]["Properties"]["TimeToLiveSpecification"] == {
            "AttributeName": "expires_at",
            "Enabled": True,
        }


def test_secrets_are_secrets_manager_references_not_environment_values():
    env = T["Globals"]["Function"]["Environment"]["Variables"]
    for key in ("WEBHOOK_SECRET_ID", "GITHUB_SECRET_ID", "ANTHROPIC_SECRET_ID"):
        ref = env[key]
        if "Fn::If" in ref:  # ANTHROPIC_SECRET_ID exists only with ModelProvider anthropic (issue 15)
            _, ref, absent = ref["Fn::If"]
            assert absent == {"Ref": "AWS::NoValue"}
        assert RES[ref["Ref"]]["Type"] == "AWS::SecretsManager::Secret"
    assert not any("KEY" in k and "SECRET" not in k for k in env)


def _placeholders(text: str) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: f"<{m.group(1)}>", text)


def _dashboard(claude_api: bool = True) -> dict:
    """The dashboard body as CloudWatch receives it, each ${...} replaced by its own placeholder; its variables'
    Fn::If taken as the UsesClaudeApi condition says."""
    body, variables = RES["FleetDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for name, value in variables.items():
        cond, yes, no = value["Fn::If"]
        assert cond == "UsesClaudeApi", name
        chosen = yes if claude_api else no
        body = body.replace("${" + name + "}", chosen["Fn::Sub"] if isinstance(chosen, dict) else chosen)
    return json.loads(_placeholders(body))


def _widget(title_start: str, claude_api: bool = True) -> dict:
    widgets = _dashboard(claude_api)["widgets"]
    [widget] = [w for w in widgets if w["properties"].get("title", "").startswith(title_start)]
    return widget["properties"]


@pytest.mark.parametrize("claude_api", [True, False])
def test_dashboard_shows_every_alarm_the_stack_creates_and_keeps_each_graphs_period(claude_api):
    assert _dashboard(claude_api)["periodOverride"] == "inherit"
    created = [
        name
        for name, alarm in tpl.resources(T, "AWS::CloudWatch::Alarm").items()
        if alarm.get("Condition") is None or (alarm["Condition"] == "UsesClaudeApi") == claude_api
    ]
    shown = _widget("Alarms", claude_api)["alarms"]
    # a conditional alarm named when it is not created fails the stack's creation
    assert sorted(shown) == sorted(f"<{a}.Arn>" for a in created)


def test_dashboard_latency_graph_reads_what_the_latency_alarm_reads():
    alarm = {m["Id"]: m for m in RES["LatencyAlarm"]["Properties"]["Metrics"]}
    graph = _widget("Run duration p95")
    lines = {opts["id"]: opts for *_, opts in graph["metrics"] if isinstance(opts, dict)}
    [returned] = [m for m in alarm.values() if m["ReturnData"]]
    assert lines[returned["Id"]]["expression"] == returned["Expression"]
    for mid, m in alarm.items():
        if "MetricStat" in m:
            assert lines[mid]["stat"] == m["MetricStat"]["Stat"], mid
            assert graph["period"] == m["MetricStat"]["Period"], mid


def test_dashboard_queue_depth_counts_in_flight_messages_like_the_dlq_alarms():
    graph = _widget("Queue depth")
    queues = {
        (line[1], line[3]) for line in graph["metrics"] if isinstance(line[0], str) and line[0] == "AWS/SQS"
    }
    for queue in tpl.resources(T, "AWS::SQS::Queue"):
        for metric in ("ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible"):
            assert (metric, f"<{queue}.QueueName>") in queues, (queue, metric)
    for alarm in ("JobsDLQAlarm", "PrDLQAlarm"):
        names = {
            m["MetricStat"]["Metric"]["MetricName"]
            for m in RES[alarm]["Properties"]["Metrics"]
            if "MetricStat" in m
        }
        assert names == {"ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible"}, alarm


def _scheduled_functions():
    for name, fn in tpl.resources(T, "AWS::Serverless::Function").items():
        for ev in fn["Properties"].get("Events", {}).values():
            if ev["Type"] == "Schedule":
                yield name, fn["Properties"], ev["Properties"]


def test_no_scheduled_failure_is_dropped_every_schedule_has_a_dlq_that_pages():
    """EventBridge's DLQ takes what it cannot deliver; a run that fails is Lambda's asynchronous invocation, recorded
    only by the function's OnFailure destination: both go to one queue, and an alarm pages on it."""
    scheduled = list(_scheduled_functions())
    assert {n for n, _, _ in scheduled} == {"SweeperFunction", "ReconcileFunction"}
    for name, fn, event in scheduled:
        assert event["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDLQ", "Arn"]}}, name
        assert set(event["RetryPolicy"]) == {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"}, name
        config = fn["EventInvokeConfig"]
        assert config["DestinationConfig"]["OnFailure"] == {
            "Type": "SQS",
            "Destination": {"Fn::GetAtt": ["ScheduleDLQ", "Arn"]},
        }, name
        assert 0 <= config["MaximumRetryAttempts"] <= 2 and 60 <= config["MaximumEventAgeInSeconds"] <= 21600
    watched = {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for m in RES["ScheduleDLQAlarm"]["Properties"]["Metrics"]
        if "MetricStat" in m
    }
    assert watched == {"ScheduleDLQ"}


def test_the_webhook_api_logs_every_request_and_throttles_by_parameter():
    props = RES["WebhookApi"]["Properties"]
    assert props["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "WebhookThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "WebhookThrottlingRateLimit"},
    }
    access = props["AccessLogSettings"]
    assert "${WebhookApiAccessLogGroup}" in access["DestinationArn"]["Fn::Sub"]
    fields = json.loads(access["Format"])
    for variable in (
        "$context.requestId",
        "$context.identity.sourceIp",
        "$context.routeKey",
        "$context.status",
        "$context.responseLatency",
        "$context.integrationErrorMessage",
    ):
        assert variable in fields.values(), variable
    group = RES["WebhookApiAccessLogGroup"]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


@pytest.mark.parametrize("name", sorted(tpl.resources(T, "AWS::CloudWatch::Alarm")))
def test_every_alarm_links_a_runbook_section_that_exists(name):
    description = RES[name]["Properties"]["AlarmDescription"]
    [anchor] = re.findall(r"docs/runbook\.md#([a-z0-9-]+)", description)
    runbook = (tpl.ROOT / "docs" / "runbook.md").read_text()
    assert f'<a id="{anchor}"></a>' in runbook, (name, anchor)


# ------------------------------------------------------------------ checkov's findings answered (docs/security.md)
CHECKOV_ID = re.compile(r"^CKV2?_AWS_\d+$")


def test_every_checkov_skip_names_one_check_and_gives_a_reason():
    skipped = 0
    for name, res in RES.items():
        skips = res.get("Metadata", {}).get("checkov", {}).get("skip", [])
        ids = [s["id"] for s in skips]
        assert len(ids) == len(set(ids)), name
        for s in skips:
            assert CHECKOV_ID.match(s["id"]), (name, s)
            assert len(s.get("comment", "")) >= 60, (
                name,
                s,
            )  # a reason a reviewer can weigh, not a placeholder
        skipped += len(skips)
    assert skipped > 0


def test_the_alert_topic_is_encrypted_with_a_key_cloudwatch_alarms_may_use():
    assert RES["AlertTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "AlertKey"}
    key = RES["AlertKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    statements = key["KeyPolicy"]["Statement"]
    [cloudwatch] = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert cloudwatch["Effect"] == "Allow" and "Condition" not in cloudwatch
    assert set(cloudwatch["Action"]) == {"kms:GenerateDataKey*", "kms:Decrypt"}
    # no other principal than the account (which delegates to IAM) and CloudWatch
    assert [s["Principal"] for s in statements if s is not cloudwatch] == [
        {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    ]


def test_tables_holding_state_or_money_keep_backups_and_refuse_deletion():
    for name in ("StateTable", "LedgerTable"):
        props = RES[name]["Properties"]
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, name
        assert props["DeletionProtectionEnabled"] is True, name
    for name in ("DeliveriesTable", "ResultsTable"):  # rebuildable: their no-PITR is answered, not forgotten
        skips = {s["id"] for s in RES[name]["Metadata"]["checkov"]["skip"]}
        assert "CKV_AWS_28" in skips, name


def test_dashboard_counts_the_comments_prfleet_answered_and_ignored_as_the_handlers_publish_them():
    """Issue 25: the conversation's two counters, fleet-wide ({service}: every metric is published with it)."""
    graph = _widget("Comments to prfleet")
    lines = [line for line in graph["metrics"] if isinstance(line[0], str)]
    names = [line[1] for line in lines]
    assert names == ["CommentsAnswered", "CommentsIgnored"]
    assert lines[0][:4] == ["prfleet", "CommentsAnswered", "service", "prfleet"] and lines[1][2:4] == [
        ".",
        ".",
    ]
    assert all(METRIC_UNITS[n] == "Count" for n in names) and graph["stat"] == "Sum"
