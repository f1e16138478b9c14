"""Record: the release's outcome on the AMI (tags) and in the ledger (S3), then the lock
is released. Runs whatever happened upstream (trigger_rule=all_done)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from amirelease.errors import ConfigError, ReleaseError
from amirelease.ledger import Ledger, ReleaseLock, ledger_bucket, utcnow
from amirelease.operators.base import Ec2ClientHookMixin, RegionalHooksMixin, tag_list
from amirelease.release import TAG_STATUS, tag_value

if TYPE_CHECKING:
    from airflow.sdk import Context

FAILED_STATES = ("failed", "upstream_failed")


def _by_task(states: dict[str, str | None], order: list[str]) -> dict[str, list]:
    """Group states by task id; mapped task instances come keyed '<task_id>_<map_index>'."""
    out: dict[str, list] = {}
    for key, state in states.items():
        task_id = key
        if key not in order:
            base, _, idx = key.rpartition("_")
            if idx.isdigit() and base in order:
                task_id = base
        out.setdefault(task_id, []).append(state)
    return out


def outcome_of(states: dict[str, str | None], order: list[str]) -> tuple[str, str | None]:
    """('succeeded', None) or ('failed', first failed task in pipeline order). Pure."""
    grouped = _by_task(states, order)
    for task_id in order:
        if "failed" in grouped.get(task_id, []):
            return "failed", task_id
    for task_id, task_states in grouped.items():  # tasks before the pipeline (e.g. a rollback's)
        if task_id not in order and "failed" in task_states:
            return "failed", task_id
    for task_id in order:
        if any(s in FAILED_STATES for s in grouped.get(task_id, [])):
            return "failed", task_id
    return "succeeded", None


def build_record(
    *,
    dag_id: str,
    run_id: str,
    params: dict,
    plan: dict | None,
    bake: dict | None,
    smoke: dict | None,
    rollout: list | None,
    verify: dict | None,
    outcome: str,
    failed_task: str | None,
    reason: str | None,
    started_at: str | None,
) -> dict:
    """The ledger document (pure). Only non-secret inputs: plan, AWS ids, results."""
    plan = plan or {}
    return {
        "app": plan.get("app") or params.get("app"),
        "version": plan.get("version") or params.get("version"),
        "release_id": plan.get("release_id"),
        "kind": "re-release" if plan.get("re_release_of") else "release",
        "re_release_of": plan.get("re_release_of"),
        "outcome": outcome,
        "failed_task": failed_task,
        "failure_reason": reason,
        "amis": (bake or {}).get("amis", {}),
        "source_ami": plan.get("source_ami"),
        "source_ami_name": plan.get("source_ami_name"),
        "platform": plan.get("platform"),
        "toolchain": plan.get("toolchain"),
        "run_list": plan.get("run_list"),
        "cookbook_versions": plan.get("cookbook_versions"),
        "packer_template": plan.get("packer_template"),
        "packer_template_digest": plan.get("packer_template_digest"),
        "git_ref": plan.get("git_ref"),
        "targets": plan.get("targets"),
        "launch_template_versions": [
            {k: r[k] for k in ("region", "auto_scaling_group", "launch_template_id", "launch_template_version")}
            for r in rollout or []
        ],
        "refreshes": [{k: r.get(k) for k in ("region", "auto_scaling_group", "refresh_id")} for r in rollout or []],
        "smoke_test": smoke,
        "verification": verify,
        "triggered_by": plan.get("triggered_by"),
        "reason": plan.get("notes") or params.get("notes") or params.get("reason"),
        "dag_id": dag_id,
        "pipeline_run": run_id,
        "started_at": started_at,
        "finished_at": utcnow(),
        "forensic_hold": None,
    }


class RecordReleaseOperator(Ec2ClientHookMixin, RegionalHooksMixin, AwsBaseOperator[EC2Hook]):
    """Tag the AMI with the outcome, write the ledger record, release the app's lock and,
    on success, make the new launch-template version the default. Fails itself when the
    release failed, so the DAG run's state is the release's."""

    aws_hook_class = EC2Hook
    template_fields: Sequence[str] = aws_template_fields("task_order")
    ui_color = "#f0f0f0"

    def __init__(
        self,
        *,
        task_order: list[str],
        bake_task_ids: list[str],
        plan_task_id: str = "preflight",
        rollout_task_id: str = "roll_out",
        verify_task_id: str = "verify",
        smoke_task_id: str = "smoke_test",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.task_order = task_order
        self.bake_task_ids = bake_task_ids
        self.plan_task_id = plan_task_id
        self.rollout_task_id = rollout_task_id
        self.verify_task_id = verify_task_id
        self.smoke_task_id = smoke_task_id

    def execute(self, context: Context) -> dict:
        ti = context["ti"]
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
        outcome, failed_task = outcome_of(states, self.task_order)
        reason = ti.xcom_pull(task_ids=failed_task, key="failure") if failed_task else None
        if isinstance(reason, list):
            reason = next((r for r in reason if r), None)
        plan = ti.xcom_pull(task_ids=self.plan_task_id)
        bake = next((b for b in (ti.xcom_pull(task_ids=t) for t in self.bake_task_ids) if b), None)
        rollout = ti.xcom_pull(task_ids=self.rollout_task_id) or []
        verify = ti.xcom_pull(task_ids=self.verify_task_id)
        smoke = ti.xcom_pull(task_ids=self.smoke_task_id)
        dag_run = context["dag_run"]
        record = build_record(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            params=dict(context["params"]),
            plan=plan,
            bake=bake,
            smoke=smoke,
            rollout=rollout,
            verify=verify,
            outcome=outcome,
            failed_task=failed_task,
            reason=reason,
            started_at=dag_run.start_date.strftime("%Y-%m-%dT%H:%M:%SZ")
            if getattr(dag_run, "start_date", None)
            else None,
        )
        try:
            self._record(record, bake, rollout, outcome, failed_task, plan)
        finally:
            if plan:
                self._release_lock(plan["app"], ti)
        if outcome != "succeeded":
            raise ReleaseError(
                f"release {record['release_id']} failed at task '{failed_task}': {reason or 'see that task’s log'}",
                fix=f"open the log of '{failed_task}'; the ledger record says the same",
            )
        return record

    def _record(
        self, record: dict, bake: dict | None, rollout: list, outcome: str, failed_task: str | None, plan: dict | None
    ) -> None:
        if bake:
            tags = {
                TAG_STATUS: "released" if outcome == "succeeded" else "failed",
                "ReleaseOutcomeAt": record["finished_at"],
            }
            if failed_task:
                tags["FailedTask"] = tag_value(failed_task)
            for region, ami in bake["amis"].items():
                self.ec2(region).create_tags(Resources=[ami], Tags=tag_list(tags))
                self.log.info("AMI %s (%s): %s", ami, region, tags)
        if outcome == "succeeded":
            for r in rollout:
                self.ec2(r["region"]).modify_launch_template(
                    LaunchTemplateId=r["launch_template_id"], DefaultVersion=str(r["launch_template_version"])
                )
                self.log.info(
                    "Launch template %s default version is now %s",
                    r["launch_template_id"],
                    r["launch_template_version"],
                )
        if plan is None:
            self.log.warning("No release plan (preflight failed): nothing was changed in AWS; no ledger record written")
            return
        try:
            key = Ledger(S3Hook(**self._common(None)).conn, ledger_bucket()).put(record)
            self.log.info("Ledger record written: s3://%s/%s", ledger_bucket(), key)
        except ConfigError as exc:
            self.log.error("Ledger not written: %s", exc)
        self.log.info(
            "Release record: outcome=%s failed_task=%s amis=%s",
            record["outcome"],
            record["failed_task"],
            record["amis"],
        )

    def _release_lock(self, app: str, ti) -> None:
        try:
            lock = ReleaseLock(S3Hook(**self._common(None)).conn, ledger_bucket(), app)
            if lock.release(ti.dag_id, ti.run_id):
                self.log.info("Release lock for %s released", app)
        except ConfigError:
            pass
