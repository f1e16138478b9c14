"""The run report: a readable table for the task log and a small summary for XCom."""

from __future__ import annotations

from typing import Any

from amirelease.retention.decide import Action, Decision, Plan

# Acted-on rows first, then protections, then the (many) young ones.
_ORDER = {Action.DEREGISTER: 0, Action.UNMARK: 1, Action.MARK: 2, Action.SKIP: 3}


def _sort_key(d: Decision) -> tuple:
    young = d.reasons and d.reasons[0].startswith("too young")
    return (_ORDER[d.action], bool(young), d.image_id)


def _age(d: Decision) -> str:
    return "?" if d.age_days is None else f"{d.age_days:.1f}d"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(plan: Plan, *, region: str | None = None) -> str:
    """Every decision, one row each, acted-on rows first."""
    rows = [("ACTION", "IMAGE", "NAME", "AGE", "REASON")]
    for d in sorted(plan.decisions, key=_sort_key):
        rows.append((d.action.value, d.image_id, _clip(d.name, 40), _age(d), d.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4] for r in rows]
    mode = "DRY RUN - nothing changed. " if plan.dry_run else ""
    head = (
        f"AMI retention{' in ' + region if region else ''} at {plan.now:%Y-%m-%d %H:%M:%S} UTC: "
        f"{mode}{format_counts(plan.counts)}"
    )
    if plan.blocked:
        head += f"\nBLOCKED: {plan.blocked}; nothing was changed."
    return "\n".join([head, *lines])


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items())


def summary(
    plan: Plan,
    *,
    region: str | None,
    max_items: int,
    applied: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """JSON-serialisable and bounded: counts plus at most ``max_items`` rows (acted-on first)."""
    ordered = sorted(plan.decisions, key=_sort_key)
    items = [
        {
            "image_id": d.image_id,
            "name": d.name,
            "age_days": None if d.age_days is None else round(d.age_days, 2),
            "action": d.action.value,
            "reason": d.reason,
        }
        for d in ordered[:max_items]
    ]
    return {
        "region": region,
        "now": plan.now.isoformat(),
        "dry_run": plan.dry_run,
        "blocked": plan.blocked,
        "counts": plan.counts,
        "applied": applied or {},
        "items": items,
        "items_omitted": max(0, len(ordered) - max_items),
    }
