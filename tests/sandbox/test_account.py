"""The seeded account: vendor images, demo group, aged AMIs, SSM answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


def test_vendor_images_are_ebs_backed_and_findable(sandbox):
    ec2 = sandbox.client("ec2")
    al = ec2.describe_images(Owners=["137112412989"], Filters=[{"Name": "name", "Values": ["al2023-ami-*-x86_64"]}])[
        "Images"
    ]
    win = ec2.describe_images(
        Owners=["801119661308"], Filters=[{"Name": "name", "Values": ["Windows_Server-2022-English-Full-Base-*"]}]
    )["Images"]
    assert len(al) == 2 and len(win) == 1
    newest = max(al, key=lambda i: i["CreationDate"])
    assert newest["ImageId"] == sandbox.account["vendor_images"]["amazon-linux"]
    assert win[0]["ImageId"] == sandbox.account["vendor_images"]["windows"] and win[0]["Platform"] == "windows"
    for image in al + win:
        assert image["RootDeviceType"] == "ebs" and image["State"] == "available"
        root = [m for m in image["BlockDeviceMappings"] if m["DeviceName"] == image["RootDeviceName"]]
        assert root and root[0]["Ebs"]["SnapshotId"].startswith("snap-")
    # not moto's big default list
    assert len(ec2.describe_images()["Images"]) < 100


def test_create_fleet_makes_a_group_with_template_target_group_and_alarms(fleet):
    acct = fleet.account
    asg = fleet.client("autoscaling")
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["demo-web-asg"])["AutoScalingGroups"][0]
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (2, 3, 6)
    assert set(group["VPCZoneIdentifier"].split(",")) == set(acct["subnet_ids"])
    assert group["TargetGroupARNs"] == [acct["target_group_arn"]]
    assert group["LaunchTemplate"]["LaunchTemplateName"] == "demo-web"
    lt = fleet.client("ec2").describe_launch_template_versions(LaunchTemplateName="demo-web")["LaunchTemplateVersions"]
    assert lt[0]["LaunchTemplateData"]["ImageId"] == acct["vendor_images"]["amazon-linux"]
    assert lt[0]["LaunchTemplateData"]["InstanceType"] == "t3.micro"
    health = fleet.client("elbv2").describe_target_health(TargetGroupArn=acct["target_group_arn"])
    assert len(health["TargetHealthDescriptions"]) == 3
    assert {d["TargetHealth"]["State"] for d in health["TargetHealthDescriptions"]} == {"healthy"}
    alarms = fleet.client("cloudwatch").describe_alarms(AlarmNames=acct["alarm_names"])["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in alarms) == ["demo-web-5xx", "demo-web-latency"]
    assert {a["StateValue"] for a in alarms} == {"OK"}


def test_aged_images(sandbox):
    ec2 = sandbox.client("ec2")
    own = {i["ImageId"]: i for i in ec2.describe_images(Owners=["self"])["Images"]}
    now = datetime.now(UTC)
    by_name = {a["name"]: a for a in sandbox.account["aged_images"]}
    assert len(own) == len(by_name)
    for aged in sandbox.account["aged_images"]:
        image = own[aged["image_id"]]
        created = datetime.fromisoformat(image["CreationDate"].replace("Z", "+00:00"))
        assert abs((now - created) - timedelta(days=aged["age_days"])) < timedelta(minutes=5)
        assert image["OwnerId"] == sandbox.account_id and image["RootDeviceType"] == "ebs"
        assert {t["Key"]: t["Value"] for t in image.get("Tags", [])} == aged["tags"]
    # protections and near misses
    tags = lambda n: by_name[n]["tags"]
    assert tags("demo-web-0.9.0")["RetainIndefinitely"] == "true"
    assert tags("demo-web-0.9.1")["retainindefinitely"] == "true"
    assert tags("demo-web-0.9.2")["RetainIndefinitely"] == "True"
    assert tags("demo-web-0.9.4")["maid_status"].startswith("Resource does not meet policy: deregister@")
    # shared snapshot
    assert by_name["demo-web-0.8.0"]["snapshot_id"] == by_name["demo-web-0.8.0-copy"]["snapshot_id"]
    snap = by_name["demo-web-0.8.0"]["snapshot_id"]
    users = [
        i for i in own.values() if any(m.get("Ebs", {}).get("SnapshotId") == snap for m in i["BlockDeviceMappings"])
    ]
    assert len(users) == 2
    # in use by an instance
    running = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
    used = {i["ImageId"] for r in running for i in r["Instances"]}
    assert by_name["demo-web-0.9.3"]["image_id"] in used and by_name["demo-web-1.0.0"]["image_id"] in used
    assert by_name["demo-web-0.9.5"]["image_id"] not in used


def test_shared_snapshot_cannot_be_deleted_while_an_image_uses_it(sandbox):
    from botocore.exceptions import ClientError

    ec2 = sandbox.client("ec2")
    by_name = {a["name"]: a for a in sandbox.account["aged_images"]}
    ec2.deregister_image(ImageId=by_name["demo-web-0.8.0"]["image_id"])
    with pytest.raises(ClientError) as err:
        ec2.delete_snapshot(SnapshotId=by_name["demo-web-0.8.0"]["snapshot_id"])
    assert err.value.response["Error"]["Code"] == "InvalidSnapshot.InUse"
    ec2.deregister_image(ImageId=by_name["demo-web-0.8.0-copy"]["image_id"])
    ec2.delete_snapshot(SnapshotId=by_name["demo-web-0.8.0"]["snapshot_id"])


def test_create_image_with_date_tags_and_in_use(sandbox):
    ec2 = sandbox.client("ec2")
    image_id = sandbox.create_image("x-1", creation_date="2024-01-02T03:04:05Z", tags={"App": "x"}, in_use=True)
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["CreationDate"].startswith("2024-01-02T03:04:05")
    assert image["Tags"] == [{"Key": "App", "Value": "x"}]
    res = ec2.describe_instances(Filters=[{"Name": "image-id", "Values": [image_id]}])["Reservations"]
    assert len(res) == 1
    west = sandbox.create_image("x-west", age_days=5, region="us-west-2")
    assert sandbox.client("ec2", region="us-west-2").describe_images(ImageIds=[west])["Images"][0]["Name"] == "x-west"


def test_create_image_from_instance_is_ebs_backed(sandbox):
    ec2 = sandbox.client("ec2")
    inst = ec2.run_instances(
        ImageId=sandbox.account["vendor_images"]["amazon-linux"],
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        SubnetId=sandbox.account["subnet_ids"][0],
    )["Instances"][0]
    image_id = ec2.create_image(InstanceId=inst["InstanceId"], Name="baked")["ImageId"]
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["RootDeviceType"] == "ebs" and image["RootDeviceName"] == "/dev/xvda"


def _run(ssm, instance_ids, commands):
    cmd = ssm.send_command(
        InstanceIds=instance_ids, DocumentName="AWS-RunShellScript", Parameters={"commands": commands}
    )["Command"]
    return cmd["CommandId"]


def test_ssm_responses_from_rules(sandbox):
    ssm = sandbox.client("ssm")
    iid = "i-0123456789abcdef0"
    cid = _run(ssm, [iid], ["curl -fsS http://localhost/health"])
    inv = ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
    assert (inv["Status"], inv["ResponseCode"], inv["StandardOutputContent"]) == ("Success", 0, "ok\n")
    cid = _run(ssm, [iid], ["systemctl is-active demo-web"])
    assert ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["StandardOutputContent"] == "active\n"
    cid = _run(ssm, [iid], ["echo unmatched"])
    inv = ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
    assert (inv["Status"], inv["ResponseCode"], inv["StandardOutputContent"]) == ("Success", 0, "")
    cid = _run(ssm, [iid], ["systemctl is-active nginx"])
    inv = ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
    assert (inv["Status"], inv["ResponseCode"]) == ("Failed", 3)


def test_ssm_fault_and_list_command_invocations(sandbox):
    ssm = sandbox.client("ssm")
    good, bad = "i-00000000000000001", "i-00000000000000002"
    sandbox.faults.fail_ssm(bad, exit_code=7, stdout="partial", stderr="boom")
    cid = _run(ssm, [good, bad], ["curl -fsS http://localhost/health"])
    inv = ssm.get_command_invocation(CommandId=cid, InstanceId=bad)
    assert (inv["Status"], inv["ResponseCode"], inv["StandardOutputContent"], inv["StandardErrorContent"]) == (
        "Failed",
        7,
        "partial",
        "boom",
    )
    listed = ssm.list_command_invocations(CommandId=cid, Details=True)["CommandInvocations"]
    by_id = {i["InstanceId"]: i for i in listed}
    assert by_id[good]["Status"] == "Success" and by_id[good]["CommandPlugins"][0]["Output"] == "ok\n"
    assert by_id[bad]["Status"] == "Failed" and by_id[bad]["CommandPlugins"][0]["ResponseCode"] == 7
    assert ssm.list_commands(CommandId=cid)["Commands"][0]["Status"] == "Failed"


def test_the_catalogs_notification_topic_is_seeded_with_an_inbox(sandbox):
    """demo-web's notify: topic exists; what is published to it lands in the seeded SQS queue."""
    import json

    seeded = sandbox.account["notification_topics"]["demo-web-releases"]
    assert seeded["topic_arn"] == "arn:aws:sns:us-east-1:123456789012:demo-web-releases"
    sandbox.client("sns").publish(TopicArn=seeded["topic_arn"], Subject="hello", Message="words")
    got = sandbox.client("sqs").receive_message(QueueUrl=seeded["inbox"], MaxNumberOfMessages=10)["Messages"]
    assert [(json.loads(m["Body"])["Subject"], json.loads(m["Body"])["Message"]) for m in got] == [("hello", "words")]
