"""The read-only review page of the local GitHub: what a reviewer would see of one PR on github.com, so the review
can be looked at without a token or an API client. `GET /{owner}/{repo}/blob/{sha}/{path}` shows a file with its lines
anchored, where a finding outside the diff links.

`GET /prfleet/` lists the pull requests, `GET /prfleet/pulls/N` shows one: the check run of its head with its
annotations, the summary comment, each review, the diff with every inline comment under the line it is anchored to
(GitHub anchors a review comment to `line` on `side` RIGHT, the head's line number, or LEFT, the base's; a
multi-line comment is shown at its last line, as GitHub does), the cost of each agent run, and the runs'
pre-existing findings that no review carries (held back unless .prfleet.toml sets report_preexisting). Every text from the
reviews is escaped, and the page sends a Content-Security-Policy that allows no script at all.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from prfleet.pipeline.render import fp_marker

PAGE_PREFIX = "/prfleet/pulls/"
_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
_STYLE = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:12px 24px}header a{color:#fff}
main{max-width:1100px;margin:0 auto;padding:16px 24px}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:24px 0 8px}.muted{color:#656d76}
.box{background:#fff;border:1px solid #d0d7de;border-radius:6px;margin:8px 0;overflow:hidden}
.box>.head{background:#f6f8fa;border-bottom:1px solid #d0d7de;padding:8px 12px;font-weight:600}
.body{padding:8px 12px;white-space:pre-wrap;word-wrap:break-word}
.badge{display:inline-block;border-radius:2em;padding:0 10px;font-size:12px;font-weight:600;color:#fff}
.success{background:#1a7f37}.failure{background:#cf222e}.neutral{background:#6e7781}.pending{background:#9a6700}
table{border-collapse:collapse;width:100%}td,th{padding:2px 8px;text-align:left;vertical-align:top}
table.grid td,table.grid th{border-top:1px solid #d0d7de}
table.diff{font:12px/1.5 ui-monospace,SFMono-Regular,Menlo,monospace}
table.diff td.n{width:1%;color:#656d76;text-align:right;user-select:none}
table.diff td.c{white-space:pre-wrap;word-break:break-all}
tr.add td{background:#e6ffec}tr.del td{background:#ffebe9}tr.hunk td{background:#ddf4ff;color:#656d76}
.comment{margin:6px 12px 6px 90px;border:1px solid #d0d7de;border-radius:6px;background:#fff;
font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;white-space:pre-wrap}
.comment .who{background:#f6f8fa;border-bottom:1px solid #d0d7de;padding:4px 10px;font-weight:600}
.comment .text{padding:6px 10px}
.md{white-space:normal}.md p{margin:4px 0}.md pre{background:#f6f8fa;padding:8px;border-radius:6px;overflow:auto}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#eff1f3;padding:1px 4px;border-radius:4px}
table.md{width:auto;margin:6px 0}table.md td,table.md th{border:1px solid #d0d7de;padding:2px 8px}
.comment{white-space:normal}
"""


def page_url(api_url: str, number: int) -> str:
    """The address of PR `number`'s page on the local GitHub at `api_url`."""
    return f"{api_url}{PAGE_PREFIX}{number}"


def _e(value: Any) -> str:
    return html.escape(str(value if value is not None else ""), quote=True)


_INLINE = (
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])_([^_]+)_(?![\w])"), r"<em>\1</em>"),
)


# [label](url) for an http(s) URL of plain URL characters only (no quote, no entity) (a finding outside the diff links to its line), on escaped text: any other
# scheme (javascript:) stays text. The URL is set aside first so the emphasis rules cannot rewrite its underscores.
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[A-Za-z0-9._~:/?#@!$+,;=%-]+)\)")


def _inline(escaped: str) -> str:
    links: list[str] = []

    def keep(m: re.Match[str]) -> str:
        links.append(m.group(2))
        return f"[{m.group(1)}]\x00{len(links) - 1}\x00"

    escaped = _LINK.sub(keep, escaped)
    for pattern, repl in _INLINE:
        escaped = pattern.sub(repl, escaped)
    return re.sub(
        r"\[([^\]]*)\]\x00(\d+)\x00",
        lambda m: f'<a href="{links[int(m.group(2))]}">{m.group(1)}</a>',
        escaped,
    )


def markdown_html(text: str | None) -> str:
    """The part of GitHub Flavored Markdown prfleet writes, as GitHub shows it: HTML comments hidden, headings,
    pipe tables, fenced code, lists, <details>/<summary>, `code`, **bold**, _emphasis_, http(s) links (the lines
    of findings outside the diff). Everything else is escaped
    text, so a finding can never inject markup."""
    text = re.sub(r"<!--.*?-->", "", text or "", flags=re.S)
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        stripped = line.strip()
        if stripped.startswith("```"):
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            out.append(f"<pre><code>{_e(chr(10).join(body))}</code></pre>")
        elif (
            stripped.startswith("|")
            and i + 1 < len(lines)
            and re.match(r"^\|[\s:|-]+\|$", lines[i + 1].strip())
        ):
            head = [c.strip() for c in stripped.strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            i -= 1
            cells = "".join(f"<th>{_inline(_e(c))}</th>" for c in head)
            body_rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(_e(c))}</td>" for c in r) + "</tr>" for r in rows
            )
            out.append(f"<table class='md'><tr>{cells}</tr>{body_rows}</table>")
        elif m := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            level = min(len(m.group(1)) + 2, 6)
            out.append(f"<h{level}>{_inline(_e(m.group(2)))}</h{level}>")
        elif stripped in ("<details>", "</details>"):
            out.append(stripped)
        elif m := re.match(r"^<details><summary>(.*)</summary>$|^<summary>(.*)</summary>$", stripped):
            summary = m.group(1) if m.group(1) is not None else m.group(2)
            prefix = "<details>" if stripped.startswith("<details>") else ""
            out.append(f"{prefix}<summary>{_inline(_e(summary))}</summary>")
        elif m := re.match(r"^[-*]\s+(.*)$", stripped):
            out.append(f"<li>{_inline(_e(m.group(1)))}</li>")
        elif stripped:
            out.append(f"<p>{_inline(_e(stripped))}</p>")
        i += 1
    return "\n".join(out)


def diff_rows(patch: str | None) -> list[tuple[str, int | None, int | None, str]]:
    """(kind, base line, head line, text) per patch line; kind is hunk, ctx, add, del or note."""
    rows: list[tuple[str, int | None, int | None, str]] = []
    old = new = 0
    for raw in (patch or "").split("\n"):
        m = _HUNK.match(raw)
        if m:
            old, new = int(m.group(1)), int(m.group(2))
            rows.append(("hunk", None, None, raw))
        elif raw.startswith("+"):
            rows.append(("add", None, new, raw[1:]))
            new += 1
        elif raw.startswith("-"):
            rows.append(("del", old, None, raw[1:]))
            old += 1
        elif raw.startswith("\\"):
            rows.append(("note", None, None, raw))
        elif rows:
            rows.append(("ctx", old, new, raw[1:] if raw.startswith(" ") else raw))
            old += 1
            new += 1
    return rows


def _comment(c: dict[str, Any]) -> str:
    who = _e(c.get("user", {}).get("login") if isinstance(c.get("user"), dict) else "prfleet")
    return (
        f'<tr><td colspan="3"><div class="comment" data-path="{_e(c.get("path"))}" data-line="{_e(c.get("line"))}">'
        f'<div class="who">{who} commented on line {_e(c.get("line"))}</div>'
        f'<div class="text">{markdown_html(c.get("body"))}</div></div></td></tr>'
    )


def render_diff(files: Iterable[dict[str, Any]], comments: list[dict[str, Any]]) -> str:
    """Each file's patch with its inline comments under the line (and side) they are anchored to."""
    out = []
    for f in files:
        name = f.get("filename", "")
        here = [c for c in comments if c.get("path") == name]
        placed: set[int] = set()
        rows = [
            f'<div class="box file" id="file-{_e(name)}"><div class="head">{_e(name)} '
            f'<span class="muted">{_e(f.get("status"))} +{_e(f.get("additions", 0))} '
            f'-{_e(f.get("deletions", 0))}</span></div><table class="diff">'
        ]
        if not f.get("patch"):
            rows.append(
                '<tr><td class="c muted" colspan="3">no diff shown (binary, too large or renamed only)</td></tr>'
            )
        for kind, old, new, text in diff_rows(f.get("patch")):
            if kind in ("hunk", "note"):
                rows.append(
                    f'<tr class="hunk"><td class="n"></td><td class="n"></td><td class="c">{_e(text)}</td></tr>'
                )
                continue
            sign = {"add": "+", "del": "-", "ctx": " "}[kind]
            rows.append(
                f'<tr class="{kind}"><td class="n">{old or ""}</td><td class="n">{new or ""}</td>'
                f'<td class="c">{_e(sign + text)}</td></tr>'
            )
            for i, c in enumerate(here):
                side = str(c.get("side") or "RIGHT").upper()
                anchor = new if side == "RIGHT" else old
                if (
                    i not in placed
                    and anchor is not None
                    and c.get("line") == anchor
                    and ((side == "RIGHT" and kind != "del") or (side == "LEFT" and kind != "add"))
                ):
                    rows.append(_comment(c))
                    placed.add(i)
        for i, c in enumerate(here):  # GitHub would have refused these; show them rather than hide them
            if i not in placed:
                rows.append(_comment(c))
        rows.append("</table></div>")
        out.append("".join(rows))
    return "\n".join(out)


def _badge(check: dict[str, Any]) -> str:
    value = check.get("conclusion") or check.get("status") or "pending"
    cls = value if value in ("success", "failure", "neutral") else "pending"
    return f'<span class="badge {cls}">{_e(value)}</span>'


def render_checks(checks: list[dict[str, Any]]) -> str:
    parts = []
    for check in checks:
        output = check.get("output") or {}
        notes = check.get("annotations") or output.get("annotations") or []
        rows = "".join(
            f"<tr><td>{_e(a.get('path'))}:{_e(a.get('start_line'))}</td><td>{_e(a.get('annotation_level'))}</td>"
            f"<td>{_e(a.get('title'))}</td><td>{_e(a.get('message'))}</td></tr>"
            for a in notes
        )
        table = (
            f'<table class="grid annotations"><tr><th>where</th><th>level</th><th>title</th><th>message</th></tr>{rows}'
            "</table>"
            if notes
            else ""
        )
        # output.text: the check run's details as GitHub's check page shows them below the summary (the verify
        # pass lists the findings it dropped or merged there, with its reasons)
        details = (
            f'<div class="body md details">{markdown_html(output["text"])}</div>'
            if output.get("text")
            else ""
        )
        parts.append(
            f'<div class="box check"><div class="head">Check run {_e(check.get("name"))} {_badge(check)} '
            f'<span class="muted">{_e(output.get("title"))}</span></div>'
            f'<div class="body md">{markdown_html(output.get("summary"))}</div>{details}{table}</div>'
        )
    return "".join(parts) or '<p class="muted">No check run yet.</p>'


def render_costs(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return '<p class="muted">No agent runs recorded yet.</p>'
    total = sum(int(r.get("cost_micros") or 0) for r in runs)
    rows = "".join(
        f"<tr><td>{_e(r.get('path'))}</td><td>{_e(r.get('agent'))}</td><td>{_e(r.get('model'))}</td>"
        f"<td>{_e(r.get('status'))}</td><td>{_e(r.get('input_tokens', 0))} in / {_e(r.get('output_tokens', 0))} out"
        f"</td><td>${int(r.get('cost_micros') or 0) / 1e6:.6f}</td></tr>"
        for r in runs
    )
    return (
        '<table class="grid costs"><tr><th>file</th><th>agent</th><th>model</th><th>status</th><th>tokens</th>'
        f"<th>cost</th></tr>{rows}<tr><th colspan='5'>total ({len(runs)} runs)</th><th>${total / 1e6:.6f}</th></tr>"
        "</table>"
    )


def render_held_back(runs: list[dict[str, Any]], posted: list[str]) -> str:
    """The runs' pre-existing findings that no review carries (their fingerprint marker is in no posted body):
    held back by the fan-in unless .prfleet.toml sets report_preexisting, and shown here so none is lost."""
    held = []
    for run in runs:
        try:
            items = json.loads(run.get("findings") or "[]")
        except (TypeError, ValueError):
            continue
        for f in items if isinstance(items, list) else []:
            marker = fp_marker(str(f.get("fingerprint") or ""))
            if f.get("relation") == "preexisting" and not any(marker in text for text in posted):
                held.append((run, f))
    if not held:
        return ""
    rows = "".join(
        f"<tr><td>{_e(f.get('path'))}:{_e(f.get('line'))}</td><td>{_e(f.get('severity'))}</td>"
        f"<td>{_e(run.get('agent'))}</td><td>{_e(f.get('title'))}</td></tr>"
        for run, f in held
    )
    return (
        f"<h2>Pre-existing findings not posted ({len(held)})</h2><p class='muted'>Old problems on lines this PR does "
        "not change; kept in the run records, posted only when the base branch's .prfleet.toml sets "
        "report_preexisting = true.</p><table class='grid held'><tr><th>where</th><th>severity</th><th>agent</th>"
        f"<th>title</th></tr>{rows}</table>"
    )


def render_pr(srv: Any, number: int) -> str | None:
    """The whole page of PR `number`, or None if the server has no such PR."""
    pr = srv.prs.get(number)
    if pr is None:
        return None
    head = pr.head_sha
    with srv.lock:
        reviews = [r for r in srv.reviews if r.get("number") == number and r.get("commit_id") == head]
        comments = [c for c in srv.review_comments if c.get("commit_id", head) == head and _of(c, number)]
        issue_comments = [c for c in srv.issue_comments if c.get("issue_number") == number]
        checks = [c for c in srv.check_runs.values() if c.get("head_sha") == head]
    runs_of: Callable[[int, str], list[dict[str, Any]]] | None = getattr(srv, "page_runs", None)
    try:
        runs = runs_of(number, head) if runs_of else []
    except Exception:  # noqa: BLE001 - the page still shows what GitHub holds when the stack is gone
        runs = []
    timeline_of: Callable[[int, str], str] | None = getattr(srv, "page_timeline", None)
    try:
        timeline_html = timeline_of(number, head) if timeline_of else ""
    except Exception:  # noqa: BLE001 - as the costs: the page still shows what GitHub holds
        timeline_html = ""
    review_html = (
        "".join(
            f'<div class="box review"><div class="head">prfleet reviewed ({_e(r.get("event") or r.get("state"))}), '
            f'{len(r.get("comments") or [])} inline comment(s)</div><div class="body md">{markdown_html(r.get("body"))}</div>'
            "</div>"
            for r in reviews
        )
        or '<p class="muted">No review posted for this head yet.</p>'
    )
    summary_html = (
        "".join(
            f'<div class="box summary"><div class="head">Comment</div><div class="body md">{markdown_html(c.get("body"))}'
            "</div></div>"
            for c in issue_comments
        )
        or '<p class="muted">No summary comment yet.</p>'
    )
    body = (
        f"<h1>{_e(pr.title)} <span class='muted'>#{number}</span></h1>"
        f"<p class='muted'>{_e(srv.full_name)}: {_e(pr.head_ref)} into {_e(pr.base_ref)}, head {_e(head[:12])}, "
        f"{_e(pr.state)}. Read-only copy of what prfleet posted to the local GitHub.</p>"
        f"<h2>Checks</h2>{render_checks(checks)}"
        f"<h2>Summary comment</h2>{summary_html}"
        f"<h2>Reviews</h2>{review_html}"
        f"<h2>Files changed</h2>{render_diff(srv.files_of(pr), comments)}"
        f"<h2>Cost of each run</h2>{render_costs(runs)}"
        + render_held_back(
            runs, [r.get("body") or "" for r in reviews] + [c.get("body") or "" for c in comments]
        )
        + (
            f"<h2>Timeline (X-Ray)</h2><div class='box timeline-box'>{timeline_html}</div>"
            if timeline_html
            else ""
        )
    )
    return _document(f"{pr.title} #{number}", srv.full_name, body)


def _of(comment: dict[str, Any], number: int) -> bool:
    n = comment.get("pull_number", comment.get("number"))
    return n is None or n == number


def render_index(srv: Any) -> str:
    items = "".join(
        f"<li><a href='{PAGE_PREFIX}{n}'>#{n} {_e(pr.title)}</a> <span class='muted'>{_e(pr.head_ref)}</span></li>"
        for n, pr in sorted(srv.prs.items())
    )
    return _document(
        "Pull requests", srv.full_name, f"<h1>Pull requests</h1><ul>{items or '<li>none</li>'}</ul>"
    )


def _document(title: str, repo: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)} - {_e(repo)}</title><style>{_STYLE}</style></head><body>"
        f"<header><a href='/prfleet/'>{_e(repo)}</a> <span>local GitHub (prfleet)</span></header>"
        f"<main>{body}</main></body></html>"
    )


def is_blob_page(srv: Any, path: str) -> bool:
    """Whether `path` is github.com's address of a file at a commit, /{owner}/{repo}/blob/{sha}/{path} (a finding
    outside the diff links to its line there: prfleet.pipeline.render.line_link)."""
    return path.startswith(f"/{srv.full_name}/blob/")


def render_blob(srv: Any, path: str) -> str | None:
    """A file at a commit with numbered lines, each anchored `L{n}` as on github.com (the link's #L42 scrolls
    to it); None when the commit or the file is not in the repository (symlinks shown as their target)."""
    ref, _, rel = path[len(f"/{srv.full_name}/blob/") :].partition("/")
    if not rel or srv.repo.resolve(ref) is None:
        return None
    info = srv.repo.ls_tree(ref, rel)
    if info is None or info[1] != "blob":
        return None
    text = srv.repo.git_bytes("cat-file", "blob", info[2]).decode("utf-8", "replace")
    rows = "".join(
        f"<tr id='L{n}'><td class='n'>{n}</td><td class='c'>{_e(line)}</td></tr>"
        for n, line in enumerate(text.splitlines(), 1)
    )
    body = f"<h1>{_e(rel)}</h1><p class='muted'>at {_e(ref[:12])}</p><table class='diff'>{rows}</table>"
    return _document(rel, srv.full_name, body)


def serve_page(handler: Any, path: str) -> None:
    """Answer GET /prfleet/... on the fake GitHub's request handler (HTML, no script allowed)."""
    srv = handler.owner
    status, text = 404, _document("Not found", srv.full_name, "<h1>Not found</h1>")
    if path.rstrip("/") == "/prfleet":
        status, text = 200, render_index(srv)
    elif path.startswith(PAGE_PREFIX) and path[len(PAGE_PREFIX) :].isdigit():
        page = render_pr(srv, int(path[len(PAGE_PREFIX) :]))
        if page is not None:
            status, text = 200, page
    elif is_blob_page(srv, path):
        blob = render_blob(srv, path)
        if blob is not None:
            status, text = 200, blob
    data = text.encode("utf-8")
    handler.send_response(status)
    handler.send_header("Content-Type", "text/html; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Content-Security-Policy", _CSP)
    handler.send_header("X-Content-Type-Options", "nosniff")
    handler.end_headers()
    handler.wfile.write(data)
