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
    failure,
    ledger_records,
    mutations,
    run_images,
    running_instances,
    task_states,
)
from tests.release.invariant import ledger_tells_the_truth

# the tests that release on a shared demo-web fleet run in two groups ("fleet", "fleet-b": each on one
# worker, with its own fleet built once; tests/conftest.py fleet_env);
# the baseline below resets its account, so it stays out of that group (it would make the next build the fleet)
pytestmark = [pytest.mark.e2e]
FLEET = pytest.mark.xdist_group("fleet")

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


@FLEET
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


@FLEET
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
    words = failure(dr, "preflight")
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


@FLEET
def test_a_release_finishes_beside_retention_runs_in_token_bucket_mode(fleet_env, release_dag, monkeypatch):
    """EC2's token buckets on (AWS's sizes and refill rates, token_bucket.py): while a real release
    runs, paced retention runs back to back over the account (its own access key, 400 extra
    old images, 60 groups on launch templates that use them, the shipped policy in dry-run so
    nothing is marked). The release succeeds with
    every task on its first try, and not one of its calls — provider hooks, Packer, Terraform —
    was refused by a bucket: our own retention is never the reason a release was throttled."""
    import json
    import threading
    from datetime import UTC, datetime

    from amirelease.operators.retention import AmiRetentionOperator
    from amirelease.retention.pacing import pace_retention

    sb = fleet_env
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", "ami-release-ledger-123456789012")
    conn = {"conn_type": "aws", "login": "retention-beside", "password": "testing",
            "extra": {"region_name": sb.region, "endpoint_url": sb.endpoint_url}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_RETENTION_BESIDE", json.dumps(conn))
    extra = [sb.create_image(f"beside-{i:03d}", age_days=90) for i in range(400)]
    ec2, asg = sb.client("ec2", internal=True), sb.client("autoscaling", internal=True)
    templates = []
    for g in range(60):  # groups on templates whose versions use the old images: what retention resolves
        lt = ec2.create_launch_template(
            LaunchTemplateName=f"beside-{g:02d}",
            LaunchTemplateData={"ImageId": extra[3 * g], "InstanceType": "t3.micro"},
        )["LaunchTemplate"]["LaunchTemplateId"]
        for image in extra[3 * g + 1 : 3 * g + 3]:
            ec2.create_launch_template_version(LaunchTemplateId=lt, LaunchTemplateData={"ImageId": image})
        asg.create_auto_scaling_group(
            AutoScalingGroupName=f"beside-{g:02d}", MinSize=0, MaxSize=1, DesiredCapacity=0,
            LaunchTemplate={"LaunchTemplateId": lt, "Version": ("$Latest", "$Default", "2")[g % 3]},
            VPCZoneIdentifier=",".join(sb.account["subnet_ids"]),
        )  # fmt: skip
        templates.append(lt)
    sb.configure(token_buckets=True)
    done, runs, errors = threading.Event(), [], []

    def retention_loop() -> None:
        while not done.is_set():
            op = AmiRetentionOperator(
                task_id="retention", region_name=sb.region, aws_conn_id="retention_beside", mode="dry_run"
            )
            pace_retention({"task": op})
            now = datetime.now(UTC)
            try:
                op.execute({"data_interval_end": now, "logical_date": now, "run_id": f"beside__{now:%H%M%S%f}"})
                runs.append(op.retention_pacer.summary()["total"])
            except Exception as exc:  # noqa: BLE001 - reported below, never swallowed
                errors.append(repr(exc))

    loop = threading.Thread(target=retention_loop, daemon=True)
    try:
        loop.start()
        dr = release_dag.test(run_conf={"app": "demo-web", "version": "7.3.0", "notes": "beside retention"})
    finally:
        done.set()
        loop.join(timeout=300)
        buckets = sb.token_buckets.as_dict()
        sb.configure(token_buckets=False)
        for g, lt in enumerate(templates):
            asg.delete_auto_scaling_group(AutoScalingGroupName=f"beside-{g:02d}", ForceDelete=True)
            ec2.delete_launch_template(LaunchTemplateId=lt)
        for image in extra:
            ec2.deregister_image(ImageId=image)
    refused = {who: calls for who, calls in buckets["throttled_by_caller"].items() if who != "retention-beside"}
    assert refused == {}, f"release calls refused by EC2's buckets: {refused}; retention's calls per run: {runs}"
    states = task_states(dr)
    assert dr.state == "success", states
    tries = {ti.task_id: ti.try_number for ti in dr.get_task_instances()}
    assert all(n <= 1 for n in tries.values()), tries
    assert errors == [], errors
    assert len(runs) >= 5 and sum(runs) >= 300, runs  # retention kept asking all along
