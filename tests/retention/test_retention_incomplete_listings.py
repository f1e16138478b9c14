"""Retention when AWS's listings come back incomplete (sandbox fault ``truncate``: a page without
its NextToken, as stock moto 5.2.5 answers DescribeLaunchTemplateVersions).

The product knows from DescribeAutoScalingGroups which launch templates, configurations and
instances the groups use; whatever a listing leaves out, no image a group needs may be marked
or deregistered.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from amirelease.retention.marks import format_mark
from tests.retention.conftest import latest, run_retention

MARK = "maid_status"
FOREVER = 10**6  # every call of the run(s)


def _tags_by_id(sb):
    ec2 = sb.client("ec2", internal=True)
    return {
        i["ImageId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}
        for i in ec2.describe_images(Owners=["self"])["Images"]
    }


def _groups_on_latest(sb, count: int) -> dict[str, str]:
    """``count`` launch templates, each used by a group on ``$Latest``; v1 names a young image,
    v2 (the latest) an image 100 days old. Half of the old images carry a mark already due
    (Custodian's format, due yesterday). Returns ``{old image id: group name}``."""
    ec2 = sb.client("ec2", internal=True)
    asg = sb.client("autoscaling", internal=True)
    young = sb.create_image("lt-young", age_days=2)
    due = format_mark(datetime.now(UTC) - timedelta(days=1))
    used: dict[str, str] = {}
    subnets = ",".join(sb.account["subnet_ids"])
    for n in range(count):
        tags = {MARK: due} if n % 2 else None
        old = sb.create_image(f"lt-latest-{n:03d}", age_days=100, tags=tags)
        lt = ec2.create_launch_template(
            LaunchTemplateName=f"many-{n:03d}", LaunchTemplateData={"ImageId": young, "InstanceType": "t3.micro"}
        )["LaunchTemplate"]
        ec2.create_launch_template_version(LaunchTemplateId=lt["LaunchTemplateId"], LaunchTemplateData={"ImageId": old})
        asg.create_auto_scaling_group(
            AutoScalingGroupName=f"many-{n:03d}",
            MinSize=0,
            MaxSize=1,
            DesiredCapacity=0,
            LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"], "Version": "$Latest"},
            VPCZoneIdentifier=subnets,
        )
        used[old] = f"many-{n:03d}"
    return used


def test_a_template_listing_without_its_token_marks_and_deregisters_nothing_a_group_uses(sandbox):
    """210 templates on $Latest: the account-wide listing (2 entries per template in moto) cut
    at 200 entries without a NextToken leaves more than half of them out."""
    used = _groups_on_latest(sandbox, 210)
    before = _tags_by_id(sandbox)
    sandbox.faults.truncate("DescribeLaunchTemplateVersions", times=FOREVER)
    summary = run_retention(sandbox)
    after = _tags_by_id(sandbox)
    deregistered = sorted(set(used) - set(after))
    newly_marked = sorted(i for i in used if i in after and MARK in after[i] and MARK not in before[i])
    assert deregistered == [], f"{len(deregistered)} images a group's $Latest uses were deregistered"
    assert newly_marked == [], f"{len(newly_marked)} images a group's $Latest uses were marked"
    assert summary["stopped"] is None  # every reference was resolved (directly, for what the listing lacked)
    rows = {r["image_id"]: r for r in latest(sandbox)["rows"]}
    for image_id, group in used.items():
        assert f"(ASG {group})" in rows[image_id]["reason"], rows[image_id]
        assert rows[image_id]["action"] in ("keep", "unmark"), rows[image_id]
