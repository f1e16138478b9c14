"""The retention rule as one pure function: (images, usage, now, policy) -> Plan.

No AWS, no clock, no I/O: everything it needs is passed in, so it can be tested
exhaustively. The operator lists the account, calls :func:`decide`, checks that its view
of the account is consistent (:mod:`amirelease.retention.consistency`), writes the report
and applies the plan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from amirelease.retention.marks import Mark, due_date_for, format_mark, parse_mark
from amirelease.retention.model import Image, Usage
from amirelease.retention.policy import RetentionPolicy

# Tags copied into the report: what a person needs to recognise the image, nothing else.
REPORT_TAGS = ("App", "Version", "ReleaseId")
# Values that show someone meant "protect this" (used to warn about near-miss tags).
_TRUTHY = frozenset({"true", "yes", "y", "1", "on"})


class Action(StrEnum):
    MARK = "mark"
    UNMARK = "unmark"
    DEREGISTER = "deregister"
    DEFERRED = "deferred"  # due and eligible, but over this run's cap: a following run takes it
    KEEP = "keep"


@dataclass(frozen=True)
class Decision:
    image_id: str
    name: str
    age_days: float | None
    action: Action
    reasons: tuple[str, ...]
    mark_value: str | None = None  # the tag value to write (MARK)
    due: datetime | None = None  # due date of the new or existing mark
    snapshot_ids: tuple[str, ...] = ()  # snapshots deleted with it (DEREGISTER)
    kept_snapshot_ids: tuple[str, ...] = ()  # its snapshots that another image still uses
    protections: tuple[str, ...] = ()  # every reason it may not go now; () means eligible
    eligible_on: datetime | None = None  # too young: when it becomes old enough
    hold_reason: str | None = None
    warnings: tuple[str, ...] = ()
    created: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=dict)  # REPORT_TAGS only

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    @property
    def deregister_on(self) -> datetime | None:
        """When it goes if nothing changes: the due date of its (new) mark."""
        if self.action in (Action.MARK, Action.DEREGISTER) or (self.action is Action.KEEP and not self.protections):
            return self.due
        return None


@dataclass(frozen=True)
class Plan:
    now: datetime
    decisions: tuple[Decision, ...]
    dry_run: bool
    cap: int
    stopped: str | None = None  # a stop condition held: nothing may be applied
    snapshot_users: dict[str, tuple[str, ...]] = field(default_factory=dict)
    marked_at: datetime | None = None  # the time new marks count their grace from
    held_back: str | None = None  # why due images were not deregistered (recycle.hold_back)
    # the launch template versions the run read (Usage.template_versions), for aws.recheck
    template_versions: Mapping[tuple[str, int], str] = field(default_factory=dict, repr=False)
    group_instances: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)  # likewise

    def of(self, action: Action) -> list[Decision]:
        return [d for d in self.decisions if d.action is action]

    @property
    def counts(self) -> dict[str, int]:
        counts = {a.value: 0 for a in Action}
        for d in self.decisions:
            counts[d.action.value] += 1
        return counts

    @property
    def deferred(self) -> int:
        return len(self.of(Action.DEFERRED))

    def to_apply(self) -> dict[Action, list[Decision]]:
        """What may be written to AWS: nothing on a dry run or a stopped run."""
        if self.dry_run or self.stopped:
            return {}
        return {a: self.of(a) for a in (Action.UNMARK, Action.MARK, Action.DEREGISTER)}

    def stop(self, reason: str) -> Plan:
        return replace(self, stopped=reason)


def _short_list(ids: Iterable[str], limit: int = 3) -> str:
    ids = sorted(ids)
    head = ", ".join(ids[:limit])
    return head if len(ids) <= limit else f"{head} (+{len(ids) - limit} more)"


def _day(when: datetime) -> str:
    return f"{when:%Y-%m-%d}"


def _due_text(mark: Mark) -> str:
    due = mark.due
    return _day(due) if (due.hour, due.minute) == (0, 0) else f"{due:%Y-%m-%d %H:%M} UTC"


def _is_own(image: Image, account_id: str | None) -> bool:
    return account_id is None or image.owner_id == account_id


def _protected_by_tag(image: Image, policy: RetentionPolicy) -> bool:
    return image.tags.get(policy.protect_tag_key) == policy.protect_tag_value


def _held(image: Image, policy: RetentionPolicy) -> bool:
    return policy.hold_enabled and image.tags.get(policy.hold_tag, "") != ""


def _old_enough(image: Image, now: datetime, policy: RetentionPolicy) -> bool:
    return image.creation_date is not None and now - image.creation_date > timedelta(days=policy.min_age_days)


def needs_usage(image: Image, now: datetime, policy: RetentionPolicy, *, account_id: str | None = None) -> bool:
    """Whether the decision on this image depends on what uses it (instances, templates).

    Only own, old enough images that no tag protects or holds: for every other image the
    decision is made from the image alone, so the account's instances are asked about
    these "candidates" only.
    """
    return (
        _is_own(image, account_id)
        and _old_enough(image, now, policy)
        and not _protected_by_tag(image, policy)
        and not _held(image, policy)
    )


def protections(image: Image, usage: Usage, now: datetime, policy: RetentionPolicy) -> list[str]:
    """Every reason the image may not be marked or deregistered now; [] means eligible."""
    reasons: list[str] = []
    if _protected_by_tag(image, policy):
        reasons.append(f"protected by tag {policy.protect_tag_key}={policy.protect_tag_value}")
    if _held(image, policy):
        why = image.tags.get(policy.hold_reason_tag, "").strip()
        reasons.append(f"held: {policy.hold_tag}={image.tags[policy.hold_tag]}" + (f" (why: {why})" if why else ""))
    instances = usage.instances.get(image.image_id) or ()
    if instances:
        reasons.append(f"in use by {_short_list(instances)}")
    reasons.extend(usage.references.get(image.image_id) or ())
    if image.deregistration_protection != "disabled":
        reasons.append(f"protected from deregistration by AWS ({image.deregistration_protection})")
    if (
        policy.recently_launched_days
        and image.last_launched is not None
        and now - image.last_launched <= timedelta(days=policy.recently_launched_days)
    ):
        reasons.append(
            f"launched an instance {image.last_launched:%Y-%m-%d %H:%M} UTC (AWS lastLaunchedTime), within "
            f"{policy.recently_launched_days} days"
        )
    if image.creation_date is None:
        reasons.append("creation date unknown")
    elif now - image.creation_date <= timedelta(days=policy.min_age_days):
        eligible_on = image.creation_date + timedelta(days=policy.min_age_days)
        days = (now - image.creation_date).total_seconds() / 86400
        reasons.append(f"too young ({days:.1f} days; old enough after {eligible_on:%Y-%m-%d %H:%M} UTC)")
    return reasons


def near_miss_warnings(image: Image, policy: RetentionPolicy) -> list[str]:
    """Tags that look like the protection or the hold but are not it, said plainly."""
    return near_miss_tag_warnings(image.tags, policy)


def near_miss_tag_warnings(tags: Mapping[str, str], policy: RetentionPolicy) -> list[str]:
    """The one rule for near-miss tags, used by the retention report and the Releases page.

    A tag whose key is the protection's key up to case/spaces, with a value that means "yes"
    (``True``, ``yes``, ``" true"``) or with a near-miss key; and a near-miss key of the hold
    tag. ``RetainIndefinitely=false`` (the exact key, a "no" value) is a deliberate choice,
    not a near miss. Nothing when the image is protected or held as the policy says.
    """
    key, value = policy.protect_tag_key, policy.protect_tag_value
    if tags.get(key) == value:
        return []
    warnings = []
    for k, v in sorted(tags.items()):
        same_key = k == key
        like_key = k.strip().lower() == key.lower()
        if not like_key:
            continue
        if same_key and v.strip().lower() not in _TRUTHY:
            continue  # e.g. RetainIndefinitely=false: deliberately unprotected
        problems = []
        if not same_key:
            problems.append(f"the key must be exactly '{key}' (case-sensitive, no spaces)")
        if v != value:
            problems.append(f"the value must be exactly '{value}' (case-sensitive, no spaces)")
        warnings.append(f"tag {k!r}={v!r} was ignored and does not protect this image: {' and '.join(problems)}")
    if policy.hold_enabled and tags.get(policy.hold_tag, "") == "":
        for k, v in sorted(tags.items()):
            if k != policy.hold_tag and k.strip().lower() == policy.hold_tag.lower() and v.strip():
                warnings.append(
                    f"tag {k!r}={v!r} was ignored and does not hold this image: the key must be exactly "
                    f"'{policy.hold_tag}' (case-sensitive, no spaces)"
                )
    return warnings


def _mark_of(image: Image, policy: RetentionPolicy) -> tuple[Mark | None, str | None]:
    """(our/Custodian deregistration mark, or None; the raw tag value if present)."""
    raw = image.tags.get(policy.mark_tag)
    if raw is None:
        return None, None
    mark = parse_mark(raw)
    if mark is not None and mark.op in policy.accepted_ops:
        return mark, raw
    return None, raw


def decide(
    images: Iterable[Image],
    usage: Usage,
    now: datetime,
    policy: RetentionPolicy,
    *,
    account_id: str | None = None,
    dry_run: bool | None = None,
    marked_at: datetime | None = None,
) -> Plan:
    """Decide, for every image, whether to mark, unmark, deregister, defer or keep it.

    - eligible (own, old enough, unused, unprotected) and unmarked -> MARK, due
      ``grace_days`` after ``marked_at`` (default ``now``; rounded up to the next UTC midnight);
    - eligible and marked, mark not due -> KEEP ("deregister on <date>");
    - eligible and marked, mark due -> DEREGISTER for the ``max_deregistrations_per_run``
      oldest due (snapshots only they use go too), DEFERRED for the rest (the next runs);
    - not eligible and marked -> UNMARK; not eligible and unmarked -> KEEP with every reason;
    - images of other accounts -> KEEP, never touched.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    marked_at = now if marked_at is None else marked_at.astimezone(UTC)
    images = list(images)
    due_new = due_date_for(marked_at, policy.grace_days)
    new_mark = format_mark(due_new, op=policy.mark_op, message=policy.mark_message)

    snapshot_users: dict[str, set[str]] = defaultdict(set)
    for image in images:
        for snap in image.snapshot_ids:
            snapshot_users[snap].add(image.image_id)

    decisions: list[Decision] = []
    due_now: list[tuple[datetime, datetime, str, int]] = []  # (due, created, id, index) of due, eligible
    for image in images:
        age = None if image.creation_date is None else (now - image.creation_date).total_seconds() / 86400
        base: dict[str, Any] = dict(
            image_id=image.image_id,
            name=image.name,
            age_days=age,
            created=image.creation_date,
            tags={k: image.tags[k] for k in REPORT_TAGS if k in image.tags},
        )
        if not _is_own(image, account_id):
            decisions.append(
                Decision(
                    **base,
                    action=Action.KEEP,
                    reasons=(f"owned by another account ({image.owner_id})",),
                    protections=("owned by another account",),
                )
            )
            continue
        blockers = tuple(protections(image, usage, now, policy))
        base["protections"] = blockers
        base["warnings"] = tuple(near_miss_warnings(image, policy))
        if _held(image, policy):
            base["hold_reason"] = image.tags.get(policy.hold_reason_tag) or image.tags[policy.hold_tag]
        if image.creation_date is not None and not _old_enough(image, now, policy):
            base["eligible_on"] = image.creation_date + timedelta(days=policy.min_age_days)
        mark, raw = _mark_of(image, policy)
        if blockers:
            if mark is not None:
                decisions.append(Decision(**base, action=Action.UNMARK, due=mark.due, reasons=("unmarked", *blockers)))
            else:
                decisions.append(Decision(**base, action=Action.KEEP, reasons=blockers))
        elif mark is None:
            reasons = [f"marked: deregister on {_day(due_new)} if still unused and unprotected then"]
            if raw is not None:
                reasons.append(f"replaces unreadable {policy.mark_tag}={raw!r}")
            decisions.append(
                Decision(**base, action=Action.MARK, mark_value=new_mark, due=due_new, reasons=tuple(reasons))
            )
        elif mark.due > now:
            decisions.append(
                Decision(
                    **base,
                    action=Action.KEEP,
                    due=mark.due,
                    reasons=(f"deregister on {_due_text(mark)} if still unused and unprotected then (marked)",),
                )
            )
        else:
            created = image.creation_date or now
            due_now.append((mark.due, created, image.image_id, len(decisions)))
            decisions.append(
                Decision(
                    **base,
                    action=Action.DEREGISTER,
                    due=mark.due,
                    reasons=(f"deregistered: marked, due {_due_text(mark)}, still unused and unprotected",),
                )
            )

    # The brake drains: the oldest due go now, the rest wait for the next runs.
    cap = policy.max_deregistrations_per_run
    due_now.sort()
    waiting = len(due_now) - cap
    for position, (due, _created, _id, index) in enumerate(due_now):
        if position < cap:
            continue
        d = decisions[index]
        decisions[index] = replace(
            d,
            action=Action.DEFERRED,
            reasons=(
                f"due since {_day(due)}; deferred to a following run: at most {cap} deregistrations per run, "
                f"oldest due first (number {position - cap + 1} of {waiting} waiting)",
            ),
        )

    # Snapshots go only when every image that uses them is deregistered in this run.
    leaving = {d.image_id for d in decisions if d.action is Action.DEREGISTER}
    by_id = {i.image_id: i for i in images}
    final: list[Decision] = []
    for d in decisions:
        if d.action is Action.DEREGISTER:
            snaps = by_id[d.image_id].snapshot_ids
            delete = tuple(s for s in snaps if snapshot_users[s] <= leaving)
            kept = tuple(s for s in snaps if s not in delete)
            why = d.reasons
            if kept:
                shared = sorted(set().union(*(snapshot_users[s] for s in kept)) - {d.image_id})
                why = (*why, f"keeps {', '.join(kept)} (shared with {_short_list(shared)})")
            d = replace(d, snapshot_ids=delete, kept_snapshot_ids=kept, reasons=why)
        final.append(d)

    return Plan(
        now=now,
        decisions=tuple(final),
        dry_run=policy.dry_run if dry_run is None else dry_run,
        cap=cap,
        snapshot_users={s: tuple(sorted(u)) for s, u in snapshot_users.items()},
        marked_at=marked_at,
        template_versions=usage.template_versions,
        group_instances=usage.group_instances,
    )
