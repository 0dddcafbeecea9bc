"""`prfleet demo --model-url URL`: the whole pipeline against another server that speaks the Messages API."""

from prfleet_local.cli import main
from prfleet_local.demo.model_choice import PLACEHOLDER_KEY
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
    assert f"the Messages-API server at {url} (--model-url, with a placeholder key)" in out
    # Every call of the pipeline went to that server, with the placeholder key, and the seeded bugs were found.
    assert bill and {r.api_key_id for r in bill} == {ModelServer.api_key_id(PLACEHOLDER_KEY)}
    assert sum(r.thinking_tokens for r in bill) > 0
    assert out.count(" found") >= 4 and "demo passed" in out
