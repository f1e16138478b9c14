"""Preflight: every check that can fail, before anything is created in AWS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from botocore.exceptions import ClientError

from amirelease import catalog
from amirelease.errors import ConfigError, PreflightError
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.hooks.vault import PipelineSecrets
from amirelease.ledger import Ledger, ledger_bucket
from amirelease.operators.base import RegionalHooksMixin, group_launch_template
from amirelease.release import ami_name, file_digest, newest_image, release_id

if TYPE_CHECKING:
    from airflow.sdk import Context


def resolve_base_image(ec2, owners: Sequence[str], name_pattern: str, architecture: str, own_account: str) -> dict:
    """Newest available vendor image matching the catalog; never one of our own AMIs."""
    if own_account in owners:
        raise ConfigError(
            f"base_image.owners includes this account ({own_account})",
            fix="AMIs are built from a vendor base image, never from another of ours: use the vendor's owner id",
        )
    images = ec2.describe_images(
        Owners=list(owners),
        Filters=[
            {"Name": "name", "Values": [name_pattern]},
            {"Name": "state", "Values": ["available"]},
            {"Name": "architecture", "Values": [architecture]},
        ],
    )["Images"]
    images = [i for i in images if i.get("OwnerId") != own_account]
    best = newest_image(images)
    if best is None:
        raise PreflightError(
            f"no available base image named '{name_pattern}' ({architecture}) owned by {', '.join(owners)}",
            fix="correct base_image in the app's catalog file, or check the region offers that image",
        )
    if best.get("RootDeviceType") != "ebs":
        raise PreflightError(
            f"base image {best['ImageId']} is not EBS-backed", fix="amazon-ebs builds need an EBS-backed source image"
        )
    return best


class ReleasePreflightOperator(RegionalHooksMixin, AwsBaseOperator[AutoScalingHook]):
    """Validate the app, version, targets, base image and Vault secrets; return the release plan.

    The plan (plain data, no secrets) is what the later tasks act on. Nothing in AWS or
    Vault is changed here.
    """

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields(
        "app", "version", "git_ref", "notes", "re_release_of", "triggered_by", "run_list"
    )
    ui_color = "#e8f4fa"

    def __init__(
        self,
        *,
        app: str,
        version: str,
        git_ref: str | None = None,
        notes: str | None = None,
        re_release_of: str | None = None,
        triggered_by: str | None = None,
        run_list: list[str] | str | None = None,
        vault_conn_id: str = "vault_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run_list = run_list
        self.app = app
        self.version = version
        self.git_ref = git_ref
        self.notes = notes
        self.re_release_of = re_release_of
        self.triggered_by = triggered_by
        self.vault_conn_id = vault_conn_id

    def execute(self, context: Context) -> dict:
        app = catalog.get_app(self.app)
        version = catalog.validate_version(self.version)
        self.log.info(
            "Preflight for %s %s (%s, toolchain %s): no AWS resource is created here",
            app.name,
            version,
            app.platform,
            app.toolchain,
        )

        run_list = catalog.validate_run_list(app, self.run_list) if self.run_list else app.run_list
        if self.run_list:
            self.log.info("Using the recorded run list %s (catalog today: %s)", run_list, app.run_list)
        Ledger(S3Hook(**self._common(None)).conn, ledger_bucket()).check()

        for t in app.targets:
            self._check_target(app, t)

        own_account = self.hook.account_id
        ec2 = self.ec2(app.home_region)
        base = resolve_base_image(ec2, app.base_image_owners, app.base_image_name, app.architecture, own_account)
        self.log.info(
            "Base image: %s %s (owner %s, created %s)",
            base["ImageId"],
            base.get("Name"),
            base.get("OwnerId"),
            base.get("CreationDate"),
        )

        keys = PipelineSecrets(self.vault_conn_id).read(app.name, app.secrets, check_only=True)
        self.log.info("Vault: %d secret key(s) present for %s: %s", len(keys), app.name, ", ".join(sorted(keys)) or "-")

        run_id = context["run_id"]
        rid = release_id(app.name, version, run_id)
        template = catalog.packer_template(app.platform)
        plan = {
            "app": app.name,
            "version": version,
            "release_id": rid,
            "ami_name": ami_name(app.name, version, rid),
            "platform": app.platform,
            "toolchain": app.toolchain,
            "run_list": run_list,
            "cookbook_versions": catalog.cookbook_versions(run_list),
            "packer_template": str(template.relative_to(catalog.INCLUDE_DIR.parent)),
            "packer_template_digest": file_digest(template),
            "source_ami": base["ImageId"],
            "source_ami_name": base.get("Name", ""),
            "home_region": app.home_region,
            "regions": app.regions,
            "targets": [t.__dict__ for t in app.targets],
            "account_id": own_account,
            "pipeline_run": run_id,
            "git_ref": self.git_ref or None,
            "notes": self.notes or None,
            "re_release_of": self.re_release_of or None,
            "triggered_by": self.triggered_by or None,
        }
        self.log.info("Release plan: %s", {k: v for k, v in plan.items() if k != "targets"})
        return plan

    def _check_target(self, app: catalog.App, t: catalog.Target) -> None:
        asg = self.autoscaling(t.region)
        try:
            group = asg.describe_group(t.auto_scaling_group)
        except ClientError as exc:
            raise PreflightError(
                f"cannot describe Auto Scaling group '{t.auto_scaling_group}' in {t.region}: {exc.response['Error']['Code']}",
                fix="check the AWS connection's permissions (autoscaling:Describe*) and region",
            ) from None
        if group is None:
            raise PreflightError(
                f"Auto Scaling group '{t.auto_scaling_group}' does not exist in {t.region}",
                resource=app.source_file,
                fix="create the group, or correct targets[].auto_scaling_group in the app's catalog file",
            )
        spec = group_launch_template(group)
        if not spec or t.launch_template not in (spec.get("LaunchTemplateName"), spec.get("LaunchTemplateId")):
            used = (spec or {}).get("LaunchTemplateName") or group.get("LaunchConfigurationName") or "nothing"
            raise PreflightError(
                f"group '{t.auto_scaling_group}' in {t.region} uses launch template '{used}', not '{t.launch_template}'",
                resource=app.source_file,
                fix="point targets[].launch_template at the template the group uses (launch configurations are not supported: migrate the group to a launch template)",
            )
        try:
            self.ec2(t.region).describe_launch_templates(
                LaunchTemplateNames=[spec["LaunchTemplateName"]] if spec.get("LaunchTemplateName") else [],
                LaunchTemplateIds=[spec["LaunchTemplateId"]] if not spec.get("LaunchTemplateName") else [],
            )
        except ClientError as exc:
            raise PreflightError(
                f"launch template '{t.launch_template}' of group '{t.auto_scaling_group}' not found in {t.region} ({exc.response['Error']['Code']})",
                fix="create the launch template or correct the catalog",
            ) from None
        active = asg.active_refresh(t.auto_scaling_group)
        if active:
            self.log.warning(
                "Group %s already has instance refresh %s in state %s; the roll-out will attach to it only if it is this run's, otherwise fail",
                t.auto_scaling_group,
                active["InstanceRefreshId"],
                active["Status"],
            )
        self.log.info(
            "Target ok: %s/%s (%d instances, template %s)",
            t.region,
            t.auto_scaling_group,
            len(group.get("Instances", [])),
            t.launch_template,
        )
