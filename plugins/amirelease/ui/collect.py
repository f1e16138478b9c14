"""Everything the Releases page shows about one app, read from AWS and the ledger.

Read-only: Describe*/List*/Get* calls through the Airflow connection (aws_default by
default) with the provider's hooks. A read that fails (permissions, a missing bucket) is
kept as a problem to show on the page instead of failing the whole page.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from amirelease import catalog
from amirelease.constants import DEFAULT_AWS_CONN_ID, LIVE_INSTANCE_STATES
from amirelease.errors import AwsErrorFamily, ReleaseError, aws_error
from amirelease.retention.policy import RetentionPolicy

if TYPE_CHECKING:
    from mypy_boto3_autoscaling.type_defs import InstanceRefreshTypeDef
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef
    from mypy_boto3_s3 import S3Client

    from amirelease.hooks.autoscaling import AutoScalingHook

T = TypeVar("T")

LIVE_STATES = LIVE_INSTANCE_STATES  # one definition: retention counts shutting-down as in use too
REPORT_KEY = "retention/reports/{region}/latest.json"
RECENT_REFRESHES = 5


@dataclass
class GroupState:
    """One Auto Scaling group of the app, as AWS describes it now."""

    region: str
    name: str
    launch_template: str
    found: bool = False
    launch_template_spec: dict[str, Any] = field(default_factory=dict)
    desired_capacity: int | None = None
    # InstanceId, LifecycleState, HealthStatus (from the group) + ImageId (from EC2)
    instances: list[dict[str, Any]] = field(default_factory=list)
    image_tags: dict[str, dict[str, str]] = field(default_factory=dict)  # AMI -> its tags
    refreshes: list[InstanceRefreshTypeDef] = field(default_factory=list)  # newest first


@dataclass
class AppSnapshot:
    """Plain data for the page: no client objects, safe to render or test."""

    app: str
    description: str
    owner: str
    groups: list[GroupState]
    history: list[dict[str, Any]]  # ledger records, oldest first
    images: list[dict[str, Any]]  # own AMIs tagged App=<app>: ImageId, Name, CreationDate, Region, Tags (dict)
    usage: dict[str, list[str]]  # AMI -> ids of existing instances that run it
    reports: dict[str, dict[str, Any]]  # region -> latest retention report
    policy: RetentionPolicy
    read_at: datetime
    problems: list[str] = field(default_factory=list)
    entry: catalog.Entry | None = None  # the central catalog entry (where its definition lives, allow:)
    drift: list[dict[str, Any]] = field(default_factory=list)  # ami_drift's records (drift/<app>/...)
    # the policy's accounts (accounts:): one entry per account x region, its latest report or None
    account_reports: list[dict[str, Any]] = field(default_factory=list)


def tags_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t["Value"]) for t in obj.get("Tags") or []}


def _problem_text(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(aws_error(exc))
    return str(exc)


class _Reader:
    """Runs each read, keeping what failed as a sentence for the page."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def attempt(self, what: str, fn: Callable[[], T], default: T) -> T:
        try:
            return fn()
        except (ClientError, BotoCoreError, ReleaseError) as exc:
            self.problems.append(f"Could not read {what}: {_problem_text(exc)}")
            return default


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def read_history(s3: S3Client, bucket: str, app: str, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The app's ledger records, oldest first. Only releases/<app>/<release_id>.json: other
    objects under the prefix (release bundles) are not records. A record that is not JSON is
    left out and named in ``problems``."""
    prefix = f"releases/{app}/"
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rest = obj["Key"][len(prefix) :]
            if "/" in rest or not rest.endswith(".json"):
                continue
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            try:
                record = json.loads(body)
            except ValueError:
                record = None
            if isinstance(record, dict):
                out.append(record)
            elif problems is not None:
                problems.append(f"Ledger record s3://{bucket}/{obj['Key']} is not a JSON object; it is left out")
    return sorted(out, key=lambda r: r.get("started_at") or r.get("finished_at") or "")


def read_report(s3: S3Client, bucket: str, region: str) -> dict[str, Any] | None:
    """The latest retention report of a region, or None when there is none yet."""
    try:
        body = s3.get_object(Bucket=bucket, Key=REPORT_KEY.format(region=region))["Body"].read()
    except ClientError as exc:
        if aws_error(exc).family in (AwsErrorFamily.NOT_FOUND, AwsErrorFamily.NO_BUCKET):
            return None
        raise
    report = json.loads(body)
    return report if isinstance(report, dict) else None


def read_account_reports(s3: S3Client, bucket: str, policy: RetentionPolicy) -> list[dict[str, Any]]:
    """``{"account", "region", "report"}`` per account x region the policy names (report: the
    latest, None when there is none yet); empty when the policy names no accounts."""
    from amirelease.retention.report import latest_report

    return [
        {"account": a.name, "region": r, "report": latest_report(s3, bucket, r, account=a.name)}
        for a in policy.accounts
        for r in a.regions
    ]


def read_group(asg: AutoScalingHook, ec2: EC2Client, region: str, name: str, launch_template: str) -> GroupState:
    state = GroupState(region=region, name=name, launch_template=launch_template)
    group = asg.describe_group(name)
    if group is None:
        return state
    state.found = True
    state.desired_capacity = group.get("DesiredCapacity")
    state.launch_template_spec = dict(
        group.get("LaunchTemplate")
        or ((group.get("MixedInstancesPolicy") or {}).get("LaunchTemplate") or {}).get("LaunchTemplateSpecification")
        or {}
    )
    members = {
        i["InstanceId"]: {k: i.get(k) for k in ("InstanceId", "LifecycleState", "HealthStatus")}
        for i in group.get("Instances", [])
    }
    if members:
        for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=sorted(members)):
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    if inst["InstanceId"] in members:
                        members[inst["InstanceId"]]["ImageId"] = inst.get("ImageId")
    state.instances = sorted(members.values(), key=lambda i: i["InstanceId"])
    amis = sorted({i["ImageId"] for i in state.instances if i.get("ImageId")})
    if amis:
        for image in ec2.describe_images(ImageIds=amis)["Images"]:
            state.image_tags[image["ImageId"]] = tags_of(image)
    state.refreshes = asg.refreshes(name)[:RECENT_REFRESHES]
    return state


def read_app_images(ec2: EC2Client, app: str, region: str) -> list[dict[str, Any]]:
    """AMIs owned by the account and tagged App=<app>, in one region."""
    # IncludeDisabled: an image the scream test disabled (retention/scream.py) is still ours to show
    kwargs: dict[str, Any] = {
        "Owners": ["self"],
        "Filters": [{"Name": "tag:App", "Values": [app]}],
        "IncludeDisabled": True,
    }
    images = []
    if ec2.can_paginate("describe_images"):
        pages = ec2.get_paginator("describe_images").paginate(**kwargs)
        images = [i for page in pages for i in page["Images"]]
    else:  # pragma: no cover - older botocore
        images = ec2.describe_images(**kwargs)["Images"]
    return [
        {
            "ImageId": i["ImageId"],
            "Name": i.get("Name"),
            "CreationDate": i.get("CreationDate"),
            "Region": region,
            "Tags": tags_of(i),
            "DeregistrationProtection": i.get("DeregistrationProtection"),
            "DeprecationTime": i.get("DeprecationTime"),
            "State": i.get("State"),
        }
        for i in images
    ]


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def read_binned_images(
    ec2: EC2Client, history: list[dict[str, Any]], region: str, live: set[str]
) -> list[dict[str, Any]]:
    """The app's release AMIs (from the ledger) of one region that are in the Recycle Bin:
    deregistered, restorable until RecycleBinExitTime (``make restore-ami``)."""
    by_ami: dict[str, dict[str, Any]] = {}
    for record in history:
        ami = (record.get("amis") or {}).get(region)
        if ami and ami not in live:
            by_ami[str(ami)] = record
    out: list[dict[str, Any]] = []
    ids = sorted(by_ami)
    for start in range(0, len(ids), 20):
        for item in ec2.list_images_in_recycle_bin(ImageIds=ids[start : start + 20]).get("Images", []):
            record = by_ami.get(item["ImageId"], {})
            out.append(
                {
                    "ImageId": item["ImageId"],
                    "Name": item.get("Name"),
                    "CreationDate": None,
                    "Region": region,
                    "Tags": {
                        k: str(v)
                        for k, v in (
                            ("App", record.get("app")),
                            ("Version", record.get("version")),
                            ("ReleaseId", record.get("release_id")),
                        )
                        if v
                    },
                    "RecycleBinExitTime": _iso(item.get("RecycleBinExitTime")),
                }
            )
    return out


def read_usage(ec2: EC2Client, amis: list[str]) -> dict[str, list[str]]:
    """AMI -> existing (not terminated) instances that run it."""
    usage: dict[str, list[str]] = {}
    for chunk in _chunks(sorted(amis), 150):
        filters: list[FilterTypeDef] = [
            {"Name": "image-id", "Values": chunk},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    usage.setdefault(inst["ImageId"], []).append(inst["InstanceId"])
    return usage


def read_app(app_name: str, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> AppSnapshot:
    """Read everything the page shows about one app (read-only)."""
    from amirelease.aws import AwsClients
    from amirelease.ledger import fleet_targets, ledger_bucket
    from amirelease.retention.policy import load_policy

    app = catalog.known_app(app_name)
    reader = _Reader()
    read_at = datetime.now(UTC)
    policy = reader.attempt("the retention policy", load_policy, RetentionPolicy())

    ec2_clients: dict[str, EC2Client] = {}

    def ec2(region: str) -> EC2Client:
        if region not in ec2_clients:
            ec2_clients[region] = AwsClients(aws_conn_id=aws_conn_id).ec2(region)
        return ec2_clients[region]

    history: list[dict[str, Any]] = []
    reports: dict[str, dict[str, Any]] = {}
    bucket = reader.attempt("the ledger bucket setting", ledger_bucket, "")
    s3 = AwsClients(aws_conn_id=aws_conn_id).s3() if bucket else None
    if s3 is not None:
        history = reader.attempt(
            f"the release ledger (s3://{bucket}/releases/{app.name}/)",
            partial(read_history, s3, bucket, app.name, reader.problems),
            [],
        )

    drift: list[dict[str, Any]] = []
    if s3 is not None:
        from amirelease.drift.store import DriftStore

        drift = reader.attempt(
            f"the drift records (s3://{bucket}/drift/{app.name}/)", partial(DriftStore(s3, bucket).of_app, app.name), []
        )

    targets = fleet_targets(app, history)
    groups = []
    for t in targets:
        hook = AwsClients(aws_conn_id=aws_conn_id).autoscaling(t.region)
        groups.append(
            reader.attempt(
                f"Auto Scaling group {t.auto_scaling_group} ({t.region})",
                partial(read_group, hook, ec2(t.region), t.region, t.auto_scaling_group, t.launch_template),
                GroupState(region=t.region, name=t.auto_scaling_group, launch_template=t.launch_template),
            )
        )

    regions = {t.region for t in targets}
    for record in history:
        regions.update((record.get("amis") or {}).keys())
    images: list[dict[str, Any]] = []
    usage: dict[str, list[str]] = {}
    for region in sorted(regions):
        found: list[dict[str, Any]] = reader.attempt(
            f"the AMIs of {app.name} in {region}", partial(read_app_images, ec2(region), app.name, region), []
        )
        images.extend(found)
        live = {str(i["ImageId"]) for i in found}
        images.extend(
            reader.attempt(
                f"the Recycle Bin of {region}", partial(read_binned_images, ec2(region), history, region, live), []
            )
        )
        if found:
            amis = [str(i["ImageId"]) for i in found]
            no_usage: dict[str, list[str]] = {}
            usage.update(reader.attempt(f"the instances in {region}", partial(read_usage, ec2(region), amis), no_usage))
        if s3 is not None:
            report = reader.attempt(f"the retention report of {region}", partial(read_report, s3, bucket, region), None)
            if report:
                reports[region] = report

    account_reports: list[dict[str, Any]] = []
    if s3 is not None and policy.accounts:
        account_reports = reader.attempt(
            "the retention reports of the policy's accounts",
            partial(read_account_reports, s3, bucket, policy),
            [],
        )

    return AppSnapshot(
        app=app.name,
        description=app.description,
        owner=app.owner,
        groups=groups,
        history=history,
        images=sorted(images, key=lambda i: i.get("CreationDate") or "", reverse=True),
        usage=usage,
        reports=reports,
        policy=policy,
        read_at=read_at,
        problems=reader.problems,
        entry=app,
        drift=drift,
        account_reports=account_reports,
    )
