"""Bake: Packer builds the AMI from the vendor base image with the stacked run list."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.configuration import conf

from amirelease import catalog
from amirelease.errors import BakeError
from amirelease.hooks.packer import PackerHook
from amirelease.hooks.vault import PipelineSecrets
from amirelease.operators.base import Ec2ClientHookMixin, RegionalHooksMixin, tag_list, tags_dict
from amirelease.release import (
    TAG_PURPOSE,
    TAG_RELEASE_ID,
    build_ami_tags,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

BUILDER_PURPOSE = "ami-bake-builder"


def packer_source() -> str:
    """Which source of the template to build: 'provisioned' (SSH/WinRM + Chef) or
    'unprovisioned' (no communicator). Deployment configuration: [ami_release] packer_source."""
    value = conf.get("ami_release", "packer_source", fallback="provisioned")
    if value not in ("provisioned", "unprovisioned"):
        raise BakeError(
            f"[ami_release] packer_source = {value!r} is not valid", fix="use 'provisioned' or 'unprovisioned'"
        )
    return value


class BakeAmiOperator(Ec2ClientHookMixin, RegionalHooksMixin, AwsBaseOperator[EC2Hook]):
    """Run Packer for a release plan and return the AMI id per region.

    Idempotent: a retry of the same DAG run first looks for the AMI an earlier try
    built (by its ReleaseId tag) and reuses it. Secrets are read from Vault here, at
    bake time, and reach Packer only through its environment.
    """

    aws_hook_class = EC2Hook
    template_fields: Sequence[str] = aws_template_fields("plan")
    ui_color = "#fdf1e1"

    def __init__(
        self, *, plan: dict | str, vault_conn_id: str = "vault_default", packer_timeout: float = 3 * 3600, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.vault_conn_id = vault_conn_id
        self.packer_timeout = packer_timeout
        self._packer: PackerHook | None = None

    def execute(self, context: Context) -> dict:
        plan = self.plan
        app = catalog.get_app(plan["app"])
        region = plan["home_region"]
        ec2 = self.ec2(region)
        rid = plan["release_id"]

        existing = self._find_release_amis(plan)
        if existing and set(existing) >= set(plan["regions"]):
            self.log.info("Reusing AMI(s) %s built for release %s by an earlier try of this run", existing, rid)
            return self._result(plan, existing, reused=True)

        self._terminate_leftover_builders(ec2, rid)
        template = catalog.packer_template(app.platform)
        source = packer_source()
        tags = build_ami_tags(
            app=app.name,
            version=plan["version"],
            rid=rid,
            source_ami=plan["source_ami"],
            platform=app.platform,
            run_list=plan["run_list"],
            pipeline_run=plan["pipeline_run"],
            template_digest=plan["packer_template_digest"],
            git_ref=plan.get("git_ref"),
            re_release_of=plan.get("re_release_of"),
        )
        run_tags = {
            TAG_RELEASE_ID: rid,
            TAG_PURPOSE: BUILDER_PURPOSE,
            "App": app.name,
            "PipelineRun": tags["PipelineRun"],
            "Name": f"packer-builder {rid}",
        }
        variables = {
            "region": region,
            "ami_regions": [r for r in plan["regions"] if r != region],
            "ec2_endpoint": self.hook.conn_config.get_service_endpoint_url("ec2") or "",
            "source_ami": plan["source_ami"],
            "ami_name": plan["ami_name"],
            "ami_description": f"{app.name} {plan['version']} ({rid}) built from {plan['source_ami']}",
            "instance_type": app.instance_type,
            "subnet_id": self._builder_subnet(plan),
            "tags": tags,
            "run_tags": run_tags,
            "run_list": plan["run_list"],
            "cookbooks_dir": str(catalog.INCLUDE_DIR / "cookbooks"),
            "app_version": plan["version"],
        }
        secrets = PipelineSecrets(self.vault_conn_id).read(app.name, app.secrets)  # masked as read
        creds = self.hook.get_credentials(region_name=region)
        aws_env = {
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
        }
        if creds.token:
            aws_env["AWS_SESSION_TOKEN"] = creds.token
        if source == "unprovisioned":
            self.log.warning(
                "Building source 'unprovisioned' ([ami_release] packer_source): Packer uses no communicator, so the Chef run list %s is NOT applied. "
                "Set packer_source = provisioned for a real account.",
                plan["run_list"],
            )
        self._packer = PackerHook()
        started = time.monotonic()
        try:
            result = self._packer.build(
                template,
                variables,
                secrets=secrets,
                only=f"amazon-ebs.{source}",
                aws_env=aws_env,
                on_line=lambda line: self.log.info("packer | %s", line),
                timeout=self.packer_timeout,
            )
        finally:
            self._packer = None
            secrets.clear()
            # Packer removes its builder on success, error and SIGINT; this is the safety net
            # for a Packer that was SIGKILLed or crashed.
            self._terminate_leftover_builders(ec2, rid)
        self.log.info("packer finished in %.1fs with exit code %s", time.monotonic() - started, result.returncode)
        if result.returncode != 0 or not result.artifacts:
            raise BakeError(
                f"Packer failed for {app.name} {plan['version']} (exit {result.returncode}"
                f"{', interrupted' if result.interrupted else ''}): {result.errors[-1] if result.errors else 'no artifact'}",
                resource=str(template),
                fix="read the 'packer |' lines above; fix the template, cookbooks or base image and re-run",
            )
        self._ensure_tags(result.artifacts, tags)
        return self._result(plan, result.artifacts, reused=False)

    def on_kill(self) -> None:
        if self._packer is not None:
            self._packer.interrupt()

    # -- helpers ---------------------------------------------------------------------
    def _find_release_amis(self, plan: dict) -> dict[str, str]:
        found: dict[str, str] = {}
        for region in plan["regions"]:
            images = self.ec2(region).describe_images(
                Owners=["self"], Filters=[{"Name": f"tag:{TAG_RELEASE_ID}", "Values": [plan["release_id"]]}]
            )["Images"]
            images = [i for i in images if i["State"] in ("available", "pending")]
            if images:
                img = max(images, key=lambda i: i.get("CreationDate", ""))
                if img["State"] == "pending":
                    self.log.info("AMI %s from an earlier try is still pending; waiting", img["ImageId"])
                    self.ec2(region).get_waiter("image_available").wait(ImageIds=[img["ImageId"]])
                found[region] = img["ImageId"]
        return found

    def _terminate_leftover_builders(self, ec2, rid: str) -> None:
        reservations = ec2.describe_instances(
            Filters=[
                {"Name": f"tag:{TAG_RELEASE_ID}", "Values": [rid]},
                {"Name": f"tag:{TAG_PURPOSE}", "Values": [BUILDER_PURPOSE]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
            ]
        )["Reservations"]
        ids = [i["InstanceId"] for r in reservations for i in r["Instances"]]
        if ids:
            self.log.warning("Terminating leftover Packer builder instance(s) of %s: %s", rid, ids)
            ec2.terminate_instances(InstanceIds=ids)

    def _builder_subnet(self, plan: dict) -> str:
        t = plan["targets"][0]
        group = self.autoscaling(t["region"]).describe_group(t["auto_scaling_group"]) or {}
        subnets = [s for s in (group.get("VPCZoneIdentifier") or "").split(",") if s]
        return subnets[0] if subnets else ""

    def _ensure_tags(self, artifacts: dict[str, str], tags: dict[str, str]) -> None:
        for region, ami in artifacts.items():
            ec2 = self.ec2(region)
            image = ec2.describe_images(ImageIds=[ami])["Images"][0]
            have = tags_dict(image.get("Tags"))
            missing = {k: v for k, v in tags.items() if have.get(k) != v}
            if missing:
                ec2.create_tags(Resources=[ami], Tags=tag_list(missing))
            self.log.info(
                "AMI %s in %s tagged: %s", ami, region, ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))
            )

    def _result(self, plan: dict, artifacts: dict[str, str], reused: bool) -> dict:
        return {
            "release_id": plan["release_id"],
            "ami_id": artifacts[plan["home_region"]],
            "amis": artifacts,
            "source_ami": plan["source_ami"],
            "reused": reused,
        }
