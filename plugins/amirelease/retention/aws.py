"""The AWS side of retention: list with paginators, apply in batches.

Functions take boto3 clients (EC2, Auto Scaling) so the operator stays thin and
they can be driven by the sandbox or a fake client. Request count grows with the
number of *pages* (1000 images/instances, 100 groups per page) and templates in
use, never with the number of images; tags are written in batches grouped by
identical value.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from amirelease.errors import RetentionError
from amirelease.retention.decide import Action, Plan
from amirelease.retention.model import Image, Usage, image_from_api
from amirelease.retention.policy import RetentionPolicy
from amirelease.retention.references import (
    group_template_specs,
    launch_configuration_references,
    merge,
    template_references,
)

log = logging.getLogger(__name__)

LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]  # all but terminated
TAG_BATCH = 500  # resource ids per CreateTags/DeleteTags call
FILTER_BATCH = 200  # values per filter


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# ---------------------------------------------------------------- listing


def list_images(ec2, *, filters: list[dict] | None = None) -> list[Image]:
    """Own images (``Owners=['self']``), 1000 per page."""
    kwargs: dict[str, Any] = {"Owners": ["self"], "IncludeDisabled": True}
    if filters:
        kwargs["Filters"] = filters
    images = []
    for page in ec2.get_paginator("describe_images").paginate(**kwargs, PaginationConfig={"PageSize": 1000}):
        images.extend(image_from_api(item) for item in page.get("Images", []))
    return images


def list_instance_usage(ec2, *, image_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
    """``image id -> [instance ids]`` over every existing (non-terminated) instance."""
    usage: dict[str, list[str]] = defaultdict(list)
    batches = [None] if image_ids is None else list(_chunks(list(image_ids), FILTER_BATCH))
    for batch in batches:
        filters = [{"Name": "instance-state-name", "Values": LIVE_STATES}]
        if batch is not None:
            filters.append({"Name": "image-id", "Values": batch})
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=filters, PaginationConfig={"PageSize": 1000}
        ):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    if instance.get("State", {}).get("Name") == "terminated":
                        continue
                    if instance.get("ImageId"):
                        usage[instance["ImageId"]].append(instance["InstanceId"])
    return dict(usage)


def _paginate_all(client, operation: str, key: str, page_size: int = 100, **kwargs) -> list[dict]:
    out: list[dict] = []
    for page in client.get_paginator(operation).paginate(**kwargs, PaginationConfig={"PageSize": page_size}):
        out.extend(page.get(key, []))
    return out


def _template_versions(ec2, template: tuple[str, str], versions: list[str]) -> list[dict]:
    ident = {"LaunchTemplateId": template[1]} if template[0] == "id" else {"LaunchTemplateName": template[1]}
    try:
        return _paginate_all(
            ec2,
            "describe_launch_template_versions",
            "LaunchTemplateVersions",
            **ident,
            Versions=versions,
            ResolveAlias=True,
        )
    except ClientError as exc:
        code = _code(exc)
        if code in (
            "InvalidLaunchTemplateId.NotFound",
            "InvalidLaunchTemplateName.NotFoundException",
            "InvalidLaunchTemplateId.Malformed",
        ):
            log.warning(
                "Launch template %s used by an Auto Scaling group does not exist (%s); it references no image.",
                template[1],
                code,
            )
            return []
        if code == "InvalidLaunchTemplateId.VersionNotFound" and len(versions) > 1:
            # One missing version fails the whole call: ask for each version alone.
            return [v for version in versions for v in _template_versions(ec2, template, [version])]
        if code == "InvalidLaunchTemplateId.VersionNotFound":
            log.warning(
                "Launch template %s has no version %s (used by an Auto Scaling group).", template[1], versions[0]
            )
            return []
        raise RetentionError(
            f"could not read launch template versions ({code}): {exc}",
            resource=template[1],
            fix="grant ec2:DescribeLaunchTemplateVersions; retention refuses to run blind to templates",
        ) from exc


def list_references(ec2, autoscaling, policy: RetentionPolicy) -> dict[str, list[str]]:
    """``image id -> [reasons]`` for images the account's Auto Scaling set-up still names."""
    if not (policy.protect_launch_templates or policy.protect_launch_configurations):
        return {}
    groups = _paginate_all(autoscaling, "describe_auto_scaling_groups", "AutoScalingGroups")
    maps = []
    if policy.protect_launch_templates:
        for template, specs in group_template_specs(groups).items():
            versions = _template_versions(ec2, template, sorted(specs))
            maps.append(template_references(template, specs, versions))
    if policy.protect_launch_configurations:
        configs = _paginate_all(autoscaling, "describe_launch_configurations", "LaunchConfigurations")
        maps.append(launch_configuration_references(configs, groups))
    return merge(*maps)


def collect(ec2, autoscaling, policy: RetentionPolicy) -> tuple[list[Image], Usage]:
    images = list_images(ec2)
    usage = Usage(instances=list_instance_usage(ec2), references=list_references(ec2, autoscaling, policy))
    return images, usage


# ---------------------------------------------------------------- applying


def recheck(ec2, plan: Plan, usage: Usage, policy: RetentionPolicy, *, account_id: str | None) -> Plan:
    """Just before deregistering, re-read the candidates' tags and instances (two calls for
    up to 200 images) and keep only those still eligible; the others become SKIPs."""
    from amirelease.retention.decide import decide

    ids = [d.image_id for d in plan.of(Action.DEREGISTER)]
    if not ids:
        return plan
    fresh_images = []
    for batch in _chunks(ids, FILTER_BATCH):
        fresh_images.extend(list_images(ec2, filters=[{"Name": "image-id", "Values": batch}]))
    fresh_usage = Usage(instances=list_instance_usage(ec2, image_ids=ids), references=usage.references)
    again = {
        d.image_id: d for d in decide(fresh_images, fresh_usage, plan.now, policy, account_id=account_id).decisions
    }
    decisions = []
    for d in plan.decisions:
        if d.action is Action.DEREGISTER:
            now_d = again.get(d.image_id)
            if now_d is None:
                d = replace(d, action=Action.SKIP, snapshot_ids=(), reasons=("image vanished during the run",))
            elif now_d.action is not Action.DEREGISTER:
                d = replace(
                    d,
                    action=Action.SKIP,
                    snapshot_ids=(),
                    reasons=("kept: no longer eligible at deregistration time", *now_d.reasons),
                )
        decisions.append(d)
    return replace(plan, decisions=tuple(decisions))


def _tag_call(call, ids: list[str], tags: list[dict], what: str) -> None:
    for batch in _chunks(ids, TAG_BATCH):
        try:
            call(Resources=batch, Tags=tags)
        except ClientError as exc:
            raise RetentionError(
                f"{what} failed ({_code(exc)}): {exc}",
                resource=f"{len(batch)} image(s) starting {batch[0]}",
                fix="check ec2:CreateTags/ec2:DeleteTags permissions; the next run retries",
            ) from exc


def apply_plan(ec2, plan: Plan, policy: RetentionPolicy) -> dict[str, Any]:
    """Write the plan: unmark, mark (batched by value), deregister, delete orphaned snapshots.

    Nothing happens on a dry run or a blocked plan. Per-image deregistration errors
    are collected and raised together at the end, after the rest was applied.
    """
    applied: dict[str, Any] = {
        "unmarked": 0,
        "marked": 0,
        "deregistered": 0,
        "snapshots_deleted": 0,
        "snapshots_kept": 0,
        "errors": [],
    }
    if plan.dry_run or plan.blocked:
        return applied

    unmark = [d.image_id for d in plan.of(Action.UNMARK)]
    _tag_call(ec2.delete_tags, unmark, [{"Key": policy.mark_tag}], "removing mark tags")
    applied["unmarked"] = len(unmark)

    by_value: dict[str, list[str]] = defaultdict(list)
    for d in plan.of(Action.MARK):
        by_value[d.mark_value].append(d.image_id)
    for value, ids in by_value.items():
        _tag_call(ec2.create_tags, ids, [{"Key": policy.mark_tag, "Value": value}], "writing mark tags")
        applied["marked"] += len(ids)

    gone: set[str] = set()
    errors: list[str] = []
    for d in plan.of(Action.DEREGISTER):
        try:
            ec2.deregister_image(ImageId=d.image_id)
        except ClientError as exc:
            code = _code(exc)
            if code in ("InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"):
                log.info("%s was already deregistered (%s).", d.image_id, code)
            else:
                errors.append(f"deregister {d.image_id}: {code}")
                continue
        gone.add(d.image_id)
    applied["deregistered"] = len(gone)

    for d in plan.of(Action.DEREGISTER):
        if d.image_id not in gone:
            continue
        for snap in d.snapshot_ids:
            if not set(plan.snapshot_users.get(snap, ())) <= gone:
                applied["snapshots_kept"] += 1
                continue  # another user of it failed to go; keep
            try:
                ec2.delete_snapshot(SnapshotId=snap)
                applied["snapshots_deleted"] += 1
            except ClientError as exc:
                code = _code(exc)
                if code == "InvalidSnapshot.NotFound":
                    continue
                if code == "InvalidSnapshot.InUse":
                    log.warning("Snapshot %s of %s is still in use; kept.", snap, d.image_id)
                    applied["snapshots_kept"] += 1
                    continue
                errors.append(f"delete snapshot {snap} (of {d.image_id}): {code}")
    applied["errors"] = errors
    return applied
