"""How many calls resolving the groups' launch templates takes (issue 18 item 3): the listing of
all templates' ``$Latest``/``$Default``, one ``DescribeLaunchTemplates`` for the exact numbers,
and a direct ``DescribeLaunchTemplateVersions`` only for a template whose used versions the
listing lacks, all of that template's versions in one call; the recheck before deregistering
asks again only for versions the run has not read (versions never change once made).

Counts at the sandbox (every request of the run's own clients; the setup's internal clients are
not counted). Exact counts, not timings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from amirelease.retention.marks import format_mark

MARK = "maid_status"


def _template(sb, name: str, images: list[str], default: int | None = None) -> str:
    ec2 = sb.client("ec2", internal=True)
    lt = ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": images[0], "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    for image in images[1:]:
        ec2.create_launch_template_version(LaunchTemplateId=lt, LaunchTemplateData={"ImageId": image})
    if default:
        ec2.modify_launch_template(LaunchTemplateId=lt, DefaultVersion=str(default))
    return lt


def _group(sb, name: str, template: str, version: str, by_name: bool = False) -> None:
    ref = {"LaunchTemplateName": template} if by_name else {"LaunchTemplateId": template}
    sb.client("autoscaling", internal=True).create_auto_scaling_group(
        AutoScalingGroupName=name,
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        LaunchTemplate={**ref, "Version": version},
        VPCZoneIdentifier=",".join(sb.account["subnet_ids"]),
    )


def _calls(sb) -> dict[str, int]:
    counts = sb.request_counts()
    return {k.split(":", 1)[1]: v for k, v in counts.items() if "LaunchTemplate" in k}


def test_the_listing_covers_aliases_and_one_call_asks_all_pinned_versions_of_a_template(sandbox):
    from amirelease.retention import aws
    from amirelease.retention.decide import Action, decide
    from amirelease.retention.policy import load_policy

    due = format_mark(datetime.now(UTC) - timedelta(days=1))
    old = [sandbox.create_image(f"tc-{n}", age_days=100, tags={MARK: due}) for n in range(12)]
    loose = sandbox.create_image("tc-loose", age_days=100, tags={MARK: due})  # no group: goes
    latest = _template(sandbox, "tc-latest", [old[0], old[1]])  # $Latest = v2
    default = _template(sandbox, "tc-default", [old[2], old[3], old[4]], default=2)  # $Default = v2
    pinned = _template(sandbox, "tc-pinned", [old[5], old[6], old[7], old[8]])  # groups pin v2 and v3
    by_name = _template(sandbox, "tc-by-name", [old[9], old[10], old[11]])
    _group(sandbox, "g-latest", latest, "$Latest")
    _group(sandbox, "g-default", default, "$Default")
    _group(sandbox, "g-pin-2", pinned, "2")
    _group(sandbox, "g-pin-3", pinned, "3")
    _group(sandbox, "g-name", "tc-by-name", "$Latest", by_name=True)
    _group(sandbox, "g-name-1", "tc-by-name", "1", by_name=True)  # v1 = $Default: in the listing

    ec2, asg = sandbox.client("ec2"), sandbox.client("autoscaling")
    policy = load_policy()
    now = datetime.now(UTC)
    sandbox.reset_request_counts()
    got = aws.collect(ec2, asg, policy, now, account_id=lambda: sandbox.account_id)
    # 1 page of the listing; 1 DescribeLaunchTemplates (the groups' specs carry the template id
    # even where a group was made by name, as on AWS); 1 direct call for tc-pinned's v2 and v3
    # together (neither is its $Latest v4 nor its $Default v1)
    assert _calls(sandbox) == {"DescribeLaunchTemplateVersions": 2, "DescribeLaunchTemplates": 1}
    refs = got.usage.references
    expected = {
        old[1]: (latest, 2, "g-latest"),
        old[3]: (default, 2, "g-default"),
        old[6]: (pinned, 2, "g-pin-2"),
        old[7]: (pinned, 3, "g-pin-3"),
        old[11]: (by_name, 3, "g-name"),
        old[9]: (by_name, 1, "g-name-1"),
    }
    for image, (lt, n, group) in expected.items():
        assert f"referenced by launch template {lt} v{n} (ASG {group})" in refs.get(image, []), (image, refs)
    assert not {old[0], old[2], old[4], old[5], old[8], old[10]} & set(refs)  # versions no group uses

    plan = decide(got.images, got.usage, now, policy, account_id=got.account_id)
    assert loose in {d.image_id for d in plan.of(Action.DEREGISTER)}
    sandbox.reset_request_counts()
    again = aws.recheck(ec2, asg, plan, policy, account_id=got.account_id)
    # every version a group uses was read by the run: only the numbers are asked again
    assert _calls(sandbox) == {"DescribeLaunchTemplates": 1}
    assert loose in {d.image_id for d in again.of(Action.DEREGISTER)}

    # tc-latest gets a v3 naming the image about to go: the recheck asks for v3 alone and keeps it
    sandbox.client("ec2", internal=True).create_launch_template_version(
        LaunchTemplateId=latest, LaunchTemplateData={"ImageId": loose}
    )
    sandbox.reset_request_counts()
    again = aws.recheck(ec2, asg, plan, policy, account_id=got.account_id)
    assert _calls(sandbox) == {"DescribeLaunchTemplates": 1, "DescribeLaunchTemplateVersions": 1}
    kept = next(d for d in again.decisions if d.image_id == loose)
    assert kept.action is Action.KEEP
    assert f"referenced by launch template {latest} v3 (ASG g-latest)" in "; ".join(kept.protections)


def test_the_recheck_looks_up_only_group_instances_the_run_has_not_seen(sandbox):
    from amirelease.retention import aws
    from amirelease.retention.decide import Action, decide
    from amirelease.retention.policy import load_policy

    due = format_mark(datetime.now(UTC) - timedelta(days=1))
    young = sandbox.create_image("gi-young", age_days=2)
    going = sandbox.create_image("gi-going", age_days=100, tags={MARK: due})
    lt = _template(sandbox, "gi-lt", [young])
    asg_internal = sandbox.client("autoscaling", internal=True)
    _group(sandbox, "gi-group", lt, "$Latest")
    asg_internal.update_auto_scaling_group(AutoScalingGroupName="gi-group", MaxSize=3, DesiredCapacity=2)

    ec2, asg = sandbox.client("ec2"), sandbox.client("autoscaling")
    policy = load_policy()
    now = datetime.now(UTC)
    got = aws.collect(ec2, asg, policy, now, account_id=lambda: sandbox.account_id)
    plan = decide(got.images, got.usage, now, policy, account_id=got.account_id)
    assert going in {d.image_id for d in plan.of(Action.DEREGISTER)}
    mine = {i for i, (_, image) in plan.group_instances.items() if image == young}
    assert len(mine) == 2

    def instance_calls() -> int:
        return sandbox.request_counts().get("ec2:DescribeInstances", 0)

    sandbox.reset_request_counts()
    aws.recheck(ec2, asg, plan, policy, account_id=got.account_id)
    # the images about to go, by image id (1 call); the group's 2 instances were read by the run
    assert instance_calls() == 1

    # a third instance, running the image about to go (launched outside the template, then
    # attached): looked up by id, and its image is kept
    extra = sandbox.client("ec2", internal=True).run_instances(
        ImageId=going, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=sandbox.account["subnet_ids"][0]
    )["Instances"][0]["InstanceId"]
    asg_internal.attach_instances(AutoScalingGroupName="gi-group", InstanceIds=[extra])
    sandbox.faults.truncate("ec2:DescribeInstances", times=10**6, empty=True, match="image-id")
    sandbox.reset_request_counts()
    again = aws.recheck(ec2, asg, plan, policy, account_id=got.account_id)
    assert instance_calls() == 2  # the images about to go (answered empty: cut), the new instance by id
    kept = next(d for d in again.decisions if d.image_id == going)
    assert kept.action is Action.KEEP and extra in "; ".join(kept.protections), kept
