"""Retention shares the account's API budget (retention/pacing.py): its EC2 calls keep to a share
of AWS's per-action token buckets, checked against the sandbox's token-bucket mode."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from amirelease.errors import ConfigError
from amirelease.retention.pacing import SHARED, Pacer, configured_share, pace_retention

NO_RETRY = Config(retries={"total_max_attempts": 1})


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _client(sb, key: str = "testing"):
    return boto3.client(
        "ec2",
        endpoint_url=sb.endpoint_url,
        region_name=sb.region,
        aws_access_key_id=key,
        aws_secret_access_key="testing",
        config=NO_RETRY,
    )


def test_limits_are_a_share_of_aws_buckets_for_shared_calls_and_aws_rate_for_the_rest():
    pacer = Pacer(0.5)
    assert pacer.limits("DescribeImages") == (50, 10)  # AWS: 100 / 20 a second
    assert pacer.limits("CreateTags") == (50, 5)  # AWS: 100 / 10
    # a release's record may deregister a refused AMI: shared too (AWS: DeregisterImage 100 / 5)
    assert pacer.limits("DeregisterImage") == (50, 2.5)
    # only retention makes this: 90 % of AWS's (mutating 50 / 5)
    assert pacer.limits("EnableImageDeprecation") == pytest.approx((45, 4.5))
    with pytest.raises(ValueError, match="share"):
        Pacer(0)


def test_a_burst_then_the_rate_with_reserved_turns():
    t = FakeTime()
    pacer = Pacer(0.5, clock=t.clock, sleep=t.sleep)
    waits = [pacer.acquire("DescribeImages") for _ in range(53)]
    assert waits[:50] == [0.0] * 50
    assert waits[50:] == pytest.approx([0.1, 0.1, 0.1])  # 10 a second, one after the other
    t.now += 60
    assert pacer.acquire("DescribeImages") == 0.0  # refilled
    assert pacer.summary()["calls"] == {"DescribeImages": 54}


def test_shared_covers_every_ec2_call_retention_and_a_release_both_make():
    from amirelease import iam

    roles = iam.actions_by_role()
    release = set(roles["bake"]) | set(roles["deploy"])
    both = {a.split(":", 1)[1] for a in set(roles["retention"]) & release if a.startswith("ec2:")}
    assert both <= SHARED, both - SHARED


def test_the_setting_is_checked_in_words(monkeypatch):
    assert configured_share() == 0.5
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__RETENTION_API_SHARE", "off")
    assert configured_share() is None
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__RETENTION_API_SHARE", "0.25")
    assert configured_share() == 0.25
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__RETENTION_API_SHARE", "2")
    with pytest.raises(ConfigError, match="retention_api_share") as err:
        configured_share()
    assert "at most 1" in str(err.value)


def _contend(sandbox, retention, release, calls: int = 140, threads: int = 4) -> list[str]:
    """Retention's pool (``threads`` workers, ``calls`` DescribeImages in all) beside a release
    asking every 0.2 s; the release's outcomes."""
    import threading
    import time

    image = sandbox.account["aged_images"][0]["image_id"]
    done = threading.Event()
    outcomes: list[str] = []

    def worker() -> None:
        for _ in range(calls // threads):
            try:
                retention.describe_images(ImageIds=[image])
            except ClientError as exc:
                outcomes.append(f"retention {exc.response['Error']['Code']}")

    def release_side() -> None:
        while not done.is_set():
            try:
                release.describe_images(ImageIds=[image])
                outcomes.append("release ok")
            except ClientError as exc:
                outcomes.append(f"release {exc.response['Error']['Code']}")
            time.sleep(0.2)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    watcher = threading.Thread(target=release_side)
    watcher.start()
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    done.set()
    watcher.join(timeout=10)
    return outcomes


def test_paced_retention_leaves_the_release_its_budget_where_unpaced_drains_it(sandbox):
    """AWS's buckets (sandbox token-bucket mode, AWS's sizes: DescribeImages 100, 20 a second):
    140 DescribeImages from retention's 4 workers, a release asking beside them. Unpaced, the
    bucket runs dry (throttles); paced (half the bucket, 10 a second) nobody is throttled."""
    sandbox.configure(token_buckets=True)
    unpaced = _contend(sandbox, _client(sandbox, "retention-unpaced"), _client(sandbox, "release"))
    assert any(o.endswith("RequestLimitExceeded") for o in unpaced), unpaced

    sandbox.configure(token_buckets=True)  # full buckets again
    pacer = Pacer(0.5)
    paced = _contend(sandbox, pacer.install(_client(sandbox, "retention-paced")), _client(sandbox, "release"))
    state = sandbox.token_buckets.as_dict()
    assert state["throttled"] == {}, state
    assert paced.count("release ok") >= 5 and set(paced) == {"release ok"}
    assert pacer.summary()["waited_seconds"] > 0  # it did hold calls back


def test_the_callback_paces_the_operators_own_client_and_a_run_stays_inside_aws_buckets(sandbox, monkeypatch):
    from amirelease.operators.retention import AmiRetentionOperator

    sandbox.configure(token_buckets=True)
    op = AmiRetentionOperator(task_id="retention", region_name=sandbox.region)
    pace_retention({"task": op})
    now = datetime.now(UTC)
    op.execute({"data_interval_end": now, "logical_date": now, "run_id": f"test__{now:%H%M%S%f}"})
    summary = op.retention_pacer.summary()
    assert summary["calls"]["DescribeImages"] >= 1 and summary["total"] >= 5
    assert sandbox.token_buckets.as_dict()["throttled"] == {}
    counted = {k.split(":", 1)[1]: v for k, v in sandbox.request_counts().items() if k.startswith("ec2:")}
    assert summary["calls"] == counted  # every EC2 request of the run went through the pacer

    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__RETENTION_API_SHARE", "off")
    other = AmiRetentionOperator(task_id="retention", region_name=sandbox.region)
    pace_retention({"task": other})
    assert not hasattr(other, "retention_pacer")
