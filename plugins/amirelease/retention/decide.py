"""The retention rule as one pure function: (images, usage, now, policy) -> Plan.

No AWS, no clock, no I/O: everything it needs is passed in, so it can be tested
exhaustively. The operator lists the account, calls :func:`decide`, logs the
report and applies the plan.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum

from amirelease.retention.marks import Mark, due_date_for, format_mark, parse_mark
from amirelease.retention.model import Image, Usage
from amirelease.retention.policy import RetentionPolicy


class Action(str, Enum):
    MARK = "mark"
    UNMARK = "unmark"
    DEREGISTER = "deregister"
    SKIP = "skip"


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

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class Plan:
    now: datetime
    decisions: tuple[Decision, ...]
    dry_run: bool
    cap: int
    blocked: str | None = None  # set when the cap is exceeded: nothing may be applied
    snapshot_users: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def of(self, action: Action) -> list[Decision]:
        return [d for d in self.decisions if d.action is action]

    @property
    def counts(self) -> dict[str, int]:
        counts = {a.value: 0 for a in Action}
        for d in self.decisions:
            counts[d.action.value] += 1
        return counts


def _short_list(ids: Iterable[str], limit: int = 3) -> str:
    ids = sorted(ids)
    head = ", ".join(ids[:limit])
    return head if len(ids) <= limit else f"{head} (+{len(ids) - limit} more)"


def protections(image: Image, usage: Usage, now: datetime, policy: RetentionPolicy) -> list[str]:
    """Every reason the image may not be marked or deregistered now; [] means eligible."""
    reasons: list[str] = []
    if policy.protect_tag_key in image.tags and image.tags[policy.protect_tag_key] == policy.protect_tag_value:
        reasons.append(f"protected by tag {policy.protect_tag_key}={policy.protect_tag_value}")
    if policy.hold_enabled and image.tags.get(policy.hold_tag, "") != "":
        reasons.append(f"held: {policy.hold_tag}={image.tags[policy.hold_tag]}")
    instances = usage.instances.get(image.image_id) or ()
    if instances:
        reasons.append(f"in use by {_short_list(instances)}")
    reasons.extend(usage.references.get(image.image_id) or ())
    if image.creation_date is None:
        reasons.append("creation date unknown")
    elif now - image.creation_date <= timedelta(days=policy.min_age_days):
        reasons.append(f"too young ({(now - image.creation_date).total_seconds() / 86400:.1f} days)")
    return reasons


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
) -> Plan:
    """Decide, for every image, whether to mark, unmark, deregister or leave it.

    - eligible (own, old enough, unused, unprotected) and unmarked -> MARK, due
      ``grace_days`` later (rounded up to the next UTC midnight);
    - eligible and marked, mark due -> DEREGISTER (snapshots only it uses go too);
    - eligible and marked, not due -> SKIP ("mark not due");
    - not eligible and marked -> UNMARK; not eligible and unmarked -> SKIP with every reason;
    - images of other accounts -> SKIP, never touched.
    If the deregistrations exceed the policy's cap, ``Plan.blocked`` says so and nothing
    may be applied.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    images = list(images)
    due_new = due_date_for(now, policy.grace_days)
    new_mark = format_mark(due_new, op=policy.mark_op, message=policy.mark_message)

    snapshot_users: dict[str, set[str]] = defaultdict(set)
    for image in images:
        for snap in image.snapshot_ids:
            snapshot_users[snap].add(image.image_id)

    decisions: list[Decision] = []
    for image in images:
        age = None if image.creation_date is None else (now - image.creation_date).total_seconds() / 86400
        base = dict(image_id=image.image_id, name=image.name, age_days=age)
        if account_id is not None and image.owner_id != account_id:
            decisions.append(
                Decision(**base, action=Action.SKIP, reasons=(f"owned by another account ({image.owner_id})",))
            )
            continue
        blockers = protections(image, usage, now, policy)
        mark, raw = _mark_of(image, policy)
        if blockers:
            if mark is not None:
                decisions.append(Decision(**base, action=Action.UNMARK, due=mark.due, reasons=("unmarked", *blockers)))
            else:
                decisions.append(Decision(**base, action=Action.SKIP, reasons=tuple(blockers)))
        elif mark is None:
            reasons = [f"marked (due {due_new:%Y/%m/%d})"]
            if raw is not None:
                reasons.append(f"replaces unreadable {policy.mark_tag}={raw!r}")
            decisions.append(
                Decision(**base, action=Action.MARK, mark_value=new_mark, due=due_new, reasons=tuple(reasons))
            )
        elif mark.due > now:
            decisions.append(
                Decision(
                    **base,
                    action=Action.SKIP,
                    due=mark.due,
                    reasons=(f"mark not due (due {mark.due:%Y/%m/%d %H:%M} UTC)",),
                )
            )
        else:
            decisions.append(
                Decision(
                    **base,
                    action=Action.DEREGISTER,
                    due=mark.due,
                    reasons=(f"deregistered (mark due {mark.due:%Y/%m/%d})",),
                )
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
            reasons = d.reasons
            if kept:
                shared = sorted(set().union(*(snapshot_users[s] for s in kept)) - {d.image_id})
                reasons = (*reasons, f"keeps {', '.join(kept)} (shared with {_short_list(shared)})")
            d = replace(d, snapshot_ids=delete, kept_snapshot_ids=kept, reasons=reasons)
        final.append(d)

    blocked = None
    if len(leaving) > policy.max_deregistrations_per_run:
        blocked = f"{len(leaving)} deregistrations exceed the cap of {policy.max_deregistrations_per_run} per run"
    return Plan(
        now=now,
        decisions=tuple(final),
        dry_run=policy.dry_run if dry_run is None else dry_run,
        cap=policy.max_deregistrations_per_run,
        blocked=blocked,
        snapshot_users={s: tuple(sorted(u)) for s, u in snapshot_users.items()},
    )
