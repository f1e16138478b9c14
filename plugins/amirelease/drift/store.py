"""Drift records in the ledger bucket: ``drift/<app>/<region>.json`` (one per app × region;
with stages, ``drift/<app>/<stage>/<region>.json``). Written by ``ami_drift`` only; deleted
when a plan shows no drift (the bucket's versioning keeps the history)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from amirelease.errors import AwsErrorFamily, aws_error_family

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PREFIX = "drift/"


def drift_key(app: str, region: str, stage: str | None = None) -> str:
    return f"{PREFIX}{app}/{stage + '/' if stage else ''}{region}.json"


class DriftStore:
    def __init__(self, s3_client: S3Client, bucket: str) -> None:
        self.s3 = s3_client
        self.bucket = bucket

    def get(self, app: str, region: str, stage: str | None = None) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=drift_key(app, region, stage))["Body"].read()
        except ClientError as exc:
            if aws_error_family(exc) is AwsErrorFamily.NOT_FOUND:
                return None
            raise
        doc = json.loads(body)
        return doc if isinstance(doc, dict) else None

    def put(self, record: dict[str, Any]) -> str:
        key = drift_key(record["app"], record["region"], record.get("stage"))
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(record, indent=2, sort_keys=True).encode(),
            ContentType="application/json",
        )
        return key

    def clear(self, app: str, region: str, stage: str | None = None) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=drift_key(app, region, stage))

    def of_app(self, app: str) -> list[dict[str, Any]]:
        """Every drift record of an app (the Releases page)."""
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{PREFIX}{app}/"):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(".json"):
                    body = self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                    try:
                        doc = json.loads(body)
                    except ValueError:
                        continue
                    if isinstance(doc, dict):
                        out.append(doc)
        return sorted(out, key=lambda r: (str(r.get("stage") or ""), str(r.get("region"))))
