"""Retention against the sandbox account (moto): operator runs and full DAG runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from amirelease.errors import RetentionError
from amirelease.operators.retention import AmiRetentionOperator
from amirelease.retention.policy import DEFAULT_POLICY_PATH

REPO = Path(__file__).resolve().parents[2]
MARK = "maid_status"


def _images(sb, **kw):
    ec2 = sb.client("ec2", internal=True)
    return {i["Name"]: i for i in ec2.describe_images(Owners=["self"], **kw)["Images"]}


def _tags(image):
    return {t["Key"]: t["Value"] for t in image.get("Tags", [])}


def _snapshot_ids(sb):
    ec2 = sb.client("ec2", internal=True)
    return {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def _policy(tmp_path, **changes):
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data.update(changes)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _run(sb, now, **kwargs):
    op = AmiRetentionOperator(task_id="retention", region_name=sb.region, **kwargs)
    return op.execute({"data_interval_end": now, "logical_date": now})


def _now():
    return datetime.now(UTC)


def _by_name(sb):
    return {a["name"]: a for a in sb.account["aged_images"]}


def test_mark_then_deregister_a_week_later(sandbox):
    seeded = _by_name(sandbox)
    vendor_before = set(sandbox.account["vendor_images"].values())
    now = _now()
    summary = _run(sandbox, now)
    imgs = _images(sandbox)
    # Custodian's mark (due yesterday) on an eligible image is honoured: deregistered now
    assert "demo-web-0.9.4" not in imgs
    assert seeded["demo-web-0.9.4"]["snapshot_id"] not in _snapshot_ids(sandbox)
    for name in ("demo-web-0.8.0", "demo-web-0.8.0-copy", "demo-web-0.9.1", "demo-web-0.9.2", "demo-web-0.9.5"):
        assert _tags(imgs[name])[MARK].startswith("Resource does not meet policy: deregister@"), name
    for name in ("demo-web-0.9.0", "demo-web-0.9.3", "demo-web-0.9.6", "demo-web-1.0.0"):
        assert MARK not in _tags(imgs[name]), name
    assert summary["counts"]["mark"] == 5 and summary["counts"]["deregister"] == 1
    reasons = {i["name"]: i["reason"] for i in summary["items"]}
    assert reasons["demo-web-0.9.0"] == "protected by tag RetainIndefinitely=true"
    assert reasons["demo-web-0.9.3"].startswith("in use by i-")
    assert reasons["demo-web-0.9.6"].startswith("too young")

    # six days later nothing is due yet
    summary = _run(sandbox, now + timedelta(days=6))
    assert summary["counts"]["deregister"] == 0
    assert any(i["reason"].startswith("mark not due") for i in summary["items"])

    # eight days later: due marks on still-eligible images are executed
    summary = _run(sandbox, now + timedelta(days=8))
    imgs = _images(sandbox)
    gone = {"demo-web-0.8.0", "demo-web-0.8.0-copy", "demo-web-0.9.1", "demo-web-0.9.2", "demo-web-0.9.5"}
    assert gone.isdisjoint(imgs)
    assert {"demo-web-0.9.0", "demo-web-0.9.3", "demo-web-1.0.0", "demo-web-0.9.6"} <= set(imgs)
    snaps = _snapshot_ids(sandbox)
    for name in gone:  # incl. the snapshot the two 0.8.0 images shared
        assert seeded[name]["snapshot_id"] not in snaps
    assert seeded["demo-web-0.9.0"]["snapshot_id"] in snaps
    # 0.9.6 is now 67 days old: marked, not deregistered
    assert _tags(imgs["demo-web-0.9.6"])[MARK].startswith("Resource does not meet policy")
    # vendor (other accounts') images untouched
    ec2 = sandbox.client("ec2", internal=True)
    assert {i["ImageId"] for i in ec2.describe_images(ImageIds=list(vendor_before))["Images"]} == vendor_before


def test_shared_snapshot_stays_while_other_image_lives(sandbox):
    seeded = _by_name(sandbox)
    shared = seeded["demo-web-0.8.0"]["snapshot_id"]
    assert seeded["demo-web-0.8.0-copy"]["snapshot_id"] == shared
    ec2 = sandbox.client("ec2", internal=True)
    ec2.create_tags(
        Resources=[seeded["demo-web-0.8.0-copy"]["image_id"]], Tags=[{"Key": "RetainIndefinitely", "Value": "true"}]
    )
    now = _now()
    _run(sandbox, now)
    _run(sandbox, now + timedelta(days=8))
    imgs = _images(sandbox)
    assert "demo-web-0.8.0" not in imgs and "demo-web-0.8.0-copy" in imgs
    assert shared in _snapshot_ids(sandbox)


def test_image_back_in_use_is_unmarked_and_kept(sandbox):
    seeded = _by_name(sandbox)
    now = _now()
    _run(sandbox, now)
    image_id = seeded["demo-web-0.9.5"]["image_id"]
    ec2 = sandbox.client("ec2", internal=True)
    ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=sandbox.account["subnet_ids"][0]
    )
    summary = _run(sandbox, now + timedelta(days=8))
    imgs = _images(sandbox)
    assert MARK not in _tags(imgs["demo-web-0.9.5"])
    row = next(i for i in summary["items"] if i["name"] == "demo-web-0.9.5")
    assert row["action"] == "unmark" and "in use by i-" in row["reason"]


def test_launch_template_and_configuration_references_protect(sandbox):
    sb = sandbox
    ec2 = sb.client("ec2", internal=True)
    asg = sb.client("autoscaling", internal=True)
    lt_latest = sb.create_image("lt-latest", age_days=100)
    lt_default = sb.create_image("lt-default", age_days=100)
    lt_old = sb.create_image("lt-old-version", age_days=100)  # in a version no group uses
    mixed = sb.create_image("mixed", age_days=100)
    lc_img = sb.create_image("lc", age_days=100)
    subnets = ",".join(sb.account["subnet_ids"])

    lt = ec2.create_launch_template(
        LaunchTemplateName="ret-a", LaunchTemplateData={"ImageId": lt_default, "InstanceType": "t3.micro"}
    )
    lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData={"ImageId": lt_old})
    ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData={"ImageId": lt_latest})
    for name, version in (("ret-latest", "$Latest"), ("ret-default", "$Default")):
        asg.create_auto_scaling_group(
            AutoScalingGroupName=name,
            MinSize=0,
            MaxSize=1,
            DesiredCapacity=0,
            LaunchTemplate={"LaunchTemplateId": lt_id, "Version": version},
            VPCZoneIdentifier=subnets,
        )
    lt2 = ec2.create_launch_template(
        LaunchTemplateName="ret-mixed", LaunchTemplateData={"ImageId": mixed, "InstanceType": "t3.micro"}
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName="ret-mixed",
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        VPCZoneIdentifier=subnets,
        MixedInstancesPolicy={
            "LaunchTemplate": {"LaunchTemplateSpecification": {"LaunchTemplateName": "ret-mixed", "Version": "1"}}
        },
    )
    asg.create_launch_configuration(LaunchConfigurationName="ret-lc", ImageId=lc_img, InstanceType="t3.micro")
    asg.create_auto_scaling_group(
        AutoScalingGroupName="ret-lc",
        LaunchConfigurationName="ret-lc",
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        VPCZoneIdentifier=subnets,
    )

    sb.reset_request_counts()
    summary = _run(sb, _now())
    rows = {i["image_id"]: i for i in summary["items"]}
    assert (
        rows[lt_latest]["action"] == "skip"
        and f"launch template {lt_id} v3 (ASG ret-default, ret-latest)" in rows[lt_latest]["reason"]
    )
    assert rows[lt_default]["action"] == "skip" and f"launch template {lt_id} v1" in rows[lt_default]["reason"]
    assert rows[mixed]["action"] == "skip" and lt2["LaunchTemplate"]["LaunchTemplateId"] in rows[mixed]["reason"]
    assert rows[lc_img]["action"] == "skip" and "launch configuration ret-lc (ASG ret-lc)" in rows[lc_img]["reason"]
    assert rows[lt_old]["action"] == "mark"
    counts = sb.request_counts()
    assert counts["ec2:DescribeLaunchTemplateVersions"] == 3  # one per template in use (+1 seeded demo-web)


def test_dry_run_changes_nothing(sandbox):
    before = {n: _tags(i) for n, i in _images(sandbox).items()}
    snaps = _snapshot_ids(sandbox)
    sandbox.reset_request_counts()
    summary = _run(sandbox, _now() + timedelta(days=30), dry_run=True)
    assert summary["dry_run"] is True and summary["counts"]["deregister"] >= 1
    assert {n: _tags(i) for n, i in _images(sandbox).items()} == before
    assert _snapshot_ids(sandbox) == snaps
    writes = {a for a in sandbox.request_counts() if not a.split(":")[1].startswith(("Describe", "Get"))}
    assert writes == set()


def test_cap_exceeded_changes_nothing_and_fails(sandbox, tmp_path):
    now = _now()
    _run(sandbox, now)
    before = {n: _tags(i) for n, i in _images(sandbox).items()}
    with pytest.raises(RetentionError, match="5 deregistrations exceed the cap of 2"):
        _run(sandbox, now + timedelta(days=8), policy_path=_policy(tmp_path, max_deregistrations_per_run=2))
    assert {n: _tags(i) for n, i in _images(sandbox).items()} == before


def test_throttling_is_retried_and_failures_are_reported(sandbox):
    sandbox.faults.throttle("ec2:DescribeImages", times=2)
    now = _now()
    _run(sandbox, now, botocore_config={"retries": {"mode": "standard", "max_attempts": 5}})
    sandbox.faults.fail("ec2:DeregisterImage", code="UnauthorizedOperation", times=1)
    with pytest.raises(RetentionError, match="deregister ami-.*UnauthorizedOperation"):
        _run(sandbox, now + timedelta(days=8))
    # the other four went; the failed one is retried by the next run
    assert (
        len(
            [
                n
                for n in ("demo-web-0.8.0", "demo-web-0.8.0-copy", "demo-web-0.9.1", "demo-web-0.9.2", "demo-web-0.9.5")
                if n in _images(sandbox)
            ]
        )
        == 1
    )
    _run(sandbox, now + timedelta(days=8, minutes=5))
    assert not {"demo-web-0.8.0", "demo-web-0.8.0-copy"} & set(_images(sandbox))


def _fresh_dag():
    """A freshly parsed DAG per run, as a worker would have: dag.test() runs tasks in-process
    and leaves rendered template fields / params on the task objects."""
    import runpy

    return runpy.run_path(str(REPO / "dags" / "ami_retention.py"))["dag"]


@pytest.mark.e2e
def test_dag_scheduled_run_marks_then_deregisters(sandbox, airflow_db):
    from airflow.sdk import DagRunState

    seeded = _by_name(sandbox)
    now = _now().replace(second=0, microsecond=0)
    dr = _fresh_dag().test(logical_date=now)
    assert dr.state == DagRunState.SUCCESS
    imgs = _images(sandbox)
    assert _tags(imgs["demo-web-0.8.0"])[MARK].startswith("Resource does not meet policy: deregister@")
    assert "demo-web-0.9.4" not in imgs  # Custodian mark already due

    # a manual run with dry_run=true a week later changes nothing
    dr = _fresh_dag().test(logical_date=now + timedelta(days=8), run_conf={"dry_run": True})
    assert dr.state == DagRunState.SUCCESS
    assert "demo-web-0.8.0" in _images(sandbox)

    # the scheduled run a week later deregisters and deletes the snapshots
    dr = _fresh_dag().test(logical_date=now + timedelta(days=8, minutes=5))
    assert dr.state == DagRunState.SUCCESS
    imgs = _images(sandbox)
    assert "demo-web-0.8.0" not in imgs and "demo-web-0.9.0" in imgs
    assert seeded["demo-web-0.8.0"]["snapshot_id"] not in _snapshot_ids(sandbox)


@pytest.mark.e2e
def test_dag_fails_loudly_on_cap(sandbox, airflow_db, monkeypatch, tmp_path):
    from airflow.sdk import DagRunState

    now = _now().replace(second=0, microsecond=0)
    assert _fresh_dag().test(logical_date=now).state == DagRunState.SUCCESS
    before = {n: _tags(i) for n, i in _images(sandbox).items()}
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__RETENTION_POLICY", _policy(tmp_path, max_deregistrations_per_run=1))
    dr = _fresh_dag().test(logical_date=now + timedelta(days=8))
    assert dr.state == DagRunState.FAILED
    assert {n: _tags(i) for n, i in _images(sandbox).items()} == before
