"""Retention when AWS's listings come back incomplete (sandbox fault ``truncate``: a page without
its NextToken, as stock moto 5.2.5 answers DescribeLaunchTemplateVersions).

The product knows from DescribeAutoScalingGroups which launch templates, configurations and
instances the groups use; whatever a listing leaves out, no image a group needs may be marked
or deregistered.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from amirelease.errors import RetentionError
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


@pytest.mark.parametrize("cut", ["truncate fault", "stock moto"])
def test_a_template_listing_without_its_token_marks_and_deregisters_nothing_a_group_uses(sandbox, cut):
    """210 templates on $Latest: the account-wide listing (2 entries per template in moto) cut
    at 200 entries without a NextToken leaves more than half of them out; the same with stock
    moto 5.2.5's own answer (the sandbox's paging patch off)."""
    from sandbox.aws.describe_limits import stock_template_listing

    used = _groups_on_latest(sandbox, 210)
    before = _tags_by_id(sandbox)
    if cut == "truncate fault":
        sandbox.faults.truncate("DescribeLaunchTemplateVersions", times=FOREVER)
        summary = run_retention(sandbox)
    else:
        with stock_template_listing():
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


def _stopped_unchanged(sb, match):
    before = _tags_by_id(sb)
    with pytest.raises(RetentionError, match=match) as err:
        run_retention(sb)
    assert "nothing was changed" in str(err.value)
    assert _tags_by_id(sb) == before  # no tag written, no mark removed, nothing deregistered
    return str(err.value)


def test_a_template_version_aws_never_returns_stops_the_run_changing_nothing(sandbox):
    """The listing lacks the template and the direct call answers with nothing (no error):
    the view is incomplete, so the run stops before any change, saying which group and template."""
    used = _groups_on_latest(sandbox, 3)
    lacking = next(iter(used.values()))  # group many-000, template many-000
    template_id = sandbox.client("autoscaling", internal=True).describe_auto_scaling_groups(
        AutoScalingGroupNames=[lacking]
    )["AutoScalingGroups"][0]["LaunchTemplate"]["LaunchTemplateId"]
    sandbox.faults.truncate("DescribeLaunchTemplateVersions", times=FOREVER, empty=True, match=template_id)
    # the listing of all templates ($Latest and $Default) answers with nothing either
    sandbox.faults.truncate("DescribeLaunchTemplateVersions", times=FOREVER, empty=True, match="$Default")
    message = _stopped_unchanged(sandbox, "could not be resolved")
    assert f"Auto Scaling group {lacking} uses launch template {template_id} version $Latest" in message
    assert f"--launch-template-id {template_id} --versions '$Latest'" in message
    assert "the account view is incomplete" in message
    report = latest(sandbox)
    assert report["stopped"] and template_id in report["stopped"]
    sandbox.faults.clear()
    assert run_retention(sandbox)["stopped"] is None  # AWS answers whole again: the next run acts


def test_a_launch_configuration_aws_never_returns_stops_the_run(sandbox):
    asg = sandbox.client("autoscaling", internal=True)
    image = sandbox.create_image("lc-old", age_days=100)
    asg.create_launch_configuration(LaunchConfigurationName="lc-lost", ImageId=image, InstanceType="t3.micro")
    asg.create_auto_scaling_group(
        AutoScalingGroupName="lc-lost-asg",
        LaunchConfigurationName="lc-lost",
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        VPCZoneIdentifier=",".join(sandbox.account["subnet_ids"]),
    )
    sandbox.faults.truncate("DescribeLaunchConfigurations", times=FOREVER, empty=True)
    message = _stopped_unchanged(sandbox, "could not be resolved")
    assert "Auto Scaling group lc-lost-asg uses launch configuration lc-lost" in message
    sandbox.faults.clear()
    summary = run_retention(sandbox)
    assert summary["stopped"] is None
    row = next(r for r in latest(sandbox)["rows"] if r["image_id"] == image)
    assert row["action"] == "keep" and "launch configuration lc-lost (ASG lc-lost-asg)" in row["reason"]


def test_the_recheck_before_deregistering_resolves_the_groups_again(sandbox):
    """Between the first view and the deregistration a group moves onto a template whose
    $Latest names the due image: the recheck re-reads the groups, resolves them (the listing
    cut short, the template asked directly) and keeps the image."""
    from amirelease.retention import aws
    from amirelease.retention.decide import Action, decide
    from amirelease.retention.policy import load_policy

    due = format_mark(datetime.now(UTC) - timedelta(days=1))
    image = sandbox.create_image("due-now", age_days=100, tags={MARK: due})
    ec2, asg = sandbox.client("ec2"), sandbox.client("autoscaling")
    policy = load_policy()
    now = datetime.now(UTC)
    got = aws.collect(ec2, asg, policy, now, account_id=lambda: sandbox.account_id)
    plan = decide(got.images, got.usage, now, policy, account_id=got.account_id)
    assert image in {d.image_id for d in plan.of(Action.DEREGISTER)}
    _groups_on_latest(sandbox, 110)  # 220 listing entries: the last 10 templates are cut off
    late = sandbox.client("ec2", internal=True).create_launch_template(
        LaunchTemplateName="zz-late", LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    sandbox.client("autoscaling", internal=True).create_auto_scaling_group(
        AutoScalingGroupName="zz-late",
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        LaunchTemplate={"LaunchTemplateId": late, "Version": "$Latest"},
        VPCZoneIdentifier=",".join(sandbox.account["subnet_ids"]),
    )
    sandbox.faults.truncate("DescribeLaunchTemplateVersions", times=FOREVER, match="$Default")
    again = aws.recheck(ec2, asg, plan, policy, account_id=got.account_id)
    kept = next(d for d in again.decisions if d.image_id == image)
    assert kept.action is Action.KEEP
    assert f"referenced by launch template {late} v1 (ASG zz-late)" in "; ".join(kept.protections)


def test_a_cut_listing_of_live_instances_stops_the_run_before_an_image_in_use_looks_unused(sandbox):
    """The run lists every live instance once (paged) instead of asking per image. Cut short (a
    first page without its NextToken, one instance kept), it lacks the one instance that runs an
    old image outside every group: that image would look unused and be marked. The group
    instances it lacks too, found live by id, show the listing is incomplete: the run stops,
    changing nothing. Whole again, the next run keeps the image (in use)."""
    from moto.core.utils import utcnow
    from moto.ec2.models import ec2_backends

    from sandbox.aws.state import LOCK
    from tests.retention.conftest import make_group

    fleet = sandbox.create_image("cut-fleet", age_days=3)
    make_group(sandbox, "cut-fleet", fleet, desired=3)
    lone = sandbox.create_image("cut-lone", age_days=100, in_use=True)  # launched after the group's
    with LOCK:
        backend = ec2_backends[sandbox.account_id][sandbox.region]
        # its launch was long ago: AWS's lastLaunchedTime would keep it otherwise
        backend.amis[lone].__dict__["_sb_last_launched"] = None
        # the group's instances were launched an hour ago, not while the listing ran
        # (aws.LISTING_RACE_MARGIN: one launched then is no evidence of a cut listing)
        for reservation in backend.reservations.values():
            for instance in reservation.instances:
                instance.launch_time = utcnow() - timedelta(hours=1)
    # the listing of live instances only (a lookup by id names no state filter)
    sandbox.faults.truncate("ec2:DescribeInstances", times=FOREVER, keep=1, match="instance-state-name")
    text = _stopped_unchanged(sandbox, "the listing of live instances is incomplete")
    assert "lists as InService and EC2 returns as live when asked by id" in text
    assert MARK not in _tags_by_id(sandbox)[lone]
    sandbox.faults.clear()
    summary = run_retention(sandbox)
    assert summary["stopped"] is None
    row = next(i for i in summary["items"] if i["image_id"] == lone)
    assert row["action"] == "keep" and row["reason"].startswith("in use by i-"), row


def test_an_instance_launched_while_the_listing_ran_is_no_evidence_of_a_cut_listing():
    from amirelease.retention.aws import LISTING_RACE_MARGIN, _launched_during

    began = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)
    assert _launched_during(began + timedelta(seconds=2), began)  # after it began
    assert _launched_during((began - LISTING_RACE_MARGIN).replace(tzinfo=None), began)  # EC2's clock, to the second
    assert not _launched_during(began - LISTING_RACE_MARGIN - timedelta(seconds=1), began)
    assert not _launched_during(None, began) and not _launched_during(began, None)  # unknown: it counts


def test_group_instances_the_live_listing_lacks_are_looked_up_by_id_and_keep_their_image(sandbox, tmp_path):
    """The listing of live instances comes back empty (no NextToken, no items), and the stop
    conditions are set aside on purpose (no sample, any number missing tolerated): the group's
    instances, which run an old image the group's template no longer names, are still looked up
    by id, so that image is kept (in use), not marked."""
    import yaml

    from amirelease.retention.policy import DEFAULT_POLICY_PATH
    from tests.retention.conftest import make_group

    old = sandbox.create_image("lacked-old", age_days=120)
    new = sandbox.create_image("lacked-new", age_days=3)
    fleet = make_group(sandbox, "lacked-fleet", old, desired=2, version="$Latest")
    sandbox.client("ec2", internal=True).create_launch_template_version(
        LaunchTemplateId=fleet["template_id"], LaunchTemplateData={"ImageId": new, "InstanceType": "t3.micro"}
    )
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    data.setdefault("consistency", {}).update(
        {"group_instance_sample": 0, "max_missing_group_instances": 10**6, "min_live_vs_desired": 0}
    )
    data.setdefault("protections", {})["recently_launched_days"] = 0  # AWS's lastLaunchedTime aside too
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(data))
    sandbox.faults.truncate("ec2:DescribeInstances", times=FOREVER, empty=True, match="instance-state-name")
    summary = run_retention(sandbox, policy_path=str(policy))
    sandbox.faults.clear()
    assert summary["stopped"] is None
    row = next(i for i in summary["items"] if i["image_id"] == old)
    assert row["action"] == "keep" and row["reason"].startswith("in use by i-"), row


def test_a_cut_listing_of_the_groups_stops_the_run_before_a_template_only_image_looks_unused(sandbox):
    """Groups on $Latest of templates whose latest version names a 100-day-old image, no instances:
    only the group protects the image. The listing of the groups cut to its first group (a page
    without its NextToken) would leave the others' images unprotected; Auto Scaling's count of
    the region's groups (DescribeAccountLimits, asked just before) shows the listing is short:
    the run stops, changing nothing. Whole again, the next run keeps every image."""
    used = _groups_on_latest(sandbox, 3)
    counted = sandbox.client("autoscaling", internal=True).describe_account_limits()["NumberOfAutoScalingGroups"]
    sandbox.faults.truncate("autoscaling:DescribeAutoScalingGroups", times=FOREVER, keep=1)
    message = _stopped_unchanged(sandbox, "a listing failed or was cut short")
    assert f"DescribeAutoScalingGroups listed 1 group(s), but Auto Scaling counts {counted} in this region" in message
    sandbox.faults.clear()
    summary = run_retention(sandbox)
    assert summary["stopped"] is None
    rows = {r["image_id"]: r for r in latest(sandbox)["rows"]}
    for image, group in used.items():
        # in use: kept, and a mark it carried is taken off
        assert rows[image]["action"] in ("keep", "unmark") and f"ASG {group}" in rows[image]["reason"], rows[image]
