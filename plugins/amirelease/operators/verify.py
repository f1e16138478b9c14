"""Verify: every in-service instance runs the new AMI, target groups are healthy, alarms OK."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from amirelease import catalog
from amirelease.errors import VerificationError
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.operators.base import RegionalHooksMixin

if TYPE_CHECKING:
    from airflow.sdk import Context


def _tg_name(arn: str) -> str:
    """'arn:...:targetgroup/demo-web-tg/0830...' -> 'demo-web-tg'."""
    return arn.rsplit("/", 2)[-2] if "/" in arn else arn


def evaluate_group(
    *,
    group: str,
    ami: str,
    instances: list[dict],
    images: dict[str, str],
    target_health: dict[str, list[str]],
    alarms: dict[str, str],
    min_healthy_percent: int,
) -> list[str]:
    """Problems with one rolled-out group (pure; [] means verified).

    instances: the group's Instances (InstanceId, LifecycleState, HealthStatus)
    images: instance id -> its ImageId; target_health: tg arn -> health states of its targets
    alarms: alarm name -> state (missing alarms are reported)
    """
    problems = []
    in_service = [i for i in instances if i.get("LifecycleState") == "InService"]
    if not in_service:
        problems.append(f"{group}: no InService instance")
    stale = sorted(i["InstanceId"] for i in in_service if images.get(i["InstanceId"]) != ami)
    if stale:
        problems.append(f"{group}: {len(stale)} in-service instance(s) not on {ami}: {', '.join(stale[:10])}")
    healthy = [i for i in in_service if i.get("HealthStatus") == "Healthy"]
    if in_service and 100 * len(healthy) < min_healthy_percent * len(in_service):
        problems.append(f"{group}: {len(healthy)}/{len(in_service)} instances healthy, below {min_healthy_percent}%")
    for arn, states in target_health.items():
        ok = states.count("healthy")
        if not states or 100 * ok < min_healthy_percent * len(states):
            problems.append(f"{group}: target group {_tg_name(arn)}: {ok}/{len(states)} targets healthy")
    for name, state in alarms.items():
        if state != "OK":
            problems.append(f"alarm {name} is {state}")
    return problems


class VerifyReleaseOperator(RegionalHooksMixin, AwsBaseOperator[AutoScalingHook]):
    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields("plan", "refreshes")
    ui_color = "#e6f7ee"

    def __init__(self, *, plan: dict | str, refreshes: list | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.refreshes = refreshes

    def execute(self, context: Context) -> dict:
        plan = self.plan
        app = catalog.get_app(plan["app"])
        want_tg = app.verify.get("target_group_health", True)
        min_pct = int(app.verify.get("min_healthy_percent", 100))
        alarm_names = list(app.verify.get("alarms", []))
        summary: dict[str, Any] = {"groups": [], "problems": []}
        for r in self.refreshes:
            region, group_name, ami = r["region"], r["auto_scaling_group"], r["ami_id"]
            group = self.autoscaling(region).describe_group(group_name) or {}
            instances = group.get("Instances", [])
            ec2 = self.ec2(region)
            ids = [i["InstanceId"] for i in instances]
            images = {}
            if ids:
                for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=ids):
                    for res in page["Reservations"]:
                        images.update({i["InstanceId"]: i["ImageId"] for i in res["Instances"]})
            tg_health: dict[str, list[str]] = {}
            if want_tg and group.get("TargetGroupARNs"):
                elb = AwsBaseHook(client_type="elbv2", **self._common(region)).conn
                for arn in group["TargetGroupARNs"]:
                    desc = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
                    tg_health[arn] = [d["TargetHealth"]["State"] for d in desc]
            alarms: dict[str, str] = {}
            if alarm_names:
                cw = AwsBaseHook(client_type="cloudwatch", **self._common(region)).conn
                found = {
                    a["AlarmName"]: a["StateValue"] for a in cw.describe_alarms(AlarmNames=alarm_names)["MetricAlarms"]
                }
                alarms = {n: found.get(n, "MISSING") for n in alarm_names}
            problems = evaluate_group(
                group=group_name,
                ami=ami,
                instances=instances,
                images=images,
                target_health=tg_health,
                alarms=alarms,
                min_healthy_percent=min_pct,
            )
            in_service = [i for i in instances if i.get("LifecycleState") == "InService"]
            on_new = sum(1 for i in in_service if images.get(i["InstanceId"]) == ami)
            self.log.info(
                "%s/%s: %d/%d in-service instances on %s; target groups %s; alarms %s",
                region,
                group_name,
                on_new,
                len(in_service),
                ami,
                {_tg_name(a): f"{s.count('healthy')}/{len(s)} healthy" for a, s in tg_health.items()} or "-",
                alarms or "-",
            )
            summary["groups"].append(
                {
                    "region": region,
                    "auto_scaling_group": group_name,
                    "ami_id": ami,
                    "in_service": len(in_service),
                    "on_new_ami": on_new,
                    "target_groups_healthy": all(s.count("healthy") == len(s) for s in tg_health.values()),
                    "alarms": alarms,
                }
            )
            summary["problems"].extend(problems)
        if summary["problems"]:
            raise VerificationError(
                "release verification failed: " + "; ".join(summary["problems"]),
                fix="investigate the groups above; the previous AMI is not swapped back: release a fix or roll back (ami_rollback)",
            )
        summary["verified"] = True
        self.log.info("Verified: %s", summary)
        return summary
