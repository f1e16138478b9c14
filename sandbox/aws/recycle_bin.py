"""The Recycle Bin (``rbin``), which moto 5.2.5 does not have at all (every call: HTTP 500).

As the Recycle Bin user guide and API references describe it:

* **Retention rules** (``rbin`` service, REST-JSON, answered here before moto sees the
  request): ``CreateRule``, ``GetRule``, ``ListRules`` (paged; ``ResourceTags`` filter),
  ``UpdateRule``, ``DeleteRule``. A rule keeps ``EC2_IMAGE`` or ``EBS_SNAPSHOT`` resources
  for ``RetentionPeriodValue`` days (1-3650 in botocore's model). A *tag-level* rule names
  ``ResourceTags`` (up to 50) and retains a resource that carries any one of them (a tag
  without a value matches the key with any value); a *Region-level* rule names none and
  retains every resource except those with one of its ``ExcludeResourceTags``
  (``ExcludeResourceTags`` on a tag-level rule: ``ValidationException``). A resource that
  several rules match is kept for the longest of their periods. Rules here are ``available``
  as soon as they are created (AWS: ``pending`` for a short time first, not modelled); rule
  locks are not modelled (``LockRule``/``UnlockRule``: ``ValidationException``).
* **Into the bin**: ``DeregisterImage`` of an image a rule matches (the image's tags at that
  moment), ``DeleteSnapshot`` of a snapshot a rule matches. The resource disappears from
  ``DescribeImages``/``DescribeSnapshots``; a deregistered image that no rule matches is gone
  at once, as before.
* **In the bin**: ``ListImagesInRecycleBin`` / ``ListSnapshotsInRecycleBin`` (``ImageIds`` /
  ``SnapshotIds``, ``MaxResults``/``NextToken``) with ``RecycleBinEnterTime`` and
  ``RecycleBinExitTime``; a resource whose exit time has passed by the sandbox's clock
  (moto's ``utcnow``; ``ageing.age_account`` moves these times back) is deleted for good.
* **Restore**: ``RestoreSnapshotFromRecycleBin`` puts the snapshot back (``completed``);
  ``RestoreImageFromRecycleBin`` puts the image back ``available`` with its tags, but only
  when its snapshots are not (or no longer) in the bin: the user guide says to restore the
  snapshots first. AWS does not document the error code for that; here it is
  ``IncorrectState``. Restoring something not in the bin: ``InvalidAMIID.NotFound`` /
  ``InvalidSnapshot.NotFound``.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.exceptions import EC2ClientError, InvalidAMIIdError, InvalidSnapshotIdError
from moto.ec2.models import amis as _amis
from moto.ec2.models import elastic_block_store as _ebs
from moto.ec2.responses import amis as _amis_responses
from moto.ec2.responses import elastic_block_store as _ebs_responses

from . import paging

RESOURCE_TYPES = ("EBS_SNAPSHOT", "EC2_IMAGE", "EBS_VOLUME")
_ORIGINAL: dict[str, Any] = {}


@dataclass
class Binned:
    resource: Any
    enter: datetime
    exit: datetime


@dataclass
class Bin:
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, Binned] = field(default_factory=dict)
    snapshots: dict[str, Binned] = field(default_factory=dict)


_BINS: dict[tuple[str, str], Bin] = {}


def bin_for(account_id: str, region: str) -> Bin:
    return _BINS.setdefault((account_id, region), Bin())


def reset() -> None:
    _BINS.clear()


def age(account_id: str, delta: timedelta) -> None:
    """Move every time in the account's bins ``delta`` back (``ageing.age_account``)."""
    for (account, _region), b in _BINS.items():
        if account != account_id:
            continue
        for entry in [*b.images.values(), *b.snapshots.values()]:
            entry.enter -= delta
            entry.exit -= delta


def _expire(b: Bin) -> None:
    now = utcnow()
    for table in (b.images, b.snapshots):
        for key in [k for k, v in table.items() if v.exit <= now]:
            del table[key]


def retention_days(b: Bin, resource_type: str, tags: dict[str, str]) -> int | None:
    """The longest retention of the rules that match a resource with these tags (None: none)."""
    best: int | None = None
    for rule in b.rules.values():
        if rule["ResourceType"] != resource_type or rule["Status"] != "available":
            continue
        wanted = rule.get("ResourceTags") or []
        if wanted:
            hit = any(
                t["ResourceTagKey"] in tags
                and (not t.get("ResourceTagValue") or tags[t["ResourceTagKey"]] == t["ResourceTagValue"])
                for t in wanted
            )
        else:
            hit = not any(
                t["ResourceTagKey"] in tags
                and (not t.get("ResourceTagValue") or tags[t["ResourceTagKey"]] == t["ResourceTagValue"])
                for t in rule.get("ExcludeResourceTags") or []
            )
        if hit:
            days = int(rule["RetentionPeriod"]["RetentionPeriodValue"])
            best = days if best is None else max(best, days)
    return best


def _ts(value: Any) -> Any:
    """A timestamp as EC2 writes it (UTC, with its Z), whatever moto holds."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return value


def _tags_of(backend: Any, resource_id: str) -> dict[str, str]:
    return dict(backend.tags.get(resource_id) or {})


# ----------------------------------------------------------------------------- EC2 backend hooks
def _deregister_image(self: Any, ami_id: str) -> None:
    ami = self.amis.get(ami_id)
    tags = _tags_of(self, ami_id)
    _ORIGINAL["deregister_image"](self, ami_id)
    if ami is None or ami.root_device_type != "ebs":  # only EBS-backed AMIs go to the bin
        return
    b = bin_for(self.account_id, self.region_name)
    days = retention_days(b, "EC2_IMAGE", tags)
    if days is not None:
        now = utcnow()
        b.images[ami_id] = Binned(ami, now, now + timedelta(days=days))


def _delete_snapshot(self: Any, snapshot_id: str) -> Any:
    tags = _tags_of(self, snapshot_id)
    snapshot = _ORIGINAL["delete_snapshot"](self, snapshot_id)
    b = bin_for(self.account_id, self.region_name)
    days = retention_days(b, "EBS_SNAPSHOT", tags)
    if days is not None:
        now = utcnow()
        b.snapshots[snapshot_id] = Binned(snapshot, now, now + timedelta(days=days))
    return snapshot


class IncorrectState(EC2ClientError):
    def __init__(self, message: str) -> None:
        super().__init__("IncorrectState", message)


def _r_list_images(self: Any) -> ActionResult:
    ids = self._get_param("ImageIds", [])
    self.error_on_dryrun()
    b = bin_for(self.ec2_backend.account_id, self.ec2_backend.region_name)
    _expire(b)
    entries = [(k, v) for k, v in sorted(b.images.items()) if not ids or k in ids]
    page, nxt = paging.page(self, entries, 1, 1000)
    images = [
        {
            "ImageId": k,
            "Name": v.resource.name,
            "Description": v.resource.description,
            "RecycleBinEnterTime": _ts(v.enter),
            "RecycleBinExitTime": _ts(v.exit),
        }
        for k, v in page
    ]
    result: dict[str, Any] = {"Images": images}
    if nxt:
        result["NextToken"] = nxt
    return ActionResult(result)


def _r_list_snapshots(self: Any) -> ActionResult:
    ids = self._get_param("SnapshotIds", [])
    self.error_on_dryrun()
    b = bin_for(self.ec2_backend.account_id, self.ec2_backend.region_name)
    _expire(b)
    entries = [(k, v) for k, v in sorted(b.snapshots.items()) if not ids or k in ids]
    page, nxt = paging.page(self, entries, 5, 1000)
    snapshots = [
        {
            "SnapshotId": k,
            "RecycleBinEnterTime": _ts(v.enter),
            "RecycleBinExitTime": _ts(v.exit),
            "Description": v.resource.description,
            "VolumeId": v.resource.volume.id if getattr(v.resource, "volume", None) else None,
        }
        for k, v in page
    ]
    result: dict[str, Any] = {"Snapshots": snapshots}
    if nxt:
        result["NextToken"] = nxt
    return ActionResult(result)


def _r_restore_image(self: Any) -> ActionResult:
    ami_id = self._get_param("ImageId")
    self.error_on_dryrun()
    backend = self.ec2_backend
    b = bin_for(backend.account_id, backend.region_name)
    _expire(b)
    entry = b.images.get(ami_id)
    if entry is None:
        raise InvalidAMIIdError(ami_id)
    ami = entry.resource
    snapshot = getattr(ami, "ebs_snapshot", None)
    if snapshot is not None and snapshot.id not in backend.snapshots:
        where = "is in the Recycle Bin" if snapshot.id in b.snapshots else "no longer exists"
        raise IncorrectState(
            f"The image {ami_id} cannot be restored: its snapshot {snapshot.id} {where}; "
            "restore the snapshot first (RestoreSnapshotFromRecycleBin)."
        )
    del b.images[ami_id]
    ami.state = "available"
    backend.amis[ami_id] = ami
    if ami_id in backend.deleted_amis:
        backend.deleted_amis.remove(ami_id)
    return ActionResult({"Return": True})


def _r_restore_snapshot(self: Any) -> ActionResult:
    snapshot_id = self._get_param("SnapshotId")
    self.error_on_dryrun()
    backend = self.ec2_backend
    b = bin_for(backend.account_id, backend.region_name)
    _expire(b)
    entry = b.snapshots.pop(snapshot_id, None)
    if entry is None:
        raise InvalidSnapshotIdError()
    snap = entry.resource
    backend.snapshots[snapshot_id] = snap
    volume = getattr(snap, "volume", None)
    return ActionResult(
        {
            "SnapshotId": snapshot_id,
            "Description": snap.description,
            "Encrypted": bool(getattr(snap, "encrypted", False)),
            "OwnerId": snap.owner_id,
            "Progress": "100%",
            "StartTime": _ts(snap.start_time),
            "State": "completed",
            "VolumeId": volume.id if volume is not None else None,
            "VolumeSize": volume.size if volume is not None else None,
        }
    )


# ----------------------------------------------------------------------------- the rbin service
class RbinError(Exception):
    def __init__(self, status: int, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.reason = status, code, message, reason


def _rule_id() -> str:
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(11))


def _validate(body: dict[str, Any], creating: bool) -> None:
    def invalid(message: str) -> RbinError:
        return RbinError(400, "ValidationException", message, "INVALID_PARAMETER_VALUE")

    if creating or "ResourceType" in body:
        if body.get("ResourceType") not in RESOURCE_TYPES:
            raise invalid(f"ResourceType must be one of {', '.join(RESOURCE_TYPES)}.")
    if creating or "RetentionPeriod" in body:
        period = body.get("RetentionPeriod") or {}
        value = period.get("RetentionPeriodValue")
        if not isinstance(value, int) or not 1 <= value <= 3650 or period.get("RetentionPeriodUnit") != "DAYS":
            raise invalid("RetentionPeriod must be 1-3650 DAYS.")
    tags = body.get("ResourceTags") or []
    if len(tags) > 50:
        raise invalid("At most 50 ResourceTags.")
    if tags and body.get("ExcludeResourceTags"):
        raise invalid("ExcludeResourceTags can only be used with Region-level retention rules (no ResourceTags).")
    if body.get("LockConfiguration"):
        raise invalid("Rule locks are not modelled by the sandbox.")


def _rule_view(rule: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {k: rule[k] for k in keys if rule.get(k) is not None}


_RULE_KEYS = [
    "Identifier",
    "Description",
    "ResourceType",
    "RetentionPeriod",
    "ResourceTags",
    "Status",
    "LockState",
    "RuleArn",
    "ExcludeResourceTags",
]


def handle(method: str, path: str, body: bytes, account_id: str, region: str) -> tuple[int, dict[str, Any] | None]:
    """One rbin REST request → (HTTP status, JSON body or None)."""
    b = bin_for(account_id, region)
    payload = json.loads(body) if body.strip() else {}
    parts = [p for p in path.split("/") if p]
    if method == "POST" and parts == ["rules"]:
        _validate(payload, creating=True)
        rule_id = _rule_id()
        rule = {
            "Identifier": rule_id,
            "Description": payload.get("Description"),
            "ResourceType": payload["ResourceType"],
            "RetentionPeriod": payload["RetentionPeriod"],
            "ResourceTags": payload.get("ResourceTags") or [],
            "ExcludeResourceTags": payload.get("ExcludeResourceTags") or [],
            "Tags": payload.get("Tags") or [],
            "Status": "available",
            "LockState": "unlocked",
            "RuleArn": f"arn:aws:rbin:{region}:{account_id}:rule/{rule_id}",
        }
        b.rules[rule_id] = rule
        return 201, _rule_view(rule, [*_RULE_KEYS, "Tags"])
    if method == "POST" and parts == ["list-rules"]:
        resource_type = payload.get("ResourceType")
        if resource_type not in RESOURCE_TYPES:
            raise RbinError(400, "ValidationException", "ResourceType is required.", "INVALID_PARAMETER_VALUE")
        wanted = payload.get("ResourceTags") or []
        rules = [
            r
            for _k, r in sorted(b.rules.items())
            if r["ResourceType"] == resource_type and all(t in r["ResourceTags"] for t in wanted)
        ]
        start = int(payload.get("NextToken") or 0)
        max_results = int(payload.get("MaxResults") or 1000)
        if not 1 <= max_results <= 1000:
            raise RbinError(400, "ValidationException", "MaxResults must be 1-1000.", "INVALID_PARAMETER_VALUE")
        page = rules[start : start + max_results]
        out: dict[str, Any] = {
            "Rules": [
                _rule_view(r, ["Identifier", "Description", "RetentionPeriod", "LockState", "RuleArn"]) for r in page
            ]
        }
        if start + max_results < len(rules):
            out["NextToken"] = str(start + max_results)
        return 200, out
    if len(parts) >= 2 and parts[0] == "rules":
        rule_id = parts[1]
        rule = b.rules.get(rule_id)
        if rule is None:
            raise RbinError(404, "ResourceNotFoundException", f"Rule {rule_id} not found.", "RULE_NOT_FOUND")
        if len(parts) == 3 and parts[2] in ("lock", "unlock"):
            raise RbinError(400, "ValidationException", "Rule locks are not modelled by the sandbox.")
        if method == "GET":
            return 200, _rule_view(rule, _RULE_KEYS)
        if method == "DELETE":
            del b.rules[rule_id]
            return 204, None
        if method == "PATCH":
            _validate(payload, creating=False)
            for key in ("RetentionPeriod", "Description", "ResourceType", "ResourceTags", "ExcludeResourceTags"):
                if key in payload:
                    rule[key] = payload[key]
            if rule["ResourceTags"] and rule["ExcludeResourceTags"]:
                raise RbinError(400, "ValidationException", "ExcludeResourceTags needs a Region-level rule.")
            return 200, _rule_view(rule, _RULE_KEYS)
    raise RbinError(400, "ValidationException", f"{method} {path} is not served by the sandbox's Recycle Bin.")


def respond(
    method: str, path: str, body: bytes, account_id: str, region: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    try:
        status, out = handle(method, path, body, account_id, region)
        payload = b"" if out is None else json.dumps(out, default=str).encode()
        headers = [("Content-Type", "application/json")]
    except RbinError as err:
        status = err.status
        error: dict[str, Any] = {"Message": err.message}
        if err.reason:
            error["Reason"] = err.reason
        payload = json.dumps(error).encode()
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", err.code)]
    except (ValueError, TypeError, KeyError) as err:
        status = 400
        payload = json.dumps({"Message": f"bad request: {err}"}).encode()
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ValidationException")]
    headers.append(("Content-Length", str(len(payload))))
    return status, headers, payload


def install() -> None:
    """Idempotent; after ``images.install()`` (wraps its DeregisterImage check)."""
    if _ORIGINAL:
        return
    _ORIGINAL["deregister_image"] = _amis.AmiBackend.deregister_image
    _amis.AmiBackend.deregister_image = _deregister_image  # type: ignore[method-assign]
    _ORIGINAL["delete_snapshot"] = _ebs.EBSBackend.delete_snapshot
    _ebs.EBSBackend.delete_snapshot = _delete_snapshot  # type: ignore[method-assign]
    resp = _amis_responses.AmisResponse
    resp.list_images_in_recycle_bin = _r_list_images  # type: ignore[attr-defined]
    resp.restore_image_from_recycle_bin = _r_restore_image  # type: ignore[attr-defined]
    ebs = _ebs_responses.ElasticBlockStore
    ebs.list_snapshots_in_recycle_bin = _r_list_snapshots  # type: ignore[attr-defined]
    ebs.restore_snapshot_from_recycle_bin = _r_restore_snapshot  # type: ignore[attr-defined]
