"""The release ledger: one JSON document per release in S3, outside Airflow's metadata DB.

Layout in the bucket ([ami_release] ledger_bucket, versioning on):
  releases/<app>/<release_id>.json   the record of one release or re-release
  locks/<app>.json                   the per-app release lock (see ReleaseLock)

Why S3: it lives in the AWS account next to the AMIs (it outlives Airflow's DB cleanup
and AWS's six-week instance-refresh history), versioning keeps every change to a record
(an audit trail for holds), it needs no server, and conditional writes give a correct lock.
AMIs point back at their record with the ReleaseId tag. Never a secret in a record: it is
built only from the plan, the catalog and AWS ids.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from airflow.sdk.configuration import conf
from botocore.exceptions import ClientError

from amirelease.errors import ConfigError, PreflightError

SCHEMA_VERSION = 1
REQUIRED_FOR_RE_RELEASE = ("app", "version", "release_id", "run_list", "platform")


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ledger_bucket() -> str:
    bucket = conf.get("ami_release", "ledger_bucket", fallback="").strip()
    if not bucket:
        raise ConfigError(
            "no release ledger bucket is configured",
            fix="set [ami_release] ledger_bucket (AIRFLOW__AMI_RELEASE__LEDGER_BUCKET) to a versioned S3 bucket in the account",
        )
    return bucket


def record_key(app: str, release_id: str) -> str:
    return f"releases/{app}/{release_id}.json"


def missing_inputs(record: dict) -> list[str]:
    """Inputs a re-release needs that a record lacks (pure)."""
    return [k for k in REQUIRED_FOR_RE_RELEASE if not record.get(k)]


def pick_rollback_target(history: list[dict], current_release_id: str | None, wanted: str | None = None) -> dict:
    """The release a rollback re-releases (pure). history: records of one app, any order.

    wanted: a release id or a version; default: the newest good release older than the
    current one. Raises PreflightError with the reason when there is none.
    """
    good = sorted(
        (r for r in history if r.get("outcome") == "succeeded"),
        key=lambda r: r.get("finished_at") or r.get("started_at") or "",
    )
    if wanted:
        matches = [r for r in good if wanted in (r.get("release_id"), r.get("version"))]
        if not matches:
            known = ", ".join(f"{r['version']} ({r['release_id']})" for r in good[-10:]) or "none"
            raise PreflightError(
                f"no successful release '{wanted}' in the ledger", fix=f"choose one of the successful releases: {known}"
            )
        target = matches[-1]
        if target.get("release_id") == current_release_id:
            raise PreflightError(
                f"release '{wanted}' is the one running now",
                fix="choose an earlier release, or leave the target empty for the last good one before it",
            )
    else:
        if current_release_id:
            idx = next((i for i, r in enumerate(good) if r.get("release_id") == current_release_id), None)
            earlier = good[:idx] if idx is not None else good
        else:
            earlier = good
        earlier = [r for r in earlier if r.get("release_id") != current_release_id]
        if not earlier:
            raise PreflightError(
                "there is no earlier successful release to roll back to",
                fix="release a fixed version instead (ami_release), or name a target release id",
            )
        target = earlier[-1]
    missing = missing_inputs(target)
    if missing:
        raise PreflightError(
            f"the ledger record of {target.get('release_id')} lacks inputs needed to bake it again: {', '.join(missing)}",
            fix="choose another release, or release a fixed version with ami_release",
        )
    return target


def _read_json(s3, bucket: str, key: str) -> dict | None:
    """An S3 JSON object, or None when the key does not exist."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(body)


class Ledger:
    def __init__(self, s3_client, bucket: str) -> None:
        self.s3 = s3_client
        self.bucket = bucket

    def check(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise PreflightError(
                f"release ledger bucket '{self.bucket}' is not reachable ({exc.response['Error']['Code']})",
                fix="create the bucket (with versioning) or correct [ami_release] ledger_bucket; grant s3:GetObject/PutObject/ListBucket",
            ) from None

    def put(self, record: dict) -> str:
        record = {"schema": SCHEMA_VERSION, **record}
        key = record_key(record["app"], record["release_id"])
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(record, indent=2, sort_keys=True, default=str).encode(),
            ContentType="application/json",
        )
        return key

    def get(self, app: str, release_id: str) -> dict | None:
        return _read_json(self.s3, self.bucket, record_key(app, release_id))

    def update(self, app: str, release_id: str, **changes: Any) -> dict | None:
        record = self.get(app, release_id)
        if record is None:
            return None
        record.update(changes)
        self.put(record)
        return record

    def history(self, app: str) -> list[dict]:
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"releases/{app}/"):
            for obj in page.get("Contents", []):
                out.append(json.loads(self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()))
        return sorted(out, key=lambda r: r.get("started_at") or "")


class ReleaseLock:
    """One release per app at a time: locks/<app>.json created with If-None-Match: *.

    The holder is a DAG run; a lock whose run has finished (or vanished) is stale and is
    taken over, so a killed run cannot block an app forever."""

    def __init__(self, s3_client, bucket: str, app: str) -> None:
        self.s3 = s3_client
        self.bucket = bucket
        self.key = f"locks/{app}.json"

    def holder(self) -> dict | None:
        return _read_json(self.s3, self.bucket, self.key)

    def try_acquire(self, holder: dict) -> tuple[bool, dict | None]:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(holder).encode(), IfNoneMatch="*")
            return True, holder
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
        current = self.holder()
        if current and current.get("run_id") == holder["run_id"] and current.get("dag_id") == holder["dag_id"]:
            return True, current  # ours, from an earlier try of this run
        return False, current

    def break_stale(self, expected: dict) -> None:
        if self.holder() == expected:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key)

    def release(self, dag_id: str, run_id: str) -> bool:
        current = self.holder()
        if current and current.get("run_id") == run_id and current.get("dag_id") == dag_id:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key)
            return True
        return False
