"""The run report: a table for the task log, the JSON/CSV artifacts in S3, a small XCom summary.

Artifacts (under the release ledger bucket, ``[ami_release] ledger_bucket``)::

    retention/reports/<region>/<YYYY>/<MM>/<DD>/<run id, made key-safe>.json   (and .csv)
    retention/reports/<region>/latest.json                                  (the newest run's JSON)

When the policy names accounts (``accounts:``), each account's reports go under its own prefix,
``retention/reports/accounts/<account name>/<region>/...`` (same layout), and carry
``account`` (the name) and ``account_id``.

The JSON has one row per own image; a UI page reads ``latest.json`` with :func:`latest_report`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from amirelease.errors import AwsErrorFamily, RetentionError, aws_error, aws_error_code
from amirelease.retention.decide import REPORT_TAGS, Action, Decision, Plan

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPORT_PREFIX = "retention/reports"
ACCOUNTS_PREFIX = f"{REPORT_PREFIX}/accounts"

# The account the reports written in this context belong to: (policy name, account id), or None
# for the workers' own account (the single-account layout). Set by the per-account retention task
# (operators/retention_accounts.py) around the whole run, so every report, summary and key it writes names
# the account; a context variable, so that the region operator needs no account parameter.
_ACCOUNT: ContextVar[tuple[str, str | None] | None] = ContextVar("retention_report_account", default=None)


@contextmanager
def account_scope(name: str, account_id: str | None = None) -> Iterator[None]:
    """Reports, keys and summaries written inside belong to account ``name`` (``account_id``)."""
    token = _ACCOUNT.set((name, account_id))
    try:
        yield
    finally:
        _ACCOUNT.reset(token)


def current_account() -> tuple[str, str | None] | None:
    return _ACCOUNT.get()


def region_prefix(region: str, account: str | None = None) -> str:
    """``retention/reports/<region>``, or ``retention/reports/accounts/<account>/<region>``."""
    return f"{ACCOUNTS_PREFIX}/{account}/{region}" if account else f"{REPORT_PREFIX}/{region}"


def _account_fields() -> dict[str, Any]:
    scope = _ACCOUNT.get()
    return {} if scope is None else {"account": scope[0], "account_id": scope[1]}


SCHEMA_VERSION = 1
CSV_COLUMNS = (
    "image_id",
    "name",
    "created",
    "age_days",
    *REPORT_TAGS,
    "action",
    "reason",
    "protections",
    "mark_due",
    "deregister_on",
    "eligible_on",
    "hold_reason",
    "warnings",
)

# Acted-on rows first, then marked ones waiting, then protections, then the (many) young ones.
_ORDER = {Action.DEREGISTER: 0, Action.DEFERRED: 1, Action.UNMARK: 2, Action.MARK: 3, Action.KEEP: 4}


def _sort_key(d: Decision) -> tuple[int, int, str]:
    if d.action is Action.KEEP:
        waiting = not d.protections and d.due is not None
        young = d.eligible_on is not None and len(d.protections) == 1
        return (_ORDER[d.action], 0 if waiting else (2 if young else 1), d.image_id)
    return (_ORDER[d.action], 0, d.image_id)


def _age(d: Decision) -> str:
    return "?" if d.age_days is None else f"{d.age_days:.1f}d"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(d: Decision) -> str:
    """The date a person wants next to the row."""
    if d.action is Action.DEREGISTER:
        return "now"
    if d.action is Action.DEFERRED:
        return "next runs"
    if d.deregister_on is not None:
        return f"goes {d.deregister_on:%Y-%m-%d}"
    if d.eligible_on is not None:
        return f"eligible {d.eligible_on:%Y-%m-%d}"
    return ""


def headline(plan: Plan, *, region: str | None = None, wall_clock: datetime | None = None) -> str:
    counts = plan.counts
    mode = "DRY RUN - nothing changed. " if plan.dry_run else ""
    head = (
        f"AMI retention{' in ' + region if region else ''} as of {plan.now:%Y-%m-%d %H:%M:%S} UTC: {mode}"
        f"{counts['deregister']} to deregister, {counts['deferred']} deferred, {counts['mark']} to mark, "
        f"{counts['unmark']} to unmark, {counts['keep']} kept"
    )
    if wall_clock is not None and abs((wall_clock - plan.now).total_seconds()) >= 1:
        head += f" (wall clock {wall_clock:%Y-%m-%d %H:%M:%S} UTC)"
    if plan.deferred:
        head += (
            f"\nDEFERRED: {plan.deferred} due image(s) wait for the next runs "
            f"(at most {plan.cap} deregistrations per run, oldest due first)."
        )
    if plan.held_back:
        head += f"\nNOT DEREGISTERED: {plan.held_back}."
    if plan.stopped:
        head += f"\nSTOPPED: {plan.stopped}. Nothing was changed."
    return head


def render_table(plan: Plan, *, region: str | None = None, wall_clock: datetime | None = None) -> str:
    """Every decision, one row each, acted-on rows first, with the date that matters."""
    rows = [("ACTION", "IMAGE", "NAME", "AGE", "WHEN", "REASON")]
    for d in sorted(plan.decisions, key=_sort_key):
        reason = d.reason
        if d.warnings:
            reason += " | WARNING: " + " | WARNING: ".join(d.warnings)
        rows.append((d.action.value, d.image_id, _clip(d.name, 40), _age(d), _when(d), reason))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:5])) + "  " + r[5] for r in rows]
    return "\n".join([headline(plan, region=region, wall_clock=wall_clock), *lines])


def row(d: Decision) -> dict[str, Any]:
    return {
        "image_id": d.image_id,
        "name": d.name,
        "created": _iso(d.created),
        "age_days": None if d.age_days is None else round(d.age_days, 2),
        "tags": dict(d.tags),
        "action": d.action.value,
        "reason": d.reason,
        "protections": list(d.protections),
        "mark_due": _iso(d.due),
        "deregister_on": _iso(d.deregister_on),
        "eligible_on": _iso(d.eligible_on),
        "hold_reason": d.hold_reason,
        "warnings": list(d.warnings),
    }


def build_report(
    plan: Plan,
    *,
    region: str,
    run_id: str,
    wall_clock: datetime,
    policy_source: str,
    applied: Mapping[str, Any] | None = None,
    recycle_bin: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The full report of one run (JSON-serialisable), every row, acted-on first."""
    return {
        "schema_version": SCHEMA_VERSION,
        "region": region,
        **_account_fields(),
        "run_id": run_id,
        "now": _iso(plan.now),
        "wall_clock": _iso(wall_clock),
        "dry_run": plan.dry_run,
        "policy_source": policy_source,
        "stopped": plan.stopped,
        "held_back": plan.held_back,
        "recycle_bin": dict(recycle_bin) if recycle_bin is not None else None,
        "counts": plan.counts,
        "deferred": plan.deferred,
        "max_deregistrations_per_run": plan.cap,
        "applied": {k: v for k, v in (applied or {}).items()},
        "rows": [row(d) for d in sorted(plan.decisions, key=_sort_key)],
    }


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # a spreadsheet would run a cell that starts like a formula: AMI names and tags are anyone's text
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def report_csv(report: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in report["rows"]:
        tags = r.get("tags") or {}
        values = {
            **r,
            **{k: tags.get(k) for k in REPORT_TAGS},
            "protections": "; ".join(r.get("protections") or []),
            "warnings": "; ".join(r.get("warnings") or []),
        }
        writer.writerow([_cell(values.get(c)) for c in CSV_COLUMNS])
    return out.getvalue()


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_run_id(run_id: str) -> str:
    return _UNSAFE.sub("_", run_id).strip("_") or "run"


def report_keys(region: str, run_id: str, now: datetime, account: str | None = None) -> dict[str, str]:
    prefix = region_prefix(region, account)
    base = f"{prefix}/{now:%Y/%m/%d}/{safe_run_id(run_id)}"
    return {"json": f"{base}.json", "csv": f"{base}.csv", "latest": f"{prefix}/latest.json"}


def write_report(s3: S3Client, bucket: str, report: Mapping[str, Any], now: datetime) -> dict[str, str]:
    """Put the JSON, the CSV and latest.json; returns their ``s3://`` URIs. Raises RetentionError."""
    keys = report_keys(str(report["region"]), str(report["run_id"]), now, account=report.get("account"))
    body = json.dumps(report, separators=(",", ":"), default=str).encode()
    objects = (
        (keys["json"], body, "application/json"),
        (keys["csv"], report_csv(report).encode(), "text/csv; charset=utf-8"),
        (keys["latest"], body, "application/json"),
    )
    for key, data, content_type in objects:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        except ClientError as exc:
            code = aws_error_code(exc)
            raise RetentionError(
                f"could not write the retention report ({code})",
                resource=f"s3://{bucket}/{key}",
                fix="grant s3:PutObject on the ledger bucket's retention/reports/ prefix and check "
                "[ami_release] ledger_bucket; the task log above has the full table",
            ) from exc
    return {k: f"s3://{bucket}/{v}" for k, v in keys.items()}


def latest_report(s3_client: S3Client, bucket: str, region: str, account: str | None = None) -> dict[str, Any] | None:
    """The newest report written for ``region`` (of policy account ``account``; None: the
    workers' own account) (``latest.json``), or None if there is none yet."""
    key = f"{region_prefix(region, account)}/latest.json"
    try:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = aws_error_code(exc)
        if aws_error(exc).family is AwsErrorFamily.NOT_FOUND:
            return None
        raise RetentionError(
            f"could not read the latest retention report ({code})",
            resource=f"s3://{bucket}/{key}",
            fix="grant s3:GetObject on the ledger bucket's retention/reports/ prefix",
        ) from exc
    data: dict[str, Any] = json.loads(body)
    return data


def summary(
    plan: Plan,
    *,
    region: str | None,
    max_items: int,
    applied: Mapping[str, Any] | None = None,
    report_uris: Mapping[str, str] | None = None,
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
        **_account_fields(),
        "now": plan.now.isoformat(),
        "dry_run": plan.dry_run,
        "stopped": plan.stopped,
        "held_back": plan.held_back,
        "counts": plan.counts,
        "deferred": plan.deferred,
        "applied": {k: v for k, v in (applied or {}).items()},
        "report": dict(report_uris or {}),
        "items": items,
        "items_omitted": max(0, len(ordered) - max_items),
    }
