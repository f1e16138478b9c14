"""From the data collect.py read to the rows a person reads on the Releases page (pure).

Every function here takes plain data and returns plain data: sentences, dates, the CSS
class that gives a status its colour, and links into Airflow. Nothing talks to AWS.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from amirelease.constants import (
    ACTIVE_REFRESH_STATES,
    FAILED_REFRESH_STATES,
    HOLD_REASON_TAG,
    HOLD_TAG,
    NOT_PROMOTED,
    TAG_PIPELINE_RUN,
    TAG_RE_RELEASE_OF,
    TAG_RELEASE_ID,
    TAG_VERSION,
    DagIds,
)
from amirelease.errors import PreflightError
from amirelease.ledger import pick_rollback_target
from amirelease.phases import summary as phase_summary
from amirelease.retention.decide import near_miss_tag_warnings
from amirelease.retention.marks import parse_mark
from amirelease.retention.policy import RetentionPolicy
from amirelease.retention.scream import note as scream_note
from amirelease.times import parse_iso
from amirelease.ui.collect import AppSnapshot, GroupState

ROLLBACK_DAG = DagIds.ROLLBACK
RELEASE_DAG = DagIds.RELEASE


# -- small formatting helpers ---------------------------------------------------------------
def parse_time(value: Any) -> datetime | None:
    """ISO times as the ledger, AWS and the retention report write them (a date alone too); None if unreadable."""
    parsed = parse_iso(value if isinstance(value, datetime) else str(value or ""))
    if parsed is None and value:
        try:
            parsed = datetime.strptime(str(value)[:10], "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            return None
    return parsed


def ago(then: datetime, now: datetime) -> str:
    seconds = (now - then).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 90:
        text = "just now" if not future else "in a minute"
        return text
    if seconds < 90 * 60:
        amount = f"{round(seconds / 60)} min"
    elif seconds < 36 * 3600:
        amount = f"{round(seconds / 3600)} h"
    else:
        days = round(seconds / 86400)
        amount = f"{days} day" + ("s" if days != 1 else "")
    return f"in {amount}" if future else f"{amount} ago"


def when(value: Any, now: datetime) -> str:
    """'2026-11-26 13:01 UTC (3 days ago)', or '' when unknown."""
    t = parse_time(value)
    if t is None:
        return ""
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({ago(t, now)})"


def day(value: Any) -> str:
    t = parse_time(value)
    return f"{t.astimezone(UTC):%Y-%m-%d}" if t else ""


def duration(start: Any, end: Any) -> str:
    a, b = parse_time(start), parse_time(end)
    if a is None or b is None or b < a:
        return ""
    s = int((b - a).total_seconds())
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60} s" if s % 60 else "")
    return f"{s // 3600} h {(s % 3600) // 60} min"


def run_href(root: str, dag_id: str | None, run_id: str | None) -> str:
    """Link to a DAG run in Airflow's UI ('' when the run is unknown)."""
    if not dag_id or not run_id:
        return ""
    return f"{root}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _by_release_id(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(r["release_id"]): r for r in history if r.get("release_id")}


def _by_ami(history: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in history:
        for ami in (r.get("amis") or {}).values():
            out[str(ami)] = r
    return out


def kind_label(record: dict[str, Any], records: dict[str, dict[str, Any]]) -> str:
    """'release', 're-release of 1.1.0' or 'rebuild of 1.1.0 (<release id>)'."""
    if record.get("kind") == "rebuild" or record.get("rebuild_of"):
        rebuilt = str(record.get("rebuild_of") or "")
        return f"rebuild of {record.get('version')}" + (f" ({rebuilt})" if rebuilt else "")
    of = record.get("re_release_of")
    if not of and record.get("kind") != "re-release":
        return "release"
    target = records.get(str(of)) if of else None
    return f"re-release of {target.get('version')}" if target else f"re-release of {of or 'an earlier release'}"


def rolled_back_text(record: dict[str, Any], records: dict[str, dict[str, Any]], now: datetime) -> str:
    """'rolled back by re-release of 1.2.0 (<release id>) on <when>; reason: …', or ''."""
    rb = record.get("rolled_back")
    if not rb:
        return ""
    by_id = str(rb.get("by_release_id") or "")
    by = records.get(by_id)
    if by:
        who = f"{kind_label(by, records)} ({by_id})"
    elif by_id:
        who = by_id
    else:
        who = f"run {rb['by_run']}" if rb.get("by_run") else "a rollback"
    text = f"rolled back by {who}"
    if rb.get("at"):
        text += f" on {when(rb['at'], now)}"
    if rb.get("reason"):
        text += f"; reason: {rb['reason']}"
    return text


# -- live now ------------------------------------------------------------------------------
@dataclass
class LiveAmi:
    ami: str
    instances: int
    in_service: int
    release_id: str
    version: str
    what: str
    launch_template_version: str
    since: str
    by: str
    run_href: str
    status: str  # CSS class: ok | rolledback | progress | failed | unknown
    status_text: str


@dataclass
class RefreshView:
    refresh_id: str
    status: str
    status_class: str  # progress | ok | failed
    percent: int
    to_update: int | None
    reason: str
    started: str
    active: bool


@dataclass
class LiveGroup:
    region: str
    name: str
    found: bool
    launch_template: str
    desired: int | None
    in_service: int
    amis: list[LiveAmi] = field(default_factory=list)
    refresh: RefreshView | None = None
    stage: str = ""  # an app with stages: the stage this group belongs to


def group_stages(history: list[dict[str, Any]], document: dict[str, Any] | None = None) -> dict[tuple[str, str], str]:
    """(region, group) -> stage name, from the app's stages (the catalog entry, else the newest
    release that recorded its plan: a git-sourced app's stages live in its repository). Pure."""
    doc = document if (document or {}).get("stages") else None
    if doc is None:
        for record in reversed(history):
            entry = ((record.get("plan") or {}).get("catalog_entry")) or {}
            if entry.get("stages"):
                doc = entry
                break
    out: dict[tuple[str, str], str] = {}
    for stage in (doc or {}).get("stages") or []:
        for t in stage.get("targets") or []:
            out[(str(t.get("region")), str(t.get("auto_scaling_group")))] = str(stage.get("name"))
    return out


def stages_text(record: dict[str, Any]) -> str:
    """(pure) A staged release's path: 'staging: succeeded · production: rejected by ann (why)'."""
    parts = []
    for name, entry in (record.get("stages") or {}).items():
        gate = entry.get("gate") or {}
        text = f"{name}: {entry.get('outcome')}"
        if entry.get("outcome") in NOT_PROMOTED or gate.get("answer") == "approved":
            text += f" ({'approved' if gate.get('answer') == 'approved' else gate.get('answer')}"
            text += f" by {gate.get('by')}" if gate.get("by") else ""
            text += f": {gate.get('reason')}" if gate.get("reason") else ""
            text += ")"
        if entry.get("outcome") == "failed" and entry.get("failed_task"):
            text += f" at {entry.get('failed_task')}"
        parts.append(text)
    return " · ".join(parts)


def _refresh_view(r: Mapping[str, Any], now: datetime) -> RefreshView:
    status = str(r.get("Status", ""))
    active = status in ACTIVE_REFRESH_STATES
    cls = "progress" if active else "failed" if status in FAILED_REFRESH_STATES else "ok"
    return RefreshView(
        refresh_id=str(r.get("InstanceRefreshId", "")),
        status=status,
        status_class=cls,
        percent=int(r.get("PercentageComplete") or 0),
        to_update=r.get("InstancesToUpdate"),
        reason=str(r.get("StatusReason") or ""),
        started=when(r.get("StartTime"), now),
        active=active,
    )


def _lt_version(record: dict[str, Any], group: GroupState) -> str:
    for v in record.get("launch_template_versions") or []:
        if v.get("auto_scaling_group") == group.name and v.get("region") == group.region:
            return f"{v.get('launch_template_id')} v{v.get('launch_template_version')}"
    return ""


def live_groups(snap: AppSnapshot, root: str) -> list[LiveGroup]:
    now = snap.read_at
    records = _by_release_id(snap.history)
    by_ami = _by_ami(snap.history)
    stage_of = group_stages(snap.history, snap.entry.document if snap.entry else None)
    out = []
    for g in snap.groups:
        spec = g.launch_template_spec
        lt = spec.get("LaunchTemplateName") or spec.get("LaunchTemplateId") or g.launch_template
        view = LiveGroup(
            region=g.region,
            name=g.name,
            found=g.found,
            launch_template=f"{lt} ({spec.get('Version') or '$Default'})" if g.found else g.launch_template,
            desired=g.desired_capacity,
            in_service=sum(1 for i in g.instances if i.get("LifecycleState") == "InService"),
            stage=stage_of.get((g.region, g.name), ""),
        )
        refresh = next((r for r in g.refreshes if r.get("Status") in ACTIVE_REFRESH_STATES), None)
        if refresh is None and g.refreshes and g.refreshes[0].get("Status") in FAILED_REFRESH_STATES:
            started = parse_time(g.refreshes[0].get("StartTime"))
            if started and now - started < timedelta(days=1):
                refresh = g.refreshes[0]  # a refresh that failed today: the person on call wants to see it
        view.refresh = _refresh_view(refresh, now) if refresh else None

        counts = Counter(i.get("ImageId") for i in g.instances if i.get("ImageId"))
        in_service = Counter(
            i.get("ImageId") for i in g.instances if i.get("ImageId") and i.get("LifecycleState") == "InService"
        )
        for ami, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
            tags = g.image_tags.get(str(ami), {})
            rid = tags.get(TAG_RELEASE_ID, "")
            record = records.get(rid) or by_ami.get(str(ami))
            if record:
                rb = record.get("rolled_back")
                status, status_text = ("rolledback", "rolled back") if rb else ("ok", "released")
                if record.get("outcome") == "failed":
                    status, status_text = "failed", f"release failed at {record.get('failed_task') or '?'}"
                live = LiveAmi(
                    ami=str(ami),
                    instances=n,
                    in_service=in_service.get(ami, 0),
                    release_id=str(record.get("release_id") or rid),
                    version=str(record.get("version") or tags.get(TAG_VERSION, "")),
                    what=kind_label(record, records),
                    launch_template_version=_lt_version(record, g),
                    since=when(record.get("finished_at"), now),
                    by=str(record.get("triggered_by") or ""),
                    run_href=run_href(root, record.get("dag_id"), record.get("pipeline_run")),
                    status=status,
                    status_text=status_text,
                )
            elif rid:
                # built by the pipeline, no ledger record yet: the run is still going
                dag_id = ROLLBACK_DAG if tags.get(TAG_RE_RELEASE_OF) else RELEASE_DAG
                live = LiveAmi(
                    ami=str(ami),
                    instances=n,
                    in_service=in_service.get(ami, 0),
                    release_id=rid,
                    version=tags.get(TAG_VERSION, ""),
                    what="re-release" if tags.get(TAG_RE_RELEASE_OF) else "release",
                    launch_template_version="",
                    since=f"rolling out since {view.refresh.started}" if view.refresh and view.refresh.active else "",
                    by="",
                    run_href=run_href(root, dag_id, tags.get(TAG_PIPELINE_RUN)),
                    status="progress",
                    status_text="rolling out (the ledger record is written when the run ends)",
                )
            else:
                live = LiveAmi(
                    ami=str(ami),
                    instances=n,
                    in_service=in_service.get(ami, 0),
                    release_id="",
                    version=tags.get(TAG_VERSION, ""),
                    what="",
                    launch_template_version="",
                    since="",
                    by="",
                    run_href="",
                    status="unknown",
                    status_text="not built by this pipeline (no ReleaseId tag)",
                )
            view.amis.append(live)
        out.append(view)
    return out


# -- timeline ------------------------------------------------------------------------------
@dataclass
class TimelineRow:
    started: str
    version: str
    release_id: str
    what: str
    outcome: str  # CSS class: ok | failed | rolledback
    outcome_text: str
    rolled_back: str
    rolled_back_href: str
    duration: str
    failed_task: str
    failure_reason: str
    by: str
    reason: str
    run_href: str
    hold: str
    hold_class: str
    infrastructure: str
    source: str = ""  # git-sourced apps: "v1.2.0 = 3f9c2ab41d0e of https://git.example.com/web/app.git"
    stages: str = ""  # an app with stages: how far the release went, and who let it in (stages_text)
    phases: str = ""  # how long each step took: "bake 1 min 2 s · refresh 1 min 30 s · …" (phases.py)


def source_text(record: dict[str, Any]) -> str:
    """Where a release's inputs came from, for a person: the ref, the commit and the repository."""
    src = record.get("source") or {}
    if not src.get("commit"):
        return ""
    ref = f"{src.get('ref')} = " if src.get("ref") and src.get("ref") != src.get("commit") else ""
    return f"{ref}{str(src['commit'])[:12]} of {src.get('repository')}"


@dataclass(frozen=True)
class AccessRow:
    what: str
    reach: str
    enforced_by: str


def access_rows(entry: Any, vault_prefix: str) -> list[AccessRow]:
    """Who can reach what for one app (docs/trust.md), from its central catalog entry."""
    if entry is None:
        return []
    src = getattr(entry, "source", None)
    allow = (getattr(entry, "document", {}) or {}).get("allow") or {}
    granted = ", ".join(f"{k}: {', '.join(v)}" for k, v in sorted(allow.items()) if v)
    role = entry.aws_role
    rows = [
        AccessRow(
            "its definition",
            f"git {src.repository} ({src.path}), read with connection {src.connection or '(none: public)'}; "
            "the app team owns it, the central entry keeps platform, image, network and guardrails"
            if src
            else f"the central catalog ({Path(entry.file).name} and include/)",
            "preflight: a key on the wrong side is refused",
        ),
        AccessRow(
            "its secrets",
            f"Vault secret/{vault_prefix}/{entry.name}/* only, through a 15-minute token per read",
            f"Vault policy ami-app-{entry.name}",
        ),
        AccessRow(
            "its Terraform module on the worker",
            "AWS-provider resources only; no code on the worker, no other state"
            + (f"; allowed for this app: {granted}" if granted else ""),
            "the module check before every init; an allow-listed environment",
        ),
        AccessRow(
            "AWS (its Packer and Terraform)",
            f"its own role {role}, assumed per release with the session tag App={entry.name}: mutations only on "
            "resources tagged with its App, its own state and parameters"
            if role
            else "the toolchain workers' role, shared by every app without a role of its own",
            "IAM (cli iam-policy --app " + entry.name + ")" if role else "IAM (cli iam-policy)",
        ),
    ]
    return rows


def hold_placer(hold: dict[str, Any] | None, history: list[dict[str, Any]]) -> str:
    """Who placed a hold: "erin's rollback" (the rollback run's ledger record), else ''."""
    if not hold or not hold.get("by_run"):
        return ""
    run = next((r for r in history if r.get("pipeline_run") == hold["by_run"]), None)
    by = (run or {}).get("triggered_by")
    return f"{by}'s rollback" if by else f"rollback run {hold['by_run']}"


def hold_text(hold: dict[str, Any] | None, now: datetime, placed_by: str = "") -> tuple[str, str]:
    """('held since … by …: reason', 'held') or ('hold lifted … by …: reason', 'lifted') or ('', '')."""
    if not hold:
        return "", ""
    if hold.get("released_at"):
        text = f"hold lifted {when(hold['released_at'], now)} by {hold.get('released_by') or 'unknown'}"
        if hold.get("release_reason"):
            text += f": {hold['release_reason']}"
        return text, "lifted"
    text = f"held since {when(hold.get('placed_at'), now)}"
    if placed_by:
        text += f" by {placed_by}"
    if hold.get("reason"):
        text += f": {hold['reason']}"
    return text, "held"


def timeline(snap: AppSnapshot, root: str) -> list[TimelineRow]:
    now = snap.read_at
    records = _by_release_id(snap.history)
    rows = []
    for r in reversed(snap.history):
        failed = r.get("outcome") == "failed"
        rb = r.get("rolled_back") or {}
        if failed:
            outcome, outcome_text = "failed", "failed"
        elif rb:
            outcome, outcome_text = "rolledback", "rolled back"
        elif r.get("outcome") == "succeeded":
            outcome, outcome_text = "ok", "succeeded"
        else:
            outcome, outcome_text = "unknown", str(r.get("outcome") or "unknown")
        plan = ((r.get("infrastructure") or {}).get("plan_summary")) or {}
        infra = ""
        if plan:
            infra = f"Terraform: {plan.get('add', 0)} to add, {plan.get('change', 0)} to change, "
            infra += f"{plan.get('destroy', 0)} to destroy"
        held, held_class = hold_text(r.get("forensic_hold"), now, hold_placer(r.get("forensic_hold"), snap.history))
        rows.append(
            TimelineRow(
                started=when(r.get("started_at"), now),
                version=str(r.get("version") or ""),
                release_id=str(r.get("release_id") or ""),
                what=kind_label(r, records),
                outcome=outcome,
                outcome_text=outcome_text,
                rolled_back=rolled_back_text(r, records, now),
                rolled_back_href=run_href(root, rb.get("by_dag"), rb.get("by_run")),
                duration=duration(r.get("started_at"), r.get("finished_at")),
                failed_task=str(r.get("failed_task") or "") if failed else "",
                failure_reason=str(r.get("failure_reason") or "") if failed else "",
                by=str(r.get("triggered_by") or ""),
                reason=str(r.get("rebuild_reason") or r.get("reason") or ""),
                run_href=run_href(root, r.get("dag_id"), r.get("pipeline_run")),
                hold=held,
                hold_class=held_class,
                infrastructure=infra,
                source=source_text(r),
                stages=stages_text(r),
                phases=phase_summary(r.get("phases")),
            )
        )
    return rows


# -- holds and retention, per AMI ------------------------------------------------------------
@dataclass
class AmiRow:
    ami: str
    region: str
    name: str
    version: str
    release_id: str
    created: str
    age_days: int | None
    in_use: str
    hold: str
    hold_class: str  # held | lifted | ''
    can_lift: bool  # held, and the release has a ledger record to write the lift into
    retain: str
    retention: str
    retention_class: str  # kept | marked | eligible | young | gone
    eligible: str
    warnings: list[str]
    source: str
    aws: str = ""  # what AWS itself enforces: deregistration protection, deprecation
    restorable: bool = False  # deregistered into the Recycle Bin: the page offers a restore


def aws_state(image: dict[str, Any], now: datetime) -> str:
    """(pure) AWS's own guards on an image, for a person: protected / deprecated on."""
    parts = []
    protection = str(image.get("DeregistrationProtection") or "disabled")
    if protection.startswith("enabled"):
        cooldown = " (24 h cooldown once lifted)" if protection == "enabled-with-cooldown" else ""
        parts.append(f"protected from deregistration{cooldown}")
    elif protection.startswith("disabled-until"):
        parts.append(f"protected from deregistration until {protection.split(' ', 1)[1]} (cooldown)")
    binned = parse_time(image.get("RecycleBinExitTime"))
    if binned is not None:
        parts.append(f"in the Recycle Bin until {day(binned)} (make restore-ami AMI={image.get('ImageId')} REASON=…)")
    deprecated = parse_time(image.get("DeprecationTime"))
    if deprecated is not None:
        parts.append(f"{'deprecated since' if deprecated <= now else 'deprecated on'} {day(deprecated)}")
    disabled = scream_note({**image, "Tags": image.get("Tags") or {}})
    if disabled:
        parts.append(f"{disabled} (make restore-ami AMI={image.get('ImageId')} REASON=… enables it)")
    return "; ".join(parts)


# The near-miss rule is the retention report's own (one rule, one place): the page shows what
# the policy decides, with or without a report.
near_miss_warnings = near_miss_tag_warnings


def account_report_rows(snap: AppSnapshot) -> list[dict[str, str]]:
    """One row per account x region of the policy's accounts: when its last run was, what it
    did, and whether it stopped or has no report yet (its task failed before writing one)."""
    rows = []
    for entry in snap.account_reports:
        report = entry.get("report")
        row = {"account": str(entry["account"]), "region": str(entry["region"]), "account_id": "", "at": ""}
        if not report:
            rows.append({**row, "state": "missing", "text": "no report yet (its task has not completed a run)"})
            continue
        counts = {k: v for k, v in (report.get("counts") or {}).items() if v}
        text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no own images"
        stopped = report.get("stopped")
        rows.append(
            {
                **row,
                "account_id": str(report.get("account_id") or ""),
                "at": when(report.get("now") or report.get("wall_clock"), snap.read_at),
                "state": "stopped" if stopped else ("dry-run" if report.get("dry_run") else "ok"),
                "text": f"stopped, nothing changed: {stopped}" if stopped else text,
            }
        )
    return rows


def _report_rows(snap: AppSnapshot) -> dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]]:
    out = {}
    for region, report in snap.reports.items():
        for row in report.get("rows") or []:
            if isinstance(row, dict) and row.get("image_id"):
                out[(region, str(row["image_id"]))] = (row, report)
    return out


def _retention_from_report(row: dict[str, Any], report: dict[str, Any], now: datetime) -> tuple[str, str, str]:
    action = str(row.get("action") or "")
    reason = str(row.get("reason") or "")
    protections = [str(p) for p in row.get("protections") or []]
    young = [p for p in protections if p.startswith("too young")]
    protections = [p for p in protections if p not in young]  # age is a wait, not a protection
    due = row.get("deregister_on") or row.get("mark_due")
    if action == "deregister":
        text, cls = "deregistered by the last retention run", "gone"
    elif action in ("mark",) or (due and action not in ("unmark",) and not protections):
        text, cls = f"marked: deregister on {day(due)}" if due else "marked for deregistration", "marked"
    elif action == "deferred":
        text, cls = f"due, but deferred: {reason}" if reason else "due, but deferred", "marked"
    elif action == "unmark":
        text, cls = f"mark removed: {reason}" if reason else "mark removed", "kept"
    elif protections:
        text, cls = "kept: " + "; ".join(protections + young), "kept"
    elif young:
        text, cls = young[0], "young"
    else:
        text, cls = reason or action or "no decision", "young" if row.get("eligible_on") else "eligible"
    if reason and action == "mark" and reason not in text:
        text += f" ({reason})"
    eligible = ""
    eligible_on = parse_time(row.get("eligible_on"))
    if eligible_on and eligible_on > now:
        eligible = f"eligible on {day(eligible_on)} if unused then"
    return text, cls, eligible


def _retention_from_tags(
    tags: dict[str, str], created: datetime | None, users: list[str], held: bool, policy: RetentionPolicy, now: datetime
) -> tuple[str, str, str]:
    protections = []
    if tags.get(policy.protect_tag_key) == policy.protect_tag_value:
        protections.append(f"{policy.protect_tag_key}={policy.protect_tag_value}")
    if held:
        protections.append("forensic hold")
    if users:
        protections.append(f"in use by {len(users)} instance" + ("s" if len(users) != 1 else ""))
    eligible_at = created + timedelta(days=policy.min_age_days) if created else None
    mark = parse_mark(tags.get(policy.mark_tag))
    eligible = ""
    if eligible_at and eligible_at > now:
        eligible = f"eligible on {day(eligible_at)} if unused then"
    if mark is not None and mark.op in policy.accepted_ops:
        if protections:
            return (
                f"marked, but kept: {'; '.join(protections)} (the next retention run removes the mark)",
                "kept",
                eligible,
            )
        if mark.due <= now:
            return f"marked: due since {day(mark.due)}; deregistered at the next retention run", "marked", eligible
        return f"marked: deregister on {day(mark.due)}", "marked", eligible
    if protections:
        return "kept: " + "; ".join(protections), "kept", eligible
    if eligible_at is None:
        return "creation date unknown", "young", eligible
    if eligible_at > now:
        return f"too young to mark ({(now - created).days if created else '?'} days old)", "young", eligible
    return "unused and old enough: marked at the next retention run", "eligible", eligible


def ami_rows(snap: AppSnapshot) -> list[AmiRow]:
    now = snap.read_at
    records = _by_release_id(snap.history)
    by_ami = _by_ami(snap.history)
    reports = _report_rows(snap)
    rows = []
    for image in snap.images:
        tags: dict[str, str] = image.get("Tags") or {}
        ami, region = str(image["ImageId"]), str(image.get("Region") or "")
        rid = tags.get(TAG_RELEASE_ID, "")
        record = records.get(rid) or by_ami.get(ami)
        created = parse_time(image.get("CreationDate"))
        users = snap.usage.get(ami, [])

        hold_tagged = HOLD_TAG in tags or HOLD_REASON_TAG in tags
        ledger_hold = (record or {}).get("forensic_hold") or None
        if hold_tagged:
            current = ledger_hold if ledger_hold and not ledger_hold.get("released_at") else None
            text, _ = hold_text(current, now, hold_placer(current, snap.history))
            if not text:
                text = f"held ({tags.get(HOLD_TAG, '')})"
                if tags.get(HOLD_REASON_TAG):
                    text += f": {tags[HOLD_REASON_TAG]}"
            hold, hold_class = text, "held"
        elif ledger_hold and ledger_hold.get("released_at"):
            hold, hold_class = hold_text(ledger_hold, now)
        else:
            hold, hold_class = "", ""

        keep_forever = tags.get(snap.policy.protect_tag_key) == snap.policy.protect_tag_value
        warnings = near_miss_warnings(tags, snap.policy)
        report_row = reports.get((region, ami))
        if report_row:
            row, report = report_row
            if not hold_tagged and any(str(p).startswith("held") for p in row.get("protections") or []):
                # the hold was lifted after the report: it no longer keeps the AMI
                row = {**row, "protections": [p for p in row["protections"] if not str(p).startswith("held")]}
            retention, cls, eligible = _retention_from_report(row, report, now)
            warnings = [str(w) for w in row.get("warnings") or []] or warnings
            source = f"retention report of {when(report.get('now') or report.get('wall_clock'), now)}"
            if report.get("dry_run"):
                source += " (dry run)"
        else:
            retention, cls, eligible = _retention_from_tags(tags, created, users, hold_tagged, snap.policy, now)
            source = "AMI tags (no retention report yet)" if not snap.reports else "AMI tags (not in the last report)"
        if image.get("RecycleBinExitTime"):
            retention, cls, eligible = "deregistered; restorable from the Recycle Bin", "gone", ""
            source = "the Recycle Bin"
        rows.append(
            AmiRow(
                ami=ami,
                region=region,
                name=str(image.get("Name") or ""),
                version=tags.get(TAG_VERSION, str((record or {}).get("version") or "")),
                release_id=rid or str((record or {}).get("release_id") or ""),
                created=day(created),
                age_days=max(0, (now - created).days) if created else None,
                in_use=f"{len(users)} instance" + ("s" if len(users) != 1 else "") if users else "",
                hold=hold,
                hold_class=hold_class,
                can_lift=hold_class == "held" and record is not None,
                retain="yes: kept forever" if keep_forever else "",
                retention=retention,
                retention_class=cls,
                eligible=eligible,
                warnings=warnings,
                source=source,
                aws=aws_state(image, now),
                restorable=bool(image.get("RecycleBinExitTime")),
            )
        )
    return rows


# -- rollback preview ------------------------------------------------------------------------
@dataclass
class Preview:
    current: str
    current_release_id: str
    target_version: str
    target_release_id: str
    target_what: str
    target_finished: str
    target_run_href: str
    refused: str
    warning: str
    would_hold: list[str]
    trigger_href: str
    fill: list[tuple[str, str]]


def current_release(groups: list[GroupState]) -> tuple[str | None, dict[str, str]]:
    """The release the groups' in-service instances run, as ami_rollback's preflight decides it
    (rollback.live_release): the ReleaseId tag of their AMIs (the greatest, if several), and the
    AMI per region."""
    amis: dict[str, str] = {}
    rids = set()
    for g in groups:
        for inst in g.instances:
            if inst.get("LifecycleState") != "InService" or not inst.get("ImageId"):
                continue
            amis[g.region] = str(inst["ImageId"])
            rid = g.image_tags.get(str(inst["ImageId"]), {}).get(TAG_RELEASE_ID)
            if rid:
                rids.add(rid)
    return max(rids, default=None), amis


def rollback_preview(snap: AppSnapshot, root: str) -> Preview:
    now = snap.read_at
    records = _by_release_id(snap.history)
    current_rid, current_amis = current_release(snap.groups)
    cur = records.get(current_rid or "")
    current = (
        f"{cur.get('version')} ({current_rid}, {kind_label(cur, records)})"
        if cur
        else (
            f"{current_rid} (no ledger record yet)" if current_rid else "unknown: no AMI of this pipeline is in service"
        )
    )
    preview = Preview(
        current=current,
        current_release_id=current_rid or "",
        target_version="",
        target_release_id="",
        target_what="",
        target_finished="",
        target_run_href="",
        refused="",
        warning="",
        would_hold=[f"{ami} ({region})" for region, ami in sorted(current_amis.items())],
        trigger_href=f"{root}/dags/{ROLLBACK_DAG}",
        fill=[],
    )
    try:
        target = pick_rollback_target(snap.history, current_rid)
    except PreflightError as exc:
        preview.refused = exc.problem + (f". {exc.fix[0].upper()}{exc.fix[1:]}." if exc.fix else "")
        return preview
    preview.target_version = str(target.get("version") or "")
    preview.target_release_id = str(target.get("release_id") or "")
    preview.target_what = kind_label(target, records)
    preview.target_finished = when(target.get("finished_at"), now)
    preview.target_run_href = run_href(root, target.get("dag_id"), target.get("pipeline_run"))
    if target.get("rolled_back"):
        preview.warning = (
            f"{target.get('version')} was itself {rolled_back_text(target, records, now)}. "
            "If that is not what you want, type the version or release id you want in 'Target release'."
        )
    preview.fill = [
        ("App", snap.app),
        ("Reason (required)", "what is wrong with the current release, with the incident number (10+ characters)"),
        ("Target release (optional)", f"leave empty for {preview.target_version}, or type a version / release id"),
        ("Place a forensic hold", "leave it on: the AMI being replaced is kept for the investigation"),
    ]
    return preview


# -- drift (ami_drift's records) ---------------------------------------------------------------------
@dataclass
class DriftRow:
    region: str
    stage: str | None
    since: str  # first seen, with "… ago"
    last: str  # last seen
    version: str
    release_id: str
    lines: list[str]  # one per drifted resource, in words
    run_href: str


def drift_rows(records: list[dict[str, Any]], now: datetime, root: str) -> list[DriftRow]:
    """One row per app × region (× stage) that ami_drift found drifted (pure)."""
    from amirelease.drift.report import record_words

    rows = []
    for r in records:
        run = r.get("run") or {}
        rows.append(
            DriftRow(
                region=str(r.get("region") or "?"),
                stage=r.get("stage"),
                since=when(r.get("first_seen"), now),
                last=when(r.get("last_seen"), now),
                version=str(r.get("version") or "?"),
                release_id=str(r.get("release_id") or ""),
                lines=record_words(r),
                run_href=run_href(root, run.get("dag_id"), run.get("run_id")),
            )
        )
    return rows
