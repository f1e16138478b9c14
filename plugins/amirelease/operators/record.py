"""Record: the release's outcome on the AMI (tags) so later runs can find the last good one."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Sequence

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from amirelease.errors import ReleaseError
from amirelease.operators.base import RegionalHooksMixin, tag_list
from amirelease.release import TAG_STATUS, tag_value

if TYPE_CHECKING:
    from airflow.sdk import Context

FAILED_STATES = ("failed", "upstream_failed")


def outcome_of(states: dict[str, str | None], order: list[str]) -> tuple[str, str | None]:
    """('succeeded', None) or ('failed', first failed task in pipeline order). Pure."""
    for task_id in order:
        if states.get(task_id) == "failed":
            return "failed", task_id
    for task_id in order:
        if states.get(task_id) in FAILED_STATES:
            return "failed", task_id
    return "succeeded", None


class RecordReleaseOperator(RegionalHooksMixin, AwsBaseOperator[EC2Hook]):
    """Runs whatever happened upstream (trigger_rule=all_done). Tags the AMI with the
    outcome and, on success, makes the new launch-template version the default. Fails
    itself when the release failed, so the DAG run's state is the release's."""

    aws_hook_class = EC2Hook
    template_fields: Sequence[str] = aws_template_fields("task_order")
    ui_color = "#f0f0f0"

    def __init__(self, *, task_order: list[str], bake_task_ids: list[str], plan_task_id: str = "preflight",
                 rollout_task_id: str = "roll_out", verify_task_id: str = "verify", smoke_task_id: str = "smoke_test",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task_order = task_order
        self.bake_task_ids = bake_task_ids
        self.plan_task_id = plan_task_id
        self.rollout_task_id = rollout_task_id
        self.verify_task_id = verify_task_id
        self.smoke_task_id = smoke_task_id

    @property
    def _hook_parameters(self) -> dict[str, Any]:
        return {**super()._hook_parameters, "api_type": "client_type"}

    def execute(self, context: Context) -> dict:
        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        outcome, failed_task = outcome_of(states, self.task_order)
        plan = ti.xcom_pull(task_ids=self.plan_task_id)
        bake = next((b for b in (ti.xcom_pull(task_ids=t) for t in self.bake_task_ids) if b), None)
        rollout = ti.xcom_pull(task_ids=self.rollout_task_id) or []
        verify = ti.xcom_pull(task_ids=self.verify_task_id)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = {
            "outcome": outcome,
            "failed_task": failed_task,
            "release_id": (plan or {}).get("release_id"),
            "app": (plan or {}).get("app"),
            "version": (plan or {}).get("version"),
            "amis": (bake or {}).get("amis", {}),
            "refreshes": rollout,
            "verification": verify,
            "recorded_at": now,
        }
        if bake:
            tags = {TAG_STATUS: "released" if outcome == "succeeded" else "failed", "ReleaseOutcomeAt": now}
            if failed_task:
                tags["FailedTask"] = tag_value(failed_task)
            for region, ami in bake["amis"].items():
                self.ec2(region).create_tags(Resources=[ami], Tags=tag_list(tags))
                self.log.info("AMI %s (%s): %s", ami, region, tags)
        if outcome == "succeeded":
            for r in rollout:
                self.ec2(r["region"]).modify_launch_template(LaunchTemplateId=r["launch_template_id"], DefaultVersion=str(r["launch_template_version"]))
                self.log.info("Launch template %s default version is now %s", r["launch_template_id"], r["launch_template_version"])
        self.log.info("Release record: %s", record)
        if outcome != "succeeded":
            raise ReleaseError(
                f"release {record['release_id'] or '(no plan)'} failed at task '{failed_task}'",
                fix=f"open the log of '{failed_task}' for the cause; nothing after it ran",
            )
        return record
