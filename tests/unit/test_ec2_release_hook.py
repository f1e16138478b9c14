"""The release's EC2 hook (hooks/ec2_release.py) against the sandbox, in seconds: what the bake
and the smoke test rely on it for, without running either. Setup the product never does itself
(a key pair, an image) is made with the test's own client, so the IAM check sees only the
hook's calls, which are the bake's and the smoke test's."""

from __future__ import annotations

import boto3
import pytest

from amirelease.aws import AwsClients
from amirelease.constants import PURPOSE_BUILDER, PURPOSE_SMOKE, TAG_PURPOSE, TAG_RELEASE_ID
from amirelease.hooks.ec2_release import Ec2ReleaseHook


@pytest.fixture
def hook(sandbox) -> Ec2ReleaseHook:
    return AwsClients(region_name="us-east-1").ec2_release()


def _own_client(sb):
    return boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=sb.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _launch(hook: Ec2ReleaseHook, sb, release_id: str, purpose: str) -> str:
    return hook.run_instance(
        ImageId=sb.account["vendor_images"]["amazon-linux"],
        SubnetId=sb.account["subnet_ids"][0],
        InstanceType="t3.micro",
        tags={TAG_RELEASE_ID: release_id, TAG_PURPOSE: purpose},
    )


def _describe_calls(sb) -> int:
    return sb.callers().get(("airflow", "ec2:DescribeInstances"), 0)


def _state(hook: Ec2ReleaseHook, instance_id: str) -> str:
    return hook.get_instance_state(instance_id)


def test_it_removes_a_releases_instances_of_one_purpose_only(hook, sandbox):
    mine = _launch(hook, sandbox, "r-hook", PURPOSE_SMOKE)
    builder = _launch(hook, sandbox, "r-hook", PURPOSE_BUILDER)
    other = _launch(hook, sandbox, "r-other", PURPOSE_SMOKE)
    assert hook.release_instances("r-hook", PURPOSE_SMOKE) == [mine]
    asked = _describe_calls(sandbox)
    assert hook.remove_release_instances("r-hook", PURPOSE_SMOKE, what="smoke-test instance(s)", why="test") == [mine]
    # The sandbox (moto) terminates at once, so the state alone cannot show the wait: the
    # instance_terminated waiter's own DescribeInstances (after the one that found the instance) does.
    assert _describe_calls(sandbox) - asked == 2
    assert _state(hook, mine) == "terminated"
    assert {_state(hook, builder), _state(hook, other)} <= {"pending", "running"}
    assert hook.release_instances("r-hook", PURPOSE_SMOKE) == []
    assert hook.remove_release_instances("r-hook", PURPOSE_SMOKE, what="x", why="nothing left") == []
    hook.terminate_and_wait([builder, other], what="test instance(s)", why="cleanup")


def test_it_makes_and_removes_a_releases_security_group_and_key_pair(hook, sandbox):
    vpc = sandbox.account["vpc_id"]
    tags = {TAG_RELEASE_ID: "r-sg-hook", TAG_PURPOSE: PURPOSE_BUILDER}
    opened = hook.create_security_group(
        name="ami-builder-r-sg-hook", description="test", vpc_id=vpc, tags=tags, tcp_port=22, cidrs=["10.1.0.0/24"]
    )
    closed = hook.create_security_group(name="ami-builder-r-sg-hook-2", description="test", vpc_id=vpc, tags=tags)
    groups = {g["GroupId"]: g for g in hook.conn.describe_security_groups(GroupIds=[opened, closed])["SecurityGroups"]}
    [perm] = groups[opened]["IpPermissions"]
    assert (perm["FromPort"], perm["ToPort"], perm["IpRanges"]) == (22, 22, [{"CidrIp": "10.1.0.0/24"}])
    assert groups[closed]["IpPermissions"] == []
    hook.delete_release_security_groups("r-sg-hook", PURPOSE_BUILDER, why="test")
    filters = [{"Name": f"tag:{TAG_RELEASE_ID}", "Values": ["r-sg-hook"]}]
    assert hook.conn.describe_security_groups(Filters=filters)["SecurityGroups"] == []
    assert hook.delete_security_group(opened, why="already gone") is True  # InvalidGroup.NotFound: gone

    _own_client(sandbox).create_key_pair(KeyName="packer-r-sg-hook")
    assert hook.delete_key_pair_named("packer-r-sg-hook", why="test") is True
    assert hook.delete_key_pair_named("packer-r-sg-hook", why="again") is False


def test_it_finds_a_releases_image_and_tags_it(hook, sandbox):
    own = _own_client(sandbox)
    builder = _launch(hook, sandbox, "r-img-hook", PURPOSE_BUILDER)
    image = own.create_image(
        InstanceId=builder,
        Name="r-img-hook",
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": TAG_RELEASE_ID, "Value": "r-img-hook"}]}],
    )["ImageId"]
    assert hook.release_image("r-img-hook") == image
    assert hook.release_image("r-no-such-release") is None
    hook.tag(image, {"Version": "1.2.3"})
    assert hook.image_tags(image) == {TAG_RELEASE_ID: "r-img-hook", "Version": "1.2.3"}
    hook.terminate_and_wait([builder], what="test instance(s)", why="cleanup")


def test_it_tells_what_instances_run_and_discards_a_releases_images(hook, sandbox):
    """What the rollback reads (the images a group's instances run) and what record does with a
    refused release (its AMIs deregistered, their snapshots deleted; another release's kept)."""
    own = _own_client(sandbox)
    builder = _launch(hook, sandbox, "r-discard", PURPOSE_BUILDER)
    vendor = sandbox.account["vendor_images"]["amazon-linux"]
    images = {}
    for rid in ("r-discard", "r-keep"):
        images[rid] = own.create_image(
            InstanceId=builder,
            Name=rid,
            TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": TAG_RELEASE_ID, "Value": rid}]}],
        )["ImageId"]
    assert [i["ImageId"] for i in hook.images_of_instances([builder])] == [vendor]
    assert hook.images_of_instances([]) == []

    def snapshots(image_id):
        image = own.describe_images(ImageIds=[image_id])["Images"][0]
        return [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]

    doomed = snapshots(images["r-discard"])
    assert doomed
    assert hook.discard_release_images("r-discard") == [(images["r-discard"], doomed)]
    assert own.describe_images(Owners=["self"], ImageIds=[images["r-discard"]])["Images"] == []
    left = {s["SnapshotId"] for s in own.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(doomed) & left and set(snapshots(images["r-keep"])) <= left
    assert hook.discard_release_images("r-discard") == []
    hook.terminate_and_wait([builder], what="test instance(s)", why="cleanup")


def test_an_untagged_image_of_a_killed_try_is_found_and_discarded_by_its_name(hook, sandbox):
    """Packer tags the AMI only once it is available: a bake killed while the AMI was pending left
    it untagged. The retry finds it by the release's AMI name (and adopts it), a refused release
    discards it by that name; an image of another name is neither's."""
    own = _own_client(sandbox)
    builder = _launch(hook, sandbox, "r-untagged", PURPOSE_BUILDER)
    untagged = own.create_image(InstanceId=builder, Name="demo-web-1.2.3-r-untagged")["ImageId"]
    other = own.create_image(InstanceId=builder, Name="demo-web-1.2.4-r-other")["ImageId"]
    assert hook.release_image("r-untagged") is None  # not by its tag: it has none
    assert hook.release_image("r-untagged", name="demo-web-1.2.3-r-untagged") == untagged
    assert hook.release_image("r-untagged", name="demo-web-9.9.9-r-none") is None
    hook.tag(untagged, {TAG_RELEASE_ID: "r-untagged"})  # tagged as well: still one image, once
    assert [i["ImageId"] for i in hook._release_images("r-untagged", "demo-web-1.2.3-r-untagged")] == [untagged]
    assert [g for g, _ in hook.discard_release_images("r-untagged", name="demo-web-1.2.3-r-untagged")] == [untagged]
    assert [i["ImageId"] for i in own.describe_images(Owners=["self"])["Images"] if i["ImageId"] == other] == [other]
    own.deregister_image(ImageId=other)
    hook.terminate_and_wait([builder], what="test instance(s)", why="cleanup")
