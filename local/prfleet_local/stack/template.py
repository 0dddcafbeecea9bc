"""Read template.yaml as the single source of truth: CloudFormation tags, parameters, intrinsic functions.

moto cannot deploy `AWS::Serverless::*` resources and skips alarms, so the local stack reads the template itself and
creates what it declares. Only the intrinsics the template uses are resolved (Ref, GetAtt, Sub, Join, If, Equals,
Not, Select, Split, AWS::NoValue); anything else is an error, never silently ignored. The template's Rules are
checked before anything is created, as CloudFormation does
(https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/rules-section-structure.html).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "template.yaml"


class TemplateError(ValueError):
    """The template uses something the local stack cannot resolve."""


class _Loader(yaml.SafeLoader):
    pass


def _tag(name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {"Ref" if name == "Ref" else f"Fn::{name}": value}

    return construct


for _name in (
    "Ref",
    "GetAtt",
    "Sub",
    "Join",
    "If",
    "Equals",
    "Not",
    "Select",
    "Split",
    "And",
    "Or",
    "FindInMap",
):
    _Loader.add_constructor(f"!{_name}", _tag(_name))


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 - SafeLoader subclass


@dataclass
class Context:
    """What intrinsics resolve against: parameter values, pseudo parameters, physical ids and attributes."""

    template: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    region: str = "us-east-1"
    account: str = "123456789012"
    stack_name: str = "prfleet-local"
    refs: dict[str, Any] = field(default_factory=dict)
    attrs: dict[tuple[str, str], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, spec in self.template.get("Parameters", {}).items():
            if name not in self.parameters:
                if "Default" not in spec:
                    raise TemplateError(f"parameter {name} has no default and no value")
                self.parameters[name] = spec["Default"]

    def pseudo(self) -> dict[str, str]:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::StackName": self.stack_name,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::Partition": "aws",
        }

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def check_rules(self) -> None:
        """Every rule whose RuleCondition holds must have all its assertions true; a failed one stops the
        deployment with its AssertDescription, like CloudFormation's parameter validation."""
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self._rule_value(rule["RuleCondition"]):
                continue
            for assertion in rule.get("Assertions", []):
                if not self._rule_value(assertion["Assert"]):
                    raise TemplateError(
                        f"rule {name}: {assertion.get('AssertDescription', 'assertion failed')}"
                    )

    def _rule_value(self, value: Any) -> Any:
        """Rule functions (Contains, EachMemberIn, And, Or, Not, Equals) over parameter values."""
        if isinstance(value, list):
            return [self._rule_value(v) for v in value]
        if not isinstance(value, dict) or len(value) != 1:
            return value
        ((key, arg),) = value.items()
        if key == "Ref":
            return self._ref(arg)
        args = self._rule_value(arg)
        if key == "Fn::Contains":
            return str(args[1]) in [str(v) for v in args[0]]
        if key == "Fn::EachMemberIn":
            return all(str(v) in [str(a) for a in args[1]] for v in args[0])
        if key == "Fn::And":
            return all(args)
        if key == "Fn::Or":
            return any(args)
        if key == "Fn::Not":
            return not args[0]
        if key == "Fn::Equals":
            return str(args[0]) == str(args[1])
        raise TemplateError(f"rule function {key} is not supported locally")

    def resolve(self, value: Any) -> Any:
        """Resolve intrinsics; raises Unresolved when a resource it needs does not exist yet. A value that
        resolves to AWS::NoValue disappears from its list or mapping, as in CloudFormation."""
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                res, att = arg if isinstance(arg, list) else arg.split(".", 1)
                if (res, att) not in self.attrs:
                    raise Unresolved(res)
                return self.attrs[(res, att)]
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(i) for i in self.resolve(items))
            if key == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self.condition(cond) else no)
            if key == "Fn::Equals":
                a, b = self.resolve(arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::Select":
                index, items = self.resolve(arg)
                return items[int(index)]
            if key == "Fn::Split":
                sep, text = self.resolve(arg)
                return text.split(sep)
            if key.startswith("Fn::") or key == "Condition":
                raise TemplateError(f"intrinsic {key} is not supported locally")
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in self.pseudo():
            return self.pseudo()[name]
        if name in self.refs:
            return self.refs[name]
        if name in self.template.get("Resources", {}):
            raise Unresolved(name)
        raise TemplateError(f"Ref to unknown name {name}")

    def _sub(self, arg: Any) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def repl(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"
            if expr in extra:
                return str(extra[expr])
            if "." in expr and expr.split(".", 1)[0] in self.template.get("Resources", {}):
                return str(self.resolve({"Fn::GetAtt": expr.split(".", 1)}))
            return str(self._ref(expr))

        return re.sub(r"\$\{([^}]+)\}", repl, text)


NO_VALUE = object()  # Ref AWS::NoValue: the property or list item is left out


class Unresolved(LookupError):
    """A value depends on a resource not created yet (the provisioner retries it later)."""


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template.get("Resources", {}).items() if r.get("Type") == kind}


def function_environment(template: dict[str, Any], ctx: Context, function: str) -> dict[str, str]:
    """Globals + the function's own environment, resolved: exactly what Lambda would set."""
    env = dict(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    props = template["Resources"][function]["Properties"]
    env.update(props.get("Environment", {}).get("Variables", {}))
    resolved = ctx.resolve(env)
    return {k: str(v) for k, v in resolved.items()}


def function_environment_names(template: dict[str, Any], function: str) -> set[str]:
    """Every variable name the template may give the function (some resolve to AWS::NoValue)."""
    env = set(template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    props = template["Resources"][function]["Properties"]
    return env | set(props.get("Environment", {}).get("Variables", {}))


def function_setting(template: dict[str, Any], function: str, key: str, default: Any = None) -> Any:
    props = template["Resources"][function]["Properties"]
    return props.get(key, template.get("Globals", {}).get("Function", {}).get(key, default))
