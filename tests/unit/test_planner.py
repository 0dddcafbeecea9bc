"""Planner core: one job per (file, agent), and a reason for every file that is not reviewed."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from prfleet.jobs import PrJob, parse_message
from prfleet.pipeline.planner import PrHead, Skip, plan_files, plan_head

PR = PrJob("acme/shop", 7, "h" * 40, "b" * 40, 42, "delivery-1", "opened")


@dataclass(frozen=True)
class Agent:
    name: str
    applies_to: tuple[str, ...] = ()

    def applies(self, path: str) -> bool:
        return not self.applies_to or any(path.endswith(g.lstrip("*")) for g in self.applies_to)


AGENTS = {
    "review": Agent("review"),
    "tests": Agent("tests", ("*.py",)),
    "docs": Agent("docs", ("*.py", "*.md")),
}


def entry(name, status="modified", patch="@@ -1 +1 @@\n-a\n+b", sha="s1", changes=2):
    e = {"filename": name, "status": status, "sha": sha, "changes": changes}
    if patch is not None:
        e["patch"] = patch
    return e


def test_one_job_per_file_and_applicable_agent_with_blob_sha():
    jobs, skips = plan_files(
        PR, [entry("app/x.py", sha="blob1"), entry("README.md", sha="blob2")], AGENTS, max_file_bytes=1000
    )
    assert sorted((j.path, j.agent) for j in jobs) == [
        ("README.md", "docs"),
        ("README.md", "review"),
        ("app/x.py", "docs"),
        ("app/x.py", "review"),
        ("app/x.py", "tests"),
    ]
    assert {j.blob_sha for j in jobs if j.path == "app/x.py"} == {"blob1"}
    assert all(parse_message(j.to_message()) == j for j in jobs)
    assert len({j.job_id for j in jobs}) == len(jobs)
    assert skips == []


def test_every_skip_has_its_reason():
    files = [
        entry("gone.py", status="removed", patch=None),
        entry("logo.png", patch=None, changes=0),
        entry("data.bin2", patch=None, changes=0),
        entry("big.py"),
        entry("package-lock.json"),
        entry("docs/generated/api.md"),
        entry("huge_diff.py", patch=None, changes=90000),
        entry("link.py"),
        entry("style.css"),
        {**entry("moved.py", status="renamed", patch=None, changes=0), "previous_filename": "old.py"},
        entry("empty.py", status="added", patch=None, changes=0),
        entry("run.py", status="changed", patch=None, changes=0),
    ]
    agents = {"tests": Agent("tests", ("*.py",))}
    jobs, skips = plan_files(
        PR,
        files,
        agents,
        ignore=["docs/generated/*"],
        sizes={"big.py": 5000, "empty.py": 0, "run.py": 12, "moved.py": 40},
        symlinks=["link.py"],
        max_file_bytes=1000,
    )
    reasons = {s.path: s.reason for s in skips}
    assert reasons == {
        "gone.py": "removed",
        "logo.png": "binary",
        "data.bin2": "binary (GitHub shows no textual diff)",
        "big.py": "oversized (5000 bytes > 1000)",
        "package-lock.json": "ignored by pattern",
        "docs/generated/api.md": "ignored by pattern",
        "link.py": "symlink",
        "style.css": "no agent applies to this file type",
        # GitHub leaves `patch` out without a textual change too: the true reason, never "binary".
        "moved.py": "renamed from old.py without changes",
        "empty.py": "empty file",
        "run.py": "file mode or type changed, content unchanged",
    }
    # A diff GitHub left out as too large is reviewed from the file (within max_file_bytes).
    assert [(j.path, j.agent) for j in jobs] == [("huge_diff.py", "tests")]


def test_job_ids_are_stable_across_deliveries_but_differ_per_head():
    a, _ = plan_files(PR, [entry("x.py")], {"review": Agent("review")}, max_file_bytes=10)
    again = PrJob(
        PR.repo, PR.number, PR.head_sha, PR.base_sha, PR.installation_id, "delivery-2", "synchronize"
    )
    b, _ = plan_files(again, [entry("x.py")], {"review": Agent("review")}, max_file_bytes=10)
    newer = PrJob(PR.repo, PR.number, "n" * 40, PR.base_sha, PR.installation_id, "delivery-3", "synchronize")
    c, _ = plan_files(newer, [entry("x.py")], {"review": Agent("review")}, max_file_bytes=10)
    assert a[0].job_id == b[0].job_id != c[0].job_id


def test_a_renamed_file_with_changes_is_reviewed_with_its_patch_against_the_old_name():
    renamed = {**entry("new_name.py", status="renamed"), "previous_filename": "old_name.py"}
    jobs, skips = plan_files(PR, [renamed], {"review": Agent("review")}, max_file_bytes=1000)
    assert [(j.path, j.agent) for j in jobs] == [("new_name.py", "review")] and skips == []


# --- plan_head: the pure plan of one head (GitHub's answers in, jobs and reasoned skips out) ---

SETTINGS = SimpleNamespace(
    agents=("review",), models={"review": "claude-x"}, max_files=2, max_file_bytes=1000
)


def head(config_text=None, files=(), more=0, tree=None, tree_note=None):
    return PrHead(
        job=PR,
        title="t",
        body="b",
        config_text=config_text,
        files=list(files),
        more=more,
        tree=tree or {},
        symlinks=set(),
        tree_note=tree_note,
    )


def test_plan_head_applies_the_repository_config():
    planned = plan_head(head('ignore = ["gen/**"]\n', [entry("gen/x.py"), entry("app.py")]), SETTINGS)
    assert [(j.path, j.agent) for j in planned.jobs] == [("app.py", "review")]
    assert planned.skips == [Skip("gen/x.py", "ignored by pattern")]
    assert planned.config_text == 'ignore = ["gen/**"]\n'


def test_plan_head_says_why_a_broken_config_is_not_applied_and_plans_with_defaults():
    planned = plan_head(head("ignore = [", [entry("app.py")]), SETTINGS)
    assert [j.path for j in planned.jobs] == ["app.py"]
    assert planned.config_text is None
    (skip,) = planned.skips
    assert skip.path == ".prfleet.toml" and skip.reason.startswith("not applied: ")


def test_plan_head_notes_unlisted_files_first_and_a_truncated_tree_last():
    note = Skip("(repository tree)", "GitHub truncated the recursive tree")
    planned = plan_head(head(None, [entry("a.py"), entry("b.py")], more=2999, tree_note=note), SETTINGS)
    assert planned.skips[0] == Skip(
        "(2999 more files)",
        "not listed: over the limit of 2 files per pull request (GitHub lists at most 3000)",
    )
    assert planned.skips[-1] == note
    sized = head(None, [entry("big.py")], tree={"big.py": {"type": "blob", "size": 5000}})
    assert plan_head(sized, SETTINGS).skips == [Skip("big.py", "oversized (5000 bytes > 1000)")]
