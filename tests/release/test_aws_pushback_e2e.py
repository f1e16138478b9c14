"""When AWS pushes back (issue 28), through Airflow against the sandbox's fault surface, with
real Packer and Terraform: throttling beyond botocore's default on the actions of every step
costs a release some seconds, not its success; a storm that outlasts every retry ends in one
sentence in words, changes nothing, leaks nothing, and is on the record and the Releases page."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from amirelease.ledger import utcnow
from tests.release.conftest import (
    ledger_records,
    mutations,
    run_images,
    running_instances,
    task_states,
)
from tests.release.invariant import ledger_tells_the_truth
from tests.release.test_rollback_e2e import _failure

# one worker runs every test that releases on the shared demo-web fleet (tests/conftest.py fleet_env)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet")]

BEYOND_THE_DEFAULT = 5  # botocore's default (legacy mode) makes 5 attempts: 5 throttles fail it
# one or more actions of every step of a release, by the caller that makes them
THROTTLED = (
    "ec2:DescribeVpcs",  # preflight
    "ec2:DescribeSubnets",  # preflight, Packer
    "ec2:RunInstances",  # Packer's builder, the smoke instance
    "ec2:CreateImage",  # Packer
    "ec2:DescribeLaunchTemplateVersions",  # Terraform
    "ssm:SendCommand",  # smoke test
    "autoscaling:StartInstanceRefresh",  # roll-out
    "autoscaling:DescribeInstanceRefreshes",  # the wait
    "elasticloadbalancing:DescribeTargetHealth",  # verify
    "ec2:CreateTags",  # record
)


def test_botocores_default_does_not_ride_out_that_much_throttling(sandbox):
    """The baseline the release below is measured against: a client with botocore's defaults."""
    sandbox.faults.throttle("ec2:DescribeVpcs", times=BEYOND_THE_DEFAULT)
    ec2 = boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=sandbox.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with pytest.raises(ClientError, match="RequestLimitExceeded"):
        ec2.describe_vpcs()


def test_a_release_rides_out_throttling_beyond_botocores_default(fleet_env, release_dag):
    sb = fleet_env
    for action in THROTTLED:
        sb.faults.throttle(action, times=BEYOND_THE_DEFAULT)
    dr = release_dag.test(run_conf={"app": "demo-web", "version": "7.1.0", "notes": "throttled"})
    states = task_states(dr)
    assert dr.state == "success", states
    left = {f"{f.service}:{f.action}": f.times for f in sb.faults.calls if f.times}
    assert left == {}, f"throttles no release step ran into: {left}"
    counts = sb.request_counts()
    for action in THROTTLED:
        assert counts.get(action, 0) > BEYOND_THE_DEFAULT, (action, counts.get(action))
    # the clients rode it out: every task succeeded on its first try
    tries = {ti.task_id: ti.try_number for ti in dr.get_task_instances()}
    assert all(n <= 1 for n in tries.values()), tries  # (0: the other toolchain's skipped tasks)
    [ami] = run_images(sb, dr.run_id)
    [record] = [r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id]
    for purpose in ("ami-bake-builder", "ami-smoke-test"):
        assert running_instances(sb, purpose, record["release_id"]) == [], purpose
    assert record["outcome"] == "succeeded" and list(record["amis"].values()) == [ami["ImageId"]]


def test_a_storm_longer_than_every_retry_fails_in_words_changes_nothing_and_is_recorded(
    fleet_env, release_dag, monkeypatch
):
    sb = fleet_env
    since = utcnow()
    # a short policy, so the storm outlasts it in seconds: 3 attempts per call, 2 step retries
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__AWS_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__AWS_STEP_RETRIES", "2")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__AWS_STEP_RETRY_DELAY_SECONDS", "1")
    from tests.release.conftest import load_dag

    release = load_dag("ami_release")  # the step retries are read when the DAG is parsed
    assert release.get_task("preflight").retries == 2
    before = len(ledger_records(sb))
    sb.faults.throttle("ec2:DescribeVpcs", times=100_000)
    dr = release.test(run_conf={"app": "demo-web", "version": "7.2.0", "notes": "storm"})
    sb.faults.clear()

    states = task_states(dr)
    assert dr.state == "failed" and states["preflight"] == "failed", states
    assert {ti.task_id: ti.try_number for ti in dr.get_task_instances()}["preflight"] == 3  # 1 + 2 retries
    assert sb.request_counts()["ec2:DescribeVpcs"] == 3 * 3  # every try made every attempt
    words = _failure(dr, "preflight")
    assert words.startswith(
        "AwsPushbackError: AWS is throttling this account: DescribeVpcs in us-east-1 was refused "
        "(RequestLimitExceeded) in step 'preflight', after 3 attempts with backoff. Nothing was changed in AWS: "
        "preflight only reads."
    ), words
    assert "Fix: wait a few minutes and trigger the release again" in words, words
    assert "Traceback" not in words and "botocore" not in words

    # nothing changed in AWS but the ledger's record of the attempt; nothing built, nothing leaked
    assert mutations(sb) == {"s3:PutObject": 1}, mutations(sb)
    assert run_images(sb, dr.run_id) == []
    assert running_instances(sb, "ami-bake-builder") == [] and running_instances(sb, "ami-smoke-test") == []
    records = ledger_records(sb)
    assert len(records) == before + 1
    [record] = [r for r in records if r["pipeline_run"] == dr.run_id]
    assert record["outcome"] == "failed" and record["failed_task"] == "preflight" and record["nothing_built"]
    assert record["version"] == "7.2.0" and record["amis"] == {} and record["failure_reason"] == words
    assert ledger_tells_the_truth(sb, since) == []

    # the Releases page shows it, in the same words
    from amirelease.ui import present
    from amirelease.ui.collect import read_app

    [row] = [r for r in present.timeline(read_app("demo-web"), "") if r.release_id == record["release_id"]]
    assert row.outcome == "failed" and row.failed_task == "preflight" and row.failure_reason == words, row
