"""The release's EC2 work, in one hook: what the bake and the smoke test make for a release
(a builder's security group and key pair, a smoke-test instance) and how they find and remove
it again (by the release's tags), so each operator's ``execute`` reads as a short sequence.

Built like the Amazon provider's own hooks: ``EC2Hook`` as a client (its ``get_instance_ids``,
``terminate_instances``) and botocore's waiters (``instance_running``, ``instance_terminated``,
``image_available``). Build it through ``AwsClients.ec2_release`` so it carries the deployment's
retry policy and names its region in AWS's errors, like every other client of the package.

Every call here is an IAM action of the operator that uses it (``iam_actions`` of
operators/bake.py and operators/smoke.py); the IAM check proves them against the sandbox.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from botocore.exceptions import ClientError, WaiterError

from amirelease.constants import TAG_PURPOSE, TAG_RELEASE_ID, TERMINABLE_INSTANCE_STATES
from amirelease.errors import AwsErrorFamily, aws_error
from amirelease.retention.model import snapshot_ids

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import ResourceTypeType
    from mypy_boto3_ec2.type_defs import FilterTypeDef, ImageTypeDef, TagSpecificationTypeDef, WaiterConfigTypeDef

# How long a removal waits for AWS: instances to terminate (botocore's waiter), a security group
# to lose its last network interface (DependencyViolation while a terminated builder's ENI lingers).
TERMINATE_WAIT: WaiterConfigTypeDef = {"Delay": 2, "MaxAttempts": 150}
GROUP_DELETE_ATTEMPTS = 15
GROUP_DELETE_DELAY = 2.0
LIVE_IMAGE_STATES = ("available", "pending")


def release_filters(release_id: str, purpose: str) -> list[FilterTypeDef]:
    """EC2 filters for what a release made for one purpose (its ReleaseId and Purpose tags)."""
    return [
        {"Name": f"tag:{TAG_RELEASE_ID}", "Values": [release_id]},
        {"Name": f"tag:{TAG_PURPOSE}", "Values": [purpose]},
    ]


def tag_specification(resource_type: ResourceTypeType, tags: Mapping[str, str]) -> TagSpecificationTypeDef:
    return {"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


class Ec2ReleaseHook(EC2Hook):
    """EC2 for one release, as a client (``boto3.client("ec2")``). See the module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["api_type"] = "client_type"
        super().__init__(*args, **kwargs)

    if TYPE_CHECKING:
        # For the type checker only: the provider's EC2Hook is untyped (a client or a resource);
        # this one is always a client (api_type above), so its ``conn`` is an EC2Client.
        @cached_property
        def conn(self) -> EC2Client: ...

    # -- instances -------------------------------------------------------------------------
    def release_instances(self, release_id: str, purpose: str) -> list[str]:
        """Ids of the release's instances of ``purpose`` that are not terminated yet."""
        ids: list[str] = self.get_instance_ids(
            filters=[
                *release_filters(release_id, purpose),
                {"Name": "instance-state-name", "Values": list(TERMINABLE_INSTANCE_STATES)},
            ]
        )
        return ids

    def terminate_and_wait(self, ids: Sequence[str], *, what: str, why: str) -> None:
        """Terminate ``ids`` and wait until AWS says terminated. A wait that runs out is logged,
        not raised: termination was requested, and the next try's sweep finds any rest."""
        if not ids:
            return
        self.log.info("Terminating %s %s (%s)", what, list(ids), why)
        self.terminate_instances(instance_ids=list(ids))
        try:
            self.conn.get_waiter("instance_terminated").wait(InstanceIds=list(ids), WaiterConfig=TERMINATE_WAIT)
        except WaiterError:
            self.log.warning("%s %s not terminated yet; termination was requested", what, list(ids))

    def remove_release_instances(self, release_id: str, purpose: str, *, what: str, why: str) -> list[str]:
        """Find the release's instances of ``purpose`` and terminate them (waiting). Returns their ids."""
        ids = self.release_instances(release_id, purpose)
        if ids:
            self.log.warning("Found %s of release %s: %s (%s)", what, release_id, ids, why)
        self.terminate_and_wait(ids, what=what, why=why)
        return ids

    def launch_template_id(self, name: str) -> str | None:
        """The id of the launch template called ``name``, or None when there is none (yet)."""
        found = self.conn.describe_launch_templates(Filters=[{"Name": "launch-template-name", "Values": [name]}])
        templates = found["LaunchTemplates"]
        return str(templates[0]["LaunchTemplateId"]) if templates else None

    def run_instance(self, *, tags: Mapping[str, str], **run_args: Any) -> str:
        """Launch one instance tagged ``tags`` (RunInstances arguments as given). Returns its id."""
        response = self.conn.run_instances(
            MinCount=1, MaxCount=1, TagSpecifications=[tag_specification("instance", tags)], **run_args
        )
        return str(response["Instances"][0]["InstanceId"])

    def wait_running(self, instance_id: str, *, delay: float, timeout: float) -> None:
        """botocore's ``instance_running`` waiter; raises its WaiterError when the time is up."""
        # botocore sleeps ``Delay`` seconds with time.sleep, so a fraction works (the tests poll at
        # 0.2 s); the stubs say int, from the service model's waiter definitions, hence the cast.
        self.conn.get_waiter("instance_running").wait(
            InstanceIds=[instance_id],
            WaiterConfig={"Delay": cast("int", delay), "MaxAttempts": max(1, int(timeout / delay))},
        )

    # -- images ----------------------------------------------------------------------------
    def release_image(self, release_id: str, name: str | None = None) -> str | None:
        """The newest available (or pending: waited for) AMI of this account tagged with the
        release, or named ``name`` (the release's AMI name), or None. How a retry of a bake finds
        what an earlier try built: Packer tags the AMI only once it is available, so a try killed
        while the AMI was pending (minutes on AWS) left it untagged, found by its name only."""
        images = [i for i in self._release_images(release_id, name) if i["State"] in LIVE_IMAGE_STATES]
        if not images:
            return None
        image = max(images, key=lambda i: i.get("CreationDate", ""))
        if image["State"] == "pending":
            self.log.info("AMI %s from an earlier try is still pending; waiting", image["ImageId"])
            self.conn.get_waiter("image_available").wait(ImageIds=[image["ImageId"]])
        return str(image["ImageId"])

    def _release_images(self, release_id: str, name: str | None = None) -> list[ImageTypeDef]:
        """This account's AMIs tagged with the release, and (``name``) the one with the release's
        AMI name, tagged or not (any state), each once."""
        found = {
            i["ImageId"]: i
            for i in self.conn.describe_images(
                Owners=["self"], Filters=[{"Name": f"tag:{TAG_RELEASE_ID}", "Values": [release_id]}]
            )["Images"]
        }
        if name:
            named = self.conn.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
            found.update({i["ImageId"]: i for i in named["Images"] if i["ImageId"] not in found})
        return list(found.values())

    def image_tags(self, image_id: str) -> dict[str, str]:
        image = self.conn.describe_images(ImageIds=[image_id])["Images"][0]
        return {t["Key"]: t["Value"] for t in image.get("Tags") or []}

    def tag(self, resource_id: str, tags: Mapping[str, str]) -> None:
        self.conn.create_tags(Resources=[resource_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    # -- a temporary security group and key pair ---------------------------------------------
    def create_security_group(
        self,
        *,
        name: str,
        description: str,
        vpc_id: str,
        tags: Mapping[str, str],
        tcp_port: int | None = None,
        cidrs: Sequence[str] = (),
    ) -> str:
        """A tagged security group; with ``tcp_port``, that port opened from ``cidrs`` only."""
        group_id = str(
            self.conn.create_security_group(
                GroupName=name[:255],
                Description=description,
                VpcId=vpc_id,
                TagSpecifications=[tag_specification("security-group", tags)],
            )["GroupId"]
        )
        if tcp_port is not None:
            self.conn.authorize_security_group_ingress(
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": tcp_port,
                        "ToPort": tcp_port,
                        "IpRanges": [{"CidrIp": c} for c in cidrs],
                    }
                ],
            )
        return group_id

    def delete_release_security_groups(self, release_id: str, purpose: str, *, why: str) -> None:
        """Delete the release's security groups of ``purpose``."""
        for group in self.conn.describe_security_groups(Filters=release_filters(release_id, purpose))["SecurityGroups"]:
            self.delete_security_group(group["GroupId"], why=why)

    def delete_security_group(self, group_id: str, *, why: str) -> bool:
        """Delete a group, retrying while something still uses it (a terminated instance's network
        interface lingers a little). True when it is gone; False (logged) when it is still in use
        or AWS refused: the next try removes it."""
        for attempt in range(GROUP_DELETE_ATTEMPTS):
            try:
                self.conn.delete_security_group(GroupId=group_id)
                self.log.info("Security group %s deleted (%s)", group_id, why)
                return True
            except ClientError as exc:
                error = aws_error(exc)
                if error.family is AwsErrorFamily.NOT_FOUND:
                    return True
                if error.family is not AwsErrorFamily.IN_USE or attempt == GROUP_DELETE_ATTEMPTS - 1:
                    self.log.warning(
                        "Security group %s not deleted (%s); the next try removes it", group_id, error.code
                    )
                    return False
                time.sleep(GROUP_DELETE_DELAY)
        return False

    def delete_key_pair_named(self, name: str, *, why: str) -> bool:
        """Delete the key pair called ``name`` if it exists. True when one was deleted."""
        if not self.conn.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]:
            return False
        self.log.warning("Deleting the key pair %s (%s)", name, why)
        self.conn.delete_key_pair(KeyName=name)
        return True

    def discard_release_images(self, release_id: str, name: str | None = None) -> list[tuple[str, list[str]]]:
        """Deregister every AMI of this account tagged with the release (or named ``name``, the
        release's AMI name: an untagged one of a killed try) and delete its snapshots (a refused
        release keeps nothing). Returns ``[(image id, [snapshot ids])]``."""
        gone = []
        for image in self._release_images(release_id, name):
            snapshots = list(snapshot_ids(image))
            self.conn.deregister_image(ImageId=image["ImageId"])
            for snapshot in snapshots:
                self.conn.delete_snapshot(SnapshotId=snapshot)
            gone.append((str(image["ImageId"]), snapshots))
        return gone

    def images_of_instances(self, instance_ids: Sequence[str]) -> list[ImageTypeDef]:
        """The images (DescribeImages items) the given instances run, each once."""
        if not instance_ids:
            return []
        reservations = self.conn.describe_instances(InstanceIds=list(instance_ids))["Reservations"]
        images = sorted({i["ImageId"] for r in reservations for i in r["Instances"]})
        return list(self.conn.describe_images(ImageIds=images)["Images"]) if images else []
