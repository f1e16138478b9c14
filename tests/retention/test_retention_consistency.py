"""Stop conditions (pure): each check alone, its policy setting, and the property that a run
whose view of the account fails a check deregisters nothing (and marks nothing)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amirelease.retention.consistency import AccountView, checked, doubtful_sample, select_sample, stop_reasons
from amirelease.retention.decide import Action, decide
from amirelease.retention.model import Image, Usage
from amirelease.retention.policy import RetentionPolicy

ME = "123456789012"
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
POLICY = RetentionPolicy()
DUE = {"maid_status": "Resource does not meet policy: deregister@2026/02/01"}


def group(name, instances, desired=None, state="InService"):
    return {
        "AutoScalingGroupName": name,
        "DesiredCapacity": len(instances) if desired is None else desired,
        "Instances": [{"InstanceId": i, "LifecycleState": state} for i in instances],
    }


def view(groups, found, *, candidates=(), usage=None, errors=(), size=200, left=()):
    sample = select_sample(groups, size)
    return AccountView(
        groups=groups,
        sample=sample,
        sample_found=found,
        candidates=frozenset(candidates),
        candidate_usage=usage or {},
        listing_errors=tuple(errors),
        sample_left=frozenset(left),
    )


def test_select_sample_round_robin_over_groups_in_service_only():
    groups = [
        group("b", ["i-b1", "i-b2", "i-b3"]),
        group("a", ["i-a2", "i-a1"]),
        group("c", ["i-c1"], state="Pending"),
    ]
    assert select_sample(groups, 4) == [("a", "i-a1"), ("b", "i-b1"), ("a", "i-a2"), ("b", "i-b2")]
    assert len(select_sample(groups, 100)) == 5
    assert select_sample(groups, 0) == []


def test_consistent_view_goes_on():
    groups = [group("web", ["i-1", "i-2"])]
    found = {"i-1": ("running", "ami-old"), "i-2": ("running", "ami-new")}
    v = view(groups, found, candidates={"ami-old"}, usage={"ami-old": ["i-1"]})
    assert stop_reasons(v, POLICY) == []


def test_listing_errors_always_stop():
    v = view([], {}, errors=["DescribeInstances for 195 image(s) (RequestLimitExceeded): slow down"])
    (reason,) = stop_reasons(v, RetentionPolicy(max_missing_group_instances=10**6, min_live_vs_desired=0))
    assert reason.startswith("a listing failed or was cut short: DescribeInstances")


def test_group_instances_the_live_listing_lacked_stop_the_run():
    """Live by id, InService in their group, absent from the listing of every live instance: the
    listing is incomplete (it may lack an instance outside every group too)."""
    groups = [group("web", ["i-1", "i-2", "i-3"])]
    found = {i: ("running", "ami-x") for i in ("i-1", "i-2", "i-3")}
    lacking = replace(view(groups, found), listing_lacked=("i-2", "i-3"))
    (reason,) = stop_reasons(lacking, RetentionPolicy(min_live_vs_desired=0))
    assert reason.startswith("the listing of live instances is incomplete: it lacked 2 instance(s)")
    assert "i-2, i-3" in reason
    assert stop_reasons(lacking, RetentionPolicy(max_missing_group_instances=2, min_live_vs_desired=0)) == []
    assert stop_reasons(view(groups, found), RetentionPolicy(min_live_vs_desired=0)) == []


def test_group_instances_missing_or_terminated_in_ec2():
    groups = [group("web", ["i-1", "i-2", "i-3"])]
    found = {"i-1": ("running", "ami-x"), "i-2": ("terminated", "ami-x")}
    (reason,) = stop_reasons(view(groups, found), RetentionPolicy(min_live_vs_desired=0))
    assert "2 of 3 instances that Auto Scaling lists as InService are missing or terminated" in reason
    assert "i-2 (web: terminated)" in reason and "i-3 (web: not listed)" in reason
    tolerant = RetentionPolicy(max_missing_group_instances=2, min_live_vs_desired=0)
    assert stop_reasons(view(groups, found), tolerant) == []
    assert stop_reasons(view(groups, found, size=1), RetentionPolicy(min_live_vs_desired=0)) == []  # i-1 only


def test_instances_that_left_their_group_meanwhile_are_set_aside():
    """The second read of the groups no longer lists i-2 and i-3 InService: a refresh or scale-in
    between the reads, neither missing nor live; only what is still doubtful is read again."""
    groups = [group("web", ["i-1", "i-2", "i-3", "i-4"])]
    found = {"i-1": ("running", "ami-x"), "i-2": ("terminated", "ami-x"), "i-4": ("terminated", "ami-x")}
    policy = RetentionPolicy(min_live_vs_desired=0)
    assert doubtful_sample(view(groups, found)) == [("web", "i-2"), ("web", "i-3"), ("web", "i-4")]
    assert stop_reasons(view(groups, found, left={"i-2", "i-3", "i-4"}), policy) == []
    (reason,) = stop_reasons(view(groups, found, left={"i-2", "i-3"}), policy)
    assert "1 of 2 instances that Auto Scaling lists as InService are missing or terminated" in reason
    assert "i-4 (web: terminated)" in reason and "i-2" not in reason
    # the share EC2 confirmed is of the instances still in their groups (1 of 1, not 1 of 4)
    tolerant = RetentionPolicy(max_missing_group_instances=10, min_live_vs_desired=1)
    assert stop_reasons(view(groups, found, left={"i-2", "i-3", "i-4"}), tolerant) == []
    (reason,) = stop_reasons(view(groups, found), tolerant)
    assert reason.startswith("far fewer live instances than the groups want: about 1 live instances")


def test_group_instance_on_a_candidate_missing_from_its_image_listing():
    groups = [group("web", ["i-1"])]
    v = view(groups, {"i-1": ("running", "ami-old")}, candidates={"ami-old"}, usage={})
    (reason,) = stop_reasons(v, POLICY)
    assert "run an image being considered for deregistration but did not show up" in reason
    assert "i-1 (web) on ami-old" in reason


def test_far_fewer_live_instances_than_desired():
    groups = [group("web", ["i-1", "i-2"], desired=10)]
    found = {"i-1": ("running", "a"), "i-2": ("running", "a")}
    (reason,) = stop_reasons(view(groups, found), POLICY)
    assert reason.startswith("far fewer live instances than the groups want: about 2 live instances in 1")
    assert "add up to 10 (at least 50% expected)" in reason
    assert stop_reasons(view(groups, found), RetentionPolicy(min_live_vs_desired=0.2)) == []
    assert stop_reasons(view(groups, found), RetentionPolicy(min_live_vs_desired=0)) == []
    # the share EC2 confirmed counts: ASG lists 6 of 10 desired, but EC2 knows only half the sample
    groups = [group("web", [f"i-{n}" for n in range(6)], desired=10)]
    found = {f"i-{n}": ("running", "a") for n in range(3)}
    reasons = stop_reasons(view(groups, found), RetentionPolicy(max_missing_group_instances=10))
    assert reasons and "about 3 live instances" in reasons[0]


# ------------------------------------------------------------------ the property


@st.composite
def runs(draw):
    """An account with due marks, and a view of it that may be wrong in any of the ways above."""
    images = [
        Image(image_id=f"ami-{i}", owner_id=ME, creation_date=NOW - timedelta(days=90), tags=dict(DUE))
        for i in range(draw(st.integers(1, 6)))
    ] + [Image(image_id="ami-fresh", owner_id=ME, creation_date=NOW - timedelta(days=90))]
    groups, found, usage, left = [], {}, {}, set()
    for g in range(draw(st.integers(0, 4))):
        ids = [f"i-{g}-{n}" for n in range(draw(st.integers(0, 4)))]
        groups.append(group(f"asg-{g}", ids, desired=len(ids) + draw(st.integers(0, 4))))
        for instance_id in ids:
            fate = draw(st.sampled_from(["live", "live", "live", "terminated", "unlisted", "on-candidate", "left"]))
            if fate == "live":
                found[instance_id] = ("running", "ami-current")
            elif fate == "terminated":
                found[instance_id] = ("terminated", "ami-current")
            elif fate == "left":  # replaced between the two reads of its group
                found[instance_id] = (draw(st.sampled_from(["terminated", "shutting-down", "running"])), "ami-current")
                left.add(instance_id)
            elif fate == "on-candidate":
                image = draw(st.sampled_from(images)).image_id
                found[instance_id] = ("running", image)
                if draw(st.booleans()):  # the candidate listing saw it (or not)
                    usage.setdefault(image, []).append(instance_id)
    errors = draw(st.lists(st.sampled_from(["DescribeImages (Throttling): x"]), max_size=1))
    policy = RetentionPolicy(
        max_deregistrations_per_run=draw(st.integers(0, 10)),
        max_missing_group_instances=draw(st.integers(0, 2)),
        min_live_vs_desired=draw(st.sampled_from([0, 0.5, 0.9])),
        group_instance_sample=draw(st.integers(0, 20)),
    )
    candidates = {i.image_id for i in images}
    v = view(
        groups, found, candidates=candidates, usage=usage, errors=errors, size=policy.group_instance_sample, left=left
    )
    return images, Usage(instances=usage), v, policy


def oracle_stops(v: AccountView, policy: RetentionPolicy) -> bool:
    """The stop conditions, written out again."""
    if v.listing_errors:
        return True
    bad, live, counted = 0, 0, 0
    for _, instance_id in v.sample:
        if instance_id in v.sample_left:
            continue
        counted += 1
        state, image = v.sample_found.get(instance_id, ("absent", ""))
        if state != "running":
            bad += 1
            continue
        live += 1
        if image in v.candidates and instance_id not in v.candidate_usage.get(image, []):
            bad += 1
    if bad > policy.max_missing_group_instances:
        return True
    desired = sum(g["DesiredCapacity"] for g in v.groups)
    listed = sum(len(g["Instances"]) for g in v.groups)
    share = live / counted if counted else 1.0
    return policy.min_live_vs_desired > 0 and desired > 0 and listed * share < policy.min_live_vs_desired * desired


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs(), st.booleans())
def test_never_deregister_when_a_consistency_check_fails(run, dry_run):
    images, usage, v, policy = run
    plan = checked(decide(images, usage, NOW, policy, account_id=ME, dry_run=dry_run), v, policy)
    stops = oracle_stops(v, policy)
    assert (plan.stopped is not None) == stops
    todo = plan.to_apply()
    if stops or dry_run:
        assert todo == {}  # nothing deregistered, marked or unmarked: marks stay as they were
    else:
        assert len(todo[Action.DEREGISTER]) <= policy.max_deregistrations_per_run
        assert len(todo[Action.DEREGISTER]) + plan.deferred == sum(
            1 for i in images if i.tags and not usage.instances.get(i.image_id)
        )
