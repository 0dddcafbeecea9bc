"""Cold-start hygiene: the webhook never imports the anthropic SDK (checked in a fresh interpreter, as Lambda's
init phase would import functions/webhook/app.py)."""

from __future__ import annotations

import pytest

from prfleet_local.bench import imports as bench_imports


def test_webhook_module_does_not_import_the_anthropic_sdk():
    result = bench_imports.probe(bench_imports.app_path("webhook"))
    assert result["heavy"]["anthropic"] is False
    assert result["heavy"]["httpx2"] is False  # the SDK's HTTP stack stays out too
    assert result["ms"] > 0 and result["modules"] > 0


def test_the_probe_sees_an_sdk_a_module_pulls_in(tmp_path):
    """The check above can fail: a module that (cheaply) registers `anthropic` is reported as importing it."""
    app = tmp_path / "app.py"
    app.write_text(
        "import sys, types\n"
        "sys.modules['anthropic'] = types.ModuleType('anthropic')\n"
        "def lambda_handler(event, context):\n    return {}\n"
    )
    assert bench_imports.probe(str(app))["heavy"]["anthropic"] is True


def test_a_module_that_fails_to_import_is_an_error_not_a_fast_time(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("import prfleet_does_not_exist\n")
    with pytest.raises(RuntimeError, match="prfleet_does_not_exist"):
        bench_imports.probe(str(app))
