"""Every event the layer emits by name is one events.Emitter knows: an unknown name raises ValueError at run time,
in the middle of a run (that is how 'retrying', 'continuation', 'circuit' ... failed runs before they were added)."""

from __future__ import annotations

import re
from pathlib import Path

import prfleet
from prfleet.observability import events

LAYER = Path(prfleet.__file__).resolve().parent  # the whole layer, every concern package
OUTCOMES = {"succeeded", "partial", "failed"}  # emit(status) aliases, logged as `complete`


def test_every_emitted_event_name_is_known() -> None:
    used: dict[str, str] = {}
    for path in sorted(LAYER.rglob("*.py")):
        for name in re.findall(r'emit\(\s*"([a-z_]+)"', path.read_text()):
            used.setdefault(name, path.name)
    assert used, "no emit() calls found: the pattern no longer matches the layer's code"
    unknown = {name: where for name, where in used.items() if name not in events.EVENTS | OUTCOMES}
    assert unknown == {}
