"""Write template.yaml once per model provider, with that provider's parameters as the defaults, so that
cfn-lint and `sam validate --lint` check each deployment the README documents (make validate).

Usage: python .ci/provider_templates.py OUTDIR  -> OUTDIR/template.<provider>.json (one per provider)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prfleet_local.model.providers import local_parameters
from prfleet_local.stack import template as tpl

# What a deployment of each provider sets (docs/deploy.md); the local runs' workspace and profiles are examples.
PROVIDERS = ("anthropic", "claude-platform-aws", "bedrock")


def main(outdir: str) -> int:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for provider in PROVIDERS:
        template = tpl.load()
        values = {**local_parameters(provider)}
        if provider != "anthropic":
            values["ModelRegion"] = "us-west-2"
        for name, value in values.items():
            template["Parameters"][name]["Default"] = value
        tpl.Context(template).check_rules()  # the deploy-time rules hold for these values
        for res in template["Resources"].values():  # paths stay relative to the repository, not OUTDIR
            props = res.get("Properties", {})
            for key in ("CodeUri", "ContentUri"):
                if isinstance(props.get(key), str):
                    props[key] = str(tpl.ROOT / props[key])
        path = out / f"template.{provider}.json"
        path.write_text(json.dumps(template, indent=1))
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "build"))
