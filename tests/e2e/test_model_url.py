"""`prfleet demo --model-url URL`: the whole pipeline against another server that speaks the Messages API."""

import pytest

from prfleet_local.cli import main
from prfleet_local.model.server import ModelServer


def test_demo_runs_against_any_messages_api_server_and_says_so(monkeypatch, capsys):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with ModelServer() as other:  # stands in for a gateway or a recording proxy: not the demo's own server
        url = other.url
        code = main(["demo", "--model-url", url])
        out = capsys.readouterr().out
        bill = other.bill()
    assert code == 0, out
    assert f"the Messages API at {url} (key: a placeholder key)" in out
    assert "offline model (no API key" not in out
    assert bill and {r.api_key_id for r in bill} == {ModelServer.api_key_id("placeholder-key")}
    assert out.count(" found") >= 4 and "demo passed" in out


def test_a_bad_model_url_is_one_line_on_stderr(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--model-url", "ftp://example"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "not an http(s) URL" in err and "Traceback" not in err
