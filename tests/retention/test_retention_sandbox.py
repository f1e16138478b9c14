"""Retention against the sandbox account (moto): operator runs as of the wall clock.

Time passes by ageing the account (creation dates and mark dates move back:
sandbox/aws/ageing.py), never by running in the future. Groups and launch templates a
test needs are made by the test (tests/retention/conftest.py::make_group).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from amirelease.errors import RetentionError
from amirelease.retention.policy import DEFAULT_POLICY_PATH
from sandbox.aws.ageing import age_account
from tests.retention.conftest import latest, make_group, report_at, run_retention

REPO = Path(__file__).resolve().parents[2]
MARK = "maid_status"
GONE_AFTER_A_WEEK = {"demo-web-0.8.0", "demo-web-0.8.0-copy", "demo-web-0.9.1", "demo-web-0.9.2", "demo-web-0.9.5"}


def _images(sb, **kw):
    ec2 = sb.client("ec2", internal=True)
    return {i["Name"]: i for i in ec2.describe_images(Owners=["self"], **kw)["Images"]}


def _tags(image):
    return {t["Key"]: t["Value"] for t in image.get("Tags", [])}


def _all_tags(sb):
    return {n: _tags(i) for n, i in _images(sb).items()}


def _snapshot_ids(sb):
    ec2 = sb.client("ec2", internal=True)
    return {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def _policy(tmp_path, **changes):
    data = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _by_name(sb):
    return {a["name"]: a for a in sb.account["aged_images"]}


def _writes(sb):
    return {a for a in sb.request_counts() if not a.split(":")[1].startswith(("Describe", "Get", "List", "Head"))}


def test_mark_then_deregister_a_week_later(sandbox):
    seeded = _by_name(sandbox)
    vendor_before = set(sandbox.account["vendor_images"].values())
    summary = run_retention(sandbox)
    imgs = _images(sandbox)
    # Custodian's mark (due yesterday) on an eligible image is honoured: deregistered now
    assert "demo-web-0.9.4" not in imgs
    assert seeded["demo-web-0.9.4"]["snapshot_id"] not in _snapshot_ids(sandbox)
    for name in GONE_AFTER_A_WEEK:
        assert _tags(imgs[name])[MARK].startswith("Resource does not meet policy: deregister@"), name
    for name in ("demo-web-0.9.0", "demo-web-0.9.3", "demo-web-0.9.6", "demo-web-1.0.0"):
        assert MARK not in _tags(imgs[name]), name
    assert summary["counts"]["mark"] == 5 and summary["counts"]["deregister"] == 1
    reasons = {i["name"]: i["reason"] for i in summary["items"]}
    assert reasons["demo-web-0.9.0"] == "protected by tag RetainIndefinitely=true"
    assert reasons["demo-web-0.9.3"].startswith("in use by i-")
    assert reasons["demo-web-0.9.6"].startswith("too young")

    # six days later nothing is due yet; the marked images say when they go
    age_account(sandbox, 6)
    summary = run_retention(sandbox)
    assert summary["counts"]["deregister"] == 0 and summary["counts"]["deferred"] == 0
    waiting = [i for i in summary["items"] if i["name"] in GONE_AFTER_A_WEEK]
    assert len(waiting) == 5 and all(i["reason"].startswith("deregister on ") for i in waiting)

    # eight days after marking: due marks on still-eligible images are executed
    age_account(sandbox, 2)
    run_retention(sandbox)
    imgs = _images(sandbox)
    assert GONE_AFTER_A_WEEK.isdisjoint(imgs)
    assert {"demo-web-0.9.0", "demo-web-0.9.3", "demo-web-1.0.0", "demo-web-0.9.6"} <= set(imgs)
    snaps = _snapshot_ids(sandbox)
    for name in GONE_AFTER_A_WEEK:  # incl. the snapshot the two 0.8.0 images shared
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
    run_retention(sandbox)
    age_account(sandbox, 8)
    run_retention(sandbox)
    imgs = _images(sandbox)
    assert "demo-web-0.8.0" not in imgs and "demo-web-0.8.0-copy" in imgs
    assert shared in _snapshot_ids(sandbox)


def test_image_back_in_use_is_unmarked_and_kept(sandbox):
    seeded = _by_name(sandbox)
    run_retention(sandbox)
    image_id = seeded["demo-web-0.9.5"]["image_id"]
    ec2 = sandbox.client("ec2", internal=True)
    ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=sandbox.account["subnet_ids"][0]
    )
    age_account(sandbox, 8)
    summary = run_retention(sandbox)
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
    lt_pinned = sb.create_image("lt-pinned", age_days=100)  # a numbered version a group pins
    mixed = sb.create_image("mixed", age_days=100)
    lc_img = sb.create_image("lc", age_days=100)
    lc_unused = sb.create_image("lc-unused", age_days=100)  # in a configuration no group uses
    subnets = ",".join(sb.account["subnet_ids"])

    lt = ec2.create_launch_template(
        LaunchTemplateName="ret-a", LaunchTemplateData={"ImageId": lt_default, "InstanceType": "t3.micro"}
    )
    lt_id = lt["LaunchTemplate"]["LaunchTemplateId"]
    for image in (lt_old, lt_pinned, lt_latest):  # v2, v3, v4
        ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData={"ImageId": image})
    for name, version in (("ret-latest", "$Latest"), ("ret-default", "$Default"), ("ret-pinned", "3")):
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
    asg.create_launch_configuration(LaunchConfigurationName="ret-lc-unused", ImageId=lc_unused, InstanceType="t3.micro")
    asg.create_auto_scaling_group(
        AutoScalingGroupName="ret-lc",
        LaunchConfigurationName="ret-lc",
        MinSize=0,
        MaxSize=1,
        DesiredCapacity=0,
        VPCZoneIdentifier=subnets,
    )

    sb.reset_request_counts()
    summary = run_retention(sb)
    rows = {i["image_id"]: i for i in summary["items"]}
    # each reason names the version and exactly the groups on it
    assert rows[lt_latest]["action"] == "keep"
    assert f"referenced by launch template {lt_id} v4 (ASG ret-latest)" in rows[lt_latest]["reason"]
    assert f"launch template {lt_id} v1 (ASG ret-default)" in rows[lt_default]["reason"]
    assert f"launch template {lt_id} v3 (ASG ret-pinned)" in rows[lt_pinned]["reason"]
    assert rows[mixed]["action"] == "keep" and lt2["LaunchTemplate"]["LaunchTemplateId"] in rows[mixed]["reason"]
    assert rows[lc_img]["action"] == "keep" and "launch configuration ret-lc (ASG ret-lc)" in rows[lc_img]["reason"]
    assert rows[lt_old]["action"] == "mark" and rows[lc_unused]["action"] == "mark"
    counts = sb.request_counts()
    # $Latest/$Default of every template in one paged call, plus one call for ret-a's pinned v3
    # (ret-mixed pins v1, which is its $Default: already known); one DescribeLaunchTemplates for
    # the numbers $Latest/$Default stand for; one call for the used configuration. The recheck
    # before the seeded due image (demo-web-0.9.4) is deregistered asks the numbers and the
    # configuration again, but no version: the run has read every version a group uses.
    assert summary["counts"]["deregister"] == 1
    assert counts["ec2:DescribeLaunchTemplateVersions"] == 2
    assert counts["ec2:DescribeLaunchTemplates"] == 1 * 2
    assert counts["autoscaling:DescribeLaunchConfigurations"] == 1 * 2


def test_instances_are_listed_once_and_usage_is_kept_for_candidates_only(sandbox):
    """Every live instance in one paged listing (1,000 a page) instead of one filtered call per 195
    candidate images, the sampled group instances by id (the stop conditions' second view); the
    instances are kept as usage for own, old, unprotected images only."""
    from amirelease.retention import aws
    from amirelease.retention.policy import RetentionPolicy

    sb = sandbox
    old = [sb.create_image(f"old-{i}", age_days=70) for i in range(400)]
    young_in_use = sb.create_image("young", age_days=5, in_use=True)
    protected = sb.create_image("kept", age_days=200, tags={"RetainIndefinitely": "true"}, in_use=True)
    old_in_use = sb.create_image("old-in-use", age_days=100, in_use=True)
    ec2, asg = sb.client("ec2"), sb.client("autoscaling")
    groups = asg.describe_auto_scaling_groups()["AutoScalingGroups"]
    sampled = any(i["LifecycleState"] == "InService" for g in groups for i in g.get("Instances", []))
    reservations = sb.client("ec2", internal=True).describe_instances(
        Filters=[
            {"Name": "instance-state-name", "Values": ["pending", "running", "shutting-down", "stopping", "stopped"]}
        ]
    )["Reservations"]
    live = sum(len(r["Instances"]) for r in reservations)
    sb.reset_request_counts()
    got = aws.collect(ec2, asg, RetentionPolicy(), datetime.now(UTC), account_id=lambda: sb.account_id)
    assert got.view.listing_errors == () and got.view.listing_lacked == ()
    assert set(old) <= got.view.candidates
    assert young_in_use not in got.view.candidates and protected not in got.view.candidates
    assert young_in_use not in got.usage.instances and protected not in got.usage.instances
    assert len(got.usage.instances[old_in_use]) == 1  # found in the listing
    assert sb.request_counts()["ec2:DescribeInstances"] == max(1, math.ceil(live / 1000)) + int(sampled)


def test_dry_run_changes_nothing(sandbox):
    age_account(sandbox, 30)
    before = _all_tags(sandbox)
    snaps = _snapshot_ids(sandbox)
    sandbox.reset_request_counts()
    summary = run_retention(sandbox, mode="dry_run")
    assert summary["dry_run"] is True and summary["counts"]["deregister"] >= 1
    assert _all_tags(sandbox) == before
    assert _snapshot_ids(sandbox) == snaps
    assert _writes(sandbox) == {"s3:PutObject"}  # nothing on EC2: only the run's report (JSON, CSV, latest)
    assert latest(sandbox)["dry_run"] is True  # the report was written


def test_a_backlog_drains_over_runs_and_never_blocks_marking(sandbox, tmp_path):
    """Over the cap: the oldest due go, the rest are deferred (the run succeeds); marking
    goes on; ceil(due / cap) runs drain the backlog with nobody editing anything."""
    policy = _policy(tmp_path, max_deregistrations_per_run=2)
    run_retention(sandbox, policy_path=policy)
    age_account(sandbox, 8)
    sandbox.create_image("newly-old", age_days=61)
    due = len(GONE_AFTER_A_WEEK)
    runs = 0
    while True:
        summary = run_retention(sandbox, policy_path=policy)
        if not summary["counts"]["deregister"]:
            assert summary["deferred"] == 0
            break
        runs += 1
        assert summary["counts"]["deregister"] <= 2
        assert summary["deferred"] == max(0, due - 2 * runs)
        if runs == 1:
            assert summary["counts"]["mark"] == 2  # newly-old and 0.9.6 (67 days): marking is not blocked
            report = report_at(sandbox, summary["report"]["json"])
            assert report["deferred"] == due - 2 and report["stopped"] is None
            assert {r["action"] for r in report["rows"] if r["name"] in GONE_AFTER_A_WEEK} == {"deregister", "deferred"}
    assert runs == math.ceil(due / 2)
    assert GONE_AFTER_A_WEEK.isdisjoint(_images(sandbox))
    assert MARK in _tags(_images(sandbox)["newly-old"])


def test_throttling_is_retried_and_failures_are_reported(sandbox):
    sandbox.faults.throttle("ec2:DescribeImages", times=2)
    run_retention(sandbox, botocore_config={"retries": {"mode": "standard", "max_attempts": 5}})
    age_account(sandbox, 8)
    sandbox.faults.fail("ec2:DeregisterImage", code="UnauthorizedOperation", times=1)
    with pytest.raises(RetentionError, match="deregister ami-.*UnauthorizedOperation"):
        run_retention(sandbox)
    # the other four went; the failed one is retried by the next run
    assert len(GONE_AFTER_A_WEEK & set(_images(sandbox))) == 1
    failed = [r for r in latest(sandbox)["rows"] if r["warnings"] and "deregistration failed" in r["warnings"][-1]]
    assert len(failed) == 1
    run_retention(sandbox)
    assert GONE_AFTER_A_WEEK.isdisjoint(_images(sandbox))


# ------------------------------------------------------------------ "now" and the wall clock


@pytest.mark.parametrize("ahead_days", [400, 420])
def test_a_run_dated_in_the_future_acts_as_of_the_wall_clock(sandbox, ahead_days):
    """The issue's attacks: logical date now, data interval end 400 / 420 days ahead. Nothing
    is deregistered that was not due by the wall clock; nothing built today is even marked."""
    sb = sandbox
    tomorrow = f"Resource does not meet policy: deregister@{datetime.now(UTC) + timedelta(days=1):%Y/%m/%d}"
    not_yet_due = sb.create_image("marked-due-tomorrow", age_days=90, tags={MARK: tomorrow})
    today = [
        sb.create_image("prod-previous", age_days=0),
        sb.create_image("failed-release", age_days=0, tags={"ForensicHold": "rollback", "ForensicHoldReason": "x"}),
        sb.create_image("built-today", age_days=0.1),
    ]
    before = _all_tags(sb)
    now = datetime.now(UTC)
    context = {"logical_date": now, "data_interval_end": now + timedelta(days=ahead_days), "run_id": "manual__x"}
    summary = run_retention(sb, context)
    imgs = {i["ImageId"]: i for i in _images(sb).values()}
    assert not_yet_due in imgs and set(today) <= set(imgs)
    assert all(MARK not in _tags(imgs[i]) for i in today)
    assert _tags(imgs[not_yet_due])[MARK] == tomorrow
    gone = {n for n in before if n not in _images(sb)}
    assert gone == {"demo-web-0.9.4"}  # the only mark due by the wall clock
    report = latest(sb)
    now_used = datetime.fromisoformat(report["now"].replace("Z", "+00:00"))
    assert abs((now_used - now).total_seconds()) < 60 and report["now"] <= report["wall_clock"]
    assert datetime.fromisoformat(summary["now"]) < now + timedelta(minutes=1)


# ------------------------------------------------------------------ stop conditions


def _stopped(sb, match, **kwargs):
    before = _all_tags(sb)
    with pytest.raises(RetentionError, match=match) as err:
        run_retention(sb, **kwargs)
    assert "nothing was changed" in str(err.value)
    assert _all_tags(sb) == before  # marks left as they were, nothing deregistered
    report = latest(sb)
    assert report["stopped"] and report["stopped"] in str(err.value)
    return report


def test_stop_when_a_listing_fails(sandbox):
    age_account(sandbox, 8)
    run = {"botocore_config": {"retries": {"mode": "standard", "max_attempts": 2}}}
    sandbox.faults.fail("ec2:DescribeInstances", code="InternalError", times=10, status=500)
    report = _stopped(sandbox, r"a listing failed or was cut short: DescribeInstances .*InternalError", **run)
    assert report["counts"]["deregister"] >= 1  # what it would have done is still reported
    sandbox.faults.clear()
    sandbox.faults.fail("autoscaling:DescribeAutoScalingGroups", code="AccessDenied", times=10)
    _stopped(sandbox, r"DescribeAutoScalingGroups \(AccessDenied\)", **run)
    sandbox.faults.clear()
    run_retention(sandbox)  # the view is right again: the next run acts
    assert "demo-web-0.9.4" not in _images(sandbox)


def _old_fleet(sb, desired=3):
    """A group whose instances run an old own image from template v1 while the group is on v2."""
    old = sb.create_image("fleet-old", age_days=120)
    new = sb.create_image("fleet-new", age_days=3)
    fleet = make_group(sb, "ret-fleet", old, desired=desired, version="$Latest")
    ec2 = sb.client("ec2", internal=True)
    ec2.create_launch_template_version(
        LaunchTemplateId=fleet["template_id"], LaunchTemplateData={"ImageId": new, "InstanceType": "t3.micro"}
    )
    group = sb.client("autoscaling", internal=True).describe_auto_scaling_groups(AutoScalingGroupNames=["ret-fleet"])
    return old, [i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]]


def test_group_instances_on_an_old_version_keep_their_image(sandbox):
    old, instances = _old_fleet(sandbox)
    summary = run_retention(sandbox)
    row = next(i for i in summary["items"] if i["image_id"] == old)
    assert row["action"] == "keep" and row["reason"].startswith("in use by i-")
    assert summary["stopped"] is None and len(instances) == 3


def test_stop_when_group_instances_are_missing_from_the_instance_listing(sandbox, tmp_path):
    """EC2's listing loses instances Auto Scaling still lists InService (made here by removing
    them from the sandbox's EC2 side only): an image in use would look unused."""
    from moto.ec2.models import ec2_backends

    from sandbox.aws.state import LOCK

    old, instances = _old_fleet(sandbox)
    with LOCK:
        backend = ec2_backends[sandbox.account_id][sandbox.region]
        for reservation in backend.reservations.values():
            reservation.instances = [i for i in reservation.instances if i.id not in instances]
        # and its launches were long ago: AWS's lastLaunchedTime (recently_launched_days) would
        # keep it otherwise, and this test is about the stop condition alone
        backend.amis[old].__dict__["_sb_last_launched"] = None
    report = _stopped(sandbox, r"3 of \d+ instances that Auto Scaling lists as InService are missing")
    row = next(r for r in report["rows"] if r["image_id"] == old)
    assert row["action"] == "mark"  # what the wrong view would have done, and did not
    # the tolerance is a policy setting
    # (with its instances gone from EC2 the group also has fewer live instances than it wants: the
    # other stop condition, set aside here to show this one's tolerance on its own)
    policy = _policy(tmp_path, consistency={"max_missing_group_instances": 3, "min_live_vs_desired": 0})
    summary = run_retention(sandbox, policy_path=policy)
    assert summary["stopped"] is None


def _collect_while(sb, act):
    """Retention's read of the account, with ``act(asg_client)`` done right after its first read
    of the groups (a real call to the sandbox, from a botocore event: the race made on purpose)."""
    from amirelease.retention import aws
    from amirelease.retention.consistency import stop_reasons
    from amirelease.retention.policy import load_policy

    ec2, asg = sb.client("ec2", internal=True), sb.client("autoscaling", internal=True)
    other = sb.client("autoscaling", internal=True)
    done: list[bool] = []

    def after_first_listing(**_):
        if not done:
            done.append(True)
            act(other)

    asg.meta.events.register("after-call.auto-scaling.DescribeAutoScalingGroups", after_first_listing)
    policy = load_policy()
    view = aws.collect(ec2, asg, policy, datetime.now(UTC)).view
    return view, stop_reasons(view, policy)


def test_a_group_refreshing_while_the_run_reads_is_not_a_wrong_view(sandbox):
    """An instance Auto Scaling replaces between the run's read of the groups and EC2's answer
    (an instance refresh beside retention: CI saw it) is terminated in EC2 yet InService in the
    first read. Listings are not a snapshot, on AWS too: the group, read again, no longer has it,
    so the run goes on. An instance the group still lists InService after EC2 answered counts as
    before (test_stop_when_group_instances_are_missing_from_the_instance_listing)."""
    _, instances = _old_fleet(sandbox)
    gone = instances[0]

    def replace_one(asg):
        asg.terminate_instance_in_auto_scaling_group(InstanceId=gone, ShouldDecrementDesiredCapacity=False)

    view, reasons = _collect_while(sandbox, replace_one)
    assert (("ret-fleet", gone) in view.sample) and view.sample_found[gone][0] == "terminated"
    assert view.sample_left == {gone}
    assert reasons == []


def test_stop_when_far_fewer_live_instances_than_desired(sandbox, tmp_path):
    from moto.autoscaling.models import autoscaling_backends

    from sandbox.aws.state import LOCK

    _old_fleet(sandbox, desired=2)
    with LOCK:
        group = autoscaling_backends[sandbox.account_id][sandbox.region].autoscaling_groups["ret-fleet"]
        group.desired_capacity = 40  # the groups want 40+, Auto Scaling lists 2 (+ any others)
    _stopped(sandbox, r"far fewer live instances than the groups want: about \d+ live instances")
    summary = run_retention(sandbox, policy_path=_policy(tmp_path, consistency={"min_live_vs_desired": 0}))
    assert summary["stopped"] is None


# ------------------------------------------------------------------ the report


def test_the_report_says_what_goes_when_and_why_mine_is_kept(sandbox):
    sb = sandbox
    sb.create_image(
        "held", age_days=90, tags={"ForensicHold": "rollback 2026", "ForensicHoldReason": "INC-4711 memory leak"}
    )
    sb.create_image("near-miss", age_days=90, tags={"RetainIndefinitely": " true", "App": "web"})
    summary = run_retention(sb)
    assert summary["report"]["latest"].endswith("retention/reports/us-east-1/latest.json")
    report = latest(sb)
    assert report == report_at(sb, summary["report"]["json"])  # latest.json is the newest run's report
    assert set(report) >= {
        "region",
        "run_id",
        "now",
        "wall_clock",
        "dry_run",
        "policy_source",
        "stopped",
        "counts",
        "deferred",
        "rows",
    }
    assert set(report["counts"]) == {"mark", "unmark", "deregister", "deferred", "keep"}
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows["demo-web-0.8.0"]) == {
        "image_id",
        "name",
        "created",
        "age_days",
        "tags",
        "action",
        "reason",
        "protections",
        "mark_due",
        "deregister_on",
        "eligible_on",
        "hold_reason",
        "warnings",
    }
    marked = rows["demo-web-0.8.0"]
    assert marked["action"] == "mark" and marked["deregister_on"] == marked["mark_due"]
    assert marked["reason"].startswith(f"marked: deregister on {marked['deregister_on'][:10]}")
    assert marked["tags"] == {"App": "demo-web", "Version": "0.8.0"}  # BuiltBy etc. are not copied
    young = rows["demo-web-0.9.6"]
    assert young["action"] == "keep" and young["eligible_on"] and young["deregister_on"] is None
    assert rows["held"]["hold_reason"] == "INC-4711 memory leak" and "INC-4711" in rows["held"]["reason"]
    for name, tag in (("near-miss", "'RetainIndefinitely'=' true'"), ("demo-web-0.9.1", "'retainindefinitely'")):
        assert rows[name]["action"] == "mark" and tag in rows[name]["warnings"][0], rows[name]
        assert "was ignored" in rows[name]["warnings"][0]
    assert rows["demo-web-0.9.2"]["warnings"] and "exactly 'true'" in rows["demo-web-0.9.2"]["warnings"][0]
    assert rows["demo-web-0.9.0"]["warnings"] == [] and rows["demo-web-0.9.0"]["protections"]
    csv_text = report_at(sb, summary["report"]["csv"])
    header, *lines = csv_text.splitlines()
    assert header.startswith("image_id,name,created,age_days,App,Version,ReleaseId,action,reason")
    assert len(lines) == len(report["rows"])

    # a week later the marked image shows as waiting, with its date
    age_account(sb, 3)
    run_retention(sb)
    waiting = next(r for r in latest(sb)["rows"] if r["name"] == "demo-web-0.8.0")
    assert waiting["action"] == "keep" and waiting["reason"].startswith("deregister on ")
    assert waiting["deregister_on"] == waiting["mark_due"]
    shifted = datetime.fromisoformat(marked["mark_due"].replace("Z", "+00:00")) - timedelta(days=3)
    assert waiting["mark_due"] == f"{shifted:%Y-%m-%dT%H:%M:%SZ}"  # the same mark, three days nearer


def test_latest_report_is_none_before_any_run(sandbox):
    assert latest(sandbox) is None


def test_the_report_bucket_is_checked_before_any_aws_call(sandbox, monkeypatch):
    from amirelease.errors import ConfigError

    monkeypatch.delenv("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET")
    sandbox.reset_request_counts()
    with pytest.raises(ConfigError, match=r"no release ledger bucket is configured.*ledger_bucket"):
        run_retention(sandbox)
    with pytest.raises(ConfigError, match=r"the run mode must be one of policy, dry_run, apply, got 'maybe'"):
        monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", "b")
        run_retention(sandbox, mode="maybe")
    assert sandbox.request_counts() == {}


# ------------------------------------------------------------------ DAG runs (dag.test)


def _fresh_dag(name="ami_retention"):
    """A freshly parsed DAG per run, as a worker would have: dag.test() runs tasks in-process
    and leaves rendered template fields / params on the task objects."""
    import runpy

    return runpy.run_path(str(REPO / "dags" / f"{name}.py"))["dag"]


@pytest.mark.e2e
def test_dag_scheduled_run_marks_then_deregisters(sandbox, airflow_db):
    from airflow.sdk import DagRunState

    seeded = _by_name(sandbox)
    dr = _fresh_dag().test()
    assert dr.state == DagRunState.SUCCESS
    imgs = _images(sandbox)
    assert _tags(imgs["demo-web-0.8.0"])[MARK].startswith("Resource does not meet policy: deregister@")
    assert "demo-web-0.9.4" not in imgs  # Custodian mark already due

    # a week later, a manual dry run changes nothing
    age_account(sandbox, 8)
    before = _all_tags(sandbox)
    dr = _fresh_dag("ami_retention_manual").test(run_conf={"mode": "dry_run"})
    assert dr.state == DagRunState.SUCCESS
    assert _all_tags(sandbox) == before and latest(sandbox)["dry_run"] is True

    # the next scheduled run deregisters and deletes the snapshots
    dr = _fresh_dag().test()
    assert dr.state == DagRunState.SUCCESS
    imgs = _images(sandbox)
    assert "demo-web-0.8.0" not in imgs and "demo-web-0.9.0" in imgs
    assert seeded["demo-web-0.8.0"]["snapshot_id"] not in _snapshot_ids(sandbox)


@pytest.mark.e2e
def test_dag_fails_loudly_when_it_stops(sandbox, airflow_db):
    from airflow.sdk import DagRunState

    assert _fresh_dag().test().state == DagRunState.SUCCESS
    age_account(sandbox, 8)
    before = _all_tags(sandbox)
    sandbox.faults.fail("ec2:DescribeImages", code="UnauthorizedOperation", times=100)
    dr = _fresh_dag().test()
    assert dr.state == DagRunState.FAILED
    sandbox.faults.clear()
    assert _all_tags(sandbox) == before
    assert "DescribeImages (UnauthorizedOperation)" in latest(sandbox)["stopped"]
