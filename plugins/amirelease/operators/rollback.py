"""Rollback by roll-forward: pick the release to bake again, and hold the AMI it replaces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from amirelease import catalog
from amirelease.errors import PreflightError
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.ledger import Ledger, ledger_bucket, pick_rollback_target, utcnow
from amirelease.operators.base import RegionalHooksMixin, tag_list, tags_dict
from amirelease.release import TAG_RELEASE_ID, tag_value

if TYPE_CHECKING:
    from airflow.sdk import Context

HOLD_TAG = "ForensicHold"
HOLD_REASON_TAG = "ForensicHoldReason"


class ResolveRollbackTargetOperator(RegionalHooksMixin, AwsBaseOperator[AutoScalingHook]):
    """Find what the app's groups run now and the earlier good release to bake again.

    Refuses (before any change) when there is no earlier good release or its recorded
    inputs are incomplete."""

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields("app", "target", "reason")
    ui_color = "#fde8e8"

    def __init__(self, *, app: str, target: str | None = None, reason: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.target = target
        self.reason = reason

    def execute(self, context: Context) -> dict:
        app = catalog.get_app(self.app)
        if len((self.reason or "").strip()) < 10:
            raise PreflightError(
                "a rollback needs a reason of at least 10 characters",
                fix="say what is wrong with the current release; it goes in the ledger",
            )
        ledger = Ledger(S3Hook(**self._common(None)).conn, ledger_bucket())
        ledger.check()
        history = ledger.history(app.name)
        current = self._current(app)
        current_rid = current.get("release_id")
        self.log.info(
            "%s now runs %s (release %s)",
            app.name,
            current.get("amis"),
            current_rid or "unknown: not built by this pipeline",
        )
        target = pick_rollback_target(history, current_rid, (self.target or "").strip() or None)
        self.log.info(
            "Rolling forward to a re-release of %s %s (%s, built %s from %s, run list %s)",
            app.name,
            target["version"],
            target["release_id"],
            target.get("finished_at"),
            target.get("source_ami"),
            target["run_list"],
        )
        return {
            "app": app.name,
            "version": target["version"],
            "target_release_id": target["release_id"],
            "run_list": target["run_list"],
            "git_ref": target.get("git_ref") or "",
            "current_release_id": current_rid,
            "current_amis": current.get("amis", {}),
        }

    def _current(self, app: catalog.App) -> dict:
        """The AMI(s) in service in the app's groups and the release they belong to."""
        amis: dict[str, str] = {}
        rids = set()
        for t in app.targets:
            group = self.autoscaling(t.region).describe_group(t.auto_scaling_group)
            if group is None:
                raise PreflightError(
                    f"Auto Scaling group '{t.auto_scaling_group}' does not exist in {t.region}",
                    fix="correct the catalog",
                )
            ids = [i["InstanceId"] for i in group.get("Instances", []) if i.get("LifecycleState") == "InService"]
            if not ids:
                continue
            ec2 = self.ec2(t.region)
            images = {
                i["ImageId"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]
            }
            for image in ec2.describe_images(ImageIds=sorted(images))["Images"]:
                amis[t.region] = image["ImageId"]
                rid = tags_dict(image.get("Tags")).get(TAG_RELEASE_ID)
                if rid:
                    rids.add(rid)
        return {"amis": amis, "release_id": max(rids, default=None)}


class ForensicHoldOperator(RegionalHooksMixin, AwsBaseOperator[AutoScalingHook]):
    """Tag the AMI(s) being replaced with ForensicHold (the retention DAG never touches a held
    AMI) and note the hold in their ledger record. Skipped when the operator says no hold."""

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields("resolved", "hold", "reason")
    ui_color = "#fde8e8"

    def __init__(self, *, resolved: dict | str, hold: bool | str = True, reason: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resolved = resolved
        self.hold = hold
        self.reason = reason

    def execute(self, context: Context) -> dict | None:
        r = self.resolved
        if str(self.hold).lower() not in ("true", "1"):
            self.log.info("No forensic hold requested: %s stays subject to the retention policy", r["current_amis"])
            return None
        hold = {
            "placed_at": utcnow(),
            "by_run": context["run_id"],
            "dag_id": context["ti"].dag_id,
            "reason": self.reason,
        }
        tags = {HOLD_TAG: tag_value(f"rollback {hold['placed_at']}"), HOLD_REASON_TAG: tag_value(self.reason)}
        for region, ami in r["current_amis"].items():
            self.ec2(region).create_tags(Resources=[ami], Tags=tag_list(tags))
            self.log.info("Forensic hold placed on %s (%s): %s", ami, region, tags)
        if r.get("current_release_id"):
            ledger = Ledger(S3Hook(**self._common(None)).conn, ledger_bucket())
            if (
                ledger.update(r["app"], r["current_release_id"], forensic_hold={**hold, "amis": r["current_amis"]})
                is None
            ):
                self.log.warning("No ledger record for %s; the hold is on the AMI tags only", r["current_release_id"])
        return {**hold, "amis": r["current_amis"]}
