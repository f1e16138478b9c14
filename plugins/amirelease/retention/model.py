"""Plain data the decision function works on, and converters from EC2 API shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from amirelease.times import parse_iso


@dataclass(frozen=True)
class Image:
    image_id: str
    owner_id: str
    creation_date: datetime | None  # aware UTC; None when missing/unreadable (never eligible)
    name: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    snapshot_ids: tuple[str, ...] = ()
    state: str = "available"
    deprecation_time: datetime | None = None  # AWS's DeprecationTime (a mark sets it: recycle.py/aws.py)
    deregistration_protection: str = "disabled"  # AWS's DeregistrationProtection
    last_launched: datetime | None = None  # AWS's LastLaunchedTime (about 24 h behind on AWS)


@dataclass(frozen=True)
class Usage:
    """What keeps an image alive, by image id.

    ``instances``: ids of existing (non-terminated) instances running the image.
    ``references``: readable descriptions of launch templates / configurations that name it.
    ``template_versions``: ``(launch template id, version number) -> image id ('' for none)`` for
    every version the run read (versions never change once made): the recheck before
    deregistering asks AWS only for versions not among them.
    ``group_instances``: ``instance id -> (state, image id)`` as EC2 answered for the instances the
    groups list (an instance's image never changes): the recheck looks up only new ones.
    """

    instances: Mapping[str, Sequence[str]] = field(default_factory=dict)
    references: Mapping[str, Sequence[str]] = field(default_factory=dict)
    template_versions: Mapping[tuple[str, int], str] = field(default_factory=dict)
    group_instances: Mapping[str, tuple[str, str]] = field(default_factory=dict)


def parse_creation_date(value: Any) -> datetime | None:
    """EC2 gives ``2024-01-02T03:04:05.000Z``; None if absent or unreadable."""
    return parse_iso(value)


def snapshot_ids(item: Mapping[str, Any]) -> tuple[str, ...]:
    """The EBS snapshots of one ``DescribeImages`` item, each once, in mapping order."""
    return tuple(
        dict.fromkeys(
            bdm["Ebs"]["SnapshotId"]
            for bdm in item.get("BlockDeviceMappings", []) or []
            if isinstance(bdm.get("Ebs"), Mapping) and bdm["Ebs"].get("SnapshotId")
        )
    )


def image_from_api(item: Mapping[str, Any]) -> Image:
    """Convert one ``DescribeImages`` item."""
    snapshots = snapshot_ids(item)
    return Image(
        image_id=item["ImageId"],
        owner_id=str(item.get("OwnerId", "")),
        creation_date=parse_creation_date(item.get("CreationDate")),
        name=item.get("Name") or "",
        tags={t["Key"]: t.get("Value", "") for t in item.get("Tags", []) or []},
        snapshot_ids=snapshots,
        state=item.get("State", "available"),
        deprecation_time=parse_creation_date(item.get("DeprecationTime")),
        deregistration_protection=str(item.get("DeregistrationProtection") or "disabled"),
        last_launched=parse_creation_date(item.get("LastLaunchedTime")),
    )
