"""jobs.parse_message refuses, with a reason, every job whose fields could never be valid: such a job would fail
far from its cause (a 200 KB path pushed its run item past DynamoDB's 400 KB limit, so its failure could not even
be recorded and its message was lost instead of dead-lettered)."""

from __future__ import annotations

import json

import pytest

from prfleet import jobs

FILE = jobs.FileJob("acme/shop", 7, "a" * 40, "b" * 40, "shop/cart.py", "c" * 40, "review", 1, "d-1")
PR = jobs.PrJob("acme/shop", 7, "a" * 40, "b" * 40, 1, "d-1", "opened", requested_by="octocat")


def body(job: jobs.FileJob | jobs.PrJob, **changes: object) -> str:
    data = json.loads(job.to_message())
    data.update(changes)
    return json.dumps(data)


def refused(text: str) -> str:
    with pytest.raises(jobs.BadMessage) as info:
        jobs.parse_message(text)
    return str(info.value)


def test_real_jobs_round_trip():
    assert jobs.parse_message(FILE.to_message()) == FILE
    assert jobs.parse_message(PR.to_message()) == PR
    added = body(
        FILE, blob_sha="", installation_id=None
    )  # a file with no blob; a delivery with no installation
    assert jobs.parse_message(added).blob_sha == ""
    command = jobs.PrJob(
        "acme/shop", 7, "", "", 1, "d-2", "comment", requested_by="octocat"
    )  # /prfleet review
    assert jobs.parse_message(command.to_message()) == command
    assert "head_sha must be a non-empty string" in refused(
        body(FILE, head_sha="")
    )  # a file job has its head


def test_a_path_longer_than_any_checkout_allows_is_refused_at_parse_time():
    assert "path is 5002 bytes" in refused(body(FILE, path="p/" + "x" * 5_000))
    assert "more than any job" in refused(body(FILE, path="p/" + "x" * 200_000))  # the fuzz test's one
    longest = "d/" * 1000 + "x" * (jobs.MAX_PATH_BYTES - 2000)
    assert jobs.parse_message(body(FILE, path=longest)).path == longest
    assert "path is 4096 bytes" in refused(body(FILE, path=longest + "y"))
    assert "path is 4096 bytes" in refused(body(FILE, path="é" * 2048))  # counted in UTF-8 bytes
    assert "NUL" in refused(body(FILE, path="a\x00b"))


@pytest.mark.parametrize(
    ("job", "field", "value", "said"),
    [
        (FILE, "base_sha", 123, "base_sha must be a string, not int"),
        (FILE, "blob_sha", ["c"], "blob_sha must be a string, not list"),
        (FILE, "installation_id", "1", "installation_id must be a positive integer or null"),
        (FILE, "installation_id", True, "installation_id must be a positive integer or null"),
        (FILE, "number", True, "number must be a positive integer"),
        (FILE, "head_sha", "a" * 65, "head_sha is 65 characters"),
        (FILE, "repo", "shop", "repo must be owner/name"),
        (FILE, "repo", "o/" + "r" * 200, "repo is 202 characters"),
        (FILE, "attempt", 1.5, "attempt must be a non-negative integer"),
        (PR, "action", None, "action must be a string, not NoneType"),
        (PR, "action", "", "action must be a non-empty string"),
        (PR, "base_sha", {"sha": "b"}, "base_sha must be a string, not dict"),
        (PR, "requested_by", 5, "requested_by must be a login or null"),
    ],
)
def test_a_field_of_the_wrong_type_or_size_is_refused_naming_it(job, field, value, said):
    assert said in refused(body(job, **{field: value}))


def test_a_body_nested_too_deep_for_json_is_a_bad_message():
    assert "not JSON" in refused("[" * 30_000)


def test_a_body_longer_than_any_job_is_refused_whatever_it_carries():
    assert "more than any job" in refused(body(PR, path="p/" + "x" * 200_000))  # an unknown 200 KB field
    widest = body(FILE, path="\U0001f600" * (jobs.MAX_PATH_BYTES // 4), repo="o" * 39 + "/" + "r" * 100)
    assert len(widest) < jobs.MAX_BODY_CHARS and jobs.parse_message(widest).repo.startswith("o")
