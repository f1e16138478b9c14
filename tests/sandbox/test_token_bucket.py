"""EC2's request throttling in the sandbox (sandbox/aws/token_bucket.py): a token bucket per
action, per account and Region, sized by AWS's published categories."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config

from sandbox.aws.token_bucket import TokenBuckets, category
from tests.sandbox.conftest import code_of, no_retry_client


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _take(buckets: TokenBuckets, action: str, n: int, params: dict | None = None, region: str = "us-east-1") -> int:
    return sum(buckets.take("ec2", action, "123456789012", region, params or {}, "AKID") for _ in range(n))


def test_actions_fall_into_aws_categories():
    assert category("DescribeImages") == "non-mutating"
    assert category("DescribeInstances", {}) == "unfiltered-unpaginated"
    assert category("DescribeInstances", {"MaxResults": ["1000"]}) == "non-mutating"
    assert category("DescribeInstances", {"Filter.1.Name": ["image-id"]}) == "non-mutating"
    assert category("DescribeInstances", {"InstanceId.1": ["i-1"]}) == "non-mutating"
    assert category("EnableImageDeprecation") == "mutating"
    assert category("CreateKeyPair") == "resource-intensive"
    assert category("CreateTags") == "uncategorized"
    buckets = TokenBuckets()
    assert buckets.limits("CreateTags")[1:] == (100, 10)
    assert buckets.limits("DeregisterImage")[1:] == (100, 5)
    assert buckets.limits("RunInstances")[1:] == (5, 2)
    assert buckets.limits("DescribeImages")[1:] == (100, 20)
    assert buckets.limits("DescribeSnapshots", {})[1:] == (50, 10)


def test_a_bucket_empties_refills_at_its_rate_and_never_above_its_size():
    clock = Clock()
    buckets = TokenBuckets(clock=clock)
    buckets.configure()
    assert _take(buckets, "DescribeImages", 150) == 100  # bucket size 100
    assert buckets.throttled["ec2:DescribeImages"] == 50
    clock.now += 1.0  # 20 tokens a second
    assert _take(buckets, "DescribeImages", 30) == 20
    clock.now += 3600  # refills to its size, no more
    assert _take(buckets, "DescribeImages", 150) == 100
    # a throttled request spends nothing: half a second later, 10 tokens, not fewer
    clock.now += 0.5
    assert _take(buckets, "DescribeImages", 15) == 10


def test_each_action_region_and_category_has_its_own_bucket():
    clock = Clock()
    buckets = TokenBuckets(clock=clock)
    buckets.configure(scale=0.1)  # 10 / 2 per second for non-mutating
    assert _take(buckets, "DescribeImages", 20) == 10
    assert _take(buckets, "DescribeVpcs", 20) == 10  # another action: its own bucket
    assert _take(buckets, "DescribeImages", 20, region="eu-west-1") == 10  # another Region
    assert _take(buckets, "DescribeInstances", 20) == 5  # unfiltered: the smaller bucket (50 x 0.1)
    assert _take(buckets, "DescribeInstances", 20, {"MaxResults": ["5"]}) == 10  # paged: the standard one


def test_off_by_default_and_refuses_bad_settings():
    buckets = TokenBuckets()
    assert _take(buckets, "RunInstances", 50) == 50
    with pytest.raises(ValueError, match="unknown category"):
        buckets.configure(classes={"slow": [1, 1]})
    with pytest.raises(ValueError, match="size of at least 1"):
        buckets.configure(actions={"DescribeImages": [0, 1]})
    with pytest.raises(ValueError, match="scale"):
        buckets.configure(scale=0)


def test_the_server_answers_request_limit_exceeded_as_aws_does(sandbox):
    sandbox.configure(token_buckets={"actions": {"DescribeImages": [3, 0.01]}})
    ec2 = no_retry_client(sandbox, "ec2")
    for _ in range(3):
        ec2.describe_images(Owners=["self"])
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as err:
        ec2.describe_images(Owners=["self"])
    assert err.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    ec2.describe_vpcs()  # another action's bucket is full
    other_region = boto3.client(
        "ec2",
        endpoint_url=sandbox.endpoint_url,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )
    other_region.describe_images(Owners=["self"])  # another Region's bucket is full
    state = sandbox.token_buckets.as_dict()
    assert state["throttled"] == {"ec2:DescribeImages": 1}
    assert state["throttled_by_caller"] == {"testing": {"ec2:DescribeImages": 1}}
    assert code_of(lambda: ec2.describe_images(Owners=["self"])) == "RequestLimitExceeded"


def test_botocore_standard_retries_ride_out_a_refilling_bucket(sandbox):
    sandbox.configure(token_buckets={"actions": {"DescribeImages": [2, 5]}})
    ec2 = boto3.client(
        "ec2",
        endpoint_url=sandbox.endpoint_url,
        region_name=sandbox.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 10}),
    )
    for _ in range(6):
        ec2.describe_images(Owners=["self"])
    state = sandbox.token_buckets.as_dict()
    assert state["allowed"]["ec2:DescribeImages"] == 6
    assert state["throttled"].get("ec2:DescribeImages", 0) >= 1  # pushed back, then served


def test_the_control_surface_turns_it_on_and_off_and_a_reset_clears_it(sandbox):
    def control(method: str, payload: object | None = None) -> tuple[int, dict]:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(f"{sandbox.endpoint_url}/_sandbox/throttling", data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, state = control("POST", {"enabled": True, "actions": {"DescribeVpcs": [1, 0.01]}})
    assert status == 200 and state["enabled"] and state["actions"] == {"DescribeVpcs": [1.0, 0.01]}
    ec2 = no_retry_client(sandbox, "ec2")
    ec2.describe_vpcs()
    assert code_of(ec2.describe_vpcs) == "RequestLimitExceeded"
    status, body = control("POST", {"enabled": True, "classes": {"slow": [1, 1]}})
    assert status == 400 and "unknown category" in body["error"]
    status, state = control("DELETE")
    assert status == 200 and not state["enabled"]
    ec2.describe_vpcs()
    sandbox.configure(token_buckets={"actions": {"DescribeVpcs": [1, 0.01]}})
    sandbox.reset()
    assert not sandbox.token_buckets.enabled
    ec2.describe_vpcs()
    ec2.describe_vpcs()
