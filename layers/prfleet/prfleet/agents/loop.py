"""The agent loop: one agent reviews one file through Claude's tool-use turns.

`run_agent` is the only code that talks to the Messages API (through calls.ModelCaller). It ends every run in
exactly one status (succeeded / partial / failed) and never lets untrusted text pose as instructions: the PR's
text reaches the model only inside untrusted blocks, and the report is validated before it is trusted.
"""

from __future__ import annotations

import posixpath
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from prfleet.agents.calls import CallGuard, ModelCaller, RetryPolicy, Status, StopRun
from prfleet.agents.findings import MAX_FINDINGS, Finding, InvalidReport, validate_report
from prfleet.agents.request import build_first_content, build_request
from prfleet.agents.specs import MODEL_MAX_OUTPUT, AgentSpec, effort_for
from prfleet.agents.tools import PrSource, PrTools, ToolResult, tool_definitions
from prfleet.repository.hints import added_lines, where_to_look
from prfleet.repository.instructions import Instruction
from prfleet.repository.untrusted import path_problem
from prfleet.repository.view import RepoView, Snapshotish

__all__ = ["RunResult", "run_agent"]

_NUDGE = "You have not called report_findings. Call it now ([] if nothing to report)."


@dataclass
class RunResult:
    """How one run ended, what it found, and what it used and cost."""

    status: Status
    findings: list[Finding]
    usage: dict[str, int]
    cost_micros: int
    iterations: int
    error: str | None = None
    stop_reason: str | None = None
    retry_after: float | None = None
    summary: str | None = None
    model: str | None = None  # the model the last response named (the fallback's after a refusal)
    verdicts: list[Any] = field(default_factory=list)  # the verify run's (agents.verdicts.Verdict), else none


def _block_to_param(block: Any) -> dict[str, Any]:
    if isinstance(block, dict):
        return block
    return block.model_dump(mode="json", exclude_none=True)


class _Loop:
    """One run's conversation: each turn asks the model, then answers its tool calls, nudges it to report, or
    ends the run. A file agent's run; the verify run (agents.verify) changes its first message, its report tool
    and what the report is checked against."""

    report_tool = "report_findings"
    nudge = _NUDGE

    def __init__(
        self,
        job: Any,
        spec: AgentSpec,
        source: PrSource,
        caller: ModelCaller,
        *,
        emit: Callable[..., None],
        cache: bool,
        snapshot: Snapshotish | None = None,
        view: RepoView | None = None,
        instructions: list[Instruction] | None = None,
    ) -> None:
        self.job, self.spec, self.source, self.caller = job, spec, source, caller
        self.emit, self.cache = emit, cache
        self.snapshot = snapshot
        self.view = view
        self.instructions = instructions or []
        self.active = spec  # the spec in use: the fallback model's after a refusal
        self.iterations = 0
        self.findings: list[Finding] = []
        self.verdicts: list[Any] = []
        self.changed_lines: set[int] = set()  # the file under review's added lines (run() reads the diff)
        self.summary: str | None = None
        self.history: list[dict[str, Any]] = []
        self.reported = False
        self.corrections = 0  # rejected reports so far (one corrective turn is allowed)
        self.nudged = False  # asked once to call report_findings
        self.continued = False  # one continuation after a max_tokens stop before the report
        self.boost: int | None = None  # the continuation's max_tokens

    def result(
        self,
        status: Status,
        *,
        error: str | None = None,
        stop: str | None = None,
        retry_after: float | None = None,
    ) -> RunResult:
        return RunResult(
            status=status,
            findings=list(self.findings),
            usage=dict(self.caller.usage),
            cost_micros=self.caller.cost,
            iterations=self.iterations,
            error=error,
            stop_reason=stop,
            retry_after=retry_after,
            summary=self.summary,
            model=self.caller.served_model,
            verdicts=list(self.verdicts),
        )

    def first_content(self) -> list[dict[str, Any]] | RunResult:
        """The first user turn: the file under review, its diff and where to look (or the run's end when the
        file is not there)."""
        # Through the tools' view: the snapshot when there is one (no GitHub request), else the source.
        text = self.pr_tools.view.read(self.job.path)
        if text is None:
            return self.result("failed", error=f"{self.job.path} does not exist at the PR head")
        self.line_count = max(len(text.splitlines()), 1)
        diff = self.source.file_diff(self.job.path)
        self.changed_lines = changed_lines(diff, self.line_count)
        hints = where_to_look(self.pr_tools.view, self.job.path, text, diff)
        return build_first_content(
            self.job, self.spec, self.source, text, diff, hints=hints, instructions=self.instructions
        )

    def tools(self) -> list[dict[str, Any]]:
        """The tools the run offers: the read-only ones and its report tool."""
        return tool_definitions()

    def run(self) -> RunResult:
        """Turn by turn until the run ends: check the caps, ask the model, then continue a cut turn, fall back
        after a refusal, or answer the turn (_next_turn)."""
        self.pr_tools = PrTools(
            self.source, snapshot=self.snapshot, view=self.view, max_chars=self.spec.max_tool_chars
        )
        first = self.first_content()
        if isinstance(first, RunResult):
            return first
        self.history = [{"role": "user", "content": first}]
        system, tools = self.spec.system, self.tools()
        stop: str | None = None
        try:
            while True:
                capped = self._cap_reached()
                if capped:
                    return capped
                params = build_request(self.active, system, tools, self.history, cache=self.cache)
                if self.boost:
                    params["max_tokens"] = self.boost
                message = self.caller.call(params, iteration=self.iterations + 1)
                self.iterations += 1
                stop = message.stop_reason
                content = [_block_to_param(b) for b in message.content]  # thinking blocks unchanged
                if self._continue_cut_turn(stop, params["max_tokens"]):
                    continue
                self.boost = None
                if stop == "refusal":
                    if self._fall_back():
                        continue  # the next api_call names the fallback as requested_model
                    return self._refused(message)
                if content:
                    self.history.append({"role": "assistant", "content": content})
                ended = self._next_turn(stop, content)
                if ended:
                    return ended
        except StopRun as s:
            return self.result(s.status, error=s.error, stop=s.stop or stop, retry_after=s.retry_after)

    # -- the steps of one turn

    def _cap_reached(self) -> RunResult | None:
        if self.iterations >= self.spec.max_iterations:
            return self.result("partial", error="iteration cap reached", stop="max_iterations")
        if self.caller.tokens_used() >= self.spec.max_run_tokens:
            return self.result("partial", error="token cap reached", stop="max_run_tokens")
        return None

    def _continue_cut_turn(self, stop: str | None, max_tokens: int) -> bool:
        """Whether a turn cut at max_tokens before the report is asked again, once, with twice the room.

        The cut turn is dropped, not sent back: its thinking has no signature and a cut tool_use is incomplete
        (handling stop reasons)."""
        if stop != "max_tokens" or self.reported or self.continued or max_tokens >= MODEL_MAX_OUTPUT:
            return False
        self.continued = True
        self.boost = min(MODEL_MAX_OUTPUT, max_tokens * 2)  # the next api_call shows it
        return True

    def _fall_back(self) -> bool:
        """After a refusal, switch once to the spec's fallback model and start the turn over (thinking blocks
        are bound to the model that wrote them)."""
        fallback = self.spec.fallback_model
        if not fallback or self.active.model == fallback:
            return False
        self.active = replace(self.spec, model=fallback, effort=effort_for(fallback, self.spec.effort))
        self.history = [self.history[0]]
        self.corrections, self.nudged, self.continued = 0, False, False
        return True

    def _refused(self, message: Any) -> RunResult:
        details = getattr(message, "stop_details", None)  # logged on the api_call event
        category = getattr(details, "category", None)
        explanation = getattr(details, "explanation", None)
        reason = f"the model refused ({category or 'no category'})"
        return self.result(
            "failed", error=f"{reason}: {explanation}" if explanation else reason, stop="refusal"
        )

    def _next_turn(self, stop: str | None, content: list[dict[str, Any]]) -> RunResult | None:
        """What follows the model's turn: the user turn that answers it, or the run's result."""
        if stop == "tool_use":
            return self._answer_tools(content)
        if stop in ("end_turn", "stop_sequence"):
            return self._turn_ended(content, stop)
        if stop == "pause_turn":
            if not content:
                return self.result("failed", error="pause_turn without content", stop=stop)
            return None  # send the paused assistant turn back as-is so the model resumes it
        if stop == "max_tokens":
            return self.result("partial", error="the response hit max_tokens", stop=stop)
        if stop == "model_context_window_exceeded":
            return self.result("partial", error="the model's context window is full", stop=stop)
        return self.result("failed", error=f"unknown stop_reason {stop!r}", stop=stop)

    def _answer_tools(self, content: list[dict[str, Any]]) -> RunResult | None:
        results = [self._answer_tool(block) for block in content if block.get("type") == "tool_use"]
        if not results:
            return self.result(
                "failed", error="stop_reason tool_use without a tool_use block", stop="tool_use"
            )
        self.history.append({"role": "user", "content": results})
        return None

    def _answer_tool(self, block: dict[str, Any]) -> dict[str, Any]:
        name, args = block.get("name", ""), block.get("input") or {}
        self.emit("tool_call", tool=name, arg_names=sorted(args) if isinstance(args, dict) else [])
        if name == self.report_tool:
            res = self._take_report(args)
        else:
            res = self.pr_tools.call(name, args if isinstance(args, dict) else {})
        self.emit(
            "tool_result", tool=name, chars=len(res.content), truncated=res.truncated, is_error=res.is_error
        )
        return {
            "type": "tool_result",
            "tool_use_id": block.get("id"),
            "content": res.content,
            "is_error": res.is_error,
        }

    def _take_report(self, args: Any) -> ToolResult:
        """Record a valid report; a rejected one gets one corrective turn, a second rejection fails the run
        (`reject`)."""
        allowed, line_counts = report_files(args, self.pr_tools.view, self.job.path, self.line_count)
        try:
            found, summary = validate_report(
                args,
                agent=self.spec.name,
                allowed_paths=allowed,
                line_counts=line_counts,
                reviewed=self.job.path,
                changed_lines=self.changed_lines,
            )
        except InvalidReport as exc:
            return self.reject(exc, exc.errors)
        self.reported = True
        self.findings.extend(found)
        self.summary = summary or self.summary
        return ToolResult(f"Recorded {len(found)} finding(s). End your turn now.")

    def reject(self, exc: Exception, errors: list[str]) -> ToolResult:
        """A rejected report: one corrective turn listing `errors`; the second rejection fails the run."""
        self.corrections += 1
        if self.corrections > 1:
            self.emit("error", error_type="invalid_report", message=str(exc)[:500])
            raise StopRun(
                "failed", f"invalid report after a corrective turn: {exc}", stop="tool_use"
            ) from None
        return ToolResult(
            f"{self.report_tool} was rejected; fix these problems and call it again:\n- "
            + "\n- ".join(errors),
            is_error=True,
        )

    def _turn_ended(self, content: list[dict[str, Any]], stop: str) -> RunResult | None:
        if self.reported:
            return self.result("succeeded", stop=stop)
        if self.nudged:
            return self.result("failed", error="the model ended without calling report_findings", stop=stop)
        self.nudged = True
        if not content:
            self.history.append({"role": "assistant", "content": [{"type": "text", "text": "(no output)"}]})
        self.history.append({"role": "user", "content": [{"type": "text", "text": self.nudge}]})
        return None


def changed_lines(diff: str, line_count: int) -> set[int]:
    """The file under review's lines the PR adds or changes (new side), for the findings' relation: the diff's
    added lines, or every line when GitHub left the diff out as too large (a text without any hunk), so a finding
    is never hidden as pre-existing for want of a diff. A file without textual changes has none."""
    if diff.strip() and not diff.lstrip().startswith("@@") and "\n@@" not in diff:
        return set(range(1, line_count + 1))
    return added_lines(diff)


def report_files(args: Any, view: RepoView, path: str, line_count: int) -> tuple[set[str], dict[str, int]]:
    """The files a report names that exist at the head, with their line counts: the file under review, and any
    other file of the repository it names (a caller the change breaks), read through the tools' view (the
    snapshot, or the source, which already holds what the tools read). Symlinks and paths outside the repository
    are left out (validate_report says why).
    """
    allowed, counts = {path}, {path: line_count}
    items = args.get("findings") if isinstance(args, dict) else None
    for item in items[:MAX_FINDINGS] if isinstance(items, list) else []:
        named = item.get("path") if isinstance(item, dict) else None
        if not isinstance(named, str) or named in allowed or path_problem(named):
            continue
        if named != posixpath.normpath(named) or view.is_symlink(named):
            continue
        text = view.read(named)
        if text is not None:
            allowed.add(named)
            counts[named] = max(len(text.splitlines()), 1)
    return allowed, counts


def run_agent(
    job: Any,
    spec: AgentSpec,
    source: PrSource,
    model_client: Any,
    *,
    deadline: float,
    guard: CallGuard,
    emit: Callable[..., None],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    retry: RetryPolicy | None = None,
    cache: bool | None = None,
    snapshot: Snapshotish | None = None,
    view: RepoView | None = None,
    instructions: list[Instruction] | None = None,
) -> RunResult:
    """Review job.path with one agent: the tool-use loop, bounded by caps and by `deadline` (epoch seconds).

    Ends as succeeded, partial (a cap or the deadline stopped it; findings so far are kept) or failed (error
    set; retry_after set when the job should go back to the queue with that visibility delay). Exceptions
    raised by guard.before_call (budget.BudgetExceeded) propagate so the runner can defer the job.
    `cache=False` (or spec.prompt_caching=False) sends no cache_control, for the caching benchmark.
    `snapshot` (repository.snapshot.Snapshot, or None): the tools see its unpacked tree when it has one, else the
    fallback view over `source`; `view`, when given, is the view itself (the runner's, which it also reads the
    findings' lines through). `instructions`: the repository's own review instructions that apply to the
    file (prfleet.repository.instructions.for_file), given below prfleet's rules in the first message.
    """
    caller = ModelCaller(
        model_client,
        deadline=deadline,
        guard=guard,
        emit=emit,
        clock=clock,
        sleep=sleep,
        rng=rng or random.Random(),
        retry=retry or RetryPolicy(),
        call_timeout=spec.call_timeout,
    )
    loop = _Loop(
        job,
        spec,
        source,
        caller,
        emit=emit,
        cache=spec.prompt_caching if cache is None else cache,
        snapshot=snapshot,
        view=view,
        instructions=instructions,
    )
    return loop.run()
