"""The template's resources created in moto, in dependency order, as CloudFormation would: the queues, tables,
the topic and its KMS key, secrets, roles, log groups, alarms and dashboard, with the references and attributes the rest of the stack
resolves against (`ctx`), the Outputs, and what moto does not keep itself (alarm definitions for the local
evaluator, Logs query definitions)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from prfleet_local.stack import template as tpl
from prfleet_local.stack.account import REGION, client


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule (AWS::S3::Bucket Rule) as S3's API takes it."""
    out: dict[str, Any] = {"ID": rule.get("Id", "rule"), "Status": rule["Status"]}
    out["Filter"] = {"Prefix": rule.get("Prefix", "")}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    return out


def _encryption_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation ServerSideEncryptionRule as S3's PutBucketEncryption takes it (another key name)."""
    out: dict[str, Any] = {"ApplyServerSideEncryptionByDefault": dict(rule["ServerSideEncryptionByDefault"])}
    if "BucketKeyEnabled" in rule:
        out["BucketKeyEnabled"] = bool(rule["BucketKeyEnabled"])
    return out


class TemplateResources:
    """Created by `provision()`; `set_secrets()` then fills the secrets the operator would fill after a deploy."""

    def __init__(
        self,
        template: dict[str, Any],
        ctx: tpl.Context,
        *,
        stack_name: str,
        visibility_timeout: int,
        webhook_secret: str,
    ) -> None:
        self.template = template
        self.ctx = ctx
        self.stack_name = stack_name
        self.visibility_timeout = visibility_timeout  # local queues redeliver after seconds, not minutes
        self.webhook_secret = webhook_secret
        self.created: dict[str, str] = {}  # logical id -> resource type, in creation order
        self.outputs: dict[str, Any] = {}
        self.alarm_definitions: dict[str, dict[str, Any]] = {}  # alarm name -> the template's properties
        self.query_definitions: dict[str, dict[str, Any]] = {}
        # What moto keeps nowhere: an HTTP API's and a function's resolved properties (stage settings, events,
        # EventInvokeConfig), for the local API Gateway and schedules.
        self.http_apis: dict[str, dict[str, Any]] = {}
        self.function_properties: dict[str, dict[str, Any]] = {}
        self._creators: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "AWS::SQS::Queue": self._queue,
            "AWS::SQS::QueuePolicy": self._queue_policy,
            "AWS::DynamoDB::Table": self._table,
            "AWS::KMS::Key": self._kms_key,
            "AWS::SNS::Topic": self._topic,
            "AWS::SNS::Subscription": self._subscription,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::Serverless::Function": self._function,
            "AWS::Serverless::HttpApi": self._http_api,
            "AWS::Serverless::LayerVersion": self._layer,
            "AWS::Logs::LogGroup": self._log_group,
            "AWS::IAM::Role": self._role,
            "AWS::CloudWatch::Alarm": self._alarm,
            "AWS::CloudWatch::Dashboard": self._dashboard,
            "AWS::Logs::QueryDefinition": self._query_definition,
            "AWS::S3::Bucket": self._bucket,
            "AWS::S3::BucketPolicy": self._bucket_policy,
        }

    def name(self, logical: str) -> str:
        """A resource's physical name: `<stack>-<LogicalId>`."""
        return f"{self.stack_name}-{logical}"

    def provision(self) -> None:
        """Create every resource whose Condition holds, each once its properties resolve; then the Outputs."""
        pending = dict(self.template["Resources"])
        created: dict[str, str] = {}
        while pending:
            progressed = False
            for logical, res in list(pending.items()):
                if "Condition" in res and not self.ctx.condition(res["Condition"]):
                    del pending[logical]
                    progressed = True
                    continue
                try:
                    props = self.ctx.resolve(res.get("Properties", {}))
                except tpl.Unresolved:
                    continue
                self._create(logical, res["Type"], props)
                created[logical] = res["Type"]
                del pending[logical]
                progressed = True
            if not progressed:
                raise tpl.TemplateError(f"cannot resolve resources: {sorted(pending)}")
        self.created = created
        for name, out in self.template.get("Outputs", {}).items():
            try:
                self.outputs[name] = self.ctx.resolve(out["Value"])
            except tpl.Unresolved:
                pass

    def _create(self, logical: str, kind: str, props: dict[str, Any]) -> None:
        creator = self._creators.get(kind)
        if creator is None:
            raise tpl.TemplateError(f"{logical}: resource type {kind} is not supported by the local stack")
        creator(logical, props)

    def _queue(self, logical: str, props: dict[str, Any]) -> None:
        attrs = {
            k: str(v)
            for k, v in props.items()
            if k in ("MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds")
        }
        attrs["VisibilityTimeout"] = str(
            min(int(props.get("VisibilityTimeout", 30)), self.visibility_timeout)
        )
        if "RedrivePolicy" in props:
            attrs["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        if "SqsManagedSseEnabled" in props:
            attrs["SqsManagedSseEnabled"] = str(props["SqsManagedSseEnabled"]).lower()
        url = client("sqs").create_queue(QueueName=self.name(logical), Attributes=attrs)["QueueUrl"]
        arn = client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.ctx.refs[logical] = url
        self.ctx.attrs.update(
            {
                (logical, "Arn"): arn,
                (logical, "QueueName"): self.name(logical),
                (logical, "QueueUrl"): url,
            }
        )

    def _queue_policy(self, logical: str, props: dict[str, Any]) -> None:
        # Set as written (moto keeps it, does not enforce it; tests/integration/test_least_privilege.py checks it).
        for url in props["Queues"]:
            client("sqs").set_queue_attributes(
                QueueUrl=url, Attributes={"Policy": json.dumps(props["PolicyDocument"])}
            )
        self.ctx.refs[logical] = logical

    def _table(self, logical: str, props: dict[str, Any]) -> None:
        args: dict[str, Any] = {
            "TableName": self.name(logical),
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if "DeletionProtectionEnabled" in props:  # moto then refuses DeleteTable, as DynamoDB does
            args["DeletionProtectionEnabled"] = bool(props["DeletionProtectionEnabled"])
        ddb = client("dynamodb")
        arn = ddb.create_table(**args)["TableDescription"]["TableArn"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=self.name(logical), TimeToLiveSpecification=ttl)
        pitr = props.get("PointInTimeRecoverySpecification")
        if pitr:
            ddb.update_continuous_backups(TableName=self.name(logical), PointInTimeRecoverySpecification=pitr)
        self.ctx.refs[logical] = self.name(logical)
        self.ctx.attrs[(logical, "Arn")] = arn

    def _bucket(self, logical: str, props: dict[str, Any]) -> None:
        """An S3 bucket with the template's default encryption, Block Public Access, ownership controls and
        lifecycle rules (moto keeps each; S3 names are lower case)."""
        s3 = client("s3")
        name = self.name(logical).lower()
        s3.create_bucket(Bucket=name)
        if "BucketEncryption" in props:
            s3.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration={
                    "Rules": [
                        _encryption_rule(r)
                        for r in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                    ]
                },
            )
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        if "OwnershipControls" in props:
            s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
        rules = (props.get("LifecycleConfiguration") or {}).get("Rules") or []
        if rules:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(r) for r in rules]}
            )
        self.ctx.refs[logical] = name
        self.ctx.attrs[(logical, "Arn")] = f"arn:aws:s3:::{name}"
        self.ctx.attrs[(logical, "BucketName")] = name

    def _bucket_policy(self, logical: str, props: dict[str, Any]) -> None:
        """The policy as written, but for its TLS-only statements: moto evaluates bucket policies, and the local
        endpoint is plain HTTP, where `aws:SecureTransport` is false (in AWS every SDK call uses TLS)."""
        doc = dict(props["PolicyDocument"])
        statements = doc.get("Statement") or []
        kept = [st for st in statements if st.get("Condition") != {"Bool": {"aws:SecureTransport": "false"}}]
        if kept:
            client("s3").put_bucket_policy(
                Bucket=props["Bucket"], Policy=json.dumps({**doc, "Statement": kept})
            )
        self.ctx.refs[logical] = logical

    def _kms_key(self, logical: str, props: dict[str, Any]) -> None:
        # The key policy as written: the local alarm publisher reads it (alerts.cloudwatch_may_publish).
        kms = client("kms")
        key = kms.create_key(
            Description=props.get("Description", ""),
            KeyUsage=props.get("KeyUsage", "ENCRYPT_DECRYPT"),
            Policy=json.dumps(props["KeyPolicy"]),
        )["KeyMetadata"]
        if props.get("EnableKeyRotation"):
            kms.enable_key_rotation(KeyId=key["KeyId"])
        self.ctx.refs[logical] = key["KeyId"]  # Ref of AWS::KMS::Key: the key id
        self.ctx.attrs[(logical, "Arn")] = key["Arn"]
        self.ctx.attrs[(logical, "KeyId")] = key["KeyId"]

    def _topic(self, logical: str, props: dict[str, Any]) -> None:
        attrs = {"KmsMasterKeyId": str(props["KmsMasterKeyId"])} if props.get("KmsMasterKeyId") else {}
        arn = client("sns").create_topic(Name=self.name(logical), Attributes=attrs)["TopicArn"]
        self.ctx.refs[logical] = arn
        self.ctx.attrs[(logical, "TopicName")] = self.name(logical)

    def _subscription(self, logical: str, props: dict[str, Any]) -> None:
        client("sns").subscribe(
            TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"]
        )

    def _secret(self, logical: str, props: dict[str, Any]) -> None:
        value = props.get("SecretString")
        if value is None and "GenerateSecretString" in props:
            value = self.webhook_secret if logical == "WebhookSecret" else uuid.uuid4().hex
        arn = client("secretsmanager").create_secret(
            Name=f"{self.stack_name}/{logical}",
            Description=props.get("Description", ""),
            SecretString=value,
        )["ARN"]
        self.ctx.refs[logical] = arn

    def _function(self, logical: str, props: dict[str, Any]) -> None:
        self.function_properties[logical] = props
        self.ctx.refs[logical] = self.name(logical)
        self.ctx.attrs[(logical, "Arn")] = (
            f"arn:aws:lambda:{REGION}:123456789012:function:{self.name(logical)}"
        )

    def _http_api(self, logical: str, props: dict[str, Any]) -> None:
        self.http_apis[logical] = props
        self.ctx.refs[logical] = "local"

    def _layer(self, logical: str, props: dict[str, Any]) -> None:
        self.ctx.refs[logical] = f"arn:aws:lambda:{REGION}:123456789012:layer:{self.name(logical)}:1"

    def _log_group(self, logical: str, props: dict[str, Any]) -> None:
        client("logs").create_log_group(logGroupName=props["LogGroupName"])
        if "RetentionInDays" in props:
            client("logs").put_retention_policy(
                logGroupName=props["LogGroupName"], retentionInDays=int(props["RetentionInDays"])
            )
        self.ctx.refs[logical] = props["LogGroupName"]
        # CloudFormation's Arn attribute (with the trailing :*); the functions' roles grant on it.
        self.ctx.attrs[(logical, "Arn")] = (
            f"arn:aws:logs:{REGION}:{self.ctx.account}:log-group:{props['LogGroupName']}:*"
        )

    def _role(self, logical: str, props: dict[str, Any]) -> None:
        # Created in moto's IAM as written (moto does not enforce it; tests/integration/test_least_privilege.py
        # checks the statements). No RoleName in the template: CloudFormation generates one, so does the stack.
        iam = client("iam")
        name = props.get("RoleName") or self.name(logical)
        role = iam.create_role(
            RoleName=name,
            Path=props.get("Path", "/"),
            AssumeRolePolicyDocument=json.dumps(props["AssumeRolePolicyDocument"]),
            Description=props.get("Description", ""),
        )["Role"]
        for policy in props.get("Policies", []):
            iam.put_role_policy(
                RoleName=name,
                PolicyName=policy["PolicyName"],
                PolicyDocument=json.dumps(policy["PolicyDocument"]),
            )
        for arn in props.get("ManagedPolicyArns", []):
            iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        self.ctx.refs[logical] = name
        self.ctx.attrs[(logical, "Arn")] = role["Arn"]
        self.ctx.attrs[(logical, "RoleId")] = role["RoleId"]

    def _alarm(self, logical: str, props: dict[str, Any]) -> None:
        name = props.get("AlarmName") or self.name(logical)
        self.alarm_definitions[name] = props
        cw = client("cloudwatch")
        cw.put_metric_alarm(AlarmName=name, **props)
        # CloudWatch starts a new alarm in INSUFFICIENT_DATA (moto: OK); the local evaluator does too.
        cw.set_alarm_state(
            AlarmName=name,
            StateValue="INSUFFICIENT_DATA",
            StateReason="Unchecked: Initial alarm creation",
        )
        self.ctx.refs[logical] = name
        self.ctx.attrs[(logical, "Arn")] = f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:{name}"

    def _dashboard(self, logical: str, props: dict[str, Any]) -> None:
        client("cloudwatch").put_dashboard(
            DashboardName=props["DashboardName"], DashboardBody=props["DashboardBody"]
        )
        self.ctx.refs[logical] = props["DashboardName"]

    def _query_definition(self, logical: str, props: dict[str, Any]) -> None:
        # moto has no PutQueryDefinition: the stack keeps them (`prfleet` prints them; AWS stores them).
        self.query_definitions[props["Name"]] = props
        self.ctx.refs[logical] = props["Name"]

    def set_secrets(self, *, model_url: str | None, anthropic_api_key: str | None) -> None:
        """The values an operator puts in the secrets after a deploy: a GitHub token, and the model's API key (the
        offline model takes any; the AWS model providers have no key secret and run locally only offline)."""
        sm = client("secretsmanager")
        sm.put_secret_value(
            SecretId=self.ctx.refs["GitHubSecret"], SecretString=json.dumps({"token": "local-token"})
        )
        if "AnthropicSecret" not in self.ctx.refs:  # ModelProvider claude-platform-aws / bedrock: no key
            if not model_url:
                raise RuntimeError(
                    "no model: the AWS model providers run locally only against the offline model"
                )
            return
        key = anthropic_api_key or ("offline" if model_url else None)
        if key is None:
            raise RuntimeError("no model: give the stack an offline model URL or an ANTHROPIC_API_KEY")
        sm.put_secret_value(
            SecretId=self.ctx.refs["AnthropicSecret"], SecretString=json.dumps({"api_key": key})
        )
