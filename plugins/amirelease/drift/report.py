"""Drift in words, from Terraform's own plan (pure: plain data in, plain data out).

``terraform show -json <plan>`` lists ``resource_drift``: every managed resource whose live
attributes differ from the state the last apply wrote (Terraform found it while refreshing),
with the values before and after; ``resource_changes`` is what an apply would do about it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_VALUE = 80  # characters of a value shown in a message
SENSITIVE = "(sensitive)"


@dataclass(frozen=True)
class AttributeChange:
    path: str  # e.g. max_size, launch_template[0].version
    before: str
    after: str

    def words(self) -> str:
        return f"{self.path}: {self.before} -> {self.after}"


@dataclass(frozen=True)
class DriftedResource:
    address: str
    resource_type: str
    action: str  # what Terraform saw: update / delete
    attributes: tuple[AttributeChange, ...] = ()
    planned: str = ""  # what the next release's apply would do: update / replace / create / "" (nothing)

    def words(self) -> str:
        what = "deleted outside Terraform" if self.action == "delete" else "changed outside a release"
        attrs = "; ".join(a.words() for a in self.attributes) or "attributes not shown"
        fix = f" (a release would {self.planned} it)" if self.planned else ""
        return f"{self.address} {what}: {attrs}{fix}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "resource_type": self.resource_type,
            "action": self.action,
            "planned": self.planned,
            "attributes": [a.__dict__ for a in self.attributes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DriftedResource:
        return cls(
            address=str(d["address"]),
            resource_type=str(d.get("resource_type", "")),
            action=str(d.get("action", "update")),
            planned=str(d.get("planned", "")),
            attributes=tuple(AttributeChange(**a) for a in d.get("attributes", [])),
        )


@dataclass(frozen=True)
class PlanReading:
    """What one read-only plan of an app × region found."""

    drifted: tuple[DriftedResource, ...]
    # planned changes that no drift explains (e.g. a secret's Vault version moved since the release)
    pending: tuple[str, ...] = field(default_factory=tuple)


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b[0].c': leaf} for nested dicts/lists; empty containers are leaves."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _sensitive_paths(marks: Any) -> set[str]:
    """Paths Terraform marks sensitive (before_sensitive / after_sensitive: true at a path)."""
    if marks is True:
        return {""}
    return {p for p, v in _flatten(marks).items() if v is True} if isinstance(marks, (dict, list)) else set()


def _covered(path: str, marked: set[str]) -> bool:
    return any(m == "" or path == m or path.startswith(m + ".") or path.startswith(m + "[") for m in marked)


EMPTY: tuple[Any, ...] = (None, [], {}, "")


def _same(a: Any, b: Any) -> bool:
    """Equal, or both empty: null, [] , {} and "" are one value to a person (and AWS's APIs and
    Terraform's state disagree on them)."""
    return a == b or (a in EMPTY and b in EMPTY)


def attribute_changes(change: dict[str, Any]) -> tuple[AttributeChange, ...]:
    """Changed leaf attributes of one drift entry (pure); sensitive ones shown as (sensitive),
    tags_all left out (it repeats tags with the provider's default tags)."""
    before, after = _flatten(change.get("before") or {}), _flatten(change.get("after") or {})
    marked = _sensitive_paths(change.get("before_sensitive")) | _sensitive_paths(change.get("after_sensitive"))
    out = []
    for path in sorted(set(before) | set(after)):
        if _same(before.get(path), after.get(path)):
            continue
        if path == "tags_all" or path.startswith("tags_all."):
            continue
        hidden = _covered(path, marked)
        out.append(
            AttributeChange(
                path=path,
                before=SENSITIVE if hidden else _show(before.get(path)),
                after=SENSITIVE if hidden else _show(after.get(path)),
            )
        )
    return tuple(out)


def read_plan(plan: dict[str, Any]) -> PlanReading:
    """Drift out of ``terraform show -json`` of a plan (pure).

    A resource has drifted when Terraform's refresh found it changed or deleted
    (``resource_drift``) *and* the plan would change it back (``resource_changes``): a change
    the plan would not undo (an attribute the module ignores, such as the group's desired
    capacity, or null read back as []) is not drift, and is not listed."""
    planned: dict[str, str] = {}
    reverted: dict[str, set[str]] = {}  # address -> attribute paths the plan changes (or computes anew)
    for rc in plan.get("resource_changes") or []:
        change = rc.get("change") or {}
        actions = list(change.get("actions") or [])
        if actions in (["no-op"], ["read"], []):
            continue
        address = str(rc.get("address"))
        planned[address] = "replace" if set(actions) == {"create", "delete"} else "+".join(actions)
        before, after = _flatten(change.get("before") or {}), _flatten(change.get("after") or {})
        paths = {p for p in set(before) | set(after) if not _same(before.get(p), after.get(p))}
        reverted[address] = paths | {p for p, v in _flatten(change.get("after_unknown") or {}).items() if v is True}
    drifted = []
    for rd in plan.get("resource_drift") or []:
        address = str(rd.get("address"))
        if rd.get("mode") == "data" or address not in planned:
            continue
        change = rd.get("change") or {}
        action = "delete" if list(change.get("actions") or []) == ["delete"] else "update"
        attrs = attribute_changes(change) if action == "update" else ()
        # the drifted attributes the plan would set back; all of them if Terraform's shapes differ
        back = tuple(a for a in attrs if _covered(a.path, reverted.get(address, set())))
        drifted.append(
            DriftedResource(
                address=address,
                resource_type=str(rd.get("type", "")),
                action=action,
                attributes=back or attrs,
                planned=planned[address],
            )
        )
    explained = {d.address for d in drifted}
    pending = tuple(f"{a} ({act})" for a, act in sorted(planned.items()) if a not in explained)
    return PlanReading(drifted=tuple(drifted), pending=pending)


# --- the drift record (one per app × region; per stage later) -------------------------------


def next_record(
    previous: dict[str, Any] | None,
    *,
    app: str,
    region: str,
    release: dict[str, Any],
    drifted: tuple[DriftedResource, ...],
    now: str,
    run: dict[str, str],
    stage: str | None = None,
) -> dict[str, Any] | None:
    """The drift record after one plan (pure): None when the plan showed no drift (the record is
    cleared); first_seen kept while the drift lasts (reset when the live release changed)."""
    if not drifted:
        return None
    same_release = previous is not None and previous.get("release_id") == release.get("release_id")
    return {
        "app": app,
        "region": region,
        "stage": stage,
        "release_id": release.get("release_id"),
        "version": release.get("version"),
        "first_seen": previous.get("first_seen") if same_release and previous else now,
        "last_seen": now,
        "resources": [d.to_dict() for d in drifted],
        "run": run,
    }


def is_news(previous: dict[str, Any] | None, record: dict[str, Any] | None) -> bool:
    """Tell people when drift appears or what drifted changes; not again every hour (pure)."""
    if record is None:
        return False
    if previous is None or previous.get("release_id") != record.get("release_id"):
        return True

    def shape(r: dict[str, Any]) -> list[Any]:
        return sorted(
            (x["address"], x.get("action"), tuple(sorted((a["path"], a["after"]) for a in x.get("attributes", []))))
            for x in r.get("resources", [])
        )

    return shape(previous) != shape(record)


def record_words(record: dict[str, Any]) -> list[str]:
    """One line per drifted resource (pure)."""
    return [DriftedResource.from_dict(r).words() for r in record.get("resources", [])]
