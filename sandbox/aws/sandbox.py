"""AwsSandbox: an in-process moto server with the sandbox's extensions and a seeded account."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.config import Config as BotoConfig
from moto.core.utils import utcnow
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.utils import random_ami_id
from moto.moto_api._internal import moto_api_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

from sandbox.builders import Builders

from . import (
    alarm_history,
    alarms,
    autoscaling_limits,
    fast,
    image_references,
    images,
    instances,
    patches,
    recycle_bin,
    refresh,
    ssm,
    sts,
    windows,
)
from .faults import Faults
from .middleware import INTERNAL_HEADER, QuietRequestHandler, SandboxMiddleware
from .state import LOCK, RUNTIME

DEFAULT_ACCOUNT_FILE = Path(__file__).resolve().parents[1] / "account.yaml"
MARK_TAG = "maid_status"


def install_extensions() -> None:
    """Idempotent: patch moto's classes in this process."""
    patches.install()
    images.install()  # deprecation, disabled images, deregistration protection, lastLaunchedTime
    recycle_bin.install()  # rbin rules; deregistered images / deleted snapshots held and restored
    image_references.install()  # DescribeImageReferences
    refresh.install()
    ssm.install()
    instances.install()
    windows.install()
    alarm_history.install()  # DescribeAlarmHistory (state changes of alarms)
    alarms.install()  # PutCompositeAlarm; DescribeAlarms with AlarmTypes and paging, as AWS answers it
    autoscaling_limits.install()  # DescribeAccountLimits (how many groups the region has)
    sts.install()  # AssumeRole only into roles that exist and trust the caller (member accounts)


def sandbox_client(
    endpoint_url: str, service: str, region: str, *, internal: bool = False, account_id: str | None = None
) -> Any:
    """A boto3 client of a sandbox server, in this process or another: ``internal`` (no retries,
    not counted, not faulted: the tests' and benches' own calls), ``account_id`` (an account of
    the server other than the seeded one: moto's ``x-moto-account-id`` header)."""
    c = boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=BotoConfig(retries={"total_max_attempts": 1}) if internal else None,
    )
    if internal:

        def _mark(request: Any, **_: Any) -> None:
            request.headers[INTERNAL_HEADER] = "1"

        c.meta.events.register("before-sign.*.*", _mark)
    if account_id is not None:

        def _account(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account_id

        c.meta.events.register("before-sign.*.*", _account)
    return c


class AwsSandbox:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        account_file: str | Path | None = None,
        refresh_batch_seconds: float = 1.0,
        builders: bool = True,
    ) -> None:
        self.host = host
        self.with_builders = builders  # SSH builders behind Packer's instances (sandbox/builders)
        self.port = port
        self.account_file = Path(account_file) if account_file else DEFAULT_ACCOUNT_FILE
        self.spec: dict[str, Any] = yaml.safe_load(self.account_file.read_text())
        self.region: str = self.spec.get("region", "us-east-1")
        self.account_id: str = str(self.spec.get("account_id", "123456789012"))
        self.account: dict[str, Any] = {}
        self.faults: Faults = RUNTIME.faults
        self.latency = RUNTIME.latency  # AWS's round trip per request (latency.py)
        self.token_buckets = RUNTIME.token_buckets  # EC2's request throttling (token_bucket.py)
        self._refresh_batch_seconds = refresh_batch_seconds
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._ticker_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._middleware: SandboxMiddleware | None = None
        self.generation = 0

    # -- lifecycle -----------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("AwsSandbox is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> AwsSandbox:
        if self._server is not None:
            return self
        install_extensions()
        self.configure(refresh_batch_seconds=self._refresh_batch_seconds)
        if RUNTIME.builders is None:
            RUNTIME.builders = Builders()
        RUNTIME.builders.start(enabled=self.with_builders)
        app = DomainDispatcherApplication(create_backend_app)
        self._middleware = SandboxMiddleware(app, self)
        self._server = make_server(
            self.host, self.port, self._middleware, threaded=True, request_handler=QuietRequestHandler
        )
        self._server.sandbox_connections = set()
        self._server.sandbox_lock = threading.Lock()
        self._stop.clear()
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, name="aws-sandbox-server", daemon=True
        )
        self._server_thread.start()
        self._ticker_thread = threading.Thread(target=self._tick_loop, name="aws-sandbox-ticker", daemon=True)
        self._ticker_thread.start()
        try:
            self.reset()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop.set()
        if RUNTIME.builders is not None:
            RUNTIME.builders.stop()
        if self._ticker_thread is not None:
            self._ticker_thread.join(timeout=5)
            self._ticker_thread = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with self._server.sandbox_lock:
                conns = list(self._server.sandbox_connections)
            for conn in conns:  # idle keep-alive connections: wake their handler threads
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            deadline = time.monotonic() + 5
            while self._server.sandbox_connections and time.monotonic() < deadline:
                time.sleep(0.01)
            self._server = None
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)
            self._server_thread = None
        with LOCK:
            refresh.reset()
        RUNTIME.faults.clear()
        RUNTIME.latency.clear()
        RUNTIME.token_buckets.clear()

    def __enter__(self) -> AwsSandbox:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _tick_loop(self) -> None:
        while not self._stop.is_set():
            interval = max(0.02, min(0.1, RUNTIME.config.refresh_batch_seconds / 5))
            if self._stop.wait(interval):
                return
            with LOCK:
                refresh.tick_all()

    def configure(
        self,
        refresh_batch_seconds: float | None = None,
        checkpoint_delay_scale: float | None = None,
        windows_password_seconds: float | None = None,
        latency_ms: Any = None,
        token_buckets: bool | dict[str, Any] | None = None,
    ) -> None:
        """``latency_ms``: AWS's round trip per request, a number or ``[low, high]`` (0: off;
        latency.py). ``token_buckets``: EC2's request throttling on (True, or the keyword arguments
        of ``TokenBuckets.configure``: ``scale``, ``classes``, ``actions``) or off (False;
        token_bucket.py). A reset turns both off."""
        if latency_ms is not None:
            RUNTIME.latency.set(latency_ms)
        if token_buckets is not None:
            if isinstance(token_buckets, dict):
                RUNTIME.token_buckets.configure(**{"enabled": True, **token_buckets})
            elif token_buckets:
                RUNTIME.token_buckets.configure(enabled=True)
            else:
                RUNTIME.token_buckets.clear()
        if windows_password_seconds is not None:
            RUNTIME.config.windows_password_seconds = float(windows_password_seconds)
        if refresh_batch_seconds is not None:
            RUNTIME.config.refresh_batch_seconds = float(refresh_batch_seconds)
        if checkpoint_delay_scale is not None:
            RUNTIME.config.checkpoint_delay_scale = float(checkpoint_delay_scale)

    def reset(self) -> None:
        with LOCK:
            moto_api_backend.reset()
            fast.forget_positions()
            refresh.reset()
            recycle_bin.reset()
            alarm_history.reset()
            RUNTIME.faults.clear()
            RUNTIME.latency.clear()
            RUNTIME.token_buckets.clear()
            RUNTIME.ssm_rules[:] = list(self.spec.get("ssm_responses") or [])
            if RUNTIME.builders is not None:
                RUNTIME.builders.reset()
        self._seed()
        self.generation += 1  # fixtures that build on the account (a fleet) know it was wiped
        self.reset_request_counts()

    # -- counts ----------------------------------------------------------------------
    def request_counts(self) -> dict[str, int]:
        return self._middleware.snapshot_counts() if self._middleware else {}

    def callers(self) -> dict[tuple[str, str], int]:
        """Every AWS call since start by (sender, "service:Action"); senders: terraform, packer,
        airflow (the provider's hooks) or other (e.g. a test's own boto3). Kept across resets."""
        return self._middleware.snapshot_callers() if self._middleware else {}

    def access_keys(self) -> dict[tuple[str, str], set[str]]:
        """Every AWS call since start by (sender, "service:Action") -> the access key ids it was signed with."""
        return self._middleware.snapshot_keys() if self._middleware else {}

    def assume_requests(self) -> list[dict[str, Any]]:
        """Every sts:AssumeRole request since start: its parameters (RoleArn, Tags.member.N.Key, ...)."""
        return self._middleware.snapshot_assume_requests() if self._middleware else []

    def assumed_roles(self) -> dict[str, str]:
        """access key id -> role ARN, for every role session AssumeRole handed out since start
        (recorded from the answers, so an account reset does not forget them)."""
        return self._middleware.snapshot_role_keys() if self._middleware else {}

    def oddities(self) -> dict[str, list[dict[str, Any]]]:
        """What should never happen in the sandbox, since start (middleware.py): ``repeats``, an
        SDK sending again a call moto had already answered (the answer was lost), and ``errors``,
        moto raising instead of answering. Both empty in a healthy run."""
        return self._middleware.snapshot_oddities() if self._middleware else {"repeats": [], "errors": []}

    def reset_request_counts(self) -> None:
        if self._middleware:
            self._middleware.reset_counts()

    # -- clients -----------------------------------------------------------------------
    def client(
        self, service: str, region: str | None = None, internal: bool = False, account_id: str | None = None
    ) -> Any:
        """A boto3 client of the seeded account, or (``account_id``) of another account of the
        same server (moto's ``x-moto-account-id`` header: for seeding member accounts)."""
        other = account_id if account_id is not None and account_id != self.account_id else None
        return sandbox_client(self.endpoint_url, service, region or self.region, internal=internal, account_id=other)

    def add_member_account(
        self, account_id: str, *, role_name: str = "ami-retention", trusted_account: str | None = None
    ) -> str:
        """Another account in the same server (an Organization's member account): an IAM role
        ``role_name`` in it whose trust policy lets ``trusted_account`` (default: the seeded
        account, where the workers' credentials land) assume it. Returns the role's ARN.
        The account's EC2/Auto Scaling are empty apart from moto's vendor images; its images
        are made with ``create_image(..., account_id=...)``. A reset() wipes it."""
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{trusted_account or self.account_id}:root"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        iam = self.client("iam", internal=True, account_id=account_id)
        role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        return str(role["Arn"])

    # -- images -------------------------------------------------------------------------
    def create_image(
        self,
        name: str,
        *,
        age_days: float | None = None,
        creation_date: datetime | str | None = None,
        tags: dict[str, str] | None = None,
        region: str | None = None,
        snapshot_ids: list[str] | None = None,
        in_use: bool = False,
        description: str | None = None,
        platform: str | None = None,
        account_id: str | None = None,
    ) -> str:
        """Register an account-owned, EBS-backed AMI with a chosen CreationDate; return its id.
        ``account_id``: another account of the server (see add_member_account; default the seeded one)."""
        region = region or self.region
        account = account_id or self.account_id
        if creation_date is None:
            created = utcnow() - timedelta(days=float(age_days or 0))
        elif isinstance(creation_date, str):
            created = datetime.fromisoformat(creation_date.replace("Z", "+00:00"))
        else:
            created = creation_date
        if created.tzinfo is not None:
            created = created.astimezone(UTC).replace(tzinfo=None)
        with LOCK:
            ec2 = ec2_backends[account][region]
            ami = Ami(
                ec2,
                random_ami_id(),
                name=name,
                description=description if description is not None else name,
                owner_id=account,
                public=False,
                virtualization_type="hvm",
                architecture="x86_64",
                hypervisor="xen",
                platform=platform,
                root_device_type="ebs",
                root_device_name="/dev/sda1" if platform == "windows" else "/dev/xvda",
                boot_mode="uefi-preferred",
                creation_date=created,
                region_name=f"{region}a",
                tags=dict(tags or {}),
            )
            ami.ebs_snapshot.start_time = created
            if snapshot_ids:
                own = ami.ebs_snapshot
                ami.ebs_snapshot = ec2.get_snapshot(snapshot_ids[0])
                ec2.snapshots.pop(own.id, None)
            ec2.amis[ami.id] = ami
            if in_use:
                seeded = region == self.region and account == self.account_id
                subnet = (self.account.get("subnet_ids") or [None])[0] if seeded else None
                ec2.run_instances(
                    ami.id,
                    1,
                    None,
                    [],
                    instance_type="t3.micro",
                    is_instance_type_default=False,
                    subnet_id=subnet,
                    placement=None if subnet else f"{region}a",
                    tags={"instance": {"Name": f"uses-{name}"}},
                )
        return ami.id

    def age_images(
        self, image_ids: list[str], days: float, region: str | None = None, account_id: str | None = None
    ) -> None:
        """Make images (and their snapshots) `days` older: how tests let time pass for retention,
        instead of running it in the future."""
        with LOCK:
            ec2 = ec2_backends[account_id or self.account_id][region or self.region]
            for image_id in image_ids:
                ami = ec2.amis[image_id]
                created = ami.creation_date
                if isinstance(created, str):
                    created = datetime.fromisoformat(created.replace("Z", "+00:00"))
                if created.tzinfo is not None:
                    created = created.astimezone(UTC).replace(tzinfo=None)
                older = created - timedelta(days=days)
                ami.creation_date = older
                if getattr(ami, "ebs_snapshot", None) is not None:
                    ami.ebs_snapshot.start_time = older

    def image_snapshot_id(self, image_id: str, region: str | None = None) -> str:
        with LOCK:
            return ec2_backends[self.account_id][region or self.region].amis[image_id].ebs_snapshot.id

    # -- seeding -------------------------------------------------------------------------
    def _seed(self) -> None:
        spec = self.spec
        ec2 = self.client("ec2", internal=True)
        acct: dict[str, Any] = {"account_id": self.account_id, "region": self.region}

        vpc_spec = spec["vpc"]
        vpc_id = ec2.create_vpc(
            CidrBlock=vpc_spec["cidr"],
            TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": vpc_spec["name"]}]}],
        )["Vpc"]["VpcId"]
        subnet_ids = []
        for sub in vpc_spec["subnets"]:
            subnet_ids.append(
                ec2.create_subnet(
                    VpcId=vpc_id,
                    CidrBlock=sub["cidr"],
                    AvailabilityZone=sub["az"],
                    TagSpecifications=[{"ResourceType": "subnet", "Tags": [{"Key": "Name", "Value": sub["name"]}]}],
                )["Subnet"]["SubnetId"]
            )
        acct.update(vpc_id=vpc_id, subnet_ids=subnet_ids, vpc_cidr=vpc_spec["cidr"])
        self.account = acct

        vendor: dict[str, str] = {}
        for key, v in (spec.get("vendor_images") or {}).items():
            images = ec2.describe_images(Owners=[v["owner"]], Filters=[{"Name": "name", "Values": [v["name"]]}])[
                "Images"
            ]
            if not images:
                raise RuntimeError(
                    f"vendor image {key} ({v['name']}) not found; is MOTO_AMIS_PATH set to sandbox/amis.json?"
                )
            vendor[key] = max(images, key=lambda i: i["CreationDate"])["ImageId"]
        acct["vendor_images"] = vendor

        lb_spec = spec.get("shared_load_balancer")
        if lb_spec:
            sg = lb_spec["security_group"]
            sg_id = ec2.create_security_group(GroupName=sg["name"], Description=sg["description"], VpcId=vpc_id)[
                "GroupId"
            ]
            ec2.authorize_security_group_ingress(
                GroupId=sg_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": sg["port"],
                        "ToPort": sg["port"],
                        "IpRanges": [{"CidrIp": vpc_spec["cidr"]}],
                    }
                ],
            )
            elb = self.client("elbv2", internal=True)
            lb_arn = elb.create_load_balancer(
                Name=lb_spec["name"], Subnets=subnet_ids, SecurityGroups=[sg_id], Type="application", Scheme="internal"
            )["LoadBalancers"][0]["LoadBalancerArn"]
            listener_arn = elb.create_listener(
                LoadBalancerArn=lb_arn,
                Protocol="HTTP",
                Port=sg["port"],
                DefaultActions=[
                    {
                        "Type": "fixed-response",
                        "FixedResponseConfig": {
                            "StatusCode": "404",
                            "ContentType": "text/plain",
                            "MessageBody": "no app",
                        },
                    }
                ],
            )["Listeners"][0]["ListenerArn"]
            acct.update(load_balancer_arn=lb_arn, listener_arn=listener_arn, load_balancer_security_group=sg_id)

        aged = []
        by_name: dict[str, str] = {}
        for img in spec.get("aged_images") or []:
            tags = {
                "App": img.get("app", "demo-web"),
                "Version": str(img.get("version", "")),
                "BuiltBy": "ami-release-pipeline",
            }
            tags.update({k: str(val) for k, val in (img.get("tags") or {}).items()})
            if img.get("mark_due_in_days") is not None:
                due = utcnow() + timedelta(days=float(img["mark_due_in_days"]))
                tags[MARK_TAG] = f"Resource does not meet policy: deregister@{due:%Y/%m/%d}"
            snapshot_ids = None
            if img.get("shares_snapshot_with"):
                snapshot_ids = [self.image_snapshot_id(by_name[img["shares_snapshot_with"]])]
            image_id = self.create_image(
                img["name"],
                age_days=img["age_days"],
                tags=tags,
                snapshot_ids=snapshot_ids,
                in_use=bool(img.get("in_use")),
            )
            by_name[img["name"]] = image_id
            aged.append(
                {
                    "name": img["name"],
                    "image_id": image_id,
                    "age_days": img["age_days"],
                    "in_use": bool(img.get("in_use")),
                    "tags": tags,
                    "snapshot_id": self.image_snapshot_id(image_id),
                }
            )
        acct["aged_images"] = aged

        # S3 buckets (the release ledger lives in one), versioned as the product recommends.
        for b in spec.get("buckets") or []:
            s3 = self.client("s3", internal=True)
            s3.create_bucket(Bucket=b["name"])
            if b.get("versioning"):
                s3.put_bucket_versioning(Bucket=b["name"], VersioningConfiguration={"Status": "Enabled"})
        acct["buckets"] = [b["name"] for b in spec.get("buckets") or []]

        # Notification topics (include/apps/<app>.yaml notify:), each read through a subscribed SQS queue.
        sns, sqs = self.client("sns", internal=True), self.client("sqs", internal=True)
        acct["notification_topics"] = {}
        for t in spec.get("notification_topics") or []:
            topic = sns.create_topic(Name=t["name"])["TopicArn"]
            inbox = sqs.create_queue(QueueName=t["inbox"])["QueueUrl"]
            queue = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue)
            acct["notification_topics"][t["name"]] = {"topic_arn": topic, "inbox": inbox}

        # Recycle Bin retention rules, as `make recycle-bin-rules` creates them in a real account
        # (the retention policy deregisters only into such a window): see account.yaml.
        rbin = self.client("rbin", internal=True)
        acct["recycle_bin_rules"] = []
        for rule in spec.get("recycle_bin_rules") or []:
            made = rbin.create_rule(
                ResourceType=rule["resource_type"],
                RetentionPeriod={"RetentionPeriodValue": int(rule["days"]), "RetentionPeriodUnit": "DAYS"},
                ResourceTags=[{"ResourceTagKey": k, "ResourceTagValue": v} for k, v in rule["tags"].items()],
                Description=rule.get("description", "sandbox seed"),
            )
            acct["recycle_bin_rules"].append(made["Identifier"])

        # App-scoped roles (include/apps/<app>.yaml aws.role_arn): each app's Packer and Terraform
        # run as its own role, assumed per release with the session tag App=<app>.
        iam = self.client("iam", internal=True)
        acct["app_roles"] = {}
        for app in spec.get("app_roles") or []:
            trust = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{self.account_id}:root"},
                        "Action": ["sts:AssumeRole", "sts:TagSession"],
                        "Condition": {"StringEquals": {"aws:RequestTag/App": app}},
                    }
                ],
            }
            role = iam.create_role(RoleName=f"ami-app-{app}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
            acct["app_roles"][app] = role["Arn"]
        self.account = acct

    # -- a fleet for the sandbox's own tests ---------------------------------------------------

    def put_alarm(self, name: str, metric: str = "HTTPCode_Target_5XX_Count", threshold: float = 10.0) -> str:
        """A CloudWatch alarm on an ALB metric of the seeded account, in state OK; its name."""
        cw = self.client("cloudwatch", internal=True)
        cw.put_metric_alarm(
            AlarmName=name,
            Namespace="AWS/ApplicationELB",
            MetricName=metric,
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=threshold,
            ComparisonOperator="GreaterThanThreshold",
            TreatMissingData="notBreaching",
        )
        cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="made by the sandbox")
        return name

    def create_fleet(
        self,
        name: str = "sbx-web",
        *,
        image: str | None = None,
        desired: int = 3,
        min_size: int = 2,
        max_size: int = 6,
        alarms: bool = True,
    ) -> dict[str, Any]:
        """A launch template, target group, group and alarms made straight through the API (no
        Terraform): for tests of the sandbox itself (instance refresh, faults, fast describe).
        The apps' fleets are made by their Terraform modules, not by this."""
        ec2 = self.client("ec2", internal=True)
        image_id = image or self.account["vendor_images"]["amazon-linux"]
        lt = ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData={
                "ImageId": image_id,
                "InstanceType": "t3.micro",
                "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "App", "Value": name}]}],
            },
        )["LaunchTemplate"]
        elb = self.client("elbv2", internal=True)
        tg_arn = elb.create_target_group(
            Name=f"{name}-tg",
            Protocol="HTTP",
            Port=80,
            VpcId=self.account["vpc_id"],
            TargetType="instance",
            HealthCheckPath="/health",
        )["TargetGroups"][0]["TargetGroupArn"]
        group = f"{name}-asg"
        self.client("autoscaling", internal=True).create_auto_scaling_group(
            AutoScalingGroupName=group,
            LaunchTemplate={"LaunchTemplateName": name, "Version": "$Default"},
            MinSize=min_size,
            MaxSize=max_size,
            DesiredCapacity=desired,
            VPCZoneIdentifier=",".join(self.account["subnet_ids"]),
            TargetGroupARNs=[tg_arn],
            HealthCheckType="ELB",
            HealthCheckGracePeriod=60,
            Tags=[
                {
                    "Key": "App",
                    "Value": name,
                    "PropagateAtLaunch": True,
                    "ResourceId": group,
                    "ResourceType": "auto-scaling-group",
                }
            ],
        )
        alarm_names = []
        if alarms:
            for suffix, metric in (("5xx", "HTTPCode_Target_5XX_Count"), ("latency", "TargetResponseTime")):
                alarm_names.append(self.put_alarm(f"{name}-{suffix}", metric))
        return {
            "launch_template": {"id": lt["LaunchTemplateId"], "name": name},
            "asg_name": group,
            "target_group_arn": tg_arn,
            "alarm_names": alarm_names,
            "image": image_id,
        }

    # -- HTTP control surface ------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        with LOCK:
            refreshes = [r.describe() for r in refresh.REFRESHES]
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "account_id": self.account_id,
            "account": self.account,
            "faults": self.faults.as_dict(),
            "config": {
                "refresh_batch_seconds": RUNTIME.config.refresh_batch_seconds,
                "checkpoint_delay_scale": RUNTIME.config.checkpoint_delay_scale,
                "windows_password_seconds": RUNTIME.config.windows_password_seconds,
                "latency_ms": RUNTIME.latency.as_dict()["latency_ms"],
                "token_buckets": RUNTIME.token_buckets.enabled,
            },
            "instance_refreshes": refreshes,
            "builders": {"enabled": RUNTIME.builders.enabled, "reason": RUNTIME.builders.reason}
            if RUNTIME.builders is not None
            else {"enabled": False, "reason": "not started"},
        }

    def handle_control(self, method: str, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        if path in ("", "state") and method == "GET":
            return 200, self.state()
        if path == "requests":
            if method == "GET":
                return 200, self.request_counts()
            if method == "DELETE":
                self.reset_request_counts()
                return 200, {}
        if path == "faults":
            if method == "GET":
                return 200, self.faults.as_dict()
            if method == "POST":
                specs = payload if isinstance(payload, list) else [payload]
                for one in specs:
                    self.faults.apply(one)
                return 200, self.faults.as_dict()
            if method == "DELETE":
                self.faults.clear()
                return 200, self.faults.as_dict()
        if path == "images" and method == "POST":
            payload = dict(payload)
            name = payload.pop("name")
            return 200, {"image_id": self.create_image(name, **payload)}
        if path == "accounts" and method == "POST":
            payload = dict(payload)
            account_id = str(payload.pop("account_id"))
            return 200, {"account_id": account_id, "role_arn": self.add_member_account(account_id, **payload)}
        if path == "config" and method == "POST":
            self.configure(**payload)
            return 200, self.state()["config"]
        if path == "latency" and method == "GET":
            return 200, RUNTIME.latency.as_dict()
        if path == "throttling":
            if method == "GET":
                return 200, RUNTIME.token_buckets.as_dict()
            if method == "POST":
                RUNTIME.token_buckets.configure(**payload)
                return 200, RUNTIME.token_buckets.as_dict()
            if method == "DELETE":
                RUNTIME.token_buckets.clear()
                return 200, RUNTIME.token_buckets.as_dict()
        if path == "builders" and RUNTIME.builders is not None:
            if method == "GET":
                return 200, RUNTIME.builders.state()
            if method == "POST":
                RUNTIME.builders.configure(**payload)
                return 200, RUNTIME.builders.state()
        if path == "reset" and method == "POST":
            self.reset()
            return 200, self.account
        return 404, {"error": f"no control endpoint {method} /_sandbox/{path}"}
