import pytest

from prfleet.agents.findings import (
    REPORT_SCHEMA,
    SEVERITIES,
    Finding,
    InvalidReport,
    fingerprint,
    validate_report,
)
from prfleet.agents.loop import report_files
from prfleet.repository.view import FallbackView


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


def test_path_and_line_are_checked_against_the_files_known_at_the_head():
    with pytest.raises(InvalidReport, match="'other.py' is not a file of the repository at the PR head"):
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


def test_a_finding_on_another_file_of_the_repository_is_accepted_within_its_bounds():
    report = {"findings": [item(), item(path="src/caller.py", line=40, title="caller now breaks")]}
    found, _ = validate_report(
        report,
        agent="review",
        allowed_paths={"app.py", "src/caller.py"},
        line_counts={"app.py": 10, "src/caller.py": 40},
    )
    assert [(f.path, f.line) for f in found] == [("app.py", 3), ("src/caller.py", 40)]
    with pytest.raises(InvalidReport, match="line 41 is past the end of src/caller.py"):
        validate_report(
            {"findings": [item(path="src/caller.py", line=41)]},
            agent="review",
            line_counts={"src/caller.py": 40},
        )
    # without a list of the repository's files, any confined path is accepted (its line unbounded)
    found, _ = validate_report({"findings": [item(path="lib/x.py", line=900)]}, agent="review")
    assert found[0].path == "lib/x.py"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../etc/passwd", "must not contain '..'"),
        ("/etc/passwd", "relative to the repository root"),
        (".git/config", "the .git directory"),
        ("src\\x.py", "backslashes"),
        ("./src/x.py", "write it as 'src/x.py'"),
        ("src//x.py", "write it as 'src/x.py'"),
    ],
)
def test_a_finding_path_stays_inside_the_repository(path, message):
    with pytest.raises(InvalidReport, match=message):
        validate_report({"findings": [item(path=path)]}, agent="review")


class _Head:
    """The PR at its head as the loop reads it: files by path, and which paths are symlinks."""

    def __init__(self, files, symlinks=()):
        self.files, self.symlinks, self.reads = files, set(symlinks), []

    def read_file(self, path):
        self.reads.append(path)
        return "(symlink: not followed)" if path in self.symlinks else self.files.get(path)

    def mode(self, path):
        return "120000" if path in self.symlinks else ("100644" if path in self.files else None)

    def changed_files(self):
        return []


def test_the_loop_knows_the_files_a_report_names_that_exist_at_the_head():
    head = _Head({"app.py": "a\n" * 10, "src/caller.py": "c\n" * 40, "link.py": "x"}, symlinks={"link.py"})
    report = {
        "findings": [
            item(path="src/caller.py", line=12),
            item(path="gone.py"),
            item(path="link.py", line=1),
            item(path="../secret"),
        ]
    }
    allowed, counts = report_files(report, FallbackView(head, list(head.files)), "app.py", 10)
    assert allowed == {"app.py", "src/caller.py"}
    assert counts == {"app.py": 10, "src/caller.py": 40}
    assert "../secret" not in head.reads and "link.py" not in head.reads
    with pytest.raises(InvalidReport) as info:
        validate_report(report, agent="review", allowed_paths=allowed, line_counts=counts)
    assert [e.split(" ", 1)[0] for e in info.value.errors] == [
        "findings[1].path",
        "findings[2].path",
        "findings[3].path",
    ]
    found, _ = validate_report(
        {"findings": report["findings"][:1]}, agent="review", allowed_paths=allowed, line_counts=counts
    )
    assert [(f.path, f.line) for f in found] == [("src/caller.py", 12)]
