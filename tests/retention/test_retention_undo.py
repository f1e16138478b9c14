"""Retention you can undo (issue 24), against the sandbox: deregistration only into a Recycle
Bin window, the explicit rule command, restore (image, snapshots, mark, hold, records), the mark
as an AWS deprecation, AWS's second opinion and AWS's own guards."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from amirelease.retention.policy import DEFAULT_POLICY_PATH, load_policy
from sandbox.aws.ageing import age_account
from tests.retention.conftest import LEDGER_BUCKET, latest, run_retention

MARK = "maid_status"
DUE_NOW = "demo-web-0.9.4"  # seeded with a Custodian mark due yesterday, eligible: goes on the first run


def _policy(tmp_path, name="policy.yaml", **changes):
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _seeded(sb, name):
    return next(a for a in sb.account["aged_images"] if a["name"] == name)


def _image(sb, image_id):
    ec2 = sb.client("ec2", internal=True)
    found = ec2.describe_images(
        Owners=["self"], IncludeDisabled=True, Filters=[{"Name": "image-id", "Values": [image_id]}]
    )
    return found["Images"][0] if found["Images"] else None


def _tags(image):
    return {t["Key"]: t["Value"] for t in image.get("Tags", [])}


def _bin(sb):
    ec2 = sb.client("ec2", internal=True)
    images = {i["ImageId"] for i in ec2.list_images_in_recycle_bin()["Images"]}
    snaps = {s["SnapshotId"] for s in ec2.list_snapshots_in_recycle_bin()["Snapshots"]}
    return images, snaps


def _delete_rules(sb):
    rbin = sb.client("rbin", internal=True)
    for rtype in ("EC2_IMAGE", "EBS_SNAPSHOT"):
        for rule in rbin.list_rules(ResourceType=rtype)["Rules"]:
            rbin.delete_rule(Identifier=rule["Identifier"])


def test_deregistration_goes_into_the_recycle_bin_and_is_recorded(sandbox):
    seeded = _seeded(sandbox, DUE_NOW)
    run_retention(sandbox)
    assert _image(sandbox, seeded["image_id"]) is None
    images, snaps = _bin(sandbox)
    assert seeded["image_id"] in images and seeded["snapshot_id"] in snaps
    report = latest(sandbox)
    assert report["recycle_bin"]["covered"] is True and report["held_back"] is None
    assert set(report["recycle_bin"]["rules"]) == {"EC2_IMAGE", "EBS_SNAPSHOT"}
    s3 = sandbox.client("s3", internal=True)
    key = f"retention/recycle-bin/{sandbox.region}/{seeded['image_id']}.json"
    record = yaml.safe_load(s3.get_object(Bucket=LEDGER_BUCKET, Key=key)["Body"].read())
    assert record["snapshot_ids"] == [seeded["snapshot_id"]] and record["name"] == DUE_NOW


def test_without_a_rule_nothing_is_deregistered_marks_go_on_and_the_report_says_why(sandbox):
    _delete_rules(sandbox)
    seeded = _seeded(sandbox, DUE_NOW)
    summary = run_retention(sandbox)
    assert _image(sandbox, seeded["image_id"]) is not None  # not deregistered
    assert summary["counts"]["deregister"] == 0 and summary["counts"]["mark"] == 5  # marking goes on
    assert "no Recycle Bin rule (EC2_IMAGE)" in summary["held_back"]
    report = latest(sandbox)
    assert report["recycle_bin"]["covered"] is False
    row = next(r for r in report["rows"] if r["image_id"] == seeded["image_id"])
    assert row["action"] == "keep" and "not deregistered: no Recycle Bin rule" in row["reason"]
    assert MARK in _tags(_image(sandbox, seeded["image_id"]))  # still marked
    assert sandbox.request_counts().get("ec2:DeregisterImage", 0) == 0


def test_a_rule_that_keeps_too_short_does_not_cover(sandbox):
    rbin = sandbox.client("rbin", internal=True)
    for rule in rbin.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"]:
        rbin.update_rule(
            Identifier=rule["Identifier"], RetentionPeriod={"RetentionPeriodValue": 3, "RetentionPeriodUnit": "DAYS"}
        )
    summary = run_retention(sandbox)
    assert summary["counts"]["deregister"] == 0
    assert "keeps them 3 day(s), the policy asks for 14" in summary["held_back"]


def test_recycle_bin_off_deregisters_for_good_on_purpose(sandbox, tmp_path):
    _delete_rules(sandbox)
    seeded = _seeded(sandbox, DUE_NOW)
    run_retention(sandbox, policy_path=_policy(tmp_path, recycle_bin=False))
    assert _image(sandbox, seeded["image_id"]) is None
    assert _bin(sandbox) == (set(), set())
    assert latest(sandbox)["recycle_bin"]["enabled"] is False
    assert "rbin:ListRules" not in sandbox.request_counts()


def test_the_rule_command_creates_only_what_is_missing(sandbox):
    from amirelease.aws import AwsClients
    from amirelease.retention import recycle_aws

    _delete_rules(sandbox)
    policy = load_policy()
    rbin = AwsClients().rbin(sandbox.region)
    cov, created = recycle_aws.create_rules(rbin, policy)
    assert cov.covered and {r["ResourceType"] for r in created} == {"EC2_IMAGE", "EBS_SNAPSHOT"}
    assert all(r["RetentionPeriod"]["RetentionPeriodValue"] == 14 for r in created)
    cov, created = recycle_aws.create_rules(rbin, policy)
    assert cov.covered and created == []


def test_restore_brings_image_and_snapshots_back_unmarked_held_recorded_and_launchable(sandbox):
    from amirelease.retention.restore import restore_ami

    seeded = _seeded(sandbox, DUE_NOW)
    run_retention(sandbox)
    assert _image(sandbox, seeded["image_id"]) is None
    done = restore_ami(
        image_id=seeded["image_id"], region=sandbox.region, reason="INC-4711: web-a still launches it", by="alice"
    )
    image = _image(sandbox, seeded["image_id"])
    assert image is not None and image["State"] == "available"
    tags = _tags(image)
    assert MARK not in tags
    assert tags["ForensicHold"].startswith("restored ") and "alice" in tags["ForensicHold"]
    assert tags["ForensicHoldReason"] == "INC-4711: web-a still launches it"
    assert done.snapshots == (seeded["snapshot_id"],)
    assert _bin(sandbox) == (set(), set())
    ec2 = sandbox.client("ec2", internal=True)
    assert ec2.describe_snapshots(SnapshotIds=[seeded["snapshot_id"]])["Snapshots"]
    instance = ec2.run_instances(ImageId=seeded["image_id"], MinCount=1, MaxCount=1, InstanceType="t3.micro")
    assert instance["Instances"][0]["ImageId"] == seeded["image_id"]
    s3 = sandbox.client("s3", internal=True)
    key = done.records["restore"].split(f"{LEDGER_BUCKET}/", 1)[1]
    record = yaml.safe_load(s3.get_object(Bucket=LEDGER_BUCKET, Key=key)["Body"].read())
    assert record["restored_by"] == "alice" and record["snapshots_restored"] == [seeded["snapshot_id"]]
    # retention now keeps it: held
    summary = run_retention(sandbox)
    row = next(i for i in summary["items"] if i["image_id"] == seeded["image_id"])
    assert row["action"] == "keep" and row["reason"].startswith("held: ForensicHold=restored")
    # a second restore is safe: already back, still held
    again = restore_ami(image_id=seeded["image_id"], region=sandbox.region, reason="INC-4711 again, repeat", by="bob")
    assert again.already_back and again.snapshots == ()


def test_restore_refuses_what_is_not_in_the_bin_and_a_blank_reason(sandbox):
    from amirelease.retention.restore import RestoreError, restore_ami

    with pytest.raises(RestoreError, match="reason of at least"):
        restore_ami(image_id="ami-0123456789abcdef0", region=sandbox.region, reason=" ", by="x")
    with pytest.raises(RestoreError, match="not in the Recycle Bin"):
        restore_ami(image_id="ami-0123456789abcdef0", region=sandbox.region, reason="long enough reason", by="x")
    assert not {a for a in sandbox.request_counts() if a.split(":")[1].startswith(("Restore", "Create", "Delete"))}


def test_a_group_hidden_from_retention_loses_its_image_and_restore_brings_it_back(sandbox):
    """The run decides wrongly (the group listing is cut to nothing and the region's count of
    groups, which would show it, cannot be read; the group uses a launch configuration, which
    AWS's own reference check does not know): the image goes into the Recycle Bin; the group
    cannot scale out; after `restore-ami` it can."""
    from amirelease.retention.restore import restore_ami

    image = sandbox.create_image("hidden-group-image", age_days=90)
    asg = sandbox.client("autoscaling", internal=True)
    asg.create_launch_configuration(LaunchConfigurationName="hidden-lc", ImageId=image, InstanceType="t3.micro")
    asg.create_auto_scaling_group(
        AutoScalingGroupName="hidden", LaunchConfigurationName="hidden-lc", MinSize=0, MaxSize=2,
        DesiredCapacity=0, VPCZoneIdentifier=",".join(sandbox.account["subnet_ids"]),
    )  # fmt: skip
    sandbox.faults.truncate("autoscaling:DescribeAutoScalingGroups", times=100, empty=True)
    sandbox.faults.fail("autoscaling:DescribeAccountLimits", "AccessDenied", times=100, status=403)
    run_retention(sandbox)  # marks it
    age_account(sandbox, 8)
    run_retention(sandbox)  # deregisters it, into the bin
    sandbox.faults.clear()
    assert _image(sandbox, image) is None and image in _bin(sandbox)[0]
    restore_ami(image_id=image, region=sandbox.region, reason="the hidden group still needs it", by="oncall")
    asg.set_desired_capacity(AutoScalingGroupName="hidden", DesiredCapacity=1)
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["hidden"])["AutoScalingGroups"][0]
    ec2 = sandbox.client("ec2", internal=True)
    [instance_id] = [i["InstanceId"] for i in group["Instances"]]
    launched = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert launched["ImageId"] == image


def test_a_mark_is_an_aws_deprecation_at_its_due_time_and_unmarking_cancels_it(sandbox):
    seeded = _seeded(sandbox, "demo-web-0.9.1")
    summary = run_retention(sandbox)
    assert summary["applied"]["deprecated"] == 5
    image = _image(sandbox, seeded["image_id"])
    due = datetime.strptime(_tags(image)[MARK].rsplit("@", 1)[1], "%Y/%m/%d").replace(tzinfo=UTC)
    assert image["DeprecationTime"] == f"{due:%Y-%m-%dT%H:%M:%S}.000Z"
    # a steady run writes no deprecation again
    assert run_retention(sandbox)["applied"]["deprecated"] == 0
    # a hold unmarks it: the deprecation goes with the mark
    ec2 = sandbox.client("ec2", internal=True)
    ec2.create_tags(Resources=[seeded["image_id"]], Tags=[{"Key": "ForensicHold", "Value": "INC-1"}])
    summary = run_retention(sandbox)
    assert summary["applied"]["deprecation_cancelled"] == 1
    assert "DeprecationTime" not in _image(sandbox, seeded["image_id"])


def test_aws_second_opinion_keeps_what_it_finds_and_counts_the_disagreement(sandbox):
    seeded = _seeded(sandbox, DUE_NOW)
    ssm = sandbox.client("ssm", internal=True)
    ssm.put_parameter(Name="/golden/web", Value=seeded["image_id"], Type="String", DataType="aws:ec2:image")
    summary = run_retention(sandbox)
    assert _image(sandbox, seeded["image_id"]) is not None
    row = next(i for i in summary["items"] if i["image_id"] == seeded["image_id"])
    assert (
        row["action"] == "keep"
        and "AWS DescribeImageReferences names" in row["reason"]
        and "parameter/golden/web" in row["reason"]
    )
    report = latest(sandbox)
    assert report["aws_references"]["disagreements"] == 1 and report["aws_references"]["checked"] == 1


def test_images_aws_protects_or_recently_launched_are_kept(sandbox):
    seeded = _seeded(sandbox, DUE_NOW)
    ec2 = sandbox.client("ec2", internal=True)
    ec2.enable_image_deregistration_protection(ImageId=seeded["image_id"], WithCooldown=True)
    other = _seeded(sandbox, "demo-web-0.9.1")["image_id"]
    ec2.run_instances(ImageId=other, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    reservations = ec2.describe_instances(Filters=[{"Name": "image-id", "Values": [other]}])["Reservations"]
    ec2.terminate_instances(InstanceIds=[i["InstanceId"] for r in reservations for i in r["Instances"]])
    summary = run_retention(sandbox)
    reasons = {i["image_id"]: i["reason"] for i in summary["items"]}
    assert "protected from deregistration by AWS (enabled-with-cooldown)" in reasons[seeded["image_id"]]
    assert "AWS lastLaunchedTime" in reasons[other]
    assert _image(sandbox, seeded["image_id"]) is not None
    # 31 days on, the launch no longer protects it
    age_account(sandbox, 31)
    summary = run_retention(sandbox)
    reasons = {i["image_id"]: i["reason"] for i in summary["items"]}
    assert "lastLaunchedTime" not in reasons[other]


def test_restore_without_the_retention_record_finds_the_snapshots_in_the_bin(sandbox):
    from amirelease.retention.restore import restore_ami

    image = sandbox.create_image("no-record", age_days=90)
    ec2 = sandbox.client("ec2", internal=True)
    snap = ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    ec2.create_tags(Resources=[image, snap], Tags=[{"Key": "AmiRetention", "Value": "recycle-bin"}])
    ec2.deregister_image(ImageId=image, DeleteAssociatedSnapshots=True)  # by hand: no retention record
    done = restore_ami(image_id=image, region=sandbox.region, reason="deregistered by hand by mistake", by="carol")
    assert done.snapshots == (snap,) and _image(sandbox, image)["State"] == "available"


def test_restore_says_so_when_the_snapshot_is_gone_for_good(sandbox):
    from amirelease.retention.restore import RestoreError, restore_ami

    rbin = sandbox.client("rbin", internal=True)
    for rule in rbin.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"]:
        rbin.delete_rule(Identifier=rule["Identifier"])
    seeded = _seeded(sandbox, DUE_NOW)
    # the policy's check would refuse to deregister now; a person does it by hand instead
    ec2 = sandbox.client("ec2", internal=True)
    ec2.create_tags(Resources=[seeded["image_id"]], Tags=[{"Key": "AmiRetention", "Value": "recycle-bin"}])
    ec2.deregister_image(ImageId=seeded["image_id"])
    ec2.delete_snapshot(SnapshotId=seeded["snapshot_id"])  # no snapshot rule: gone
    s3 = sandbox.client("s3", internal=True)
    s3.put_object(
        Bucket=LEDGER_BUCKET,
        Key=f"retention/recycle-bin/{sandbox.region}/{seeded['image_id']}.json",
        Body=b'{"snapshot_ids": ["' + seeded["snapshot_id"].encode() + b'"]}',
    )
    with pytest.raises(RestoreError, match="neither in the Recycle Bin nor in the account"):
        restore_ami(image_id=seeded["image_id"], region=sandbox.region, reason="too late for this one", by="dave")
    assert seeded["image_id"] in _bin(sandbox)[0]  # nothing half-restored


def test_cli_recycle_bin_rules_reports_then_creates(sandbox, capsys):
    from amirelease import cli

    _delete_rules(sandbox)
    assert cli.main(["recycle-bin-rules"]) == 1
    out = capsys.readouterr().out
    assert "NOT covered" in out and "make recycle-bin-rules CREATE=1" in out
    assert cli.main(["recycle-bin-rules", "--create"]) == 0
    out = capsys.readouterr().out
    assert out.count("created") == 2 and f"{sandbox.region}: covered" in out
    assert cli.main(["recycle-bin-rules"]) == 0


def test_cli_restore_ami(sandbox, capsys):
    from amirelease import cli

    seeded = _seeded(sandbox, DUE_NOW)
    run_retention(sandbox)
    assert cli.main(["restore-ami", seeded["image_id"], "--reason", "x"]) == 2
    assert "reason of at least" in capsys.readouterr().err
    assert cli.main(["restore-ami", seeded["image_id"], "--reason", "INC-9: still needed by web-a"]) == 0
    out = capsys.readouterr().out
    assert f"Restored {seeded['image_id']}" in out and "(command line)" in out
    assert _tags(_image(sandbox, seeded["image_id"]))["ForensicHoldReason"] == "INC-9: still needed by web-a"


def test_an_image_aws_keeps_does_not_stall_the_drain(sandbox, tmp_path):
    """With one deregistration per run, the oldest due image is one AWS finds referenced: its
    slot goes to the next due image, which is asked about in turn, and goes."""
    older = sandbox.create_image(
        "due-older", age_days=90, tags={MARK: "Resource does not meet policy: deregister@2020/01/01"}
    )
    newer = sandbox.create_image(
        "due-newer", age_days=90, tags={MARK: "Resource does not meet policy: deregister@2020/01/02"}
    )
    ssm = sandbox.client("ssm", internal=True)
    ssm.put_parameter(Name="/golden/older", Value=older, Type="String", DataType="aws:ec2:image")
    summary = run_retention(sandbox, policy_path=_policy(tmp_path, max_deregistrations_per_run=1))
    assert _image(sandbox, older) is not None
    assert _image(sandbox, newer) is None and newer in _bin(sandbox)[0]
    assert summary["counts"]["deregister"] == 1
    assert latest(sandbox)["aws_references"]["disagreements"] == 1


def test_the_scream_test_disables_before_the_due_date_and_anything_that_unmarks_enables(sandbox, tmp_path):
    """Policy `scream_test_days: 3`: a marked image is disabled (launches fail) once its due time
    is 3 days away; a hold enables it again in the next run; `restore-ami` enables one at once;
    an image somebody else disabled is left alone; turning the option off enables the rest; a
    disabled image is still deregistered (into the bin) when due."""
    from botocore.exceptions import ClientError

    from amirelease.retention.restore import restore_ami
    from amirelease.retention.scream import DISABLED_TAG

    ec2 = sandbox.client("ec2", internal=True)
    on = _policy(tmp_path, scream_test_days=3)
    first = run_retention(sandbox, policy_path=on)
    assert first["counts"]["mark"] == 5 and first["applied"]["disabled"] == 0  # due in 7+ days: not yet
    marked = [i["image_id"] for i in first["items"] if i["action"] == "mark"]
    held, restored, other, *rest = marked
    ec2.disable_image(ImageId=other)  # somebody else's decision: no tag of ours

    age_account(sandbox, 5)  # the marks are due within 3 days now
    second = run_retention(sandbox, policy_path=on)
    assert second["applied"]["disabled"] == 4, second["applied"]
    for image_id in (held, restored, *rest):
        image = _image(sandbox, image_id)
        assert image["State"] == "disabled" and DISABLED_TAG in _tags(image), image_id
    assert DISABLED_TAG not in _tags(_image(sandbox, other)) and _image(sandbox, other)["State"] == "disabled"
    with pytest.raises(ClientError, match="InvalidAMIID"):  # the scream: a launch fails
        ec2.run_instances(ImageId=held, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    assert run_retention(sandbox, policy_path=on)["applied"]["disabled"] == 0  # steady: no call again

    # a hold unmarks it: the next run enables it and drops our tag
    ec2.create_tags(Resources=[held], Tags=[{"Key": "ForensicHold", "Value": "INC-7: web-b still launches it"}])
    third = run_retention(sandbox, policy_path=on)
    assert third["applied"]["enabled_again"] == 1 and third["applied"]["disabled"] == 0
    image = _image(sandbox, held)
    assert image["State"] == "available" and DISABLED_TAG not in _tags(image)
    ec2.run_instances(ImageId=held, MinCount=1, MaxCount=1, InstanceType="t3.micro")

    # restore-ami is the way back at once for a disabled image that is still registered
    done = restore_ami(image_id=restored, region=sandbox.region, reason="INC-8: batch job launches it", by="carol")
    image = _image(sandbox, restored)
    assert done.already_back and image["State"] == "available"
    assert {MARK, DISABLED_TAG}.isdisjoint(_tags(image)) and "carol" in _tags(image)["ForensicHold"]

    # still due and disabled: deregistered into the bin like any other (a disabled image may go)
    age_account(sandbox, 4)
    gone = run_retention(sandbox, policy_path=on)
    assert {i["image_id"] for i in gone["items"] if i["action"] == "deregister"} >= set(rest)
    assert set(rest) <= _bin(sandbox)[0]
    assert other in _bin(sandbox)[0]  # somebody else's disabled image goes when due, like the rest


def test_turning_the_scream_test_off_enables_what_it_disabled(sandbox, tmp_path):
    from amirelease.retention.scream import DISABLED_TAG

    on, off = _policy(tmp_path, "on.yaml", scream_test_days=30), _policy(tmp_path, "off.yaml", scream_test_days=0)
    first = run_retention(sandbox, policy_path=on)  # due within 30 days: disabled as it is marked
    assert first["applied"]["disabled"] == first["counts"]["mark"] == 5
    ec2 = sandbox.client("ec2", internal=True)
    theirs = next(i["image_id"] for i in first["items"] if i["action"] == "keep" and "too young" in i["reason"])
    ec2.disable_image(ImageId=theirs)  # somebody else's: turning ours off leaves it disabled
    dry = run_retention(sandbox, policy_path=off, mode="dry_run")
    assert "enabled_again" not in dry.get("applied", {}) or dry["applied"]["enabled_again"] == 0
    marked = [i["image_id"] for i in first["items"] if i["action"] == "mark"]
    assert [_image(sandbox, i)["State"] for i in marked] == ["disabled"] * 5  # a dry run changes nothing
    later = run_retention(sandbox, policy_path=off)
    assert later["applied"]["enabled_again"] == 5
    for item in first["items"]:
        if item["action"] == "mark":
            image = _image(sandbox, item["image_id"])
            assert image["State"] == "available" and DISABLED_TAG not in _tags(image)
    assert _image(sandbox, theirs)["State"] == "disabled"
