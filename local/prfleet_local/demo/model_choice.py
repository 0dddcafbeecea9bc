"""Which Messages API the local stack calls: the offline model (the default, always), the real Claude API only
when asked with --real, or any Messages-API server the user names with --model-url; and the offline model's pace
(--pace: at once, or a real model's time to first token and output speed, prfleet_local.model.pace).

An exported ANTHROPIC_API_KEY alone never turns a local run into paid calls: spending money is opt-in.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Literal

from prfleet_local.cli.errors import CliError
from prfleet_local.model.pace import PACES

PLACEHOLDER_KEY = "placeholder-key-for-model-url"


@dataclass(frozen=True)
class ModelChoice:
    kind: Literal["offline", "real", "url"] = "offline"
    url: str | None = None
    api_key: str | None = None
    pace: str = "instant"  # the offline model's (prfleet_local.model.pace.PACES)

    def describe(self, offline_url: str | None = None) -> str:
        """One line for the output: what is called, and whether it costs money."""
        if self.kind == "real":
            return "the real Claude API (api.anthropic.com): every run is billed to your ANTHROPIC_API_KEY"
        if self.kind == "url":
            keyed = "ANTHROPIC_API_KEY" if self.api_key != PLACEHOLDER_KEY else "a placeholder key"
            return f"the Messages-API server at {self.url} (--model-url, with {keyed}); prfleet runs no model"
        where = f" at {offline_url}" if offline_url else ""
        paced = ", at a real model's pace" if self.pace == "realistic" else ""
        return f"the offline model{where} (no API key, no network, no cost{paced})"


def choose_model(*, real: bool = False, model_url: str | None = None, pace: str = "instant") -> ModelChoice:
    """The model a command's --real / --model-url / --pace options select; a CliError for what cannot work."""
    key = os.environ.get("ANTHROPIC_API_KEY") or None
    if real and model_url:
        raise CliError("give --real or --model-url, not both")
    if pace not in PACES:
        raise CliError(f"--pace must be one of {', '.join(PACES)}, got {pace!r}")
    if pace != "instant" and (real or model_url):
        raise CliError("--pace sets the offline model's pace; a real or --model-url server keeps its own")
    if real:
        if not key:
            raise CliError("--real calls the Claude API and needs ANTHROPIC_API_KEY (it will spend money)")
        return ModelChoice("real", None, key)
    if model_url:
        parts = urllib.parse.urlsplit(model_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(
                f"--model-url must be an http(s) URL such as http://127.0.0.1:4000, got {model_url!r}"
            )
        return ModelChoice("url", model_url.rstrip("/"), key or PLACEHOLDER_KEY)
    return ModelChoice("offline", pace=pace)
