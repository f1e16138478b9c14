"""The pure parts of issue 24: Recycle Bin coverage, hold-back, deprecation changes, the drain
refill after AWS's second opinion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from amirelease.retention.aws_opinion import Opinion, keep_referenced, promote_deferred
from amirelease.retention.decide import Action, Decision, Plan
from amirelease.retention.deprecation import changes
from amirelease.retention.model import Image
from amirelease.retention.policy import RetentionPolicy
from amirelease.retention.recycle import coverage, hold_back, rule_keeps

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
POLICY = RetentionPolicy()
OURS = [{"ResourceTagKey": "AmiRetention", "ResourceTagValue": "recycle-bin"}]


def rule(rid, rtype, days=14, tags=OURS, exclude=(), status="available"):
    return {
        "Identifier": rid,
        "ResourceType": rtype,
        "RetentionPeriod": {"RetentionPeriodValue": days, "RetentionPeriodUnit": "DAYS"},
        "ResourceTags": list(tags),
        "ExcludeResourceTags": list(exclude),
        "Status": status,
    }


def test_rule_matching():
    assert rule_keeps(rule("a", "EC2_IMAGE"), "AmiRetention", "recycle-bin")
    assert rule_keeps(rule("a", "EC2_IMAGE", tags=[{"ResourceTagKey": "AmiRetention"}]), "AmiRetention", "x")
    assert not rule_keeps(rule("a", "EC2_IMAGE", tags=[{"ResourceTagKey": "Other"}]), "AmiRetention", "recycle-bin")
    region_level = rule("r", "EC2_IMAGE", tags=())
    assert rule_keeps(region_level, "AmiRetention", "recycle-bin")
    excluding = rule("r", "EC2_IMAGE", tags=(), exclude=OURS)
    assert not rule_keeps(excluding, "AmiRetention", "recycle-bin")


def test_coverage_needs_both_types_long_enough_and_available():
    both = {"EC2_IMAGE": [rule("i", "EC2_IMAGE")], "EBS_SNAPSHOT": [rule("s", "EBS_SNAPSHOT", days=30)]}
    cov = coverage(both, POLICY)
    assert cov.covered and cov.rules == {"EC2_IMAGE": "rule i (14 days)", "EBS_SNAPSHOT": "rule s (30 days)"}
    cov = coverage({"EC2_IMAGE": both["EC2_IMAGE"]}, POLICY)
    assert not cov.covered and "no Recycle Bin rule (EBS_SNAPSHOT)" in cov.reason
    short = {**both, "EBS_SNAPSHOT": [rule("s", "EBS_SNAPSHOT", days=7)]}
    assert "keeps them 7 day(s), the policy asks for 14" in coverage(short, POLICY).reason
    pending = {**both, "EC2_IMAGE": [rule("i", "EC2_IMAGE", status="pending")]}
    assert "not available yet" in coverage(pending, POLICY).reason


def _d(image_id, action, due=None, protections=(), created=None):
    return Decision(
        image_id=image_id, name=image_id, age_days=90, action=action, reasons=("r",), due=due,
        protections=protections, created=created,
    )  # fmt: skip


def test_hold_back_keeps_every_deregistration_and_says_why():
    plan = Plan(NOW, (_d("a", Action.DEREGISTER, NOW), _d("b", Action.MARK, NOW)), dry_run=False, cap=50)
    held = hold_back(plan, "no rule")
    assert [d.action for d in held.decisions] == [Action.KEEP, Action.MARK]
    assert held.decisions[0].reasons[-1] == "not deregistered: no rule" and held.held_back == "no rule"


def test_deprecation_changes_follow_the_marks_and_cancel_only_ours():
    due = NOW + timedelta(days=7)
    old_due = NOW + timedelta(days=3)
    images = [
        Image("new", "1", NOW),
        Image("kept-right", "1", NOW, deprecation_time=due),
        Image("kept-wrong", "1", NOW),
        Image("unmarked-ours", "1", NOW, deprecation_time=old_due),
        Image("unmarked-theirs", "1", NOW, deprecation_time=old_due + timedelta(hours=5)),
        Image("past", "1", NOW),
    ]
    plan = Plan(
        NOW,
        (
            _d("new", Action.MARK, due),
            _d("kept-right", Action.KEEP, due),
            _d("kept-wrong", Action.KEEP, due),
            _d("unmarked-ours", Action.UNMARK, old_due, protections=("in use",)),
            _d("unmarked-theirs", Action.UNMARK, old_due, protections=("in use",)),
            _d("past", Action.KEEP, NOW - timedelta(days=1)),
        ),
        dry_run=False,
        cap=50,
    )
    to_set, to_clear = changes(plan, images, NOW)
    assert to_set == [("new", due), ("kept-wrong", due)]
    assert to_clear == ["unmarked-ours"]


def test_promote_deferred_takes_the_oldest_due_first():
    plan = Plan(
        NOW,
        (
            _d("x", Action.DEREGISTER, NOW - timedelta(days=9)),
            _d("late", Action.DEFERRED, NOW - timedelta(days=1)),
            _d("early", Action.DEFERRED, NOW - timedelta(days=5)),
        ),
        dry_run=False,
        cap=1,
    )
    plan, kept = keep_referenced(plan, Opinion(available=True, references={"x": ("arn:aws:ssm:p",)}))
    assert kept == 1 and plan.decisions[0].action is Action.KEEP
    plan = promote_deferred(plan, kept)
    assert {d.image_id: d.action for d in plan.decisions} == {
        "x": Action.KEEP,
        "late": Action.DEFERRED,
        "early": Action.DEREGISTER,
    }
