"""The offline model's pace: instant by default, else a tier's time to first token plus output tokens at its speed."""

from __future__ import annotations

import json

import pytest

from prfleet_local.cli.errors import CliError
from prfleet_local.demo.model_choice import choose_model
from prfleet_local.model.pace import SPEEDS, Pace, speed_for
from prfleet_local.model.wire import stream_events


def test_instant_is_the_default_and_never_waits():
    pace = Pace()
    assert pace.name == "instant"
    assert pace.seconds("claude-opus-5-5", 10_000) == 0.0
    assert set(pace.stream_gaps("claude-opus-5-5", stream_events(_message()), _usage(900, 300))) == {0.0}


def test_a_whole_response_waits_ttft_plus_output_tokens_at_the_tier_speed():
    pace = Pace("realistic")
    sonnet, haiku, opus = SPEEDS["sonnet"], SPEEDS["haiku"], SPEEDS["opus"]
    assert pace.seconds("claude-sonnet-5-5", 953) == pytest.approx(sonnet.ttft_s + 953 / sonnet.tokens_per_s)
    assert pace.seconds("claude-haiku-5-5", 1500) == pytest.approx(haiku.ttft_s + 1500 / haiku.tokens_per_s)
    assert pace.seconds("claude-opus-5-5", 0) == pytest.approx(opus.ttft_s)
    # the tiers differ as the benchmarks say: Haiku fastest, Opus slowest, for the same output
    assert pace.seconds("claude-haiku-5-5", 2000) < pace.seconds("claude-sonnet-5-5", 2000)
    assert pace.seconds("claude-sonnet-5-5", 2000) < pace.seconds("claude-opus-5-5", 2000)


def test_provider_ids_and_other_families_take_a_tier_and_say_so():
    assert speed_for("us.anthropic.claude-haiku-4-5-20251001-v1:0").tier == "haiku"
    assert speed_for("global.anthropic.claude-opus-4-6-v1").tier == "opus"
    fable = speed_for("claude-fable-5-1")
    assert fable.tier == "opus" and "lower bound" in fable.note
    unknown = speed_for("some-gateway-model")
    assert unknown.tier == "sonnet" and "unknown" in unknown.note


def test_unknown_pace_is_refused():
    with pytest.raises(ValueError, match="unknown pace"):
        Pace("fast")


def test_a_stream_waits_ttft_first_then_spreads_each_blocks_tokens_over_its_deltas():
    """The gaps before the events add up to the same total as a whole response; the thinking block's deltas carry
    the thinking tokens' time, the text and tool_use blocks the visible tokens' in proportion to their size."""
    model, thinking, output = "claude-sonnet-5-5", 900, 1200
    speed = SPEEDS["sonnet"]
    events = stream_events(_message())
    gaps = Pace("realistic").stream_gaps(model, events, _usage(output, thinking))
    names = [_name(e) for e in events]
    assert len(gaps) == len(events)
    assert gaps[0] == pytest.approx(speed.ttft_s) and names[0] == "message_start"
    assert sum(gaps) == pytest.approx(speed.ttft_s + output / speed.tokens_per_s)
    by_block: dict[int, float] = {}
    for event, gap in zip(events, gaps, strict=True):
        data = _data(event)
        if _name(event) == "content_block_delta":
            by_block[data["index"]] = by_block.get(data["index"], 0.0) + gap
        elif gap and _name(event) != "message_start":
            pytest.fail(f"a wait before {_name(event)}")
    assert by_block[0] == pytest.approx(thinking / speed.tokens_per_s)  # the thinking block
    visible = (output - thinking) / speed.tokens_per_s
    assert by_block[1] + by_block[2] == pytest.approx(visible)
    assert by_block[2] > 5 * by_block[1]  # the tool call's JSON is far longer than the short text


def test_a_stream_with_no_content_still_waits_its_output_tokens():
    message = {**_message(), "content": [], "stop_reason": "refusal"}
    events = stream_events(message)
    gaps = Pace("realistic").stream_gaps("claude-haiku-5-5", events, _usage(40, 0))
    speed = SPEEDS["haiku"]
    assert sum(gaps) == pytest.approx(speed.ttft_s + 40 / speed.tokens_per_s)
    assert gaps[[_name(e) for e in events].index("message_delta")] == pytest.approx(40 / speed.tokens_per_s)


def test_the_cli_choice_carries_the_pace_and_refuses_it_for_other_servers():
    assert choose_model().pace == "instant"
    assert choose_model(pace="realistic").pace == "realistic"
    with pytest.raises(CliError, match="offline model's pace"):
        choose_model(model_url="http://127.0.0.1:4000", pace="realistic")
    with pytest.raises(CliError, match="--pace must be one of"):
        choose_model(pace="warp")


def _usage(output: int, thinking: int) -> dict:
    return {
        "input_tokens": 100,
        "output_tokens": output,
        "output_tokens_details": {"thinking_tokens": thinking},
    }


def _message() -> dict:
    return {
        "id": "msg_offline_000001",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5-5",
        "content": [
            {"type": "thinking", "thinking": "Looking at the diff first. " * 12, "signature": "sig"},
            {"type": "text", "text": "I will read the file."},
            {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a/" + "b" * 300}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "stop_details": None,
        "usage": _usage(1200, 900),
    }


def _name(event: bytes) -> str:
    return event.decode().split("\n", 1)[0].removeprefix("event: ")


def _data(event: bytes) -> dict:
    return json.loads(event.decode().split("\n")[1].removeprefix("data: "))


@pytest.mark.parametrize("command", ["demo", "review", "eval", "local serve"])
def test_every_command_that_starts_the_offline_model_takes_pace(command):
    from prfleet_local.cli import build_parser

    positional = {"review": ["."], "eval": ["corpus"]}.get(command, [])
    args = build_parser().parse_args([*command.split(), *positional, "--pace", "realistic"])
    assert args.pace == "realistic"
    assert build_parser().parse_args([*command.split(), *positional]).pace == "instant"


def test_a_pace_for_another_server_is_one_line_on_stderr_and_exit_2(capsys):
    from prfleet_local.cli import main

    assert main(["demo", "--pace", "realistic", "--model-url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pace sets the offline model's pace" in err
