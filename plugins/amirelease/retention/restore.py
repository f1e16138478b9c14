"""Undo a deregistration: bring an image and its snapshots back from the Recycle Bin.

``make restore-ami AMI=ami-… REASON="…"`` (``python -m amirelease.cli restore-ami``) runs
:func:`restore_ami`:

1. the image must be in the Recycle Bin (``ListImagesInRecycleBin``);
2. its snapshots come back first (``RestoreSnapshotFromRecycleBin``; AWS restores an image only
   when its snapshots are there): the ones retention deleted with it, from the record retention
   wrote when it deregistered (``retention/recycle-bin/<region>/<image>.json`` in the ledger
   bucket), else every snapshot in the bin whose description names the image (AWS's
   ``Created by CreateImage(…) for ami-…``);
3. the image comes back (``RestoreImageFromRecycleBin``) and is waited for (``available``);
4. its mark goes (the mark tag, and the AWS deprecation); an image the scream test disabled
   (retention/scream.py) is enabled again, so it launches at once; a forensic hold comes on
   (``ForensicHold`` = who and when, ``ForensicHoldReason`` = why), so retention keeps it until
   somebody lifts the hold (``make release-hold``);
5. it is recorded: ``retention/restores/<region>/<image>-<time>.json`` in the ledger bucket, and,
   for an image of one of our releases (tags ``App``/``ReleaseId``), a ``forensic_hold`` and a
   ``restores`` entry in that release's ledger record.

Safe to repeat: an image already back is not restored again, but still gets its hold. That is
also the way back for an image the scream test disabled before its due date (still registered):
``make restore-ami`` enables it, unmarks it and holds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from amirelease.constants import DEFAULT_AWS_CONN_ID, HOLD_REASON_TAG, HOLD_TAG, MIN_REASON
from amirelease.errors import AwsErrorFamily, ReleaseError, aws_error_family
from amirelease.errors import aws_error_code as _code
from amirelease.ledger import Ledger, ledger_bucket, utcnow
from amirelease.retention.policy import RetentionPolicy, load_policy
from amirelease.retention.recycle_aws import read_record
from amirelease.retention.scream import DISABLED_TAG

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import ImageTypeDef

MIN_REASON_CHARS = MIN_REASON  # one rule for every reason a person gives: constants.py
RESTORE_PREFIX = "retention/restores"
# what a restore calls (the console role: the CLI and the Releases page)
RESTORE_IAM_ACTIONS: tuple[str, ...] = (
    "ec2:CreateTags",
    "ec2:DeleteTags",
    "ec2:DescribeImages",
    "ec2:DescribeSnapshots",
    "ec2:DisableImageDeprecation",
    "ec2:EnableImage",
    "ec2:ListImagesInRecycleBin",
    "ec2:ListSnapshotsInRecycleBin",
    "ec2:RestoreImageFromRecycleBin",
    "ec2:RestoreSnapshotFromRecycleBin",
    "s3:GetObject",
    "s3:PutObject",
)
# what `recycle-bin-rules` calls (the console role; run by a person, never by retention)
RULES_IAM_ACTIONS: tuple[str, ...] = ("rbin:CreateRule", "rbin:GetRule", "rbin:ListRules")


class RestoreError(ReleaseError):
    """The image could not be restored; what was already done is said in the message."""


@dataclass(frozen=True)
class Restored:
    image_id: str
    region: str
    name: str
    snapshots: tuple[str, ...]
    by: str
    reason: str
    at: str
    already_back: bool = False
    ledger_release: str | None = None
    records: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        what = f"{self.image_id} ({self.name or 'no name'}, {self.region})"
        head = f"{what} was already back" if self.already_back else f"Restored {what}"
        snaps = ", ".join(self.snapshots) or "no snapshot from the bin"
        ledger = f"; ledger record of {self.ledger_release} updated" if self.ledger_release else ""
        return (
            f"{head} with {snaps}. Mark removed; forensic hold added ({self.by}: {self.reason}): retention "
            f"keeps it until the hold is lifted (make release-hold). Recorded at {self.records.get('restore')}{ledger}."
        )


def _live_image(ec2: EC2Client, image_id: str) -> ImageTypeDef | None:
    try:
        images = ec2.describe_images(ImageIds=[image_id], IncludeDisabled=True)["Images"]
    except ClientError as exc:
        if aws_error_family(exc) is AwsErrorFamily.NOT_FOUND:
            return None
        raise
    live = [i for i in images if i.get("State") not in ("deregistered",)]
    return live[0] if live else None


def _snapshots_to_restore(ec2: EC2Client, record: dict[str, Any] | None, image_id: str) -> list[str]:
    if record is not None:
        return list(record.get("snapshot_ids") or [])
    found = []
    for page in ec2.get_paginator("list_snapshots_in_recycle_bin").paginate():
        for snap in page.get("Snapshots", []):
            if image_id in (snap.get("Description") or ""):
                found.append(snap["SnapshotId"])
    return found


def _restore_snapshot(ec2: EC2Client, snapshot_id: str, image_id: str) -> bool:
    """True when restored now, False when it was not in the bin but exists; raises otherwise."""
    try:
        ec2.restore_snapshot_from_recycle_bin(SnapshotId=snapshot_id)
        return True
    except ClientError as exc:
        if _code(exc) != "InvalidSnapshot.NotFound":
            raise
    try:
        ec2.describe_snapshots(SnapshotIds=[snapshot_id])
    except ClientError as exc:
        raise RestoreError(
            f"snapshot {snapshot_id} of {image_id} is neither in the Recycle Bin nor in the account "
            f"({_code(exc)}): the image cannot be restored",
            resource=f"{image_id}, snapshot {snapshot_id}",
            fix="its snapshot rule's retention may have ended; the image cannot come back, rebuild the release instead",
        ) from exc
    return False


def restore_ami(
    *,
    image_id: str,
    region: str,
    reason: str,
    by: str,
    aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
    policy: RetentionPolicy | None = None,
) -> Restored:
    from amirelease.aws import AwsClients

    reason = " ".join((reason or "").split())
    if len(reason) < MIN_REASON_CHARS:
        raise RestoreError(
            f"a reason of at least {MIN_REASON_CHARS} characters is needed to restore an image",
            resource=image_id,
            fix="say why it must come back, e.g. 'INC-4711: web-a still launches it'",
        )
    if not image_id.startswith("ami-"):
        raise RestoreError(f"{image_id!r} is not an AMI id", resource=image_id, fix="give the id, e.g. ami-0abc…")
    by = (by or "").strip() or "unknown"
    policy = policy or load_policy()
    bucket = ledger_bucket()  # a missing setting is said before any AWS call
    clients = AwsClients(aws_conn_id=aws_conn_id)
    ec2, s3 = clients.ec2(region), clients.s3()

    binned = ec2.list_images_in_recycle_bin(ImageIds=[image_id]).get("Images", [])
    live = None if binned else _live_image(ec2, image_id)
    if not binned and live is None:
        raise RestoreError(
            f"{image_id} is not in the Recycle Bin of {region} and not registered either",
            resource=f"{image_id} ({region})",
            fix="its retention period may have ended, or it was deregistered without a Recycle Bin rule: it cannot "
            "come back; check the region, or rebuild the release (a rollback re-release)",
        )
    record = read_record(s3, bucket, region, image_id)
    restored_snaps: list[str] = []
    if binned:
        for snap in _snapshots_to_restore(ec2, record, image_id):
            if _restore_snapshot(ec2, snap, image_id):
                restored_snaps.append(snap)
        try:
            ec2.restore_image_from_recycle_bin(ImageId=image_id)
        except ClientError as exc:
            raise RestoreError(
                f"AWS refused to restore {image_id} ({_code(exc)}: {exc}); snapshots restored so far: "
                f"{', '.join(restored_snaps) or 'none'}",
                resource=f"{image_id} ({region})",
                fix="read AWS's message; run the same command again once it is fixed (it is safe to repeat)",
            ) from exc
        ec2.get_waiter("image_available").wait(ImageIds=[image_id], WaiterConfig={"Delay": 2, "MaxAttempts": 60})
        live = _live_image(ec2, image_id)
    tags = {t["Key"]: t["Value"] for t in (live or {}).get("Tags") or []}

    from amirelease.release import tag_value

    now = utcnow()
    if (live or {}).get("State") == "disabled":  # the scream test's (or anybody's): a restore means "launch it"
        ec2.enable_image(ImageId=image_id)
    stale = [k for k in (policy.mark_tag, DISABLED_TAG) if k in tags]
    if stale:
        ec2.delete_tags(Resources=[image_id], Tags=[{"Key": k} for k in stale])
    try:
        ec2.disable_image_deprecation(ImageId=image_id)
    except ClientError as exc:
        if _code(exc) not in ("InvalidAMIID.NotFound",):
            raise
    ec2.create_tags(
        Resources=[image_id],
        Tags=[
            {"Key": HOLD_TAG, "Value": tag_value(f"restored {now} by {by}")},
            {"Key": HOLD_REASON_TAG, "Value": tag_value(reason)},
        ],
    )
    entry = {
        "image_id": image_id,
        "region": region,
        "name": (live or {}).get("Name") or (record or {}).get("name") or "",
        "restored_at": now,
        "restored_by": by,
        "reason": reason,
        "snapshots_restored": restored_snaps,
        "already_back": not binned,
        "deregistration": record,
    }
    key = f"{RESTORE_PREFIX}/{region}/{image_id}-{now.replace(':', '')}.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(entry, indent=1).encode(), ContentType="application/json")
    ledger_release = None
    app, release_id = tags.get("App"), tags.get("ReleaseId")
    if app and release_id:
        ledger = Ledger(s3, bucket)
        rec = ledger.get(app, release_id)
        if rec is not None:
            hold = {
                "placed_at": now,
                "by": by,
                "reason": reason,
                "amis": {region: image_id},
                "restored_from_recycle_bin": True,
            }
            restores = [*(rec.get("restores") or []), {k: v for k, v in entry.items() if k != "deregistration"}]
            ledger.update(app, release_id, forensic_hold=hold, restores=restores)
            ledger_release = release_id
            from amirelease import protection

            # the hold brings AWS's deregistration protection with it (protection.py)
            protection.sync(ledger, clients.ec2, app, protection.protect_releases())
    return Restored(
        image_id=image_id,
        region=region,
        name=str(entry["name"]),
        snapshots=tuple(restored_snaps),
        by=by,
        reason=reason,
        at=now,
        already_back=not binned,
        ledger_release=ledger_release,
        records={"restore": f"s3://{bucket}/{key}"},
    )
