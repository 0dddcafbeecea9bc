"""Text that did not come from prfleet (the repository's files and instructions, the model's paths): wrapped so it
can never pose as instructions, and paths confined to the repository.

Here rather than in `agents.tools` because the repository's instructions and the findings need them too, and the
repository package sits below `agents` (agents.tools re-exports both names).
"""

from __future__ import annotations

import html
import posixpath
import re

_TAG_RE = re.compile(r"<(\s*/?\s*untrusted)", re.IGNORECASE)


def neutralise(text: str) -> str:
    """Defuse anything in untrusted text that looks like one of our block tags (opening or closing)."""
    return _TAG_RE.sub(r"&lt;\1", text)


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def untrusted_block(kind: str, text: str, **attrs: object) -> str:
    """Wrap untrusted text in <untrusted_KIND attr="...">...</untrusted_KIND>, lookalike tags defused."""
    rendered = "".join(f' {k}="{_attr(str(v))}"' for k, v in attrs.items() if v is not None)
    return f"<untrusted_{kind}{rendered}>\n{neutralise(text)}\n</untrusted_{kind}>"


def path_problem(path: object) -> str | None:
    """Why a model-supplied path is not a path inside the repository (None when it is): relative, no "..", no
    NUL or backslash, not the .git directory. The one rule for the tools' paths and the findings' paths."""
    if not isinstance(path, str) or not path.strip():
        return "path must be a non-empty string"
    if "\x00" in path or "\\" in path:
        return "path must not contain NUL or backslashes"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path) or path.startswith("~"):
        return "path must be relative to the repository root"
    if ".." in path.split("/"):
        return "path must not contain '..'"
    norm = posixpath.normpath(path)
    if norm in (".", "") or norm.startswith("../"):
        return "path must name a file inside the repository"
    if norm.startswith(".git/") or norm == ".git":
        return "the .git directory is not part of the repository under review"
    return None
