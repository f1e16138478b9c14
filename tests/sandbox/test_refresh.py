"""Instance refresh in the sandbox, observed with plain boto3."""

from __future__ import annotations

import time

import boto3
import pytest
from botocore.exceptions import ClientError

ASG = "demo-web-asg"


def clients(sb):
    return sb.client("ec2"), sb.client("autoscaling")


def new_version(sb, ec2, name="demo-web-2.0.0"):
    ami = sb.create_image(name)
    lt = sb.account["launch_template"]
    version = ec2.create_launch_template_version(
        LaunchTemplateId=lt["id"], SourceVersion="1", LaunchTemplateData={"ImageId": ami}
    )["LaunchTemplateVersion"]["VersionNumber"]
    return ami, {"LaunchTemplate": {"LaunchTemplateId": lt["id"], "Version": str(version)}}


def wait_done(asg, rid, timeout=15, seen=None, until=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = asg.describe_instance_refreshes(AutoScalingGroupName=ASG, InstanceRefreshIds=[rid])["InstanceRefreshes"][0]
        if seen is not None:
            seen.append((r["Status"], r["PercentageComplete"], r.get("StatusReason")))
        if until is not None and until(r):
            return r
        if r["Status"] in ("Successful", "Failed", "Cancelled", "RollbackSuccessful", "RollbackFailed"):
            return r
        time.sleep(0.05)
    raise AssertionError(f"refresh {rid} did not finish: {r}")


def group_images(ec2, asg):
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    ids = [i["InstanceId"] for i in group["Instances"]]
    reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    return group, {i["InstanceId"]: i["ImageId"] for i in instances}, instances


def test_refresh_replaces_every_instance_with_new_ami(fleet):
    ec2, asg = clients(fleet)
    _, before, _ = group_images(ec2, asg)
    ami, desired = new_version(fleet, ec2)
    rid = asg.start_instance_refresh(
        AutoScalingGroupName=ASG, DesiredConfiguration=desired, Preferences={"MinHealthyPercentage": 66}
    )["InstanceRefreshId"]
    seen = []
    r = wait_done(asg, rid, seen=seen)
    assert r["Status"] == "Successful" and r["PercentageComplete"] == 100 and r["InstancesToUpdate"] == 0
    assert "EndTime" in r and r["EndTime"] >= r["StartTime"]
    assert "InProgress" in {s for s, _, _ in seen}
    assert any(0 < p < 100 for _, p, _ in seen)  # progress is observable
    group, after, instances = group_images(ec2, asg)
    assert len(after) == 3 and set(after.values()) == {ami}
    assert not set(after) & set(before)  # really replaced
    assert all(i["State"]["Name"] == "running" for i in instances)
    assert all(i["LifecycleState"] == "InService" and i["HealthStatus"] == "Healthy" for i in group["Instances"])
    assert group["LaunchTemplate"]["Version"] == desired["LaunchTemplate"]["Version"]
    old = ec2.describe_instances(InstanceIds=list(before))["Reservations"]
    assert {i["State"]["Name"] for res in old for i in res["Instances"]} == {"terminated"}
    health = fleet.client("elbv2").describe_target_health(TargetGroupArn=fleet.account["target_group_arn"])
    assert {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in health["TargetHealthDescriptions"]} == {
        i: "healthy" for i in after
    }


def test_second_start_refused_and_cancel(fleet):
    ec2, asg = clients(fleet)
    fleet.configure(refresh_batch_seconds=1.0)
    _, desired = new_version(fleet, ec2)
    rid = asg.start_instance_refresh(AutoScalingGroupName=ASG, DesiredConfiguration=desired)["InstanceRefreshId"]
    with pytest.raises(ClientError) as err:
        asg.start_instance_refresh(AutoScalingGroupName=ASG, DesiredConfiguration=desired)
    assert err.value.response["Error"]["Code"] == "InstanceRefreshInProgress"
    assert asg.cancel_instance_refresh(AutoScalingGroupName=ASG)["InstanceRefreshId"] == rid
    r = wait_done(asg, rid)
    assert r["Status"] == "Cancelled"
    with pytest.raises(ClientError) as err:
        asg.cancel_instance_refresh(AutoScalingGroupName=ASG)
    assert err.value.response["Error"]["Code"] == "ActiveInstanceRefreshNotFound"
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    assert group["LaunchTemplate"].get("Version") == "$Default"  # desired config applies only on success


def test_skip_matching_leaves_matching_instances(fleet):
    ec2, asg = clients(fleet)
    lt = fleet.account["launch_template"]
    _, before, _ = group_images(ec2, asg)
    rid = asg.start_instance_refresh(
        AutoScalingGroupName=ASG,
        DesiredConfiguration={"LaunchTemplate": {"LaunchTemplateId": lt["id"], "Version": "1"}},
        Preferences={"SkipMatching": True},
    )["InstanceRefreshId"]
    r = wait_done(asg, rid)
    assert r["Status"] == "Successful" and r["PercentageComplete"] == 100
    _, after, _ = group_images(ec2, asg)
    assert after == before  # nothing replaced


def test_without_skip_matching_same_config_is_replaced(fleet):
    ec2, asg = clients(fleet)
    _, before, _ = group_images(ec2, asg)
    rid = asg.start_instance_refresh(AutoScalingGroupName=ASG, Preferences={"MinHealthyPercentage": 0})[
        "InstanceRefreshId"
    ]
    assert wait_done(asg, rid)["Status"] == "Successful"
    _, after, _ = group_images(ec2, asg)
    assert not set(after) & set(before) and set(after.values()) == set(before.values())


def test_checkpoint_pauses_for_checkpoint_delay(fleet):
    ec2, asg = clients(fleet)
    ami, desired = new_version(fleet, ec2)
    rid = asg.start_instance_refresh(
        AutoScalingGroupName=ASG,
        DesiredConfiguration=desired,
        Preferences={"MinHealthyPercentage": 66, "CheckpointPercentages": [30, 100], "CheckpointDelay": 1},
    )["InstanceRefreshId"]
    seen = []
    start = time.monotonic()
    r = wait_done(asg, rid, seen=seen)
    assert r["Status"] == "Successful"
    paused = [(s, p, why) for s, p, why in seen if why and "checkpoint" in why.lower()]
    assert paused and {p for _, p, _ in paused} == {33} and {s for s, _, _ in paused} == {"InProgress"}
    assert time.monotonic() - start >= 1.0 + 3 * 0.2
    _, after, _ = group_images(ec2, asg)
    assert set(after.values()) == {ami}


def test_failure_at_percent_reports_reason(fleet):
    ec2, asg = clients(fleet)
    ami, desired = new_version(fleet, ec2)
    fleet.faults.fail_refresh_at(ASG, 50, reason="Health checks failed on i-new")
    rid = asg.start_instance_refresh(
        AutoScalingGroupName=ASG, DesiredConfiguration=desired, Preferences={"MinHealthyPercentage": 66}
    )["InstanceRefreshId"]
    r = wait_done(asg, rid)
    assert r["Status"] == "Failed" and r["StatusReason"] == "Health checks failed on i-new"
    assert 50 <= r["PercentageComplete"] < 100
    group, after, _ = group_images(ec2, asg)
    assert ami in set(after.values()) and len(set(after.values())) == 2  # partially replaced, not rolled back
    assert group["LaunchTemplate"]["Version"] == "$Default"
    # a new refresh may start after a failure
    rid2 = asg.start_instance_refresh(AutoScalingGroupName=ASG, DesiredConfiguration=desired)["InstanceRefreshId"]
    assert wait_done(asg, rid2)["Status"] == "Successful"


def test_auto_rollback_restores_old_ami(fleet):
    ec2, asg = clients(fleet)
    _, before, _ = group_images(ec2, asg)
    old_ami = set(before.values())
    _, desired = new_version(fleet, ec2)
    fleet.faults.fail_refresh_at(ASG, 60, reason="Alarm demo-web-5xx in ALARM")
    rid = asg.start_instance_refresh(
        AutoScalingGroupName=ASG,
        DesiredConfiguration=desired,
        Preferences={"MinHealthyPercentage": 66, "AutoRollback": True},
    )["InstanceRefreshId"]
    seen = []
    r = wait_done(asg, rid, seen=seen)
    assert r["Status"] == "RollbackSuccessful"
    assert "RollbackInProgress" in {s for s, _, _ in seen}
    assert r["RollbackDetails"]["RollbackReason"] == "Alarm demo-web-5xx in ALARM"
    assert r["RollbackDetails"]["PercentageCompleteOnRollback"] == 100
    group, after, _ = group_images(ec2, asg)
    assert set(after.values()) == old_ami and len(after) == 3
    assert group["LaunchTemplate"]["Version"] == "$Default"


def test_manual_rollback(fleet):
    ec2, asg = clients(fleet)
    fleet.configure(refresh_batch_seconds=0.5)
    _, before, _ = group_images(ec2, asg)
    _, desired = new_version(fleet, ec2)
    # a checkpoint holds the refresh part-way (an hour's delay), whatever the machine's speed
    rid = asg.start_instance_refresh(
        AutoScalingGroupName=ASG,
        DesiredConfiguration=desired,
        Preferences={"MinHealthyPercentage": 66, "CheckpointPercentages": [34, 100], "CheckpointDelay": 3600},
    )["InstanceRefreshId"]
    held = wait_done(asg, rid, until=lambda r: "checkpoint" in (r.get("StatusReason") or ""))
    assert held["Status"] == "InProgress" and 0 < held["PercentageComplete"] < 100, held
    assert asg.rollback_instance_refresh(AutoScalingGroupName=ASG)["InstanceRefreshId"] == rid
    r = wait_done(asg, rid)
    assert r["Status"] == "RollbackSuccessful"
    _, after, _ = group_images(ec2, asg)
    assert set(after.values()) == set(before.values())


def test_refresh_unknown_group_and_plain_boto3_client(sandbox, aws_sandbox):
    # the fixture's environment alone is enough for a plain client
    asg = boto3.client("autoscaling")
    with pytest.raises(ClientError) as err:
        asg.start_instance_refresh(AutoScalingGroupName="nope")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert asg.describe_instance_refreshes(AutoScalingGroupName=ASG)["InstanceRefreshes"] == []


def test_refresh_after_the_group_itself_moved_to_the_new_version(fleet):
    """How Terraform releases: a new template version (UserData given as in CreateLaunchTemplateVersion),
    the group updated to it, then a refresh with SkipMatching. The running instances were launched
    from the old version, so they do not match and are replaced (on AWS too)."""
    ec2, asg = clients(fleet)
    lt = fleet.account["launch_template"]
    ami = fleet.create_image("demo-web-3.0.0")
    version = ec2.create_launch_template_version(
        LaunchTemplateId=lt["id"], SourceVersion="1", LaunchTemplateData={"ImageId": ami, "UserData": ""}
    )["LaunchTemplateVersion"]["VersionNumber"]
    asg.update_auto_scaling_group(
        AutoScalingGroupName=ASG, LaunchTemplate={"LaunchTemplateId": lt["id"], "Version": str(version)}
    )
    desired = {"LaunchTemplate": {"LaunchTemplateId": lt["id"], "Version": str(version)}}
    rid = asg.start_instance_refresh(
        AutoScalingGroupName=ASG, DesiredConfiguration=desired, Preferences={"SkipMatching": True}
    )["InstanceRefreshId"]
    r = wait_done(asg, rid)
    assert r["Status"] == "Successful", r
    _, after, _ = group_images(ec2, asg)
    assert set(after.values()) == {ami}
