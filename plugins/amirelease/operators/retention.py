"""AmiRetentionOperator: one region's retention run (list -> decide -> check -> report -> apply)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from amirelease.errors import ConfigError, RetentionError
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.operators.base import Ec2ClientHookMixin

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import Context
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_rbin import RecycleBinClient
    from mypy_boto3_s3 import S3Client

# What a person may choose on a manual run (the DAG param `mode`), and how it reads in the form.
MODES = {
    "policy": "As the policy file says (its dry_run setting)",
    "dry_run": "Dry run: decide and report, change nothing",
    "apply": "Apply: mark, unmark and deregister now",
}


def run_time(context: Context | dict[str, Any]) -> datetime | None:
    """The time the run is dated: its data interval end, else logical date, else run_after."""
    for key in ("data_interval_end", "logical_date"):
        value = context.get(key)
        if isinstance(value, datetime):
            return value.astimezone(UTC)
    run_after = getattr(context.get("dag_run"), "run_after", None)
    return run_after.astimezone(UTC) if isinstance(run_after, datetime) else None


def effective_now(dated: datetime | None, wall_clock: datetime) -> tuple[datetime, str | None]:
    """("now" for the decision, a note for the log when the run's date and the wall clock differ).

    "Now" is the earlier of the two: a run dated in the future (a trigger with a future
    data_interval_end or logical date) acts as of the wall clock, never later; a run
    re-executed later (retry, clear) decides as of its own, earlier time.
    """
    if dated is None:
        return wall_clock, None
    if dated > wall_clock:
        return wall_clock, (
            f"This run is dated {dated:%Y-%m-%d %H:%M:%S} UTC, later than the wall clock "
            f"({wall_clock:%Y-%m-%d %H:%M:%S} UTC): it decides as of the wall clock, never of a future time."
        )
    if (wall_clock - dated).total_seconds() >= 60:
        return dated, (
            f"This run is dated {dated:%Y-%m-%d %H:%M:%S} UTC, earlier than the wall clock "
            f"({wall_clock:%Y-%m-%d %H:%M:%S} UTC): it decides as of its own date."
        )
    return dated, None


def run_now(context: Context | dict[str, Any], wall_clock: datetime | None = None) -> datetime:
    """The run's "now": the earlier of its date and the wall clock (see :func:`effective_now`)."""
    return effective_now(run_time(context), wall_clock or datetime.now(UTC))[0]


def coerce_dry_run(value: Any) -> bool | None:
    """The run's mode as the policy override: None = as the policy says, True = dry run, False = apply.

    Accepts the form's modes (``policy``, ``dry_run``, ``apply``), booleans, empty, and
    ``true``/``false`` strings; anything else is refused before any AWS call.
    """
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "none", "null", "policy"):
        return None
    if text in ("true", "1", "yes", "dry_run", "dry run", "dry-run"):
        return True
    if text in ("false", "0", "no", "apply"):
        return False
    raise ConfigError(
        f"the run mode must be one of {', '.join(MODES)}, got {value!r}",
        resource="param mode",
        fix="choose 'policy' (as the policy file says), 'dry_run' (report only) or 'apply'",
    )


def _run_id(context: Context | dict[str, Any], now: datetime) -> str:
    run_id = context.get("run_id")
    if not run_id and context.get("dag_run") is not None:
        run_id = getattr(context["dag_run"], "run_id", None)
    return str(run_id or f"manual__{now:%Y-%m-%dT%H:%M:%S}")


class AmiRetentionOperator(Ec2ClientHookMixin, AwsBaseOperator[EC2Hook]):
    """
    Apply the AMI retention policy to one region.

    Lists what the decision needs (own images; the groups with the launch-template versions
    and configurations they use; the instances of candidate images only), concurrently;
    decides with the pure :func:`amirelease.retention.decide.decide`; stops, changing
    nothing, when the account view is inconsistent (:mod:`amirelease.retention.consistency`);
    rechecks the images about to go; logs the report table; writes the report to S3; applies
    the plan (unless dry run or stopped) and returns a bounded summary.

    "Now" is the earlier of the run's date and the wall clock (both are logged when they differ).

    :param policy_path: the policy YAML (default ``include/policies/ami-retention.yaml``).
    :param mode: ``policy``/None (as the policy's ``dry_run`` says), ``dry_run``/True, ``apply``/False.
    :param dry_run: the same as ``mode`` (the earlier name); ``mode`` wins when both are given.
    """

    aws_hook_class = EC2Hook
    template_fields: Sequence[str] = aws_template_fields("policy_path", "mode")
    ui_color = "#f3e4c8"

    # Everything this operator can call, for the IAM policy of the role that runs it.
    iam_role: ClassVar[str] = "retention"
    # (EnableImageDeprecation/DisableImageDeprecation: the mark as an AWS deprecation,
    # retention/deprecation.py; DescribeImageReferences: AWS's second opinion, aws_opinion.py;
    # rbin ListRules/GetRule: is there a Recycle Bin window, recycle_aws.py)
    iam_actions: ClassVar[tuple[str, ...]] = (
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeLaunchConfigurations",
        "ec2:CreateTags",
        "ec2:DeleteSnapshot",
        "ec2:DeleteTags",
        "ec2:DeregisterImage",
        "ec2:DescribeImageReferences",
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        "ec2:DescribeLaunchTemplateVersions",
        "ec2:DisableImage",  # the scream test (scream.py), when the policy turns it on
        "ec2:DisableImageDeprecation",
        "ec2:EnableImage",
        "ec2:EnableImageDeprecation",
        "rbin:GetRule",
        "rbin:ListRules",
        "s3:PutObject",
        "sts:GetCallerIdentity",
    )

    def __init__(
        self,
        *,
        policy_path: str | None = None,
        mode: bool | str | None = None,
        dry_run: bool | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.policy_path = policy_path
        self.mode = mode if mode is not None else dry_run

    @cached_property
    def autoscaling_hook(self) -> AutoScalingHook:
        return AutoScalingHook(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
        )

    @cached_property
    def rbin_client(self) -> RecycleBinClient:
        """The Recycle Bin (rbin) client of the same connection and region."""
        from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

        return AwsGenericHook["RecycleBinClient"](
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
            client_type="rbin",
        ).conn

    @cached_property
    def s3_hook(self) -> S3Hook:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id, verify=self.verify, config=self.botocore_config)

    def _aws_opinion(self, ec2: EC2Client, plan: Any, policy: Any, undo: dict[str, Any]) -> Any:
        """AWS's own reference check over the images about to go (aws_opinion.py), before the
        recheck: an image AWS finds referenced is kept and its slot goes to the next deferred one.
        A failing check deregisters nothing this run (marks go on)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from amirelease.retention import aws_opinion, recycle
        from amirelease.retention.decide import Action

        if plan.stopped or not policy.aws_reference_check or not plan.of(Action.DEREGISTER):
            return plan
        try:
            plan, opinion, kept = aws_opinion.second_opinion(ec2, plan, depth=policy.reference_version_depth)
        except (ClientError, BotoCoreError) as exc:
            reason = f"AWS's reference check (DescribeImageReferences) failed: {exc}"
            self.log.warning("%s", reason)
            undo["aws_references"] = {"available": False, "checked": 0, "note": reason}
            return recycle.hold_back(plan, reason)
        undo["aws_references"] = opinion.as_report(kept)
        if kept:
            self.log.warning("AWS finds references our own check did not: %d image(s) kept (disagreements)", kept)
        elif opinion.note:
            self.log.info("%s; relying on our own reference check", opinion.note)
        return plan

    def _recycle_bin(self, plan: Any, policy: Any, undo: dict[str, Any]) -> Any:
        """Deregister only into a Recycle Bin window (recycle.py): no covering rule, nothing goes."""
        from amirelease.retention import recycle, recycle_aws
        from amirelease.retention.decide import Action

        if plan.stopped or not plan.of(Action.DEREGISTER):
            return plan
        if not policy.recycle_bin:
            undo["recycle_bin"] = {"enabled": False, "covered": False, "reason": "recycle_bin: off in the policy"}
            return plan
        coverage = recycle_aws.check(self.rbin_client, policy)
        undo["coverage_obj"] = coverage
        undo["recycle_bin"] = coverage.as_report(policy)
        if not coverage.covered:
            self.log.warning("Deregistering nothing: %s", coverage.reason)
            return recycle.hold_back(plan, coverage.reason)
        self.log.info("Recycle Bin: %s", coverage.reason)
        return plan

    def execute(self, context: Context) -> dict[str, Any]:
        from amirelease.ledger import ledger_bucket
        from amirelease.retention import aws, recycle_aws, scream
        from amirelease.retention.consistency import checked
        from amirelease.retention.decide import Action, decide
        from amirelease.retention.policy import load_policy
        from amirelease.retention.report import build_report, render_table, summary, write_report

        # Bad input fails here, before any AWS call.
        policy = load_policy(self.policy_path)
        dry_run = coerce_dry_run(self.mode)
        bucket = ledger_bucket()

        wall_clock = datetime.now(UTC)
        now, note = effective_now(run_time(context), wall_clock)
        if note:
            self.log.warning("%s", note)
        region = self.region_name or self.hook.region_name or ""
        run_id = _run_id(context, now)
        ec2: EC2Client = self.hook.conn  # the provider's EC2Hook is untyped; built as a client (Ec2ClientHookMixin)
        autoscaling = self.autoscaling_hook.conn
        s3: S3Client = self.s3_hook.conn  # the provider's S3Hook is untyped

        collected = aws.collect(ec2, autoscaling, policy, now, account_id=lambda: self.hook.account_id)
        plan = decide(
            collected.images,
            collected.usage,
            now,
            policy,
            account_id=collected.account_id,
            dry_run=dry_run,
            marked_at=wall_clock,  # a new mark gives the full grace from when it is written
        )
        plan = checked(plan, collected.view, policy)
        undo: dict[str, Any] = {}
        plan = self._aws_opinion(ec2, plan, policy, undo)
        if not plan.stopped and not plan.dry_run and plan.of(Action.DEREGISTER):
            try:
                plan = aws.recheck(ec2, autoscaling, plan, policy, account_id=collected.account_id)
            except aws.ListingFailed as exc:
                plan = plan.stop(f"a listing failed or was cut short: {exc} (while rechecking the images to go)")
        plan = self._recycle_bin(plan, policy, undo)
        self.log.info("%s", render_table(plan, region=region, wall_clock=wall_clock))

        deleted_snapshots: list[str] = []
        applied = aws.apply_plan(
            ec2,
            plan,
            policy,
            before_deregister=(
                (lambda leaving: recycle_aws.tag_for_bin(ec2, leaving, policy)) if policy.recycle_bin else None
            ),
            deleted_snapshots=deleted_snapshots,
        )
        failed = aws.failed_images(applied)
        gone = [d for d in plan.to_apply().get(Action.DEREGISTER, []) if d.image_id not in failed]
        if gone:
            recycle_aws.record_deregistered(
                s3,
                bucket,
                region,
                gone,
                deleted_snapshots=deleted_snapshots,
                at=wall_clock,
                run_id=run_id,
                coverage_=undo.get("coverage_obj"),
            )
        if policy.mark_deprecates and not plan.dry_run and not plan.stopped:
            applied.update(aws.sync_deprecations(ec2, plan, collected.images, wall_clock))
        # the scream test (scream.py): after the deregistrations, so it never touches what went
        applied.update(scream.sync(ec2, plan, collected.images, wall_clock, policy))
        if failed:
            plan = replace(
                plan,
                decisions=tuple(
                    replace(d, warnings=(*d.warnings, "deregistration failed; the next run tries again"))
                    if d.image_id in failed and d.action is Action.DEREGISTER
                    else d
                    for d in plan.decisions
                ),
            )
        report = build_report(
            plan,
            region=region,
            run_id=run_id,
            wall_clock=wall_clock,
            policy_source=policy.source,
            applied={k: v for k, v in applied.items()},
            recycle_bin=undo.get("recycle_bin"),
        )
        if undo.get("aws_references") is not None:
            report["aws_references"] = undo["aws_references"]
        uris = write_report(s3, bucket, report, now)
        self.log.info("Report: %s (and %s)", uris["json"], uris["csv"])

        if plan.stopped:
            from amirelease.errors import THROTTLING_CODES

            throttled = any(f"({code})" in plan.stopped for code in THROTTLING_CODES)
            raise RetentionError(
                f"retention stopped, nothing was changed: {plan.stopped}",
                resource=f"region {region}, policy {policy.source}",
                fix=(
                    "AWS is throttling this account and region beyond every retry: a throttled listing is never read "
                    "as a whole one, so nothing was marked or deregistered. The next scheduled run tries again; if "
                    "it keeps happening, look for another heavy caller of the EC2 API here (Cloud Custodian, "
                    "scripts, a second retention deployment) or lower [ami_release] retention_api_share"
                )
                if throttled
                else "the account view looked wrong; read the reason, check the AWS side (permissions, "
                "throttling, Auto Scaling) and let the next run try again; the consistency checks are "
                "set under `consistency` in the policy",
            )
        if applied["errors"]:
            raise RetentionError(
                f"{len(applied['errors'])} action(s) failed: {'; '.join(applied['errors'][:10])}",
                resource=f"region {region}",
                fix="the rest of the plan was applied; the next run retries the failed images",
            )
        self.log.info("Applied: %s", {k: v for k, v in applied.items() if k != "errors"})
        if applied.get("scream_test_errors"):
            self.log.warning("Scream test not applied (the next run tries again): %s", applied["scream_test_errors"])
        if applied.get("deprecation_errors"):
            self.log.warning("Deprecations not written (the next run tries again): %s", applied["deprecation_errors"])
        return summary(plan, region=region, max_items=policy.report_max_items, applied=applied, report_uris=uris)
