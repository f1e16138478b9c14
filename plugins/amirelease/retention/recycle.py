"""The Recycle Bin window, as pure functions: do the account's retention rules keep what a run
would deregister, and what a run does when they do not.

A deregistration is final unless EC2's Recycle Bin keeps the image (rule type ``EC2_IMAGE``)
**and** its snapshots (``EBS_SNAPSHOT``): an image restored without its snapshots cannot
launch. Retention sets one tag (``recycle_bin.tag`` in the policy) on the image and its
snapshots just before deregistering them, so a rule that selects that tag keeps both; a
Region-level rule (no tags) keeps everything its exclusion tags do not exclude.

A rule covers when it is ``available`` and keeps for at least ``recycle_bin.retention_days``.
Without a covering rule for *both* types, the run deregisters nothing (:func:`hold_back`):
marks are still written and the report says why. ``recycle_bin: off`` in the policy skips all
of this on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from amirelease.retention.decide import Action, Plan
from amirelease.retention.policy import RetentionPolicy

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import TagTypeDef

ResourceType = Literal["EC2_IMAGE", "EBS_SNAPSHOT"]  # the Recycle Bin's resource types retention uses
RESOURCE_TYPES: tuple[ResourceType, ...] = ("EC2_IMAGE", "EBS_SNAPSHOT")
WHAT = {"EC2_IMAGE": "images", "EBS_SNAPSHOT": "snapshots"}


@dataclass(frozen=True)
class Coverage:
    """Whether the rules keep what a run deregisters; ``rules``: the covering rule per type."""

    covered: bool
    reason: str
    rules: Mapping[str, str]  # resource type -> "rule <id> (N days)"

    def as_report(self, policy: RetentionPolicy) -> dict[str, Any]:
        return {
            "enabled": policy.recycle_bin,
            "covered": self.covered,
            "reason": self.reason,
            "rules": dict(self.rules),
            "tag": {"key": policy.recycle_bin_tag_key, "value": policy.recycle_bin_tag_value},
            "retention_days": policy.recycle_bin_days,
        }


def bin_tag(policy: RetentionPolicy) -> TagTypeDef:
    return {"Key": policy.recycle_bin_tag_key, "Value": policy.recycle_bin_tag_value}


def _tag_matches(tag: Mapping[str, Any], key: str, value: str) -> bool:
    return tag.get("ResourceTagKey") == key and (not tag.get("ResourceTagValue") or tag["ResourceTagValue"] == value)


def rule_keeps(rule: Mapping[str, Any], key: str, value: str) -> bool:
    """Whether a rule (``GetRule``'s answer) retains a resource carrying only our tag."""
    wanted = rule.get("ResourceTags") or []
    if wanted:
        return any(_tag_matches(t, key, value) for t in wanted)
    return not any(_tag_matches(t, key, value) for t in rule.get("ExcludeResourceTags") or [])


def _days(rule: Mapping[str, Any]) -> int:
    period = rule.get("RetentionPeriod") or {}
    return int(period.get("RetentionPeriodValue") or 0) if period.get("RetentionPeriodUnit", "DAYS") == "DAYS" else 0


def coverage(rules: Mapping[str, Sequence[Mapping[str, Any]]], policy: RetentionPolicy) -> Coverage:
    """``rules``: resource type -> the Region's rules of that type (``GetRule`` answers)."""
    key, value, need = policy.recycle_bin_tag_key, policy.recycle_bin_tag_value, policy.recycle_bin_days
    found: dict[str, str] = {}
    missing: list[str] = []
    for rtype in RESOURCE_TYPES:
        keeping = [r for r in rules.get(rtype, ()) if rule_keeps(r, key, value)]
        ready = [r for r in keeping if r.get("Status", "available") == "available"]
        long_enough = sorted((r for r in ready if _days(r) >= need), key=_days, reverse=True)
        if long_enough:
            best = long_enough[0]
            found[rtype] = f"rule {best.get('Identifier')} ({_days(best)} days)"
            continue
        if ready:
            longest = max(ready, key=_days)
            missing.append(
                f"the longest rule keeping {WHAT[rtype]} tagged {key}={value} ({longest.get('Identifier')}) keeps "
                f"them {_days(longest)} day(s), the policy asks for {need}"
            )
        elif keeping:
            missing.append(f"the rule keeping {WHAT[rtype]} tagged {key}={value} is not available yet (pending)")
        else:
            missing.append(f"no Recycle Bin rule ({rtype}) keeps {WHAT[rtype]} tagged {key}={value}")
    if missing:
        return Coverage(
            False,
            "; ".join(missing)
            + ". A deregistration now could not be undone; create the rules with `make recycle-bin-rules` "
            "(or set `recycle_bin: off` in the policy to deregister without a window, on purpose)",
            found,
        )
    return Coverage(
        True,
        "deregistered images and their snapshots stay restorable: "
        + ", ".join(f"{WHAT[t]} by {found[t]}" for t in RESOURCE_TYPES),
        found,
    )


def unreadable(error: str) -> Coverage:
    """The rules could not be read (permissions, an outage): nothing may be deregistered."""
    return Coverage(
        False,
        f"the Recycle Bin rules could not be read ({error}), so a deregistration might not be undoable; "
        "check the retention role's rbin:ListRules/rbin:GetRule permissions",
        {},
    )


def hold_back(plan: Plan, reason: str) -> Plan:
    """The plan with every deregistration turned into a kept, still marked image (pure)."""
    decisions = tuple(
        replace(
            d,
            action=Action.KEEP,
            snapshot_ids=(),
            reasons=(*d.reasons, f"not deregistered: {reason}"),
        )
        if d.action is Action.DEREGISTER
        else d
        for d in plan.decisions
    )
    return replace(plan, decisions=decisions, held_back=reason)


def rule_requests(policy: RetentionPolicy) -> list[dict[str, Any]]:
    """``CreateRule`` arguments for the two rules retention needs (the explicit command)."""
    return [
        {
            "ResourceType": rtype,
            "RetentionPeriod": {"RetentionPeriodValue": policy.recycle_bin_days, "RetentionPeriodUnit": "DAYS"},
            "ResourceTags": [
                {"ResourceTagKey": policy.recycle_bin_tag_key, "ResourceTagValue": policy.recycle_bin_tag_value}
            ],
            "Description": (
                f"AMI retention: deregistered AMIs and their snapshots ({WHAT[rtype]} tagged "
                f"{policy.recycle_bin_tag_key}={policy.recycle_bin_tag_value}) stay restorable for "
                f"{policy.recycle_bin_days} days"
            )[:255],
        }
        for rtype in RESOURCE_TYPES
    ]
