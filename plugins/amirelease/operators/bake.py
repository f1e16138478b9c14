"""Bake: Packer builds the AMI from the vendor base image with the stacked run list."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.configuration import conf
from botocore.exceptions import ClientError

from amirelease.constants import (
    PURPOSE_BUILDER,
    TAG_APP,
    TAG_NAME,
    TAG_PIPELINE_RUN,
    TAG_PURPOSE,
    TAG_RELEASE_ID,
)
from amirelease.errors import BakeError, aws_error_code
from amirelease.operators.base import Ec2ClientHookMixin, ReleaseOperatorMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from amirelease.handoffs import ReleasePlan
    from amirelease.hooks.ec2_release import Ec2ReleaseHook
    from amirelease.hooks.packer import PackerHook, PackerResult

COMMUNICATOR_PORT = {"linux": 22, "windows": 22}  # both templates use SSH (include/packer/windows.pkr.hcl says why)
GATE_FAILED_STATES = ("failed", "upstream_failed")


class GateWatch:
    """The tasks a bake runs beside (the Terraform check; a rollback's mark_rolled_back): what
    must pass before anything the bake builds may be kept. Read through the Task SDK's task
    states of this DAG run."""

    def __init__(self, ti: Any, gates: Sequence[str], log: Any) -> None:
        self.ti, self.gates, self.log = ti, tuple(gates), log

    def failed(self) -> str | None:
        """The first gate that failed, or None (also when the states cannot be read just now)."""
        if not self.gates or self.ti is None:
            return None
        try:
            states = self.ti.get_task_states(
                dag_id=self.ti.dag_id, run_ids=[self.ti.run_id], task_ids=list(self.gates)
            ).get(self.ti.run_id, {})
        except Exception as exc:  # noqa: BLE001 - a missed poll is retried; the bake itself goes on
            self.log.warning("Could not read the state of %s (%s); asking again", ", ".join(self.gates), exc)
            return None
        return next((g for g in self.gates if states.get(g) in GATE_FAILED_STATES), None)


def packer_source(platform: str = "linux") -> str:
    """Which source of the template to build: 'provisioned' (SSH + Chef) or
    'unprovisioned' (no communicator). Deployment configuration: [ami_release] packer_source,
    overridden per platform by packer_source_<platform> (e.g. packer_source_windows)."""
    key = f"packer_source_{platform}"
    value = conf.get("ami_release", key, fallback="") or conf.get("ami_release", "packer_source", fallback="")
    value = value or "provisioned"
    if value not in ("provisioned", "unprovisioned"):
        raise BakeError(
            f"[ami_release] packer_source (or {key}) = {value!r} is not valid",
            fix="use 'provisioned' or 'unprovisioned'",
        )
    return str(value)


SSH_INTERFACES = ("private_ip", "public_ip", "public_dns", "private_dns")


def builder_settings() -> dict[str, Any]:
    """How Packer reaches its builder and installs Chef, from [ami_release] (docs/configuration.md).
    Packer variables of the template; checked here so a typo fails before anything is made."""
    interface = conf.get("ami_release", "builder_ssh_interface", fallback="private_ip") or "private_ip"
    if interface not in SSH_INTERFACES:
        raise BakeError(
            f"[ami_release] builder_ssh_interface = {interface!r} is not valid",
            fix=f"use one of {', '.join(SSH_INTERFACES)} (private_ip: the workers reach the builder inside the VPC)",
        )
    return {
        "ssh_interface": interface,
        "associate_public_ip_address": conf.getboolean("ami_release", "builder_public_ip", fallback=False),
        "ssh_timeout": conf.get("ami_release", "builder_ssh_timeout", fallback="10m") or "10m",
        "chef_skip_install": conf.getboolean("ami_release", "chef_preinstalled", fallback=False),
    }


def key_pair_name(rid: str) -> str:
    """The builder's temporary key pair, named after the release so a retry can find it."""
    return f"packer-{rid}"[:255]


class BakeAmiOperator(Ec2ClientHookMixin, ReleaseOperatorMixin, AwsBaseOperator[EC2Hook]):
    """
    Run Packer on the release's bundle and return the AMI per region.

    Packer builds the bundle's Packer files with the bundle's cookbooks (never this worker's
    checkout), from the vendor image preflight chose. Secrets are read from Vault here, at bake
    time, and reach Packer only through its environment. The builder runs in a security group
    this task makes for the release (no port opened for the no-communicator source; the
    communicator port from ``[ami_release] builder_ingress_cidrs`` otherwise) with a key pair
    named after the release.

    Idempotent: a retry of the same DAG run first looks for the AMI an earlier try built (by
    its ReleaseId tag) and reuses it; before and after Packer, it removes what a killed try may
    have left (builder instances, the key pair, the security group).

    :param plan: the ReleasePlan from preflight.
    :param vault_conn_id: the Vault connection (AppRole) the bake secrets are read with.
    :param packer_timeout: seconds before Packer is interrupted (it then cleans up).
    :param gates: task ids this bake runs beside that must pass (the Terraform check; a
        rollback's mark_rolled_back). When one fails, Packer is interrupted (it removes its
        builder), the release's leftovers are removed and the bake fails naming that task; an
        AMI of a release refused there is deregistered by ``record``.
    :param gate_poll_seconds: how often the gates' states are read while Packer runs.
    """

    aws_hook_class = EC2Hook
    template_fields: Sequence[str] = aws_template_fields("plan")
    ui_color = "#fdf1e1"
    iam_role = "bake"
    runs_on_toolchain = True  # routing.py puts it on the app's toolchain queue
    # the task's own calls; Packer's are hooks/packer.py PACKER_IAM_ACTIONS
    iam_actions = (
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:CreateSecurityGroup",
        "ec2:CreateTags",
        "ec2:DeleteKeyPair",
        "ec2:DeleteSecurityGroup",
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        "ec2:DescribeKeyPairs",
        "ec2:DescribeSecurityGroups",
        "ec2:TerminateInstances",
        "s3:GetObject",
        "sts:AssumeRole",  # Packer runs as the app's role (catalog aws.role_arn)
    )

    def __init__(
        self,
        *,
        plan: Any,
        vault_conn_id: str = "vault_default",
        packer_timeout: float = 3 * 3600,
        gates: Sequence[str] = (),
        gate_poll_seconds: float = 3.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.vault_conn_id = vault_conn_id
        self.packer_timeout = packer_timeout
        self.gates = list(gates)
        self.gate_poll_seconds = gate_poll_seconds
        self._packer: PackerHook | None = None
        self._packer_seconds: float | None = None

    def tool_seconds(self) -> dict[str, float]:
        """Packer's time in this step (with the bundle's unpacking), for the step's phase."""
        return {} if self._packer_seconds is None else {"packer": self._packer_seconds}

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease import bundle, chef
        from amirelease.aws import tool_environment
        from amirelease.handoffs import ReleasePlan
        from amirelease.hooks.packer import PackerHook, sysprep_problem
        from amirelease.hooks.vault import PipelineSecrets
        from amirelease.ledger import ledger_bucket
        from amirelease.release import build_ami_tags
        from amirelease.retry import tool_pushback_error

        plan = ReleasePlan.from_xcom(self.plan)
        app = plan.app_spec
        region = plan.home_region
        ec2 = self.clients.ec2_release(region)
        rid = plan.release_id
        watch = GateWatch(context.get("ti"), self.gates, self.log)
        self._stop_if_gate_failed(watch, plan, "before Packer started: nothing was built")

        existing = self._find_release_amis(plan)
        if existing and set(existing) >= set(plan.image_regions):
            self.log.info("Reusing AMI(s) %s built for release %s by an earlier try of this run", existing, rid)
            self._cleanup(ec2, rid, "left by an earlier try")
            self._ensure_tags(existing, build_ami_tags(plan))  # a try killed before Packer tagged it
            return self._result(plan, existing, reused=True)

        self._cleanup(ec2, rid, "left by an earlier try")
        source = packer_source(plan.platform)
        reach = builder_settings()
        tags = build_ami_tags(plan)
        net = plan.network(region)
        store = bundle.BundleStore(self.clients.s3(), ledger_bucket())
        secrets = PipelineSecrets(self.vault_conn_id).read(app.name, app.secrets)  # masked as read
        if source == "unprovisioned":
            self.log.warning(
                "Building source 'unprovisioned' ([ami_release] packer_source): Packer uses no communicator, so the "
                "Chef run list %s is NOT applied. Set packer_source = provisioned for a real account.",
                " ".join(plan.run_list),
            )
        self._packer = PackerHook()
        started = time.monotonic()
        try:
            with bundle.unpacked(store, plan.bundle.key, plan.bundle.sha256) as root:
                if plan.platform == "windows" and source == "provisioned":
                    problem = sysprep_problem(root / "packer" / "windows.pkr.hcl")
                    if problem:  # before anything is made in AWS
                        raise BakeError(
                            f"{problem}: a Windows image must be generalised by Sysprep as its very last step",
                            resource=f"bundle {plan.bundle.key}",
                            fix="make EC2Launch's sysprep the last line of the last powershell provisioner in "
                            "include/packer/windows.pkr.hcl (nothing may run after it), and release again",
                        )
                group_id = self._builder_security_group(ec2, plan, source)
                variables = {
                    "region": region,
                    "ami_regions": [r for r in plan.image_regions if r != region],
                    "ec2_endpoint": self.hook.conn_config.get_service_endpoint_url("ec2") or "",
                    "source_ami": plan.source_ami,
                    "ami_name": plan.ami_name,
                    "ami_description": f"{app.name} {plan.version} ({rid}) built from {plan.source_ami}",
                    "instance_type": app.instance_type,
                    "subnet_id": net.subnet_ids[0],
                    "security_group_id": group_id,
                    "temporary_key_pair_name": key_pair_name(rid),
                    **reach,
                    "tags": tags,
                    "run_tags": {
                        TAG_RELEASE_ID: rid,
                        TAG_PURPOSE: PURPOSE_BUILDER,
                        TAG_APP: app.name,
                        TAG_PIPELINE_RUN: tags[TAG_PIPELINE_RUN],
                        TAG_NAME: f"packer-builder {rid}",
                    },
                    "run_list": list(plan.run_list),
                    "cookbooks_dir": str(root / "cookbooks"),
                    "app_version": plan.version,
                    "chef_node_json": chef.encoded(
                        chef.node_json(
                            app=app.name,
                            version=plan.version,
                            run_list=list(plan.run_list),
                            attributes=app.attributes,
                            release=chef.identity(
                                app=app.name,
                                version=plan.version,
                                release_id=rid,
                                pipeline_run=plan.pipeline_run,
                                source_ami=plan.source_ami,
                                bundle_sha256=plan.bundle.sha256,
                                source=plan.source,
                                re_release_of=plan.re_release_of,
                            ),
                        )
                    ),
                }
                packer = self._packer
                result, stopped_by = self._build_watching(
                    watch,
                    lambda: packer.build(
                        root / "packer",
                        variables,
                        secrets=secrets.values,
                        only=f"amazon-ebs.{source}",
                        aws_env=tool_environment(
                            self.hook, region, role_arn=app.aws_role, app=app.name, release_id=rid
                        ),
                        on_line=lambda line: self.log.info("packer | %s", line),
                        timeout=self.packer_timeout,
                    ),
                )
        finally:
            self._packer = None
            secrets.clear()
            # Packer removes its builder on success, error and SIGINT; this is the safety net for a
            # Packer that was killed, and it removes the security group and key pair of this release.
            self._cleanup(ec2, rid, "after the build")
        self._packer_seconds = time.monotonic() - started
        self.log.info("packer finished in %.1fs with exit code %s", self._packer_seconds, result.returncode)
        if stopped_by:
            self._refused(stopped_by, plan, "Packer was interrupted and its builder removed")
        self._stop_if_gate_failed(watch, plan, "after Packer: record deregisters the AMI")
        if result.returncode != 0 or not result.artifacts:
            pushback = tool_pushback_error(
                "\n".join(result.errors),
                tool="Packer",
                step="bake",
                region=plan.home_region,
                changed="Packer removes its builder when it fails; this step removed its security group and key pair.",
            )
            if pushback is not None:
                raise pushback
            raise BakeError(
                f"Packer failed for {app.name} {plan.version} (exit {result.returncode}"
                f"{', interrupted' if result.interrupted else ''}): "
                f"{result.errors[-1] if result.errors else 'no artifact'}",
                resource=f"bundle {plan.bundle.key}",
                fix="read the 'packer |' lines above; fix the template, cookbooks or base image and release again",
            )
        self._ensure_tags(result.artifacts, tags)
        return self._result(plan, result.artifacts, reused=False)

    def on_kill(self) -> None:
        if self._packer is not None:
            self._packer.interrupt()

    def _build_watching(self, watch: GateWatch, build: Callable[[], PackerResult]) -> tuple[PackerResult, str | None]:
        """Run Packer; while it runs, read the gates' states and interrupt it when one failed.
        Returns (Packer's result, the gate that stopped it or None)."""
        if not watch.gates:
            return build(), None
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = build()
            except BaseException as exc:  # noqa: BLE001 - handed to the task's thread below
                box["error"] = exc

        worker = threading.Thread(target=run, name="packer-build", daemon=True)
        worker.start()
        stopped_by: str | None = None
        while worker.is_alive():
            worker.join(self.gate_poll_seconds)
            if worker.is_alive() and stopped_by is None:
                stopped_by = watch.failed()
                if stopped_by and self._packer is not None:
                    self.log.warning("%s failed: interrupting Packer (it removes its builder)", stopped_by)
                    self._packer.interrupt()
        if "error" in box:
            raise box["error"]
        return box["result"], stopped_by

    def _stop_if_gate_failed(self, watch: GateWatch, plan: ReleasePlan, where: str) -> None:
        failed = watch.failed()
        if failed:
            self._refused(failed, plan, where)

    def _refused(self, gate: str, plan: ReleasePlan, what: str) -> None:
        raise BakeError(
            f"the bake of {plan.app} {plan.version} was stopped because {gate} failed ({what})",
            resource=f"release {plan.release_id}",
            fix=f"the release's reason is {gate}'s error: read that task's log, fix it and release again",
        )

    # -- helpers: the EC2 work is the hook's (hooks/ec2_release.py) -----------------------------
    def _find_release_amis(self, plan: ReleasePlan) -> dict[str, str]:
        """The AMI per region an earlier try of this release built (a pending one waited for)."""
        found = {
            region: self.clients.ec2_release(region).release_image(plan.release_id, name=plan.ami_name)
            for region in plan.image_regions
        }
        return {region: ami for region, ami in found.items() if ami}

    def _builder_security_group(self, ec2: Ec2ReleaseHook, plan: ReleasePlan, source: str) -> str:
        """The builder's security group: no ingress without a communicator; the communicator port
        from the configured CIDRs (default: the VPC's) otherwise. Never 0.0.0.0/0 by default."""
        net = plan.network(plan.home_region)
        port: int | None = None
        cidrs: list[str] = []
        if source == "provisioned":
            cidrs = [
                c.strip() for c in conf.get("ami_release", "builder_ingress_cidrs", fallback="").split(",") if c.strip()
            ] or [net.vpc_cidr]
            port = COMMUNICATOR_PORT[plan.platform]
        group_id = ec2.create_security_group(
            name=f"ami-builder-{plan.release_id}",
            description=f"Packer builder of {plan.release_id} (deleted after the bake)",
            vpc_id=net.vpc_id,
            tags={
                TAG_RELEASE_ID: plan.release_id,
                TAG_PURPOSE: PURPOSE_BUILDER,
                TAG_APP: plan.app,
                TAG_NAME: f"packer-builder {plan.release_id}",
            },
            tcp_port=port,
            cidrs=cidrs,
        )
        if port is not None:
            self.log.info("Builder security group %s: tcp/%s from %s", group_id, port, ", ".join(cidrs))
        else:
            self.log.info("Builder security group %s: no ingress (no communicator)", group_id)
        return group_id

    def _cleanup(self, ec2: Ec2ReleaseHook, rid: str, why: str) -> None:
        """Builder instances, the key pair and the security group of this release, if any. Every
        step is tried; the first error is raised at the end (a retry finishes the job)."""
        steps: tuple[Callable[[], object], ...] = (
            lambda: ec2.remove_release_instances(rid, PURPOSE_BUILDER, what="Packer builder instance(s)", why=why),
            lambda: ec2.delete_key_pair_named(key_pair_name(rid), why=why),
            lambda: ec2.delete_release_security_groups(rid, PURPOSE_BUILDER, why=why),
        )
        errors: list[ClientError] = []
        for step in steps:
            try:
                step()
            except ClientError as exc:
                self.log.warning("Cleanup of %s (%s) incomplete: %s", rid, why, aws_error_code(exc))
                errors.append(exc)
        if errors:
            raise errors[0]

    def _ensure_tags(self, artifacts: dict[str, str], tags: dict[str, str]) -> None:
        for region, ami in artifacts.items():
            ec2 = self.clients.ec2_release(region)
            have = ec2.image_tags(ami)
            missing = {k: v for k, v in tags.items() if have.get(k) != v}
            if missing:
                ec2.tag(ami, missing)
            self.log.info(
                "AMI %s in %s tagged: %s", ami, region, ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))
            )

    def _result(self, plan: ReleasePlan, artifacts: dict[str, str], reused: bool) -> dict[str, Any]:
        from amirelease.handoffs import BakeResult

        return BakeResult(
            release_id=plan.release_id,
            ami_id=artifacts[plan.home_region],
            amis=dict(artifacts),
            source_ami=plan.source_ami,
            reused=reused,
            provisioned=packer_source(plan.platform) == "provisioned",
        ).to_xcom()
