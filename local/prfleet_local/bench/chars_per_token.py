"""Characters per token of real source files, measured with a real Anthropic tokenizer (issue 10).

No current Claude tokenizer is available offline. The closest real one is the tokenizer the `anthropic` Python SDK
shipped as `anthropic/tokenizer.json` for `client.count_tokens` (releases 0.2x-0.3x, removed later; the Claude
2-era vocabulary): it loads with the Hugging Face `tokenizers` package. Neither is a prfleet dependency, so the
measurement runs in a throw-away environment:

    python3 -m venv /tmp/tok/venv && /tmp/tok/venv/bin/pip install tokenizers
    /work/.../.venv/bin/pip download anthropic==0.30.0 --no-deps -d /tmp/tok
    (cd /tmp/tok && unzip -o anthropic-0.30.0-py3-none-any.whl anthropic/tokenizer.json)
    /tmp/tok/venv/bin/python local/prfleet_local/bench/chars_per_token.py \
        --tokenizer /tmp/tok/anthropic/tokenizer.json /usr /root/.rustup /work/wt/b/.venv/lib

It walks the given roots for files of each language, tokenizes up to --max-files files per language (1 KB to
200 KB, valid UTF-8, sorted by path so the sample is reproducible), and prints per language the characters per
token over all sampled text, the 1st percentile and minimum per file, and the largest ratio of tokens to
prfleet's reservation bound (`prfleet.budget.input_bound`: 2 ASCII characters per token, 1 token per other
character): below 1 the bound holds for every file measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LANGUAGES: dict[str, tuple[str, ...]] = {
    "Python": (".py",),
    "JavaScript": (".js",),
    "C": (".c", ".h"),
    "Go": (".go",),
    "Rust": (".rs",),
    "YAML": (".yaml", ".yml"),
    "Markdown": (".md",),
    "TOML": (".toml",),
    "Shell": (".sh",),
}
SKIP_DIRS = {"/proc", "/sys", "/dev", "/tmp", "/work/.mirror", "/run"}


def _input_bound(text: str) -> int:
    """prfleet.cost.booking.input_bound (imported when the layer is on the path, else the same rule restated)."""
    try:
        from prfleet.cost.booking import input_bound

        return input_bound(text)
    except ImportError:
        ascii_chars = len(text.encode("ascii", "ignore"))
        return -(-ascii_chars // 2) + (len(text) - ascii_chars)


def files(roots: list[str], suffixes: tuple[str, ...]) -> Iterator[Path]:
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) not in SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith(suffixes):
                    yield Path(dirpath, name)


def sample(roots: list[str], suffixes: tuple[str, ...], limit: int) -> list[tuple[Path, str]]:
    """Up to `limit` distinct files of 1-200 KB that decode as UTF-8 (the first found, in path order)."""
    out, seen = [], set()
    for path in files(roots, suffixes):
        try:
            if path.is_symlink() or not 1024 <= path.stat().st_size <= 200_000:
                continue
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text in seen:
            continue
        seen.add(text)
        out.append((path, text))
        if len(out) >= limit:
            break
    return out


def measure(tokenizer_path: str, roots: list[str], limit: int) -> dict[str, dict[str, float | int | str]]:
    from tokenizers import Tokenizer  # not a prfleet dependency: see the module doc

    tok = Tokenizer.from_file(tokenizer_path)
    report: dict[str, dict[str, float | int | str]] = {}
    for language, suffixes in LANGUAGES.items():
        picked = sample(roots, suffixes, limit)
        if not picked:
            continue
        ratios, chars, tokens, worst = [], 0, 0, (0.0, "")
        for path, text in picked:
            n = len(tok.encode(text).ids)
            if not n:
                continue
            ratios.append(len(text) / n)
            chars += len(text)
            tokens += n
            over = n / _input_bound(text)
            if over > worst[0]:
                worst = (over, str(path))
        ratios.sort()
        report[language] = {
            "files": len(ratios),
            "chars": chars,
            "tokens": tokens,
            "chars_per_token": round(chars / tokens, 2),
            "p1_file": round(ratios[max(0, int(0.01 * len(ratios)) - 1)], 2),
            "min_file": round(ratios[0], 2),
            "max_tokens_over_bound": round(worst[0], 3),
            "worst_file": worst[1],
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="path to the old SDK's anthropic/tokenizer.json")
    parser.add_argument("--max-files", type=int, default=400, help="files per language")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("roots", nargs="+")
    args = parser.parse_args(argv)
    report = measure(args.tokenizer, args.roots, args.max_files)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{'language':<11} {'files':>5} {'chars/token':>11} {'p1 file':>7} {'min file':>8} {'max tok/bound':>13}"
    )
    for language, r in report.items():
        print(
            f"{language:<11} {r['files']:>5} {r['chars_per_token']:>11} {r['p1_file']:>7} {r['min_file']:>8} "
            f"{r['max_tokens_over_bound']:>13}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
