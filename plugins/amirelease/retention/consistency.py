"""Stop conditions: evidence that a run's view of the account is wrong (pure functions).

Retention deregisters images that nothing uses. "Nothing uses it" is only as good as the
listings it was read from: if a listing failed, was cut short, or misses instances, an
image in use looks unused. So before anything is changed, the run cross-checks what it
saw against a second view of the same account, and stops (changes nothing, fails with the
reason) when they disagree:

1. **A listing failed or was cut short** (an API error after botocore's retries, a
   paginator that stopped early): always. Likewise **a reference a group makes could not be
   resolved**: a launch template version or launch configuration that neither the listing nor
   a direct call for it returned (``aws.resolve_groups``). The view is then known to be
   incomplete, so no other decision of the run is trusted either.
2. **Group instances missing**: up to ``group_instance_sample`` instances that Auto Scaling
   lists as ``InService`` in its groups (spread over the groups) are looked up by id in
   EC2's instance listing. An instance EC2 does not list as live, or one that runs an image
   the run considered without appearing in that image's instance listing, counts as
   missing; more than ``max_missing_group_instances`` stop the run. Listings are not a
   snapshot: a group scaling in or refreshing between the read of the groups and EC2's answer
   looks the same. So the groups of the doubtful instances are read once more, after EC2
   answered; an instance its group no longer lists as ``InService`` left it in the meantime and
   is set aside (neither missing nor live). One it still lists counts.
3. **The listing of live instances lacks group instances**: the run lists every live instance
   once (paged, side by side with the groups) and looks up by id the group instances it lacks
   (``aws.resolve_groups``). An instance Auto Scaling lists ``InService`` that EC2 returns live
   by id but the listing lacked, launched before the listing began (``aws.LISTING_RACE_MARGIN``),
   shows the listing is incomplete - and it may lack the
   instances of an image outside every group too, which no other view would find. More than
   ``max_missing_group_instances`` such instances stop the run.
4. **Far fewer live instances than the groups want**: the instances Auto Scaling lists in
   its groups, times the share of the sample EC2 confirmed live, must add up to at least
   ``min_live_vs_desired`` of the groups' desired capacities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from amirelease.constants import LIVE_INSTANCE_STATES
from amirelease.retention.decide import Plan
from amirelease.retention.policy import RetentionPolicy

LIVE_STATES = LIVE_INSTANCE_STATES  # all but terminated (defined once, in constants.py)
GONE_LIFECYCLE = ("Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated")


@dataclass(frozen=True)
class AccountView:
    """What one run saw, as far as the stop conditions need it."""

    groups: Sequence[Mapping[str, Any]] = ()  # DescribeAutoScalingGroups items
    sample: Sequence[tuple[str, str]] = ()  # (group name, instance id) looked up in EC2
    sample_found: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # id -> (state, image id)
    candidates: frozenset[str] = frozenset()  # images whose instances were listed
    candidate_usage: Mapping[str, Sequence[str]] = field(default_factory=dict)  # image -> live instance ids
    listing_errors: Sequence[str] = ()
    unresolved: Sequence[str] = ()  # references groups make that AWS did not return (aws.resolve_groups)
    sample_left: frozenset[str] = frozenset()  # sampled instances their group, read again, no longer has InService
    listing_lacked: Sequence[str] = ()  # InService group instances live by id that the live listing lacked


def _judged(view: AccountView) -> list[tuple[str, str, str, str]]:
    """(group, instance, verdict, detail) for each sampled instance that did not leave its group:
    verdict ``missing`` (detail: EC2's state), ``unlisted`` (live on a candidate its image's listing
    lacked; detail: the image) or ``live``."""
    out = []
    for group, instance_id in view.sample:
        if instance_id in view.sample_left:
            continue
        found = view.sample_found.get(instance_id)
        if found is None or found[0] not in LIVE_STATES:
            out.append((group, instance_id, "missing", "not listed" if found is None else found[0]))
        elif found[1] in view.candidates and instance_id not in (view.candidate_usage.get(found[1]) or ()):
            out.append((group, instance_id, "unlisted", found[1]))
        else:
            out.append((group, instance_id, "live", found[1]))
    return out


def doubtful_sample(view: AccountView) -> list[tuple[str, str]]:
    """The sampled (group, instance) pairs that count against the view: to be read again."""
    return [(g, i) for g, i, verdict, _ in _judged(view) if verdict != "live"]


def select_sample(groups: Sequence[Mapping[str, Any]], size: int) -> list[tuple[str, str]]:
    """Up to ``size`` InService group instances, round-robin over the groups (sorted by name)."""
    if size <= 0:
        return []
    queues = []
    for group in sorted(groups, key=lambda g: str(g.get("AutoScalingGroupName", ""))):
        ids = sorted(
            i["InstanceId"]
            for i in group.get("Instances") or []
            if i.get("LifecycleState") == "InService" and i.get("InstanceId")
        )
        if ids:
            queues.append((str(group.get("AutoScalingGroupName", "?")), ids))
    picked: list[tuple[str, str]] = []
    depth = 0
    while len(picked) < size and any(depth < len(ids) for _, ids in queues):
        for name, ids in queues:
            if depth < len(ids) and len(picked) < size:
                picked.append((name, ids[depth]))
        depth += 1
    return picked


def _listed_in_groups(groups: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for g in groups for i in g.get("Instances") or [] if i.get("LifecycleState") not in GONE_LIFECYCLE)


def _desired(groups: Sequence[Mapping[str, Any]]) -> int:
    return sum(int(g.get("DesiredCapacity") or 0) for g in groups)


def _examples(items: Sequence[str], limit: int = 3) -> str:
    head = ", ".join(items[:limit])
    return head if len(items) <= limit else f"{head} and {len(items) - limit} more"


def stop_reasons(view: AccountView, policy: RetentionPolicy) -> list[str]:
    """Every stop condition that holds, each said for the person on call; [] means go on."""
    reasons = [f"a listing failed or was cut short: {e}" for e in view.listing_errors]
    if view.unresolved:
        reasons.append(
            f"the account view is incomplete, so no decision of this run can be trusted: "
            f"{len(view.unresolved)} reference(s) Auto Scaling groups make could not be resolved: "
            + "; ".join(view.unresolved[:5])
            + (f"; and {len(view.unresolved) - 5} more (all in the log)" if len(view.unresolved) > 5 else "")
            + ". If the check command shows the template version or configuration, AWS answered this run "
            "incompletely and the next run tries again; if it does not, fix or remove the group's reference"
        )
    if view.listing_errors or view.unresolved:
        return reasons  # the other checks would read incomplete data

    judged = _judged(view)
    missing = [f"{i} ({g}: {detail})" for g, i, verdict, detail in judged if verdict == "missing"]
    unlisted = [f"{i} ({g}) on {detail}" for g, i, verdict, detail in judged if verdict == "unlisted"]
    live_in_sample = len(judged) - len(missing)
    counted = len(judged)
    if len(missing) + len(unlisted) > policy.max_missing_group_instances:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} of {counted} instances that Auto Scaling lists as InService are "
                f"missing or terminated in EC2's instance listing: {_examples(missing)}"
            )
        if unlisted:
            parts.append(
                f"{len(unlisted)} group instance(s) run an image being considered for deregistration but did "
                f"not show up when that image's instances were listed: {_examples(unlisted)}"
            )
        reasons.append(
            "the instance listing disagrees with Auto Scaling: "
            + "; ".join(parts)
            + f" (at most {policy.max_missing_group_instances} allowed)"
        )

    lacked = list(view.listing_lacked)
    if len(lacked) > policy.max_missing_group_instances:
        reasons.append(
            f"the listing of live instances is incomplete: it lacked {len(lacked)} instance(s) that Auto Scaling "
            f"lists as InService and EC2 returns as live when asked by id: {_examples(lacked)} (at most "
            f"{policy.max_missing_group_instances} allowed); an instance outside every group could be missing "
            "from it too, so an image in use would look unused"
        )

    desired = _desired(view.groups)
    if policy.min_live_vs_desired > 0 and desired > 0:
        listed = _listed_in_groups(view.groups)
        confirmed = live_in_sample / counted if counted else 1.0
        live = listed * confirmed
        if live < policy.min_live_vs_desired * desired:
            reasons.append(
                f"far fewer live instances than the groups want: about {live:.0f} live instances in "
                f"{len(view.groups)} Auto Scaling group(s) whose desired capacities add up to {desired} "
                f"(at least {policy.min_live_vs_desired:.0%} expected)"
            )
    return reasons


def checked(plan: Plan, view: AccountView, policy: RetentionPolicy) -> Plan:
    """The plan, stopped (nothing may be applied) when any stop condition holds."""
    reasons = stop_reasons(view, policy)
    return plan.stop("; ".join(reasons)) if reasons else plan
