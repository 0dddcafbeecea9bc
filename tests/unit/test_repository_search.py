"""grep and glob over the repository as the model calls them: Claude Code's modes and globs, ripgrep's line
format, bounded output with a note saying how to narrow, and clear errors for a bad pattern."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from prfleet.repository import search
from prfleet.repository.view import DirectoryView


def _write(root: Path, files: dict[str, str | bytes]) -> DirectoryView:
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body)
    return DirectoryView(root)


@pytest.fixture
def view(tmp_path: Path) -> DirectoryView:
    body = "\n".join(
        ["import os", "", "def parse(x):", "    return x", "", "", "", "def other():", "    parse(1)"]
    )
    _write(
        tmp_path,
        {
            "src/app.py": body + "\n",
            "src/util/helpers.py": "from app import parse\nparse(2)\n",
            "tests/test_app.py": "from app import parse\n\ndef test_parse():\n    assert parse(3) == 3\n",
            "README.md": "Call parse() to parse.\n",
            "logo.png": b"\x89PNG\x00parse\x00",
        },
    )
    os.symlink(tmp_path / "src" / "app.py", tmp_path / "alias.py")
    return DirectoryView(tmp_path)


def test_files_with_matches_is_the_default_sorted_and_skips_binaries_and_links(view: DirectoryView) -> None:
    found = search.grep(view, r"parse\(")
    assert found.mode == "files_with_matches"
    assert found.body.split("\n") == ["README.md", "src/app.py", "src/util/helpers.py", "tests/test_app.py"]
    assert (found.matches, found.files, found.truncated, found.coverage) == (4, 4, None, None)


def test_content_mode_prints_ripgrep_lines_with_context_and_separators(view: DirectoryView) -> None:
    found = search.grep(view, r"parse\(", path="src/app.py", output_mode="content", context=1)
    assert found.body == "\n".join(
        [
            "src/app.py-2-",
            "src/app.py:3:def parse(x):",
            "src/app.py-4-    return x",
            "--",
            "src/app.py-8-def other():",
            "src/app.py:9:    parse(1)",
        ]
    )
    assert (found.matches, found.files) == (2, 1)
    # -A / -B each side; without context, matches only and no separators (as ripgrep)
    after = search.grep(view, "^def ", path="src", output_mode="content", after=1)
    assert after.body.split("\n") == [
        "src/app.py:3:def parse(x):",
        "src/app.py-4-    return x",
        "--",
        "src/app.py:8:def other():",
        "src/app.py-9-    parse(1)",
    ]
    bare = search.grep(view, "parse", glob="*.py", output_mode="content")
    assert "--" not in bare.body.split("\n") and "tests/test_app.py:4:    assert parse(3) == 3" in bare.body


def test_count_mode_and_case_insensitivity(view: DirectoryView) -> None:
    assert search.grep(view, "PARSE", output_mode="count").body == "(no matches)"
    found = search.grep(view, "PARSE", output_mode="count", ignore_case=True, glob="*.py")
    assert found.body.split("\n") == ["src/app.py:2", "src/util/helpers.py:2", "tests/test_app.py:3"]
    assert found.matches == 7


def test_glob_filter_without_a_slash_matches_names_at_any_depth_with_one_the_path(
    view: DirectoryView,
) -> None:
    assert search.grep(view, "parse", glob="*.py").body.split("\n") == [
        "src/app.py",
        "src/util/helpers.py",
        "tests/test_app.py",
    ]
    assert search.grep(view, "parse", glob="src/**/*.py").body.split("\n") == [
        "src/app.py",
        "src/util/helpers.py",
    ]
    assert search.grep(view, "parse", path="src", glob="util/*.py").body == "src/util/helpers.py"


def test_output_is_capped_with_a_note_that_says_how_to_narrow(tmp_path: Path) -> None:
    v = _write(tmp_path, {f"m{i:03}.py": "hit\n" * 5 for i in range(100)})
    found = search.grep(v, "hit", output_mode="content", head_limit=7)
    assert found.body.split("\n") == [f"m000.py:{n}:hit" for n in range(1, 6)] + [
        "m001.py:1:hit",
        "m001.py:2:hit",
    ]
    assert found.matches == 500 and found.files == 100
    assert found.truncated and "showing the first 7 of 500 lines (head_limit=7)" in found.truncated
    assert "narrow with path, glob" in found.truncated
    capped = search.grep(v, "hit", output_mode="content", max_chars=200)
    assert len(capped.body) <= 200 and "200-character cap" in (capped.truncated or "")


def test_a_bad_pattern_is_a_clear_error_and_a_catastrophic_one_is_refused(view: DirectoryView) -> None:
    with pytest.raises(search.SearchError, match=r"invalid regular expression 'parse\(': missing \)"):
        search.grep(view, "parse(")
    with pytest.raises(search.SearchError, match="nests an unbounded repeat"):
        search.grep(view, "(a+)+$")
    with pytest.raises(search.SearchError, match="output_mode must be one of"):
        search.grep(view, "x", output_mode="lines")
    with pytest.raises(search.SearchError, match="-C must be an integer"):
        search.grep(view, "x", output_mode="content", context=-1)
    with pytest.raises(search.SearchError, match="no file or directory 'nope'"):
        search.grep(view, "x", path="nope")
    assert search.grep(view, "(?:ab)+c|a{2,5}").body == "(no matches)"  # bounded repeats are fine


def test_a_long_line_is_searched_on_its_first_2000_characters(tmp_path: Path) -> None:
    v = _write(tmp_path, {"min.js": "a" * 3000 + "needle\nneedle short\n"})
    found = search.grep(v, "needle", output_mode="content")
    assert found.body == "min.js:2:needle short"


def test_line_numbers_count_newlines_only_as_git_does(tmp_path: Path) -> None:
    v = _write(tmp_path, {"a.py": "x = 1\n\x0c\ndef f():\n    pass\r\nend\n"})
    assert search.grep(v, "^def f", output_mode="content").body == "a.py:3:def f():"
    assert search.grep(v, "^end", output_mode="content").body == "a.py:5:end"


def test_required_literal_prefilter_never_hides_a_match(tmp_path: Path) -> None:
    v = _write(tmp_path, {"a.py": "foo_bar = 1\nxfoo\n", "b.py": "nothing\n"})
    assert search.required_literal(r"\bfoo_bar\b") == "foo_bar"
    assert search.required_literal("a|bc") is None
    assert search.grep(v, r"\w+foo$", output_mode="content").body == "a.py:2:xfoo"
    assert search.grep(v, r"(?<!x)foo", output_mode="content").body == "a.py:1:foo_bar = 1"


def test_case_insensitive_prefilter_finds_every_casing_and_unicode_folds(tmp_path: Path) -> None:
    v = _write(
        tmp_path,
        {
            "ascii.py": "# DePrEcAtEd since 2.0\n",
            "kelvin.py": "# \u212aEEP me\n",  # the Kelvin sign folds with k in re, and lower() maps it to k
            "long_s.py": "# cla\u017f\u017f Foo\n",  # long s folds with s in re, lower() keeps it: not ASCII
            "other.py": "# nothing here\n",
        },
    )
    assert search.folded_literal(r"\bDeprecated\b", search.compile_pattern("x", ignore_case=True).flags) == (
        "deprecated"
    )
    assert search.folded_literal("deprecated", 0) is None  # case-sensitive: the exact literal prefilters
    assert search.grep(v, r"\bdeprecated\b", ignore_case=True).body == "ascii.py"
    assert search.grep(v, "keep", ignore_case=True).body == "kelvin.py"
    assert search.grep(v, "class foo", ignore_case=True, output_mode="count").body == "long_s.py:1"


@pytest.mark.parametrize(
    "pattern",
    [
        *(r"x[^y]*z", r"a\s*b", r"^$", r"^\s+\w", r"\w+$", r"\bfoo\b", "o", r"[^q]{3}", r"\n?b", "b|"),
        *(r"(?:a\n)+", "xz", r"line xz", r"foo\b", r"q b", "FOO", r"Line XZ\b", r"ne\nb"),
    ],
)
@pytest.mark.parametrize("ignore_case", [False, True])
def test_content_and_count_find_exactly_the_lines_a_per_line_search_finds(
    tmp_path: Path, pattern: str, ignore_case: bool
) -> None:
    # Whatever narrows the lines searched (the required literal, exact or lowercased) must leave exactly the lines
    # a per-line search of each line's first 2,000 characters matches (ripgrep's semantics): no more, no fewer.
    text = "x\nxz xz\na\nb a b\n\n  foo bar foo\nfoo\r\nlast line xz" + "q" * 2_100 + " b\nFoo LINE XZ\n"
    v = _write(tmp_path, {"f.txt": text})
    lines = text.split("\n")[:-1]
    flags = re.MULTILINE | (re.IGNORECASE if ignore_case else 0)
    expected = [n + 1 for n, line in enumerate(lines) if re.search(pattern, line[:2_000], flags)]
    found = search.grep(
        v, pattern, output_mode="content", head_limit=2_000, max_chars=100_000, ignore_case=ignore_case
    )
    got = [int(row.split(":")[1]) for row in found.body.split("\n")] if expected else []
    assert (got, found.matches) == (expected, len(expected))
    counted = search.grep(v, pattern, output_mode="count", ignore_case=ignore_case)
    assert counted.body == (f"f.txt:{len(expected)}" if expected else "(no matches)")


def test_glob_follows_claude_codes_semantics(view: DirectoryView) -> None:
    assert search.glob(view, "**/*.py").body.split("\n") == [
        "alias.py",
        "src/app.py",
        "src/util/helpers.py",
        "tests/test_app.py",
    ]
    assert search.glob(view, "*.py").body == "alias.py"  # "*" stays in the directory
    assert search.glob(view, "*.py", path="src").body == "src/app.py"
    assert search.glob(view, "src/**").body.split("\n") == ["src/app.py", "src/util/helpers.py"]
    assert search.glob(view, "**/{app,test_app}.py").matches == 2
    assert search.glob(view, "**/[rR]EADME.?d").body == "README.md"
    assert search.glob(view, "*.rs").body == "(no matches)"
    with pytest.raises(search.SearchError, match="no directory 'nope'"):
        search.glob(view, "*", path="nope")
    with pytest.raises(search.SearchError, match="relative to the repository"):
        search.glob(view, "../*")


def test_glob_is_capped(tmp_path: Path) -> None:
    v = _write(tmp_path, {f"d/f{i:03}.txt": "" for i in range(250)})
    found = search.glob(v, "d/*.txt")
    assert found.matches == 250 and len(found.body.split("\n")) == search.MAX_GLOB_RESULTS
    assert "showing the first 200 of 250 paths" in (found.truncated or "")
