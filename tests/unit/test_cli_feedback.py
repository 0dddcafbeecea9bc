"""`prfleet feedback list | forget ID`: one line on stderr and exit 2 for what the user can fix."""

from __future__ import annotations

import argparse
import io

import pytest

from prfleet.store import feedback
from prfleet_local.cli import feedback as feedbackcli
from prfleet_local.cli import main
from prfleet_local.cli.errors import CliError


class Target:
    where = "the local stack (test)"

    def table(self, logical):
        assert logical == "StateTable"
        return "state-table"


def rule(**kw):
    base = dict(
        id="0123456789ab", repo="acme/shop", agent="tests", category="tests", title="no test for `*`",
        path_glob="shop/*.py", who="wendy", when=1_700_000_000, why="covered upstream", source="ignore", pr=7,
        comment_id=901,
    )  # fmt: skip
    return feedback.Suppression(**{**base, **kw})


def test_without_a_stack_the_command_says_which_options_to_give(capsys, monkeypatch):
    monkeypatch.delenv("PRFLEET_STACK", raising=False)
    assert main(["feedback", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prfleet feedback list: which stack?") and "\n" not in err


@pytest.mark.parametrize("bad", ["xyz", "0123456789abc", "../../etc", "ZZZZZZZZZZZZ"])
def test_forget_refuses_what_is_not_an_id_before_reaching_aws(capsys, bad):
    assert main(["feedback", "forget", bad, "--local"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a suppression id" in err and "\n" not in err and "Traceback" not in err


def test_forget_of_an_unknown_id_is_an_error_not_a_silent_no_op(monkeypatch):
    monkeypatch.setattr(feedback, "forget", lambda rid, table: None)
    args = argparse.Namespace(id="0123456789ab")
    with pytest.raises(CliError, match="no suppression 0123456789ab"):
        feedbackcli.feedback_forget(args, out=io.StringIO(), target=Target())


def test_forget_says_what_is_reported_again(monkeypatch):
    monkeypatch.setattr(feedback, "forget", lambda rid, table: rule(id=rid))
    out = io.StringIO()
    assert feedbackcli.feedback_forget(argparse.Namespace(id="0123456789AB"), out=out, target=Target()) == 0
    assert out.getvalue().startswith("forgot 0123456789ab: acme/shop reports tests / tests")


def test_list_shows_each_rule_and_filters_by_repository(monkeypatch):
    monkeypatch.setattr(
        feedback, "all_rules", lambda table: [rule(), rule(id="ba9876543210", repo="acme/api")]
    )
    out = io.StringIO()
    args = argparse.Namespace(repo="acme/shop", json=False)
    assert feedbackcli.feedback_list(args, out=out, target=Target()) == 0
    text = out.getvalue()
    assert "0123456789ab  acme/shop" in text and "ba9876543210" not in text and "covered upstream" in text
    empty = io.StringIO()
    monkeypatch.setattr(feedback, "all_rules", lambda table: [])
    feedbackcli.feedback_list(argparse.Namespace(repo=None, json=False), out=empty, target=Target())
    assert "no suppressions" in empty.getvalue()
