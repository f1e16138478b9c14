"""How long each step of a release took: the ``phases`` of its ledger record.

A task cannot read another task instance's dates through Airflow's execution API, so each step
reports its own: the operators' base (operators/base.py) pushes an XCom ``phase`` when ``execute``
ends, successful or not (never at a deferral): when the step started and ended on its worker and
the seconds its tools took (``packer``, ``terraform plan``…). The refresh's time is AWS's own
(each group's StartTime/EndTime, carried by the wait's handle: handoffs.RefreshHandle.ended).
``record`` lists them in the pipeline's order (:func:`phases_of`); the Releases page shows them.

Pure: no Airflow, no AWS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from amirelease.times import parse_iso

PHASE_KEY = "phase"  # the XCom key each step reports its time under

# the names a person reads on the Releases page (the task ids elsewhere)
LABELS = {
    "resolve_target": "target",  # a rollback's own step in records written before preflight resolved it
    "preflight": "preflight",
    "release_lock": "lock",
    "check_infrastructure": "Terraform check",
    "mark_rolled_back": "mark",
    "bake": "bake",
    "smoke_test": "smoke test",
    "apply_infrastructure": "Terraform apply",
    "roll_out": "roll-out",
    "wait_for_refresh": "refresh",
    "verify": "verify",
    "record": "record",
}


def iso(moment: datetime) -> str:
    """A UTC time to the millisecond, as the phases write it (``2026-12-06T02:24:25.123Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def phase(started: datetime, ended: datetime, tools: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One step's report: its start and end, its seconds, and its tools' seconds (where it ran any)."""
    entry: dict[str, Any] = {
        "started_at": iso(started),
        "ended_at": iso(ended),
        "seconds": round(max(0.0, (ended - started).total_seconds()), 1),
    }
    if tools:
        entry["tools"] = {name: round(seconds, 1) for name, seconds in tools.items()}
    return entry


def refresh_phase(refreshes: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The refresh's phase from AWS's own times: the first group's start to the last group's end,
    with each group's seconds. None when no refresh has both times (it never started or ended)."""
    groups = []
    for r in refreshes:
        start, end = parse_iso(r.get("started_at")), parse_iso(r.get("ended_at"))
        if start is None or end is None:
            continue
        groups.append((r, start, end))
    if not groups:
        return None
    entry = phase(min(s for _, s, _ in groups), max(e for _, _, e in groups))
    entry["groups"] = [
        {
            "region": r.get("region"),
            "auto_scaling_group": r.get("auto_scaling_group"),
            "seconds": round((e - s).total_seconds(), 1),
        }
        for r, s, e in groups
    ]
    return entry


def phases_of(
    order: Sequence[str], reported: Mapping[str, Any], refreshes: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """(pure) The record's phases: each step that reported, in the pipeline's ``order``; the
    refresh wait (``wait_for_refresh``) from AWS's times. A step that did not run is left out."""
    out = []
    for step in order:
        entry = refresh_phase(refreshes) if step == "wait_for_refresh" else reported.get(step)
        if isinstance(entry, Mapping) and entry.get("started_at"):
            out.append({"step": step, **entry})
    return out


def summary(phases: Any) -> str:
    """For a person: ``bake 1 min 2 s · smoke test 12 s · …`` ('' for a record without phases)."""
    if not isinstance(phases, list):
        return ""
    parts = []
    for p in phases:
        if not isinstance(p, Mapping) or p.get("seconds") is None:
            continue
        parts.append(f"{LABELS.get(str(p.get('step')), str(p.get('step')))} {_seconds(float(p['seconds']))}")
    return " · ".join(parts)


def _seconds(s: float) -> str:
    if s < 10:
        return f"{s:.1f} s"
    whole = int(round(s))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min" + (f" {whole % 60} s" if whole % 60 else "")
    return f"{whole // 3600} h {(whole % 3600) // 60} min"
