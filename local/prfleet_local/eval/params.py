"""`prfleet eval --param NAME=VALUE`: template parameters for the local stack each case runs on (ReviewModel,
ReviewEffort, VerifyEffort, ...), checked against template.yaml itself before the first review, as CloudFormation
checks them when a stack is created, so a typo costs no model call and never reaches a stack as a silent default.

CloudFormation's checks, as documented
(https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/parameters-section-structure.html,
https://docs.aws.amazon.com/servicecatalog/latest/dg/API_ParameterConstraints.html): a parameter the template does
not declare is refused; AllowedValues lists every value allowed; AllowedPattern "must match the entire parameter
value" (re.fullmatch); MinValue / MaxValue bound a Number, which is an integer or a float; MinLength / MaxLength
bound a String's length; a failed constraint shows the ConstraintDescription when the template gives one. The
template's Rules are then checked with the whole set of values (stack.template.Context.check_rules), as at
deployment.

Parameters the eval sets itself (ModelProvider through --provider and what that provider needs, the local GitHub's
URL) are refused rather than silently overridden either way; the model ids a provider sets are defaults a --param
replaces (then checked by the template's Rules with the provider's other values).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from prfleet_local.cli.errors import CliError, one_line
from prfleet_local.stack import template as tpl

# What the eval itself decides, and where the user chooses it instead.
EVAL_SETS = {
    "ModelProvider": "--provider chooses it",
    "GitHubApiUrl": "each case is served by the eval's own local GitHub",
}


def eval_owned(provider_parameters: Mapping[str, Any], provider: str) -> dict[str, str]:
    """Every parameter the eval sets for this run, with why: EVAL_SETS and what --provider PROVIDER sets
    (prfleet_local.model.providers.local_parameters), except its model ids: those are only defaults that provider
    can serve (Bedrock's inference profiles), and comparing models there is what --param ReviewModel=... is for."""
    owned = {
        name: f"--provider {provider} sets it to {value}"
        for name, value in provider_parameters.items()
        if not name.endswith("Model")
    }
    owned.update(EVAL_SETS)
    return owned


def parse_params(
    values: Iterable[str] | None,
    *,
    owned: Mapping[str, str],
    fixed: Mapping[str, Any] | None = None,
    template: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """`--param NAME=VALUE` strings as {NAME: VALUE}, each checked against the template's declaration; `owned`:
    the parameters the eval sets (refused, with why), `fixed`: their values (with the given ones, they must
    satisfy the template's Rules). A mistake is a CliError of one line."""
    spec = template if template is not None else tpl.load()
    declared: Mapping[str, Mapping[str, Any]] = spec.get("Parameters", {})
    out: dict[str, str] = {}
    for raw in values or ():
        name, sep, value = raw.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CliError(
                f"--param {raw!r}: expected NAME=VALUE with NAME a template.yaml parameter, e.g. ReviewEffort=high"
            )
        if name not in declared:
            near = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise CliError(f"--param {name}: template.yaml has no parameter {name}{hint}")
        if name in owned:
            raise CliError(f"--param {name}: the eval sets {name} itself ({owned[name]}); leave it out")
        if name in out:
            raise CliError(
                f"--param {name} given twice ({out[name]!r} and {value!r}): give each parameter once"
            )
        problem = constraint_problem(declared[name], value)
        if problem:
            raise CliError(f"--param {name}={value!r}: {name} {problem}")
        out[name] = value
    try:
        tpl.Context(dict(spec), parameters={**(fixed or {}), **out}).check_rules()
    except tpl.TemplateError as exc:
        raise CliError(f"--param: template.yaml's {one_line(exc)}") from None
    return out


def constraint_problem(declaration: Mapping[str, Any], value: str) -> str:
    """What is wrong with `value` for a parameter so declared ("" when nothing): its type (Number), AllowedValues,
    AllowedPattern, MinLength / MaxLength, MinValue / MaxValue; ConstraintDescription is appended when given."""
    problem = _problem(declaration, value)
    described = declaration.get("ConstraintDescription")
    if problem and described:
        problem += f" ({one_line(described)})"
    return problem


def _problem(declaration: Mapping[str, Any], value: str) -> str:
    kind = str(declaration.get("Type", "String"))
    if kind not in ("String", "Number"):
        return f"is of type {kind}, which `prfleet eval --param` does not check; set it in template.yaml"
    allowed = declaration.get("AllowedValues")
    if allowed is not None and value not in [str(v) for v in allowed]:
        return "must be one of " + ", ".join(repr(str(v)) if str(v) == "" else str(v) for v in allowed)
    pattern = declaration.get("AllowedPattern")
    if pattern is not None and not re.fullmatch(str(pattern), value):
        return f"must match the pattern {pattern}"
    if kind == "String":
        if "MinLength" in declaration and len(value) < int(declaration["MinLength"]):
            return f"must be at least {declaration['MinLength']} characters long"
        if "MaxLength" in declaration and len(value) > int(declaration["MaxLength"]):
            return f"must be at most {declaration['MaxLength']} characters long"
        return ""
    try:
        number = float(value)
    except ValueError:
        return "is a Number: give an integer or a decimal"
    if number != number or number in (float("inf"), float("-inf")):
        return "is a Number: give an integer or a decimal"
    low, high = declaration.get("MinValue"), declaration.get("MaxValue")
    if (low is not None and number < float(low)) or (high is not None and number > float(high)):
        if low is not None and high is not None:
            return f"must be between {low} and {high}"
        return f"must be at least {low}" if low is not None else f"must be at most {high}"
    return ""
