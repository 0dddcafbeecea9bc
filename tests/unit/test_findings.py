import pytest

from prfleet.agents.findings import (
    REPORT_SCHEMA,
    SEVERITIES,
    Finding,
    InvalidReport,
    fingerprint,
    validate_report,
)


def item(**over):
    base = {
        "path": "app.py",
        "line": 3,
        "severity": "high",
        "category": "security",
        "title": "eval",
        "body": "b",
    }
    base.update(over)
    return base


def test_valid_report_becomes_findings_tagged_with_the_agent():
    found, summary = validate_report(
        {"findings": [item(suggestion="x = 1")], "summary": "ok"}, agent="review", allowed_paths={"app.py"}
    )
    assert summary == "ok"
    assert found == [Finding("app.py", 3, "high", "security", "eval", "b", "x = 1", "review")]


def test_empty_report_is_valid():
    assert validate_report({"findings": []}, agent="docs") == ([], None)


def test_every_problem_is_listed_in_one_error():
    with pytest.raises(InvalidReport) as info:
        validate_report(
            {
                "findings": [
                    item(line=0),
                    item(severity="urgent"),
                    item(category="Bad Cat"),
                    {"path": "app.py"},
                ],
                "extra": 1,
            },
            agent="review",
        )
    text = str(info.value)
    assert "unexpected top-level field(s): extra" in text
    assert "findings[0].line must be an integer >= 1" in text
    assert "findings[1].severity 'urgent' must be one of" in text
    assert "findings[2].category" in text
    assert "findings[3] lacks required field(s): line, severity, category, title, body" in text
    assert len(info.value.errors) == 5


@pytest.mark.parametrize("payload", [None, [], "x", {"findings": "none"}, {}])
def test_non_object_or_missing_array_is_rejected(payload):
    with pytest.raises(InvalidReport):
        validate_report(payload, agent="review")


def test_path_and_line_are_checked_against_the_file_under_review():
    with pytest.raises(InvalidReport, match="not a file under review"):
        validate_report({"findings": [item(path="other.py")]}, agent="r", allowed_paths={"app.py"})
    with pytest.raises(InvalidReport, match="past the end of app.py"):
        validate_report({"findings": [item(line=11)]}, agent="r", line_counts={"app.py": 10})
    with pytest.raises(InvalidReport, match="line must be an integer"):
        validate_report({"findings": [item(line=True)]}, agent="r")


def test_too_many_findings_rejected():
    with pytest.raises(InvalidReport, match="at most 50"):
        validate_report({"findings": [item() for _ in range(51)]}, agent="r")


def test_round_trip_and_schema_agree_on_severities():
    f = Finding("a.py", 1, "low", "docs", "t", "b", None, "docs")
    assert Finding.from_dict(f.to_dict()) == f
    sev = REPORT_SCHEMA["properties"]["findings"]["items"]["properties"]["severity"]["enum"]
    assert tuple(sev) == SEVERITIES


def test_fingerprint_ignores_whitespace_and_line_numbers_but_not_identity():
    a = fingerprint("review", "app.py", "Use of eval", "    x = eval(s)")
    assert a == fingerprint("review", "app.py", "use of  EVAL", "x =   eval(s)")
    assert len(a) == 32 and int(a, 16) >= 0
    assert a != fingerprint("docs", "app.py", "Use of eval", "x = eval(s)")
    assert a != fingerprint("review", "b.py", "Use of eval", "x = eval(s)")
    assert a != fingerprint("review", "app.py", "Use of eval", "x = eval(t)")
    f1 = Finding("app.py", 3, "high", "security", "Use of eval", "b", agent="review")
    f2 = Finding("app.py", 90, "high", "security", "Use of eval", "other body", agent="review")
    assert f1.fingerprint("x = eval(s)") == f2.fingerprint("x = eval(s)") == a
