"""The release ledger: one JSON document per release in S3, outside Airflow's metadata DB.

Layout in the bucket ([ami_release] ledger_bucket, versioning on):
  releases/<app>/<release_id>.json              the record of one release or re-release
  releases/<app>/<release_id>/bundle.tar.gz     its inputs (bundle.py), sha256 in the record
  locks/<app>.json                              the per-app release lock (see ReleaseLock)
  terraform/<app>/<region>/terraform.tfstate    the app's Terraform state (unless configured elsewhere)

Why S3: it lives in the AWS account next to the AMIs (it outlives Airflow's DB cleanup
and AWS's six-week instance-refresh history), versioning keeps every change to a record
(an audit trail for holds and rollbacks), it needs no server, and conditional writes give a
correct lock. AMIs point back at their record with the ReleaseId tag. Never a secret in a
record: it is built only from the plan, the catalog and AWS ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk.configuration import conf
from botocore.exceptions import ClientError

from amirelease import catalog
from amirelease.constants import DagIds
from amirelease.errors import AwsErrorFamily, ConfigError, PreflightError, aws_error_code, aws_error_family

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SCHEMA_VERSION = 2
Record = dict[str, Any]


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ledger_bucket() -> str:
    bucket = str(conf.get("ami_release", "ledger_bucket", fallback="")).strip()
    if not bucket:
        raise ConfigError(
            "no release ledger bucket is configured",
            fix="set [ami_release] ledger_bucket (AIRFLOW__AMI_RELEASE__LEDGER_BUCKET) to a versioned S3 bucket in "
            "the account",
        )
    return bucket


def record_key(app: str, release_id: str) -> str:
    return f"releases/{app}/{release_id}.json"


def failed_before_building(
    *,
    app: str,
    version: str,
    release_id: str,
    dag_id: str,
    run_id: str,
    reason: str,
    started_at: str | None,
    triggered_by: str | None,
    notes: str | None,
    re_release_of: str | None,
) -> Record:
    """The ledger record of a release that failed before anything was built (AWS pushed back
    in preflight): outcome failed, the reason in words, no AMI (pure)."""
    return {
        "app": app,
        "version": version,
        "release_id": release_id,
        "kind": "re-release" if re_release_of else "release",
        "re_release_of": re_release_of,
        "rebuild_of": None,
        "rebuild_reason": None,
        "outcome": "failed",
        "failed_task": "preflight",
        "failure_reason": reason,
        "nothing_built": True,
        "amis": {},
        "targets": [],
        "launch_template_versions": [],
        "refreshes": [],
        "triggered_by": triggered_by,
        "reason": notes,
        "dag_id": dag_id,
        "pipeline_run": run_id,
        "started_at": started_at,
        "finished_at": utcnow(),
        "forensic_hold": None,
        "rolled_back": None,
    }


# --- rollback targets (pure) ----------------------------------------------------------------


def _when(r: Record) -> str:
    return str(r.get("finished_at") or r.get("started_at") or "")


def discredited(history: Iterable[Record], being_rolled_back: str | None = None) -> set[str]:
    """Release ids a rollback must not pick by default (pure).

    A release is discredited when a rollback replaced it (``rolled_back`` in its record, or it
    is the release being rolled back right now), when it is a re-release of a discredited
    release, and when a re-release of it was rolled back (its code was bad the second time
    too). Followed to a fixed point, so chains of re-releases are covered.
    """
    records = [r for r in history if r.get("release_id")]
    bad = {str(r["release_id"]) for r in records if r.get("rolled_back")}
    if being_rolled_back:
        bad.add(being_rolled_back)
    changed = True
    while changed:
        changed = False
        for r in records:
            rid, of = str(r["release_id"]), r.get("re_release_of")
            if of and rid in bad and of not in bad:
                bad.add(str(of))
                changed = True
            if of and of in bad and rid not in bad:
                bad.add(rid)
                changed = True
    return bad


def pick_rollback_target(
    history: list[Record],
    current_release_id: str | None,
    wanted: str | None = None,
    *,
    allow_rolled_back: bool = False,
) -> Record:
    """The release a rollback re-releases (pure). history: records of one app, any order.

    Default (wanted empty): the newest release that succeeded, is not the one running now,
    and is not discredited (see :func:`discredited`). wanted: a version or a release id of a
    successful release; a rolled-back one only with allow_rolled_back. Raises PreflightError
    with the reason and the choices when there is none.
    """
    good = sorted((r for r in history if r.get("outcome") == "succeeded"), key=_when)
    bad = discredited(history, being_rolled_back=current_release_id)
    if wanted:
        matches = [r for r in good if wanted in (r.get("release_id"), r.get("version"))]
        if not matches:
            known = ", ".join(f"{r['version']} ({r['release_id']})" for r in good[-10:]) or "none"
            raise PreflightError(
                f"no successful release '{wanted}' in the ledger",
                fix=f"type a version or release id of a successful release, e.g. one of: {known}",
            )
        target = matches[-1]
        if target.get("release_id") == current_release_id:
            raise PreflightError(
                f"release '{wanted}' is the one running now",
                fix="choose an earlier release, or leave the target empty for the last good one",
            )
        if target["release_id"] in bad and not allow_rolled_back:
            why = (target.get("rolled_back") or {}).get("reason")
            raise PreflightError(
                f"release '{wanted}' ({target['release_id']}) was rolled back"
                + (f" ({why})" if why else "")
                + " or is a re-release of a rolled-back release",
                fix="choose another release, or tick 'Roll back to a rolled-back release on purpose' "
                "(confirm_rolled_back) if you really mean it",
            )
    else:
        candidates = [r for r in good if r.get("release_id") != current_release_id and r["release_id"] not in bad]
        if not candidates:
            raise PreflightError(
                "there is no earlier good release to roll back to (every other successful release was rolled back "
                "or is the one running now)",
                fix="release a fixed version instead (ami_release), or name a target and confirm it",
            )
        target = candidates[-1]
    missing = missing_inputs(target)
    if missing:
        raise PreflightError(
            f"the ledger record of {target.get('release_id')} lacks what a re-release needs: {', '.join(missing)}",
            fix="choose a release made with release bundles, or release a fixed version with ami_release",
        )
    return target


def releases_of_version(history: Iterable[Record], version: str) -> list[Record]:
    """The succeeded releases, re-releases and rebuilds of one version, oldest first (pure)."""
    return sorted((r for r in history if r.get("version") == version and r.get("outcome") == "succeeded"), key=_when)


def already_released(history: Iterable[Record], version: str, *, besides: str | None = None) -> Record | None:
    """The newest succeeded release of ``version`` (other than release id ``besides``), or None (pure).

    A version whose releases all failed has none: it may simply be released again."""
    done = [r for r in releases_of_version(history, version) if r.get("release_id") != besides]
    return done[-1] if done else None


def released_words(app: str, existing: Record) -> str:
    """'demo-web 1.1.0 was already released: release <id> (finished <when>, AMI <ami>, run <dag>/<run>)'."""
    amis = ", ".join(str(a) for a in (existing.get("amis") or {}).values()) or "no AMI recorded"
    what = {"re-release": "re-release", "rebuild": "rebuild"}.get(str(existing.get("kind")), "release")
    return (
        f"{app} {existing.get('version')} was already released: {what} {existing.get('release_id')} "
        f"(finished {existing.get('finished_at') or existing.get('started_at') or 'at an unknown time'}, AMI {amis}, "
        f"run {existing.get('dag_id') or DagIds.RELEASE}/{existing.get('pipeline_run') or '?'})"
    )


def ways_on(version: str) -> str:
    """The two ways on from a refused second release of a version (the 'fix' of the refusal)."""
    return (
        f"to bring that release back, trigger ami_rollback with target {version}; to bake the same version "
        "again on purpose (today's base image, a security patch), trigger ami_release again with 'rebuild' ticked "
        "and a rebuild reason; to release a change, give it a new version"
    )


def choice_words(history: Iterable[Record], wanted: str | None, target: Record) -> str | None:
    """When ``wanted`` is a version the ledger holds several succeeded releases of, which one a
    rollback takes and how to take another (pure); None when there is no choice to explain."""
    if not wanted or wanted == target.get("release_id"):
        return None
    same = releases_of_version(history, wanted)
    if len(same) < 2:
        return None
    listed = "; ".join(f"{r.get('release_id')} ({r.get('kind') or 'release'}, finished {_when(r)})" for r in same)
    return (
        f"the ledger holds {len(same)} succeeded releases of {wanted}: {listed}. Taking the newest, "
        f"{target.get('release_id')}; to take another, trigger again with its release id as the target"
    )


def fleet_targets(entry: catalog.Entry, history: Iterable[Record]) -> tuple[catalog.Target, ...]:
    """The groups an app runs in: the catalog's for an embedded app; for a git-sourced app, those
    its newest release that got as far as recording them named (its definition lives in git)."""
    if entry.source is None:
        return entry.targets
    for record in sorted(history, key=_when, reverse=True):
        targets = record.get("targets") or []
        if targets:
            return tuple(catalog.Target(**t) for t in targets)
    return ()


def record_of(history: Iterable[Record], release_id: str | None) -> Record | None:
    """(pure) The record of ``release_id`` in an app's history, or None."""
    return next((r for r in history if r.get("release_id") == release_id), None)


def missing_inputs(record: Record) -> list[str]:
    """What a re-release needs that a record lacks (pure): its identity and its bundle."""
    missing = [k for k in ("app", "version", "release_id") if not record.get(k)]
    b = record.get("bundle") or {}
    if not (b.get("key") and b.get("sha256")):
        missing.append("bundle (the record predates release bundles)")
    return missing


def rolled_back_entry(*, at: str, by_run: str, by_dag: str, by_release_id: str, reason: str) -> Record:
    return {"at": at, "by_run": by_run, "by_dag": by_dag, "by_release_id": by_release_id, "reason": reason}


# --- S3 -------------------------------------------------------------------------------------


def _read_json(s3: S3Client, bucket: str, key: str) -> Record | None:
    """An S3 JSON object, or None when the key does not exist."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if aws_error_family(exc) is AwsErrorFamily.NOT_FOUND:
            return None
        raise
    doc: Record = json.loads(body)
    return doc


class Ledger:
    def __init__(self, s3_client: S3Client, bucket: str) -> None:
        self.s3 = s3_client
        self.bucket = bucket

    def check(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise PreflightError(
                f"release ledger bucket '{self.bucket}' is not reachable ({aws_error_code(exc)})",
                fix="create the bucket (with versioning) or correct [ami_release] ledger_bucket; grant "
                "s3:GetObject/PutObject/ListBucket",
            ) from None

    def put(self, record: Record) -> str:
        record = {**record, "schema": SCHEMA_VERSION}
        key = record_key(record["app"], record["release_id"])
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(record, indent=2, sort_keys=True, default=str).encode(),
            ContentType="application/json",
        )
        return key

    def get(self, app: str, release_id: str) -> Record | None:
        return _read_json(self.s3, self.bucket, record_key(app, release_id))

    def update(self, app: str, release_id: str, **changes: Any) -> Record | None:
        record = self.get(app, release_id)
        if record is None:
            return None
        record.update(changes)
        self.put(record)
        return record

    def of_version(self, app: str, version: str) -> list[Record]:
        """The records of one version, oldest first: one listing by the release-id prefix
        (``releases/<app>/<app>-<version>-``) and a read per record of that version only."""
        out = []
        prefix = f"releases/{app}/{app}-{version}-"
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith(".json") and key.count("/") == 2:
                    doc = _read_json(self.s3, self.bucket, key)
                    if doc is not None and doc.get("version") == version:  # 1.1.0, not 1.1.0-rc.1
                        out.append(doc)
        return sorted(out, key=lambda r: str(r.get("started_at") or ""))

    def history(self, app: str) -> list[Record]:
        """Every record of an app, oldest first (bundles and other objects are skipped)."""
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"releases/{app}/"):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith(".json") and key.count("/") == 2:
                    doc = _read_json(self.s3, self.bucket, key)
                    if doc is not None:
                        out.append(doc)
        return sorted(out, key=lambda r: str(r.get("started_at") or ""))


class ReleaseLock:
    """One release per app at a time: locks/<app>.json created with If-None-Match: *.

    The holder is a DAG run; a lock whose run has finished (or vanished) is stale and is
    taken over, so a killed run cannot block an app forever."""

    def __init__(self, s3_client: S3Client, bucket: str, app: str) -> None:
        self.s3 = s3_client
        self.bucket = bucket
        self.key = f"locks/{app}.json"

    def holder(self) -> Record | None:
        return _read_json(self.s3, self.bucket, self.key)

    def try_acquire(self, holder: Record) -> tuple[bool, Record | None]:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(holder).encode(), IfNoneMatch="*")
            return True, holder
        except ClientError as exc:
            if aws_error_family(exc) is not AwsErrorFamily.CONFLICT:
                raise
        current = self.holder()
        if current and current.get("run_id") == holder["run_id"] and current.get("dag_id") == holder["dag_id"]:
            return True, current  # ours, from an earlier try of this run
        return False, current

    def break_stale(self, expected: Record) -> None:
        if self.holder() == expected:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key)

    def release(self, dag_id: str, run_id: str) -> bool:
        current = self.holder()
        if current and current.get("run_id") == run_id and current.get("dag_id") == dag_id:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key)
            return True
        return False
