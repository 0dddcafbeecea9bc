"""A repository's `.prfleet.toml`: parsed, checked and applied the same way by the planner, the agents, the fan-in
and `prfleet config check`. Read from the PR's base branch only, so a pull request cannot change its own review.

Every key, its default and its bounds: docs/prfleet-toml.md.
"""

from __future__ import annotations

import fnmatch
import posixpath
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

KNOWN_AGENTS: tuple[str, ...] = ("review", "tests", "docs")  # agents.PROMPTS; a unit test keeps them equal
LIMIT_KEYS = ("max_iterations", "max_tokens", "max_run_tokens")
# Which findings fail the check run: none, critical ones, or critical and high ones (findings.SEVERITIES order).
FAIL_ON: dict[str, tuple[str, ...]] = {"never": (), "critical": ("critical",), "high": ("critical", "high")}
# [[instructions]]: review guidance the repository gives its reviewers. They reach the model's prompt, so they are
# bounded: at most MAX_INSTRUCTION_ENTRIES entries, each text cut at MAX_INSTRUCTION_CHARS characters (with a
# warning); prfleet.repository.instructions caps them again together with REVIEW.md and the like.
MAX_INSTRUCTION_ENTRIES = 20
MAX_INSTRUCTION_CHARS = 4_000
_TOP_KEYS = frozenset(
    {
        "disabled",
        "ignore",
        "limits",
        "agents",
        "fail_on",
        "instructions",
        "max_inline_comments",
        "report_preexisting",
        "conversation",
        "require_verification",
    }
)
MAX_TRUSTED = 200  # [conversation] trusted: logins, bounded like every list that reaches a decision


class RepoConfigError(ValueError):
    """A .prfleet.toml that cannot be applied; the message says which key is wrong."""


@dataclass(frozen=True)
class InstructionEntry:
    """One `[[instructions]]` entry: review guidance for the files its `paths` globs match (every file when
    empty). `number` is its 1-based position in the file, so a review can say which entry applied."""

    number: int
    text: str
    paths: tuple[str, ...] = ()
    truncated: bool = False


@dataclass(frozen=True)
class RepoConfig:
    """A repository's own .prfleet.toml (from the BASE branch): it can only narrow what prfleet does, except
    `fail_on`, the repository's own merge gate."""

    disabled: frozenset[str] = frozenset()
    ignore: tuple[str, ...] = ()
    limits: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # agent or "*" -> key -> value
    agent_ignore: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    fail_on: str | None = None  # None: the stack's FailOn parameter
    instructions: tuple[InstructionEntry, ...] = ()
    max_inline_comments: int | None = None  # None: the stack's MaxInlineComments; it can only lower it
    report_preexisting: bool = False  # post findings on old problems the PR only touches (else counted)
    trusted: frozenset[str] = frozenset()  # [conversation] trusted: logins prfleet answers besides members
    learn: bool = True  # [conversation] learn: record "ignore this" / resolved threads as suppressions
    require_verification: bool = (
        False  # hold findings the verify run could not check (else posted unverified)
    )


def path_matches(path: str, globs: Iterable[str]) -> bool:
    """Whether a repository path matches one of a .prfleet.toml's globs (docs/prfleet-toml.md#globs): the whole
    path, or the file name for a pattern without "/" (like .gitignore); "dir/*" and "dir/**" take everything under
    dir/. The one matcher for `ignore`, `[agents.x].ignore` and `[[instructions]].paths`."""
    name = posixpath.basename(path)
    for pattern in globs:
        if fnmatch.fnmatchcase(path, pattern) or ("/" not in pattern and fnmatch.fnmatchcase(name, pattern)):
            return True
        if pattern.endswith("/*") and path.startswith(pattern[:-1]):
            return True
        if pattern.endswith("/**") and path.startswith(pattern[:-2]):
            return True
    return False


def _positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RepoConfigError(f"{where} must be a positive integer")
    return value


def _globs(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RepoConfigError(f"{where} must be a list of glob strings")
    return tuple(value)


def _instructions(value: object, warnings: list[str]) -> tuple[InstructionEntry, ...]:
    """The `[[instructions]]` array of tables: `text` required (a non-empty string, cut at
    MAX_INSTRUCTION_CHARS with a warning), `paths` optional (globs; every file when absent)."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise RepoConfigError(
            'instructions must be an array of tables: [[instructions]] with text = "..." and optional paths'
        )
    if len(value) > MAX_INSTRUCTION_ENTRIES:
        raise RepoConfigError(
            f"instructions has {len(value)} entries; at most {MAX_INSTRUCTION_ENTRIES} are allowed"
        )
    out = []
    for number, table in enumerate(value, 1):
        where = f"instructions #{number}"
        text = table.get("text")
        if not isinstance(text, str) or not text.strip():
            raise RepoConfigError(f'{where}: text is required and must be a non-empty string (text = "...")')
        paths = _globs(table["paths"], f"{where}: paths") if "paths" in table else ()
        if "paths" in table and not paths:
            raise RepoConfigError(f"{where}: paths must not be empty (leave it out to apply to every file)")
        for key in sorted(set(table) - {"text", "paths"}):
            warnings.append(f"unknown key {where}.{key} ignored")
        text = text.strip()
        truncated = len(text) > MAX_INSTRUCTION_CHARS
        if truncated:
            warnings.append(
                f"{where}: text is {len(text)} characters; only the first {MAX_INSTRUCTION_CHARS} are used"
            )
            text = text[:MAX_INSTRUCTION_CHARS]
        out.append(InstructionEntry(number, text, paths, truncated))
    return tuple(out)


def _max_inline(value: object) -> int | None:
    """`max_inline_comments`: absent, or an integer of 0 or more (inline_comment_cap keeps it under the stack's)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise RepoConfigError(f"max_inline_comments must be an integer of 0 or more, got {value!r}")
    return value


def _flag(data: Mapping[str, object], key: str) -> bool:
    """A true/false key, false when absent."""
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise RepoConfigError(f"{key} must be true or false")
    return value


def _conversation(value: object, warnings: list[str]) -> dict[str, object]:
    """`[conversation]`: `trusted` (GitHub logins prfleet answers besides the repository's owners, members and
    collaborators; compared case-insensitively, as GitHub logins are) and `learn` (default true: `/prfleet
    ignore` and resolved threads record suppressions), as RepoConfig's keyword arguments."""
    if not isinstance(value, dict):
        raise RepoConfigError("conversation must be a table: [conversation] with trusted = [...] and learn")
    for key in sorted(set(value) - {"trusted", "learn"}):
        warnings.append(f"unknown key conversation.{key} ignored")
    trusted = value.get("trusted", [])
    if not isinstance(trusted, list) or not all(isinstance(t, str) and t.strip() for t in trusted):
        raise RepoConfigError("conversation.trusted must be a list of GitHub logins")
    if len(trusted) > MAX_TRUSTED:
        raise RepoConfigError(f"conversation.trusted has {len(trusted)} logins; at most {MAX_TRUSTED}")
    learn = value.get("learn", True)
    if not isinstance(learn, bool):
        raise RepoConfigError("conversation.learn must be true or false")
    return {"trusted": frozenset(t.strip().lower() for t in trusted), "learn": learn}


def _disabled(data: dict[str, object], warnings: list[str]) -> set[str]:
    """The top-level `disabled` list of agents (an unknown agent is a warning, not an error)."""
    names = set(_globs(data["disabled"], "disabled")) if "disabled" in data else set()
    warnings += [f"disabled: unknown agent {name!r}" for name in sorted(names - set(KNOWN_AGENTS))]
    return names


def _fail_on(value: object) -> str | None:
    if value is not None and value not in FAIL_ON:
        raise RepoConfigError(f"fail_on must be one of {', '.join(FAIL_ON)}, got {value!r}")
    return value  # type: ignore[return-value]


def parse_repo_config(toml_text: str) -> RepoConfig:
    """Parse .prfleet.toml. Shape::

        disabled = ["docs"]            # agents to switch off
        ignore = ["generated/**"]      # globs no agent reviews
        fail_on = "high"               # never | critical | high: findings that fail the check run
        max_inline_comments = 5        # fewer inline comments per review than the stack's MaxInlineComments
        report_preexisting = true      # also post findings on old problems the PR does not cause
        require_verification = true    # hold findings until a verify run has checked them (never unverified)
        [conversation]                 # trusted = ["login"]: answered besides members; learn = false: no suppressions
        [[instructions]]               # review guidance, for the files `paths` matches (all when absent)
        paths = ["src/api/**"]
        text = "..."
        [limits]                       # all agents; values above prfleet's own are clamped, never raised
        max_iterations = 10
        [agents.review]
        enabled = false | max_iterations / max_tokens / max_run_tokens = N | ignore = [...]

    Unknown keys become warnings (a typo should not break reviews); wrong types raise RepoConfigError.
    """
    try:
        data = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise RepoConfigError(f".prfleet.toml is not valid TOML: {exc}") from exc
    warnings: list[str] = []
    limits: dict[str, dict[str, int]] = {}
    agent_ignore: dict[str, tuple[str, ...]] = {}
    warnings += [f"unknown key {key!r} ignored" for key in sorted(set(data) - _TOP_KEYS)]
    disabled = _disabled(data, warnings)
    ignore = _globs(data["ignore"], "ignore") if "ignore" in data else ()
    fail_on = _fail_on(data.get("fail_on"))

    def read_limits(table: object, where: str) -> dict[str, int]:
        if not isinstance(table, dict):
            raise RepoConfigError(f"{where} must be a table")
        out = {}
        for k, v in table.items():
            if k in LIMIT_KEYS:
                out[k] = _positive_int(v, f"{where}.{k}")
            elif not (where.startswith("agents.") and k in ("enabled", "ignore")):
                warnings.append(f"unknown key {where}.{k} ignored")
        return out

    if "limits" in data:
        limits["*"] = read_limits(data["limits"], "limits")
    agents = data.get("agents", {})
    if not isinstance(agents, dict):
        raise RepoConfigError("agents must be a table of [agents.<name>] tables")
    for name, table in agents.items():
        where = f"agents.{name}"
        if name not in KNOWN_AGENTS:
            warnings.append(f"{where}: unknown agent ignored")
            continue
        limits[name] = read_limits(table, where)
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            raise RepoConfigError(f"{where}.enabled must be true or false")
        if not enabled:
            disabled.add(name)
        if "ignore" in table:
            agent_ignore[name] = _globs(table["ignore"], f"{where}.ignore")
    instructions = _instructions(data["instructions"], warnings) if "instructions" in data else ()
    return RepoConfig(
        frozenset(disabled),
        ignore,
        limits,
        agent_ignore,
        fail_on=fail_on,
        instructions=instructions,
        max_inline_comments=_max_inline(data.get("max_inline_comments")),
        **{key: _flag(data, key) for key in ("report_preexisting", "require_verification")},
        **_conversation(data.get("conversation", {}), warnings),
        warnings=tuple(warnings),  # last: the keys read above may add to it
    )


def applied(repo_config_text: str | None) -> RepoConfig:
    """A repository's settings as they apply after planning, from the file text its head record keeps: the file,
    or the defaults when it is absent or cannot be applied (the planner already reported a broken file on the
    check, and the jobs ran without it)."""
    if repo_config_text:
        try:
            return parse_repo_config(repo_config_text)
        except RepoConfigError:
            pass
    return RepoConfig()


def reports_preexisting(repo_config_text: str | None) -> bool:
    """Whether pre-existing findings are posted (default no: they are counted, not shown)."""
    return applied(repo_config_text).report_preexisting


def requires_verification(repo_config_text: str | None) -> bool:
    """Whether findings the verify run could not check are held rather than posted labelled unverified (default
    no)."""
    return applied(repo_config_text).require_verification


def learns(repo_config_text: str | None) -> bool:
    """Whether prfleet learns from the team (`[conversation] learn`, default yes): suppressions from "ignore
    this", and its recent rejections shown to the verification pass."""
    return applied(repo_config_text).learn


def preexisting_note(hidden: int) -> str:
    """The sentence the review and the check say about pre-existing findings held back (`hidden` of them), with the
    key that posts them: counted, never silently dropped. Empty when none were held back."""
    if not hidden:
        return ""
    return (
        f" {hidden} pre-existing finding(s) not shown: old problems on lines this PR does not change "
        "(`report_preexisting = true` in .prfleet.toml posts them)."
    )


def inline_comment_cap(stack_default: int, repo_config_text: str | None) -> int:
    """A review's inline comment limit: the stack's MaxInlineComments, lowered (never raised) by the repository's
    .prfleet.toml `max_inline_comments`; a file that does not parse leaves the stack's (the planner reported it)."""
    if repo_config_text:
        try:
            chosen = parse_repo_config(repo_config_text).max_inline_comments
        except RepoConfigError:
            chosen = None
        if chosen is not None:
            return min(stack_default, chosen)
    return stack_default


def fail_on_policy(stack_default: str, repo_config_text: str | None) -> str:
    """The check's FailOn for one repository: its .prfleet.toml `fail_on` if valid, else the stack's parameter."""
    if repo_config_text:
        try:
            chosen = parse_repo_config(repo_config_text).fail_on
        except RepoConfigError:
            chosen = None  # the planner already reported the broken file on the check; use the stack's
        if chosen:
            return chosen
    return stack_default if stack_default in FAIL_ON else "never"
