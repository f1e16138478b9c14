"""Retention under a throttling storm longer than its whole retry budget (issue 28 item 7):
whichever listing AWS keeps refusing, the run stops in words and acts on nothing — no mark, no
unmark, no deprecation, no deregistration — and the next clean run acts as the policy says.
A throttled listing is never read as an empty (or a partial) one."""

from __future__ import annotations

import pytest

from amirelease.errors import RetentionError
from tests.retention.conftest import latest, make_group, run_retention

# three attempts instead of the deployment's ten: the storm only has to outlast the budget
SHORT_BUDGET = {"retries": {"mode": "standard", "max_attempts": 3}}
WRITES = ("CreateTags", "DeleteTags", "DeregisterImage", "DeleteSnapshot", "EnableImageDeprecation",
          "DisableImageDeprecation", "DisableImage", "EnableImage", "PutObject")  # fmt: skip
DUE_NOW = "demo-web-0.9.4"  # seeded with a mark due yesterday: the first clean run deregisters it


def _writes(sb) -> dict[str, int]:
    return {k: v for k, v in sb.request_counts().items() if k.split(":")[1] in WRITES and not k.startswith("s3:")}


@pytest.mark.parametrize(
    "listing",
    [
        "ec2:DescribeImages",
        "autoscaling:DescribeAutoScalingGroups",
        "ec2:DescribeLaunchTemplateVersions",
        "ec2:DescribeInstances",
    ],
)
def test_a_storm_on_any_listing_stops_the_run_in_words_and_changes_nothing(sandbox, listing):
    image = sandbox.create_image("storm-group-image", age_days=90)
    make_group(sandbox, "storm", image, desired=1)  # a group with an instance: every listing is read
    sandbox.reset_request_counts()
    sandbox.faults.throttle(listing, times=1000)
    with pytest.raises(RetentionError) as failed:
        run_retention(sandbox, botocore_config=SHORT_BUDGET)
    words = str(failed.value)
    name = listing.split(":")[1]
    assert name in words and ("Throttling" in words or "RequestLimitExceeded" in words), words
    assert "nothing was changed" in words and "AWS is throttling this account and region" in words, words
    assert _writes(sandbox) == {}, _writes(sandbox)
    assert sandbox.request_counts().get(listing, 0) >= 3  # it did retry, up to the budget
    assert name in latest(sandbox)["stopped"]  # the report says why too

    # the storm passes: the next run acts as the policy says
    sandbox.faults.clear()
    summary = run_retention(sandbox, botocore_config=SHORT_BUDGET)
    assert summary["counts"]["mark"] == 5 and summary["counts"]["deregister"] == 1, summary["counts"]
    assert image not in {i["image_id"] for i in summary["items"] if i["action"] != "keep"}
