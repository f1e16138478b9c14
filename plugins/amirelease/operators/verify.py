"""Verify: every in-service instance runs the new AMI, target groups are healthy, alarms OK."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from amirelease.alarms import alarm_states
from amirelease.errors import VerificationError
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.operators.base import ReleaseOperatorMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from amirelease.handoffs import GroupCheck


def _tg_name(arn: str) -> str:
    """'arn:...:targetgroup/demo-web-tg/0830...' -> 'demo-web-tg'."""
    return arn.rsplit("/", 2)[-2] if "/" in arn else arn


def evaluate_group(
    *,
    group: str,
    ami: str,
    instances: Sequence[Mapping[str, Any]],
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
        if state not in ("OK", "INSUFFICIENT_DATA"):
            problems.append(f"alarm {name} is {state}")
    return problems


def alarm_warnings(alarms: dict[str, str]) -> list[str]:
    """A new alarm has no data until its first period ends: a warning, not a failure (pure)."""
    return [f"alarm {n} has no data yet (INSUFFICIENT_DATA)" for n, s in alarms.items() if s == "INSUFFICIENT_DATA"]


class VerifyReleaseOperator(ReleaseOperatorMixin, AwsBaseOperator[AutoScalingHook]):
    """
    Verify the release in every refreshed group: each in-service instance runs the new AMI,
    enough of them are healthy (``verify.min_healthy_percent``), the group's target groups
    are healthy (``verify.target_group_health``) and the app's alarms (``verify.alarms``) are
    not in ALARM. A new alarm without data yet (INSUFFICIENT_DATA) is a warning.

    :param plan: the ReleasePlan from preflight.
    :param refreshes: the RefreshHandles from wait_for_refresh (its mapped outputs).
    """

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields("plan", "refreshes")
    ui_color = "#e6f7ee"
    pushback_changed = "Verify only reads: this step changed nothing in AWS; the roll-out it checks has finished."
    iam_actions = (
        "autoscaling:DescribeAutoScalingGroups",
        "cloudwatch:DescribeAlarms",
        "ec2:DescribeInstances",
        "elasticloadbalancing:DescribeTargetHealth",
    )

    def __init__(self, *, plan: Any, refreshes: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.refreshes = refreshes

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease.handoffs import GroupCheck, RefreshHandle, ReleasePlan, VerifySummary, from_xcom_list

        plan = ReleasePlan.from_xcom(self.plan)
        rules = plan.verify_rules  # the app's verify:, with the stage's own over it
        want_tg = rules.get("target_group_health", True)
        min_pct = int(rules.get("min_healthy_percent", 100))
        alarm_names = list(rules.get("alarms", []))
        checks: list[GroupCheck] = []
        problems: list[str] = []
        warnings: list[str] = []
        for r in from_xcom_list(RefreshHandle, self.refreshes):
            group = self.clients.autoscaling(r.region).describe_group(r.auto_scaling_group)
            instances = group.get("Instances", []) if group else []
            ids = [i["InstanceId"] for i in instances]
            images: dict[str, str] = {}
            if ids:
                pages = self.clients.ec2(r.region).get_paginator("describe_instances").paginate(InstanceIds=ids)
                for page in pages:
                    for res in page["Reservations"]:
                        images.update({i["InstanceId"]: i["ImageId"] for i in res["Instances"]})
            tg_health: dict[str, list[str]] = {}
            target_groups = group.get("TargetGroupARNs", []) if group else []
            if want_tg and target_groups:
                elb = self.clients.elbv2(r.region)
                for arn in target_groups:
                    desc = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
                    tg_health[arn] = [d["TargetHealth"]["State"] for d in desc]
            alarms: dict[str, str] = {}
            if alarm_names:
                found = alarm_states(self.clients.cloudwatch(r.region), alarm_names)
                alarms = {n: found.get(n, "MISSING") for n in alarm_names}
            problems += evaluate_group(
                group=r.auto_scaling_group,
                ami=r.ami_id,
                instances=instances,
                images=images,
                target_health=tg_health,
                alarms=alarms,
                min_healthy_percent=min_pct,
            )
            warnings += alarm_warnings(alarms)
            in_service = [i for i in instances if i.get("LifecycleState") == "InService"]
            on_new = sum(1 for i in in_service if images.get(i["InstanceId"]) == r.ami_id)
            check = GroupCheck(
                region=r.region,
                auto_scaling_group=r.auto_scaling_group,
                ami_id=r.ami_id,
                in_service=len(in_service),
                on_new_ami=on_new,
                target_groups_healthy=all(s.count("healthy") == len(s) for s in tg_health.values()),
                alarms=alarms,
            )
            checks.append(check)
            tgs = ", ".join(f"{_tg_name(a)} {s.count('healthy')}/{len(s)} healthy" for a, s in tg_health.items())
            self.log.info(
                "%s/%s: %d/%d in-service instances on the new AMI %s · target groups: %s · alarms: %s",
                r.region,
                r.auto_scaling_group,
                on_new,
                len(in_service),
                r.ami_id,
                tgs or "none checked",
                ", ".join(f"{n} {s}" for n, s in alarms.items()) or "none checked",
            )
        for w in warnings:
            self.log.warning("%s", w)
        if problems:
            raise VerificationError(
                "release verification failed: " + "; ".join(problems),
                fix="investigate the groups above; the previous AMI is not swapped back: release a fix or roll back "
                "(ami_rollback)",
            )
        self.log.info("Verified: %s %s runs in %d group(s), all checks passed", plan.app, plan.version, len(checks))
        return VerifySummary(
            groups=tuple(checks), problems=tuple(problems), warnings=tuple(warnings), verified=True
        ).to_xcom()
