"""Roll-out: a new launch-template version per group, then one instance refresh per group;
and the wait for it, deferred to the triggerer or blocking, with the same result."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.amazon.aws.utils.waiter_with_logging import wait
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException
from botocore.exceptions import ClientError

from amirelease import catalog
from amirelease.errors import RolloutError
from amirelease.hooks.autoscaling import ACTIVE_REFRESH_STATES, AutoScalingHook
from amirelease.operators.base import RegionalHooksMixin, group_launch_template
from amirelease.triggers.instance_refresh import STATUS_QUERIES, InstanceRefreshCompleteTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

PREFERENCE_KEYS = {
    "min_healthy_percentage": "MinHealthyPercentage",
    "max_healthy_percentage": "MaxHealthyPercentage",
    "instance_warmup": "InstanceWarmup",
    "checkpoint_percentages": "CheckpointPercentages",
    "checkpoint_delay": "CheckpointDelay",
    "skip_matching": "SkipMatching",
    "auto_rollback": "AutoRollback",
}


def refresh_preferences(refresh: dict) -> dict:
    """Catalog refresh settings -> StartInstanceRefresh Preferences (pure)."""
    prefs = {aws: refresh[ours] for ours, aws in PREFERENCE_KEYS.items() if ours in refresh}
    prefs.setdefault("SkipMatching", True)
    return prefs


def _desired_version(refresh: dict) -> str | None:
    return str(((refresh.get("DesiredConfiguration") or {}).get("LaunchTemplate") or {}).get("Version") or "") or None


class RollOutOperator(RegionalHooksMixin, AwsBaseOperator[AutoScalingHook]):
    """For every target group: a launch-template version with the new AMI and an instance
    refresh to it (DesiredConfiguration). Never starts a second refresh on a group: an
    active refresh is attached to when it is this release's, and is an error otherwise."""

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields("plan", "bake")
    ui_color = "#f3e8fb"

    def __init__(self, *, plan: dict | str, bake: dict | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.bake = bake

    def execute(self, context: Context) -> list[dict]:
        plan, bake = self.plan, self.bake
        app = catalog.get_app(plan["app"])
        prefs = refresh_preferences(app.refresh)
        timeout = int(app.refresh.get("timeout_minutes", 60))
        out = []
        for t in plan["targets"]:
            out.append(self._roll_out(plan, t, bake["amis"][t["region"]], prefs, timeout))
        return out

    def _roll_out(self, plan: dict, t: dict, ami: str, prefs: dict, timeout: int) -> dict:
        region, group_name, rid = t["region"], t["auto_scaling_group"], plan["release_id"]
        asg = self.autoscaling(region)
        ec2 = self.ec2(region)
        group = asg.describe_group(group_name)
        if group is None:
            raise RolloutError(
                f"Auto Scaling group '{group_name}' disappeared from {region}", fix="restore it or correct the catalog"
            )
        spec = group_launch_template(group) or {}
        lt_id = (
            spec.get("LaunchTemplateId")
            or ec2.describe_launch_templates(LaunchTemplateNames=[spec["LaunchTemplateName"]])["LaunchTemplates"][0][
                "LaunchTemplateId"
            ]
        )

        version = self._find_version(ec2, lt_id, rid)
        if version is None:
            source_version = spec.get("Version") or "$Default"
            version = ec2.create_launch_template_version(
                LaunchTemplateId=lt_id,
                SourceVersion=source_version,
                VersionDescription=rid,
                LaunchTemplateData={"ImageId": ami},
            )["LaunchTemplateVersion"]["VersionNumber"]
            self.log.info(
                "%s: launch template %s version %s created from %s with ImageId %s",
                group_name,
                lt_id,
                version,
                source_version,
                ami,
            )
        else:
            self.log.info(
                "%s: reusing launch template %s version %s made by an earlier try", group_name, lt_id, version
            )

        refreshes = asg.refreshes(group_name)
        active = next((r for r in refreshes if r["Status"] in ACTIVE_REFRESH_STATES), None)
        mine = [r for r in refreshes if _desired_version(r) == str(version)]
        if active is not None:
            if _desired_version(active) == str(version):
                self.log.info(
                    "%s: attaching to refresh %s (%s) started by an earlier try",
                    group_name,
                    active["InstanceRefreshId"],
                    active["Status"],
                )
                refresh_id = active["InstanceRefreshId"]
            else:
                raise RolloutError(
                    f"an instance refresh ({active['InstanceRefreshId']}, {active['Status']}, started {active.get('StartTime')}) "
                    f"is already in progress on group '{group_name}' and is not this release's",
                    resource=f"{region}/{group_name}",
                    fix=f"wait for it to finish, or cancel it (aws autoscaling cancel-instance-refresh --auto-scaling-group-name {group_name}), then retry this task",
                )
        elif mine and mine[0]["Status"] == "Successful":
            refresh_id = mine[0]["InstanceRefreshId"]
            self.log.info("%s: refresh %s of this release already succeeded", group_name, refresh_id)
        else:
            desired = {"LaunchTemplateId": lt_id, "Version": str(version)}
            try:
                refresh_id = asg.start_refresh(group_name, desired, prefs)
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                if code == "InstanceRefreshInProgress":
                    raise RolloutError(
                        f"another instance refresh started on '{group_name}' meanwhile",
                        resource=f"{region}/{group_name}",
                        fix="wait for it, then retry this task",
                    ) from None
                raise RolloutError(
                    f"StartInstanceRefresh on '{group_name}' failed: {code}: {exc.response['Error'].get('Message')}",
                    resource=f"{region}/{group_name}",
                    fix="check the group and the preferences in the catalog",
                ) from None
            self.log.info(
                "%s: instance refresh %s started to %s v%s with %s", group_name, refresh_id, lt_id, version, prefs
            )
        return {
            "region": region,
            "auto_scaling_group": group_name,
            "refresh_id": refresh_id,
            "launch_template_id": lt_id,
            "launch_template_version": int(version),
            "ami_id": ami,
            "timeout_minutes": timeout,
        }

    @staticmethod
    def _find_version(ec2, lt_id: str, rid: str) -> int | None:
        pages = ec2.get_paginator("describe_launch_template_versions").paginate(LaunchTemplateId=lt_id)
        for page in pages:
            for v in page["LaunchTemplateVersions"]:
                if v.get("VersionDescription") == rid:
                    return int(v["VersionNumber"])
        return None


class WaitForInstanceRefreshOperator(RegionalHooksMixin, AwsBaseOperator[AutoScalingHook]):
    """Wait for one group's refresh: deferred to the triggerer (default) or blocking.

    Both modes use the same waiter (waiters/autoscaling.json) and end the same way:
    Successful returns a summary; Failed, Cancelled or a rollback fails the task with
    AWS's StatusReason.
    """

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields("refresh")
    ui_color = "#f3e8fb"

    def __init__(
        self,
        *,
        refresh: dict | str,
        waiter_delay: int | None = None,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.refresh = refresh
        self.waiter_delay = waiter_delay
        self.deferrable = deferrable

    def _delay(self) -> int:
        if self.waiter_delay is not None:
            return int(self.waiter_delay)
        return conf.getint("ami_release", "refresh_poll_seconds", fallback=15)

    def _deferrable(self) -> bool:
        if self.deferrable is not None:
            return bool(self.deferrable)
        return conf.getboolean("operators", "default_deferrable", fallback=True)

    def execute(self, context: Context) -> dict | None:
        r = self.refresh
        delay = self._delay()
        attempts = max(1, int(r.get("timeout_minutes", 60) * 60 / delay))
        self.log.info(
            "Waiting for refresh %s of %s in %s (%s, every %ss, up to %s tries)",
            r["refresh_id"],
            r["auto_scaling_group"],
            r["region"],
            "deferred" if self._deferrable() else "blocking",
            delay,
            attempts,
        )
        if self._deferrable():
            self.defer(
                trigger=InstanceRefreshCompleteTrigger(
                    auto_scaling_group=r["auto_scaling_group"],
                    refresh_id=r["refresh_id"],
                    waiter_delay=delay,
                    waiter_max_attempts=attempts,
                    aws_conn_id=self.aws_conn_id,
                    region_name=r["region"],
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=delay * attempts + 300),
            )
        hook = self.autoscaling(r["region"])
        try:
            wait(
                waiter=hook.get_waiter("instance_refresh_complete"),
                waiter_delay=delay,
                waiter_max_attempts=attempts,
                args={"AutoScalingGroupName": r["auto_scaling_group"], "InstanceRefreshIds": [r["refresh_id"]]},
                failure_message=f"Instance refresh {r['refresh_id']} of {r['auto_scaling_group']} did not succeed",
                status_message=f"Instance refresh {r['refresh_id']} of {r['auto_scaling_group']} [status, % complete, instances to update, reason]",
                status_args=STATUS_QUERIES,
            )
        except AirflowException:  # the waiter helper's terminal failure; the real reason is on the refresh
            self._fail(hook, r)
        return self._summary(hook, r)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict:
        r = self.refresh
        hook = self.autoscaling(r["region"])
        if not event or event.get("status") != "success":
            self.log.error("Trigger reported: %s", (event or {}).get("message"))
            self._fail(hook, r)
        return self._summary(hook, r)

    def _fail(self, hook: AutoScalingHook, r: dict) -> None:
        found = hook.refreshes(r["auto_scaling_group"], [r["refresh_id"]])
        if not found:
            raise RolloutError(
                f"instance refresh {r['refresh_id']} of '{r['auto_scaling_group']}' not found",
                fix="AWS keeps refresh history for six weeks; check the id",
            )
        ref = found[0]
        raise RolloutError(
            f"instance refresh {r['refresh_id']} of '{r['auto_scaling_group']}' ended {ref['Status']} at {ref.get('PercentageComplete', 0)}%: {ref.get('StatusReason') or 'no reason given'}",
            resource=f"{r['region']}/{r['auto_scaling_group']}",
            fix="read the group's activity history; the AMI is kept. Release a fixed version or roll back (ami_rollback)",
        )

    def _summary(self, hook: AutoScalingHook, r: dict) -> dict:
        ref = hook.refreshes(r["auto_scaling_group"], [r["refresh_id"]])[0]
        if ref["Status"] != "Successful":
            self._fail(hook, r)
        self.log.info(
            "Refresh %s of %s: %s, %s%% complete",
            r["refresh_id"],
            r["auto_scaling_group"],
            ref["Status"],
            ref.get("PercentageComplete"),
        )
        return {**r, "status": ref["Status"], "percentage_complete": ref.get("PercentageComplete")}
