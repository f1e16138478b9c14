"""AmiRetentionOperator: one region's retention run (list -> decide -> report -> apply)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook
from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from amirelease.errors import ConfigError, RetentionError
from amirelease.operators.base import Ec2ClientHookMixin

if TYPE_CHECKING:
    from airflow.sdk import Context


def run_now(context: Context) -> datetime:
    """The run's "now": its data interval end / logical date, not the wall clock.

    A run re-executed later (retry, clear, backfill) decides as of its own time, and
    tests make time pass by choosing the logical date. Falls back to the wall clock
    only for runs without either (a manual run with no logical date).
    """
    for key in ("data_interval_end", "logical_date"):
        value = context.get(key)
        if value is not None:
            return value.astimezone(UTC)
    dag_run = context.get("dag_run")
    if dag_run is not None and getattr(dag_run, "run_after", None) is not None:
        return dag_run.run_after.astimezone(UTC)
    return datetime.now(UTC)


def coerce_dry_run(value: Any) -> bool | None:
    """None/'' -> None (use the policy); bools and 'true'/'false' strings as given."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "none", "null"):
        return None
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"dry_run must be true, false or empty, got {value!r}", resource="param dry_run")


class AmiRetentionOperator(Ec2ClientHookMixin, AwsBaseOperator[EC2Hook]):
    """
    Apply the AMI retention policy to one region.

    Lists own images, live instances, Auto Scaling groups, the launch-template
    versions they use and launch configurations (paginated), decides with the pure
    :func:`amirelease.retention.decide.decide`, logs the full report table, applies
    the plan in batches (unless dry run or the safety cap blocks it) and returns a
    bounded summary.

    :param policy_path: the policy YAML (default ``include/policies/ami-retention.yaml``).
    :param dry_run: override the policy's ``dry_run`` (None: use the policy).
    """

    aws_hook_class = EC2Hook
    template_fields: Sequence[str] = aws_template_fields("policy_path", "dry_run")
    ui_color = "#f3e4c8"

    def __init__(self, *, policy_path: str | None = None, dry_run: bool | str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.policy_path = policy_path
        self.dry_run = dry_run

    @cached_property
    def autoscaling_hook(self) -> AwsGenericHook:
        return AwsGenericHook(
            client_type="autoscaling",
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease.retention import aws
        from amirelease.retention.decide import decide
        from amirelease.retention.policy import load_policy
        from amirelease.retention.report import render_table, summary

        policy = load_policy(self.policy_path)
        dry_run = coerce_dry_run(self.dry_run)
        now = run_now(context)
        region = self.region_name or self.hook.region_name
        ec2 = self.hook.conn
        account_id = self.hook.account_id

        images, usage = aws.collect(ec2, self.autoscaling_hook.conn, policy)
        plan = decide(images, usage, now, policy, account_id=account_id, dry_run=dry_run)
        if not plan.dry_run and not plan.blocked:
            plan = aws.recheck(ec2, plan, usage, policy, account_id=account_id)
        self.log.info("%s", render_table(plan, region=region))

        if plan.blocked:
            raise RetentionError(
                f"safety cap: {plan.blocked}; nothing was changed",
                resource=f"region {region}, policy {policy.source}",
                fix="inspect the report above; if the deregistrations are intended, raise "
                "max_deregistrations_per_run for one run, or protect the images",
            )
        applied = aws.apply_plan(ec2, plan, policy)
        result = summary(plan, region=region, max_items=policy.report_max_items, applied=applied)
        if applied["errors"]:
            raise RetentionError(
                f"{len(applied['errors'])} action(s) failed: {'; '.join(applied['errors'][:10])}",
                resource=f"region {region}",
                fix="the rest of the plan was applied; the next run retries the failed images",
            )
        self.log.info("Applied: %s", {k: v for k, v in applied.items() if k != "errors"})
        return result
