"""sandbox/aws/images.py: deprecation, disabled images, deregistration protection,
lastLaunchedTime and DeleteAssociatedSnapshots, against the EC2 API reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandbox.aws.ageing import age_account
from tests.sandbox.conftest import code_of


def _image(ec2, image_id, **kw):
    return ec2.describe_images(ImageIds=[image_id], **kw)["Images"]


def test_deprecation_time_is_shown_rounded_to_the_minute_and_cleared(sandbox, ec2):
    image = sandbox.create_image("dep", age_days=90)
    at = (datetime.now(UTC) + timedelta(days=7)).replace(second=40, microsecond=0)
    assert ec2.enable_image_deprecation(ImageId=image, DeprecateAt=at)["Return"] is True
    want = (at + timedelta(seconds=20)).replace(second=0).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert _image(ec2, image)[0]["DeprecationTime"] == want
    assert ec2.disable_image_deprecation(ImageId=image)["Return"] is True
    assert "DeprecationTime" not in _image(ec2, image)[0]


def test_deprecation_in_the_past_or_beyond_ten_years_is_refused(sandbox, ec2):
    image = sandbox.create_image("dep", age_days=90)
    past = datetime.now(UTC) - timedelta(days=1)
    assert code_of(lambda: ec2.enable_image_deprecation(ImageId=image, DeprecateAt=past)) == "InvalidParameterValue"
    far = datetime.now(UTC) + timedelta(days=3660)
    assert code_of(lambda: ec2.enable_image_deprecation(ImageId=image, DeprecateAt=far)) == "InvalidParameterValue"
    assert (
        code_of(
            lambda: ec2.enable_image_deprecation(
                ImageId="ami-0123456789abcdef0", DeprecateAt=datetime.now(UTC) + timedelta(days=1)
            )
        )
        == "InvalidAMIID.NotFound"
    )


def test_deprecated_images_of_other_owners_are_hidden_unless_asked_for(sandbox, ec2):
    vendor = sandbox.account["vendor_images"]["amazon-linux"]
    own = sandbox.create_image("mine", age_days=90)
    soon = datetime.now(UTC) + timedelta(minutes=2)
    for image in (vendor, own):
        ec2.enable_image_deprecation(ImageId=image, DeprecateAt=soon)
    age_account(sandbox, 1)  # moves our image's deprecation back a day; the vendor image is not ours
    from moto.ec2.models import ec2_backends

    ami = ec2_backends[sandbox.account_id][sandbox.region].amis[vendor]
    ami.__dict__["_sb_deprecate_at"] -= timedelta(days=1)  # the vendor's deprecation has passed too
    listed = {i["ImageId"] for i in ec2.describe_images()["Images"]}
    assert vendor not in listed and own in listed  # the owner always sees its own
    assert vendor in {i["ImageId"] for i in ec2.describe_images(IncludeDeprecated=True)["Images"]}
    assert _image(ec2, vendor)  # asked for by id


def test_disabled_image_is_hidden_refuses_launches_and_comes_back(sandbox, ec2):
    image = sandbox.create_image("dis", age_days=90)
    ec2.disable_image(ImageId=image)
    own = lambda **kw: {i["ImageId"] for i in ec2.describe_images(Owners=["self"], **kw)["Images"]}
    assert image not in own()
    assert image in own(IncludeDisabled=True)
    assert _image(ec2, image, IncludeDisabled=True)[0]["State"] == "disabled"
    launch = lambda: ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    assert code_of(launch) == "InvalidAMIID.Unavailable"
    ec2.enable_image(ImageId=image)
    assert image in own()
    assert launch()["Instances"][0]["ImageId"] == image


def test_deregistration_protection_refuses_and_the_cooldown_follows_the_clock(sandbox, ec2):
    image = sandbox.create_image("prot", age_days=90)
    assert ec2.enable_image_deregistration_protection(ImageId=image, WithCooldown=True)["Return"] == "true"
    assert _image(ec2, image)[0]["DeregistrationProtection"] == "enabled-with-cooldown"
    assert code_of(lambda: ec2.deregister_image(ImageId=image)) == "OperationNotPermitted"
    ec2.disable_image_deregistration_protection(ImageId=image)
    state = ec2.describe_image_attribute(ImageId=image, Attribute="deregistrationProtection")
    assert state["DeregistrationProtection"]["Value"].startswith("disabled-until ")
    assert code_of(lambda: ec2.deregister_image(ImageId=image)) == "OperationNotPermitted"  # cooldown: 24 h
    age_account(sandbox, 1)
    assert _image(ec2, image)[0]["DeregistrationProtection"] == "disabled"
    assert ec2.deregister_image(ImageId=image)["Return"] is True


def test_protection_without_cooldown_lifts_at_once(sandbox, ec2):
    image = sandbox.create_image("prot", age_days=90)
    ec2.enable_image_deregistration_protection(ImageId=image)
    assert _image(ec2, image)[0]["DeregistrationProtection"] == "enabled-without-cooldown"
    assert code_of(lambda: ec2.deregister_image(ImageId=image)) == "OperationNotPermitted"
    ec2.disable_image_deregistration_protection(ImageId=image)
    assert ec2.deregister_image(ImageId=image)["Return"] is True


def test_last_launched_time_is_set_by_run_instances(sandbox, ec2):
    image = sandbox.create_image("ll", age_days=90)
    attr = lambda: ec2.describe_image_attribute(ImageId=image, Attribute="lastLaunchedTime")
    assert "Value" not in attr()["LastLaunchedTime"]
    before = datetime.now(UTC).replace(microsecond=0)
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    value = datetime.fromisoformat(attr()["LastLaunchedTime"]["Value"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= value <= datetime.now(UTC) + timedelta(seconds=1)
    assert _image(ec2, image)[0]["LastLaunchedTime"] == attr()["LastLaunchedTime"]["Value"]


def test_delete_associated_snapshots_deletes_only_unshared_ones(sandbox, ec2):
    image = sandbox.create_image("a", age_days=90)
    snap = _image(ec2, image)[0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    out = ec2.deregister_image(ImageId=image, DeleteAssociatedSnapshots=True)
    assert out["DeleteSnapshotResults"] == [{"SnapshotId": snap, "ReturnCode": "success"}]
    assert code_of(lambda: ec2.describe_snapshots(SnapshotIds=[snap])) == "InvalidSnapshot.NotFound"
    first = sandbox.create_image("b", age_days=90)
    shared = _image(ec2, first)[0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    second = sandbox.create_image("c", age_days=90, snapshot_ids=[shared])
    out = ec2.deregister_image(ImageId=second, DeleteAssociatedSnapshots=True)
    assert out["DeleteSnapshotResults"] == [{"SnapshotId": shared, "ReturnCode": "skipped"}]
    assert ec2.describe_snapshots(SnapshotIds=[shared])["Snapshots"]
    # without the flag the snapshot stays, as before
    third = sandbox.create_image("d", age_days=90)
    kept = _image(ec2, third)[0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert "DeleteSnapshotResults" not in ec2.deregister_image(ImageId=third)
    assert ec2.describe_snapshots(SnapshotIds=[kept])["Snapshots"]
