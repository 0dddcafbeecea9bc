"""grep and glob over a RepoView, shaped like Claude Code's Grep and Glob tools (the models are trained on them),
bounded so that one call can neither flood the context nor run for minutes.

Semantics, as the tool descriptions state them:
- grep: a Python `re` pattern matched line by line (never across lines, as ripgrep by default). `glob` filters
  the files: without a "/" it matches the file name at any depth ("*.py"), with one it matches the path relative
  to `path` ("tests/**/*.py"), as ripgrep's --glob does. Binary files (a NUL in the first 8 KB) and files over
  the read limit are skipped. Results are sorted by path.
- glob: the pattern is relative to `path` (the repository root by default); "*" and "?" never cross a "/", "**"
  matches any number of directories, "{a,b}" alternatives, "[...]" classes. So "*.py" lists the Python files of
  that directory only and "**/*.py" those at any depth (as Claude Code's Glob does).
Catastrophic patterns are bounded: a nested unbounded repeat ("(a+)+") is refused, each line is searched on its
first 2,000 characters, and a call stops at a byte and a time budget with a note.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from prfleet.repository.view import MAX_READ_BYTES, RepoView, is_binary

try:  # re's own parser (private, present 3.11-3.13): only to refuse nested unbounded repeats before running them
    from re import _constants as _sre_c
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - a Python without it: the line, byte and time caps still bound a call
    _sre_parse = None  # type: ignore[assignment]
    _sre_c = None  # type: ignore[assignment]

OUTPUT_MODES = ("content", "files_with_matches", "count")
MAX_LINE_SEARCHED = 2_000  # characters of a line the pattern sees
MAX_LINE_SHOWN = 500  # characters of a matching or context line shown
MAX_CONTEXT = 20  # lines of context either side
DEFAULT_ROWS = {"content": 200, "files_with_matches": 500, "count": 500}
MAX_HEAD_LIMIT = 2_000
MAX_MATCHING_LINES = 20_000  # the scan stops collecting past this many matching lines
MAX_SCAN_BYTES = 512 * 1024 * 1024
MAX_SECONDS = 20.0
MAX_GLOB_RESULTS = 200

# A whole-file search first (one C call) is exact for a line-by-line pattern unless the pattern can see past a
# line's edges in another way than ^/$ (which MULTILINE makes per line): \A, \Z, lookarounds, inline flags.
_NOT_LINEWISE = re.compile(r"\\[AZ]|\(\?(?![:P])")


class SearchError(ValueError):
    """A grep or glob call the model made wrongly: the message says what to fix."""


@dataclass(frozen=True)
class GrepResult:
    """What grep found: `body` (the rows, or "(no matches)"), `matches` (matching lines; files in
    files_with_matches mode), `files` (files with a match), and the notes that follow the block."""

    mode: str
    body: str
    matches: int
    files: int
    truncated: str | None = None
    coverage: str | None = None


@dataclass(frozen=True)
class GlobResult:
    body: str
    matches: int
    truncated: str | None = None
    coverage: str | None = None


# ----------------------------------------------------------------------------------------------- patterns


def _nested_unbounded(parsed: object, inside: bool = False) -> bool:
    """Whether a repeat that backtracks without bound sits inside another one (exponential on a miss)."""
    c = _sre_c
    for op, av in parsed:  # type: ignore[attr-defined]
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            _lo, hi, sub = av
            unbounded = hi == c.MAXREPEAT or hi > 100
            if (unbounded and inside) or _nested_unbounded(sub, inside or unbounded):
                return True
        elif op == c.POSSESSIVE_REPEAT:  # never backtracks into itself: only its inside counts
            if _nested_unbounded(av[2], False):
                return True
        elif op == c.SUBPATTERN:
            if _nested_unbounded(av[-1], inside):
                return True
        elif op == c.BRANCH:
            if any(_nested_unbounded(s, inside) for s in av[1]):
                return True
        elif op in (c.ASSERT, c.ASSERT_NOT):
            if _nested_unbounded(av[1], inside):
                return True
        elif op == c.ATOMIC_GROUP:
            if _nested_unbounded(av, False):
                return True
    return False


def required_literal(pattern: str, flags: int = 0) -> str | None:
    """The longest run of plain characters every match must contain (as ripgrep extracts literals), so most
    files are ruled out by a substring test before the regex runs; None when there is none worth it."""
    if _sre_parse is None or flags & re.IGNORECASE:
        return None
    c = _sre_c
    best, run = "", []
    try:
        items = list(_sre_parse.parse(pattern, flags))
    except re.error:
        return None
    for op, av in [*items, (None, None)]:
        if op == c.LITERAL:
            run.append(chr(av))
            continue
        if len(run) > len(best):
            best = "".join(run)
        run = []
    return best if len(best) >= 2 else None


def folded_literal(pattern: str, flags: int) -> str | None:
    """For a case-insensitive pattern: its required literal lowercased, when that is ASCII; else None.

    `folded in text.lower()` is then a necessary condition for a match in an ASCII text (between ASCII characters
    re's IGNORECASE is exactly lower()), so most files are ruled out by one C pass instead of an IGNORECASE regex
    scan of each (without it a case-insensitive grep took 8-10x git grep's time: make bench, `repository`). A non-ASCII text is not prefiltered: re also folds
    e.g. U+017F (long s) with "s", which lower() does not (U+212A, the Kelvin sign, lowers to "k")."""
    if not flags & re.IGNORECASE:
        return None
    literal = required_literal(pattern, flags & ~re.IGNORECASE)
    return literal.lower() if literal is not None and literal.isascii() else None


def compile_pattern(pattern: object, *, ignore_case: bool = False) -> re.Pattern[str]:
    """The model's regex, compiled, or a SearchError saying what is wrong with it."""
    if not isinstance(pattern, str) or not pattern:
        raise SearchError("pattern must be a non-empty string (a Python regular expression)")
    if len(pattern) > 1_000:
        raise SearchError("pattern is over 1,000 characters; search for a shorter pattern")
    flags = re.MULTILINE | (re.IGNORECASE if ignore_case else 0)
    try:
        rx = re.compile(pattern, flags)
    except re.error as exc:
        raise SearchError(
            f"invalid regular expression {pattern!r}: {exc} (Python re syntax; escape ( ) [ ] {{ }} . * + ? | "
            "with a backslash to match them literally)"
        ) from None
    if _sre_parse is not None and _nested_unbounded(_sre_parse.parse(pattern, flags)):
        raise SearchError(
            f"pattern {pattern!r} nests an unbounded repeat inside another (like (a+)+), which can take "
            "exponential time; rewrite it without the nesting"
        )
    return rx


def _translate_glob(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(ch))
                i += 1
                continue
            body = pattern[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif ch == "{":
            end, alts = _brace(pattern, i)
            if end < 0:
                out.append(re.escape(ch))
                i += 1
                continue
            out.append("(?:" + "|".join(_translate_glob(a) for a in alts) + ")")
            i = end + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return "".join(out)


def _brace(pattern: str, start: int) -> tuple[int, list[str]]:
    """The closing brace of the group opened at `start` and its top-level alternatives; (-1, []) if unclosed."""
    depth, alts, last = 0, [], start + 1
    for j in range(start, len(pattern)):
        if pattern[j] == "{":
            depth += 1
        elif pattern[j] == "}":
            depth -= 1
            if depth == 0:
                alts.append(pattern[last:j])
                return j, alts
        elif pattern[j] == "," and depth == 1:
            alts.append(pattern[last:j])
            last = j + 1
    return -1, []


def compile_glob(pattern: object, *, name: str = "glob") -> re.Pattern[str]:
    """A glob as an anchored regex over "/"-separated paths, or a SearchError."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise SearchError(f"{name} must be a non-empty string such as '**/*.py'")
    if len(pattern) > 500 or "\x00" in pattern or "\\" in pattern:
        raise SearchError(f"{name} must be under 500 characters, without NUL or backslashes")
    if pattern.startswith("/") or ".." in pattern.split("/"):
        raise SearchError(f"{name} must be relative to the repository (no leading '/', no '..')")
    return re.compile(_translate_glob(pattern.removeprefix("./")), re.DOTALL)


# ----------------------------------------------------------------------------------------------- scoping


def _scope(view: RepoView, path: str | None, files: list[str], *, dirs_only: bool) -> tuple[str, list[str]]:
    """The prefix the paths are relative to and the files under `path` (a directory, or for grep a file)."""
    if path in (None, "", "."):
        return "", files
    assert path is not None
    if not dirs_only and path in files:
        return "", [path]
    prefix = path.rstrip("/") + "/"
    under = [f for f in files if f.startswith(prefix)]
    if not under and not any(p.startswith(prefix) for p in view.paths()):
        if not dirs_only and path in view.paths():
            return "", [path]
        kind = "directory" if dirs_only else "file or directory"
        raise SearchError(f"no {kind} {path!r} in the repository; use glob to find paths")
    return prefix, under


def _file_filter(pattern: str | None, prefix: str) -> Callable[[str], bool]:
    if pattern is None:
        return lambda p: True
    rx = compile_glob(pattern)
    if "/" not in pattern:
        return lambda p: rx.fullmatch(p.rsplit("/", 1)[-1]) is not None
    return lambda p: rx.fullmatch(p[len(prefix) :]) is not None


# ----------------------------------------------------------------------------------------------- grep


def _text(view: RepoView, path: str) -> str | None:
    """The file's text for grep, None for one grep skips (binary, symlink, absent)."""
    read_bytes = getattr(view, "read_bytes", None)
    if callable(read_bytes):
        size = getattr(view, "size", lambda _p: None)(path)
        if size is not None and size > MAX_READ_BYTES:
            return None  # listed, not searched (as read_file does not read it whole)
        data = read_bytes(path, MAX_READ_BYTES + 1)
        if data is None or len(data) > MAX_READ_BYTES or is_binary(data):
            return None
        return data.decode("utf-8", "replace")
    if view.is_symlink(path):
        return None
    text = view.read(path)
    if text is None or "\x00" in text[:8192]:
        return None
    return text


def _lines(text: str) -> list[str]:
    """The file's lines as git and ripgrep count them: split on "\n" only (str.splitlines also splits on form
    feeds and lone carriage returns, which would shift the line numbers off the diff's)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _clip(text: str) -> str:
    """The text with every line cut to MAX_LINE_SEARCHED characters (what the pattern may see of a line)."""
    if len(text) <= MAX_LINE_SEARCHED:
        return text
    lines = text.split("\n")
    if max(map(len, lines)) <= MAX_LINE_SEARCHED:
        return text
    return "\n".join(line[:MAX_LINE_SEARCHED] for line in lines)


def _matching_lines(rx: re.Pattern[str], lines: list[str], only: list[int] | None = None) -> list[int]:
    """The 0-based lines the pattern matches, among `only` (ascending) when given, else all of them."""
    numbers = range(len(lines)) if only is None else [n for n in only if n < len(lines)]
    return [n for n in numbers if rx.search(lines[n][:MAX_LINE_SEARCHED])]


def _literal_lines(text: str, literal: str) -> list[int]:
    """The 0-based lines of `text` (split on "\n") that hold `literal`, found with str.find and str.count (C).

    Every line-by-line match of a pattern holds its required literal, so in content and count modes only these
    lines are searched: a search per line in Python over every line of a matching file made those modes 5-6x
    git grep's time (make bench, `repository`)."""
    out: list[int] = []
    line = pos = 0
    at = text.find(literal)
    while at >= 0:
        line += text.count("\n", pos, at)
        out.append(line)
        end = text.find("\n", at)
        if end < 0:
            break
        line, pos = line + 1, end + 1
        at = text.find(literal, pos)
    return out


def _groups(hits: list[int], total: int, before: int, after: int) -> list[tuple[int, int]]:
    """0-based inclusive line ranges around the hits, merged where they overlap or touch (ripgrep's grouping)."""
    out: list[tuple[int, int]] = []
    for n in hits:
        lo, hi = max(0, n - before), min(total - 1, n + after)
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _show(line: str) -> str:
    return line if len(line) <= MAX_LINE_SHOWN else line[:MAX_LINE_SHOWN] + " [...]"


def _content_rows(path: str, lines: list[str], hits: list[int], before: int, after: int) -> list[str]:
    marked = set(hits)
    rows: list[str] = []
    for lo, hi in _groups(hits, len(lines), before, after):
        if rows and (before or after):
            rows.append("--")
        for n in range(lo, hi + 1):
            sep = ":" if n in marked else "-"
            rows.append(f"{path}{sep}{n + 1}{sep}{_show(lines[n])}")
    return rows


def _int_arg(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise SearchError(f"{name} must be an integer >= {lo}")
    return min(value, hi)


@dataclass
class _Scan:
    files: list[str]
    rows: list[str]
    matches: int = 0
    hit_files: int = 0
    scanned: int = 0
    scanned_bytes: int = 0
    stopped: str | None = None
    literal: str | None = None
    folded: str | None = None  # folded_literal: the prefilter of a case-insensitive pattern over ASCII texts


def grep(
    view: RepoView,
    pattern: str,
    *,
    path: str | None = None,
    glob: str | None = None,
    output_mode: str = "files_with_matches",
    ignore_case: bool = False,
    before: int = 0,
    after: int = 0,
    context: int = 0,
    head_limit: int | None = None,
    max_chars: int = 20_000,
    clock: Callable[[], float] = time.monotonic,
) -> GrepResult:
    """Search the view's searchable files for `pattern`, line by line; bounded, with notes saying how to narrow."""
    if output_mode not in OUTPUT_MODES:
        raise SearchError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}")
    rx = compile_pattern(pattern, ignore_case=bool(ignore_case))
    ctx = _int_arg("-C", context or 0, 0, MAX_CONTEXT)
    before = _int_arg("-B", before, 0, MAX_CONTEXT) if before else ctx
    after = _int_arg("-A", after, 0, MAX_CONTEXT) if after else ctx
    if output_mode != "content":
        before = after = 0
    limit = DEFAULT_ROWS[output_mode]
    if head_limit is not None:
        limit = _int_arg("head_limit", head_limit, 1, MAX_HEAD_LIMIT)
    prefix, files = _scope(view, path, view.searchable(), dirs_only=False)
    if path and files == [path] and path not in view.searchable() and not view.is_symlink(path):
        view.read(path)  # the fallback view covers an explicitly named file once it has read it
    keep = _file_filter(glob, prefix)
    no_prefilter = _NOT_LINEWISE.search(pattern) is not None
    literal = required_literal(pattern, rx.flags)
    scan = _Scan(
        files=[f for f in files if keep(f)],
        rows=[],
        literal=literal,
        folded=folded_literal(pattern, rx.flags),
    )
    started = clock()
    for f in scan.files:
        if scan.matches >= MAX_MATCHING_LINES:
            scan.stopped = f"stopped after {MAX_MATCHING_LINES:,} matching lines"
            break
        if scan.scanned_bytes > MAX_SCAN_BYTES or clock() - started > MAX_SECONDS:
            scan.stopped = (
                f"stopped after scanning {scan.scanned:,} of {len(scan.files):,} files (search budget)"
            )
            break
        _grep_file(view, rx, f, scan, output_mode, before, after, no_prefilter)
    return _result(view, scan, output_mode, limit, head_limit is not None, max_chars)


def _grep_file(
    view: RepoView,
    rx: re.Pattern[str],
    path: str,
    scan: _Scan,
    mode: str,
    before: int,
    after: int,
    no_prefilter: bool,
) -> None:
    text = _text(view, path)
    scan.scanned += 1
    if text is None:
        return
    scan.scanned_bytes += len(text)
    if scan.literal is not None and scan.literal not in text:
        return
    lowered = text.lower() if scan.folded is not None and text.isascii() else None
    if lowered is not None and scan.folded not in lowered:
        return
    if not no_prefilter and rx.search(_clip(text)) is None:
        return
    if mode == "files_with_matches" and not no_prefilter:
        scan.matches += 1
        scan.hit_files += 1
        scan.rows.append(path)
        return
    lines = _lines(text)
    if scan.literal is not None:
        hits = _matching_lines(rx, lines, _literal_lines(text, scan.literal))
    elif lowered is not None and scan.folded is not None:  # ASCII: lower() keeps every offset
        hits = _matching_lines(rx, lines, _literal_lines(lowered, scan.folded))
    else:
        hits = _matching_lines(rx, lines)
    if not hits:
        return
    scan.hit_files += 1
    if mode == "files_with_matches":
        scan.matches += 1
        scan.rows.append(path)
    elif mode == "count":
        scan.matches += len(hits)
        scan.rows.append(f"{path}:{len(hits)}")
    else:
        scan.matches += len(hits)
        if scan.rows and (before or after):
            scan.rows.append("--")  # ripgrep separates context groups, across files too; bare matches not
        scan.rows.extend(_content_rows(path, lines, hits, before, after))


def _result(view: RepoView, scan: _Scan, mode: str, limit: int, asked: bool, max_chars: int) -> GrepResult:
    rows = scan.rows[:limit]
    size, shown = 0, 0
    for row in rows:
        if size + len(row) + 1 > max_chars:
            break
        size += len(row) + 1
        shown += 1
    rows = rows[:shown]
    while rows and rows[-1] == "--":
        rows.pop()
    cut = shown < len(scan.rows)
    notes: list[str] = []
    if cut:
        unit = {"content": "lines", "files_with_matches": "files", "count": "files"}[mode]
        why = f"head_limit={limit}" if asked and shown == limit else f"the {max_chars:,}-character cap"
        notes.append(
            f"showing the first {shown:,} of {len(scan.rows):,} {unit} ({why}); narrow with path, glob or a more "
            "specific pattern, or use output_mode=files_with_matches / count first"
        )
    if scan.stopped:
        notes.append(scan.stopped + "; narrow with path or glob")
    return GrepResult(
        mode=mode,
        body="\n".join(rows) if rows else "(no matches)",
        matches=scan.matches,
        files=scan.hit_files,
        truncated="; ".join(notes) or None,
        coverage=view.coverage_note(),
    )


# ----------------------------------------------------------------------------------------------- glob


def glob(view: RepoView, pattern: str, *, path: str | None = None) -> GlobResult:
    """The view's paths matching `pattern` relative to `path` (a directory), sorted, at most 200."""
    rx = compile_glob(pattern, name="pattern")
    prefix, under = _scope(view, path, view.paths(), dirs_only=True)
    found = [p for p in under if rx.fullmatch(p[len(prefix) :])]
    shown = found[:MAX_GLOB_RESULTS]
    note = None
    if len(found) > len(shown):
        note = (
            f"showing the first {len(shown)} of {len(found):,} paths; narrow the pattern or give a path "
            "(a directory)"
        )
    return GlobResult(
        body="\n".join(shown) if shown else "(no matches)",
        matches=len(found),
        truncated=note,
        coverage=view.coverage_note(),
    )
