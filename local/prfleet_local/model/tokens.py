"""Token counts closer to Claude's tokenizer than characters / 4.

A BPE tokenizer spends one token on a common word with its leading space, more on long or rare identifiers,
one per short run of digits, roughly one per punctuation mark, and one per line break with its indentation.
`count()` imitates that with a regex pre-tokenizer (the same splitting real BPE tokenizers start with):

- a letter run (camelCase and snake_case parts split) costs ceil(len / 5) tokens, at least 1;
- digits cost one token per group of up to 3;
- a line break plus its indentation costs 1 token, other whitespace beyond one space ceil(len / 8);
- each other symbol costs 1 token (a run of the same symbol, ceil(len / 2)); non-ASCII characters 1 each.

The models with the newer tokenizer (Claude Opus 4.7 and later, the 5.x family, Haiku 5.5) count "the same
text as approximately 30% more tokens" (https://platform.claude.com/docs/en/models/haiku-5-5/whats-new-haiku-5-5),
so their count is the base count x 1.3, rounded up. On this repository's own Python sources the base count
comes to about 3.0 characters per token and the newer-tokenizer count to about 2.3 (docs/performance.md has the
command); characters / 4 undercounts both, which made every stand-in cost too low.
"""

from __future__ import annotations

import math
import re

from prfleet_local.model.model_ids import claude_api_model

_PIECE = re.compile(
    r"(?P<word>[A-Za-z]+)|(?P<digits>\d+)|(?P<nl>\r?\n[ \t]*)|(?P<ws>[ \t]+)|(?P<sym>([^\w\s])\6*)|(?P<other>.)",
    re.DOTALL,
)
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
NEW_TOKENIZER_FACTOR = 1.3
_OLD_TOKENIZER = re.compile(
    r"^claude-(sonnet-4|opus-4-[0-6]\b|opus-4$|opus-4-\d{8}|haiku-4|haiku-3|sonnet-3|opus-3|3)"
)


def base_count(text: str) -> int:
    """Tokens of `text` for the older Claude tokenizer (see the module doc for the rules)."""
    n = 0
    for m in _PIECE.finditer(text):
        kind = m.lastgroup
        s = m.group(0)
        if kind == "word":
            n += sum(max(1, math.ceil(len(p) / 5)) for p in _CAMEL.findall(s)) or 1
        elif kind == "digits":
            n += math.ceil(len(s) / 3)
        elif kind == "nl":
            n += 1
        elif kind == "ws":
            n += 0 if len(s) == 1 else math.ceil(len(s) / 8)
        elif kind == "sym":
            n += math.ceil(len(s) / 2)
        else:
            n += 1
    return n


def uses_new_tokenizer(model: str) -> bool:
    """Whether `model` has the newer tokenizer (~30% more tokens for the same text)."""
    return not _OLD_TOKENIZER.match(claude_api_model(model or ""))  # a Bedrock profile: its model's tokenizer


def count(text: str, model: str = "") -> int:
    """Tokens of `text` as `model` would count them (at least 1 for non-empty text)."""
    if not text:
        return 0
    base = base_count(text)
    if uses_new_tokenizer(model):
        base = math.ceil(base * NEW_TOKENIZER_FACTOR)
    return max(1, base)
