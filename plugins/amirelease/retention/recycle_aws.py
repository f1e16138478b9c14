"""The AWS side of the Recycle Bin window: read and create the retention rules, tag what is
about to go, record it, and restore an image with its snapshots.

* :func:`check` — ``rbin:ListRules`` per resource type, ``rbin:GetRule`` per rule (the listing
  does not show a rule's tags), then :func:`amirelease.retention.recycle.coverage`. A read that
  fails means "not covered": the run deregisters nothing.
* :func:`create_rules` — the explicit command (``make recycle-bin-rules``): creates the two
  rules the policy asks for, only those not already there. Never called by a retention run.
* :func:`tag_for_bin` — ``CreateTags`` with the policy's tag on the images and snapshots about
  to go, just before they go.
* :func:`record_deregistered` — one JSON per deregistered image in the ledger bucket
  (``retention/recycle-bin/<region>/<image id>.json``: name, tags, the snapshots deleted with
  it, when, which run), so a restore knows which snapshots to bring back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from amirelease.errors import AwsErrorFamily, RetentionError, aws_error_family
from amirelease.errors import aws_error_code as _code
from amirelease.retention.decide import Decision
from amirelease.retention.policy import RetentionPolicy
from amirelease.retention.recycle import (
    RESOURCE_TYPES,
    Coverage,
    ResourceType,
    bin_tag,
    coverage,
    rule_requests,
    unreadable,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_rbin import RecycleBinClient
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

TAG_BATCH = 500
RECORD_PREFIX = "retention/recycle-bin"
RECORD_WORKERS = 10  # PutObject of the records side by side (botocore's pool holds 10 connections)


def _rules_of(rbin: RecycleBinClient, rtype: ResourceType) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for page in rbin.get_paginator("list_rules").paginate(ResourceType=rtype):
        for summary in page.get("Rules", []):
            rule = rbin.get_rule(Identifier=summary["Identifier"])
            rules.append({k: v for k, v in rule.items() if k != "ResponseMetadata"})
    return rules


def read_rules(rbin: RecycleBinClient) -> dict[str, list[dict[str, Any]]]:
    """resource type -> full rules (``GetRule``) of the region, the two types side by side.
    Raises ClientError/BotoCoreError."""
    with ThreadPoolExecutor(max_workers=len(RESOURCE_TYPES), thread_name_prefix="retention-rbin") as pool:
        futures = {rtype: pool.submit(_rules_of, rbin, rtype) for rtype in RESOURCE_TYPES}
        return {rtype: fut.result() for rtype, fut in futures.items()}


def check(rbin: RecycleBinClient, policy: RetentionPolicy) -> Coverage:
    try:
        return coverage(read_rules(rbin), policy)
    except ClientError as exc:
        return unreadable(f"{_code(exc)}: {exc}")
    except BotoCoreError as exc:
        return unreadable(f"{type(exc).__name__}: {exc}")


def create_rules(rbin: RecycleBinClient, policy: RetentionPolicy) -> tuple[Coverage, list[dict[str, Any]]]:
    """Create what is missing of the two rules; returns (coverage after, rules created)."""
    before = coverage(read_rules(rbin), policy)
    created: list[dict[str, Any]] = []
    for request in rule_requests(policy):
        if request["ResourceType"] in before.rules:
            continue
        made = rbin.create_rule(**request)
        created.append({k: v for k, v in made.items() if k != "ResponseMetadata"})
    return coverage(read_rules(rbin), policy), created


def tag_for_bin(ec2: EC2Client, leaving: Sequence[Decision], policy: RetentionPolicy) -> None:
    """Put the policy's Recycle Bin tag on the images and snapshots about to go."""
    ids = [d.image_id for d in leaving] + sorted({s for d in leaving for s in d.snapshot_ids})
    for start in range(0, len(ids), TAG_BATCH):
        batch = ids[start : start + TAG_BATCH]
        try:
            ec2.create_tags(Resources=batch, Tags=[bin_tag(policy)])
        except ClientError as exc:
            raise RetentionError(
                f"tagging images and snapshots for the Recycle Bin failed ({_code(exc)}): {exc}",
                resource=f"{len(batch)} resource(s) starting {batch[0]}",
                fix="check ec2:CreateTags on images and snapshots; nothing was deregistered, the next run retries",
            ) from exc


def record_key(region: str, image_id: str) -> str:
    return f"{RECORD_PREFIX}/{region}/{image_id}.json"


def record_deregistered(
    s3: S3Client,
    bucket: str,
    region: str,
    decisions: Sequence[Decision],
    *,
    deleted_snapshots: Sequence[str],
    at: datetime,
    run_id: str,
    coverage_: Coverage | None,
) -> None:
    from amirelease.retention.report import current_account

    deleted = set(deleted_snapshots)
    scope = current_account()  # the policy account the run acts in (None: the workers' own)
    bodies = [
        (
            record_key(region, d.image_id),
            {
                "image_id": d.image_id,
                "name": d.name,
                "region": region,
                **({"account": scope[0], "account_id": scope[1]} if scope else {}),
                "tags": dict(d.tags),
                "snapshot_ids": [s for s in d.snapshot_ids if s in deleted],
                "deregistered_at": at.isoformat().replace("+00:00", "Z"),
                "run_id": run_id,
                "recycle_bin": dict(coverage_.rules) if coverage_ else None,
            },
        )
        for d in decisions
    ]

    def put(item: tuple[str, dict[str, Any]]) -> None:
        s3.put_object(
            Bucket=bucket, Key=item[0], Body=json.dumps(item[1], indent=1).encode(), ContentType="application/json"
        )

    # one object per image (a restore reads it by image id): side by side, as many as botocore's
    # connection pool holds, not one round trip after another; the first error is raised
    with ThreadPoolExecutor(max_workers=RECORD_WORKERS, thread_name_prefix="retention-records") as pool:
        list(pool.map(put, bodies))


def read_record(s3: S3Client, bucket: str, region: str, image_id: str) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=record_key(region, image_id))["Body"].read()
    except ClientError as exc:
        if aws_error_family(exc) is AwsErrorFamily.NOT_FOUND:
            return None
        raise
    data: dict[str, Any] = json.loads(body)
    return data
