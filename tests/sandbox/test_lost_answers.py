"""The sandbox notes what should never happen in it (middleware.py): an SDK sending again a call
moto had already answered (the answer was lost on the way, and the retry meets the changed
account), and moto failing instead of answering. The test run writes them to .artifacts."""

from __future__ import annotations

import urllib.request
import uuid


def _describe_vpcs(sb, invocation: str, attempt: int) -> int:
    """One EC2 DescribeVpcs, with the headers botocore and the Go SDK send on each attempt."""
    request = urllib.request.Request(
        sb.endpoint_url + "/",
        data=b"Action=DescribeVpcs&Version=2016-11-15",
        headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261206/us-east-1/ec2/aws4_request, "
            "SignedHeaders=host, Signature=0",
            "amz-sdk-invocation-id": invocation,
            "amz-sdk-request": f"attempt={attempt}; max=3",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return int(answer.status)


def test_a_second_attempt_of_an_answered_call_is_noted(sandbox):
    before = len(sandbox.oddities()["repeats"])
    invocation = str(uuid.uuid4())
    assert _describe_vpcs(sandbox, invocation, 1) == 200
    assert sandbox.oddities()["repeats"][before:] == []  # a first attempt is no repeat
    assert _describe_vpcs(sandbox, invocation, 2) == 200  # as if the first answer had been lost
    [repeat] = sandbox.oddities()["repeats"][before:]
    assert (repeat["call"], repeat["attempt"], repeat["earlier_status"]) == ("ec2:DescribeVpcs", 2, 200), repeat


def test_a_retry_after_a_throttle_the_sandbox_injected_is_not_noted(sandbox):
    before = len(sandbox.oddities()["repeats"])
    sandbox.faults.throttle("ec2:DescribeVpcs", times=2)
    ec2 = sandbox.client("ec2")  # botocore's default retries
    assert ec2.describe_vpcs()["ResponseMetadata"]["RetryAttempts"] == 2  # botocore's third attempt answered
    assert sandbox.oddities()["repeats"][before:] == []
    assert sandbox.oddities()["errors"] == []
