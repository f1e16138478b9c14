"""Roll-out: one instance refresh per group, to the launch-template version the release's
Terraform apply produced; and the wait for it, deferred to the triggerer or blocking, with
the same result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils import validate_execute_complete_event
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.configuration import conf
from botocore.exceptions import ClientError

from amirelease.constants import ACTIVE_REFRESH_STATES
from amirelease.errors import RolloutError, aws_error, aws_error_code
from amirelease.hooks.autoscaling import AutoScalingHook
from amirelease.operators.base import ReleaseOperatorMixin

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mypy_boto3_autoscaling.type_defs import InstanceRefreshTypeDef, RefreshPreferencesTypeDef

    from amirelease.handoffs import InfrastructureResult, RefreshHandle, ReleasePlan

PREFERENCE_KEYS = {
    "min_healthy_percentage": "MinHealthyPercentage",
    "max_healthy_percentage": "MaxHealthyPercentage",
    "instance_warmup": "InstanceWarmup",
    "checkpoint_percentages": "CheckpointPercentages",
    "checkpoint_delay": "CheckpointDelay",
    "skip_matching": "SkipMatching",
    "auto_rollback": "AutoRollback",
}


def refresh_preferences(refresh: dict[str, Any]) -> RefreshPreferencesTypeDef:
    """Catalog refresh settings -> StartInstanceRefresh Preferences (pure)."""
    prefs = {aws: refresh[ours] for ours, aws in PREFERENCE_KEYS.items() if ours in refresh}
    prefs.setdefault("SkipMatching", True)
    # The keys are PREFERENCE_KEYS' values, the Preferences' own names; the values are the
    # catalog's, which its schema checks (catalog.py), so the dict is the TypedDict it is cast to.
    return cast("RefreshPreferencesTypeDef", prefs)


def _desired_version(refresh: Mapping[str, Any]) -> str | None:
    return str(((refresh.get("DesiredConfiguration") or {}).get("LaunchTemplate") or {}).get("Version") or "") or None


class RollOutOperator(ReleaseOperatorMixin, AwsBaseOperator[AutoScalingHook]):
    """
    Start one instance refresh per target group, to the launch template and version the
    release's Terraform apply output (Terraform owns the template: no version is made here).

    Never starts a second refresh on a group: an active refresh is attached to when it is
    this release's (same desired version), and is an error otherwise; a refresh of this
    release that already succeeded is reused.

    :param plan: the ReleasePlan from preflight.
    :param bake: the BakeResult (the AMI per region).
    :param infrastructure: the InfrastructureResult of apply_infrastructure.
    """

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields("plan", "bake", "infrastructure")
    ui_color = "#f3e8fb"
    iam_actions = ("autoscaling:DescribeInstanceRefreshes", "autoscaling:StartInstanceRefresh")

    def __init__(self, *, plan: Any, bake: Any, infrastructure: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.bake = bake
        self.infrastructure = infrastructure

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from amirelease.handoffs import BakeResult, InfrastructureResult, ReleasePlan

        plan = ReleasePlan.from_xcom(self.plan)
        baked = BakeResult.from_xcom(self.bake)
        infra = InfrastructureResult.from_xcom(self.infrastructure)
        app = plan.app_spec
        prefs = refresh_preferences(app.refresh)
        timeout = int(app.refresh.get("timeout_minutes", 60))
        return [
            self._roll_out(plan, t.region, t.auto_scaling_group, baked.amis[t.region], infra, prefs, timeout).to_xcom()
            for t in plan.targets
        ]

    def _roll_out(
        self,
        plan: ReleasePlan,
        region: str,
        group: str,
        ami: str,
        infra: InfrastructureResult,
        prefs: RefreshPreferencesTypeDef,
        timeout: int,
    ) -> RefreshHandle:
        from amirelease.handoffs import RefreshHandle

        applied = infra.region(region)
        lt_id, version = applied.launch_template_id, str(applied.launch_template_version)
        asg = self.clients.autoscaling(region)
        refreshes = asg.refreshes(group)
        active = next((r for r in refreshes if r["Status"] in ACTIVE_REFRESH_STATES), None)
        mine = [r for r in refreshes if _desired_version(r) == version]
        if active is not None:
            if _desired_version(active) != version:
                raise RolloutError(
                    f"an instance refresh ({active['InstanceRefreshId']}, {active['Status']}, started "
                    f"{active.get('StartTime')}) is already in progress on group '{group}' and is not this release's",
                    resource=f"{region}/{group}",
                    fix=f"wait for it to finish, or cancel it (aws autoscaling cancel-instance-refresh "
                    f"--auto-scaling-group-name {group}), then retry this task",
                )
            self.log.info(
                "%s: attaching to refresh %s (%s) started by an earlier try",
                group,
                active["InstanceRefreshId"],
                active["Status"],
            )
            refresh_id = active["InstanceRefreshId"]
        elif mine and mine[0]["Status"] == "Successful":
            refresh_id = mine[0]["InstanceRefreshId"]
            self.log.info("%s: refresh %s of this release already succeeded", group, refresh_id)
        else:
            try:
                refresh_id = asg.start_refresh(group, {"LaunchTemplateId": lt_id, "Version": version}, prefs)
            except ClientError as exc:
                code = aws_error_code(exc)
                if code == "InstanceRefreshInProgress":
                    raise RolloutError(
                        f"another instance refresh started on '{group}' meanwhile",
                        resource=f"{region}/{group}",
                        fix="wait for it, then retry this task",
                    ) from None
                raise RolloutError(
                    f"StartInstanceRefresh on '{group}' failed: {aws_error(exc)}",
                    resource=f"{region}/{group}",
                    fix="check the group and the refresh preferences in the catalog",
                ) from None
            self.log.info(
                "%s: instance refresh %s started to launch template %s version %s (AMI %s)",
                group,
                refresh_id,
                lt_id,
                version,
                ami,
            )
        return RefreshHandle(
            region=region,
            auto_scaling_group=group,
            refresh_id=refresh_id,
            launch_template_id=lt_id,
            launch_template_version=int(version),
            ami_id=ami,
            timeout_minutes=timeout,
        )


class WaitForInstanceRefreshOperator(ReleaseOperatorMixin, AwsBaseOperator[AutoScalingHook]):
    """
    Wait for one group's refresh: deferred to the triggerer (default) or blocking.

    Both modes poll the same waiter (waiters/autoscaling.json), log one short line per poll
    ("demo-web-asg 66 % · 1 to update · waiting at checkpoint 34 %") and end the same way:
    Successful returns the handle with its status; Failed, Cancelled or a rollback fails the
    task with AWS's StatusReason.

    :param refresh: a RefreshHandle from roll_out (one element of its list: this task is mapped).
    :param waiter_delay: the most seconds between polls, fewer near the refresh's end (default
        ``[ami_release] refresh_poll_seconds``).
    :param deferrable: defer to the triggerer (default ``[operators] default_deferrable``).
    """

    aws_hook_class = AutoScalingHook
    template_fields: Sequence[str] = aws_template_fields("refresh")
    ui_color = "#f3e8fb"
    iam_actions = ("autoscaling:DescribeInstanceRefreshes",)
    pushback_changed = "Waiting only reads: the instance refresh goes on in AWS, and a retry of this step follows it."

    def __init__(
        self, *, refresh: Any, waiter_delay: int | None = None, deferrable: bool | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.refresh = refresh
        self.waiter_delay = waiter_delay
        self.deferrable = deferrable

    def _delay(self) -> int:
        if self.waiter_delay is not None:
            return int(self.waiter_delay)
        return int(conf.getint("ami_release", "refresh_poll_seconds", fallback=15))

    def _deferrable(self) -> bool:
        if self.deferrable is not None:
            return bool(self.deferrable)
        return bool(conf.getboolean("operators", "default_deferrable", fallback=True))

    def execute(self, context: Context) -> dict[str, Any] | None:
        # the trigger module (Airflow's trigger base) loads when a task waits, not when a DAG file is parsed
        from amirelease.handoffs import RefreshHandle
        from amirelease.triggers.instance_refresh import InstanceRefreshCompleteTrigger, wait_blocking

        r = RefreshHandle.from_xcom(self.refresh)
        delay = self._delay()
        attempts = max(1, int(r.timeout_minutes * 60 / delay))
        self.log.info(
            "Waiting for %s to finish its instance refresh (%s, every %ss, sooner near its end, up to %s min; "
            "refresh %s)",
            r.auto_scaling_group,
            "deferred" if self._deferrable() else "blocking",
            delay,
            r.timeout_minutes,
            r.refresh_id,
        )
        if self._deferrable():
            # Poll once before deferring: a refresh that has already ended (a group whose
            # instances all match, as on the release that creates the fleet) needs no triggerer.
            # Deferring it anyway lets the trigger fire before the scheduler has seen the task
            # leave for deferral, and Airflow then fails a task that succeeded
            # (apache/airflow#66374, #72716); docs/architecture.md.
            hook = self.clients.autoscaling(r.region)
            found = hook.refreshes(r.auto_scaling_group, [r.refresh_id])
            if found and found[0]["Status"] not in ACTIVE_REFRESH_STATES:
                self.log.info("The refresh has already ended; no need to defer")
                return self._summary(hook, r, found)
            self.defer(
                trigger=InstanceRefreshCompleteTrigger(
                    auto_scaling_group=r.auto_scaling_group,
                    refresh_id=r.refresh_id,
                    handle=r.to_xcom(),  # a success ends this task on the triggerer, with the summary below
                    waiter_delay=delay,
                    waiter_max_attempts=attempts,
                    aws_conn_id=self.aws_conn_id,
                    region_name=r.region,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=delay * attempts + 300),
            )
        hook = self.clients.autoscaling(r.region)
        wait_blocking(hook, r.auto_scaling_group, r.refresh_id, delay, attempts, lambda line: self.log.info("%s", line))
        return self._summary(hook, r)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        from amirelease.handoffs import RefreshHandle

        # A failure resumes here (the error in words, from AWS's answer). A success ends the task on
        # the triggerer (TaskSuccessEvent with this summary as its XCom) and comes here only under
        # `dag.test()`, which resumes every deferral with the event's payload ("success").
        event = validate_execute_complete_event(event)
        r = RefreshHandle.from_xcom(self.refresh)
        if isinstance(event, dict) and event.get("status") != "success":
            self.log.error("%s", event.get("message"))
        return self._summary(self.clients.autoscaling(r.region), r)

    def _summary(
        self, hook: AutoScalingHook, r: RefreshHandle, found: list[InstanceRefreshTypeDef] | None = None
    ) -> dict[str, Any]:
        """The handle with the refresh's end state; fails on anything but Successful.
        ``found``: the DescribeInstanceRefreshes answer the caller already has (else asked here)."""
        from amirelease.triggers.instance_refresh import refresh_line

        if found is None:
            found = hook.refreshes(r.auto_scaling_group, [r.refresh_id])
        if not found:
            raise RolloutError(
                f"instance refresh {r.refresh_id} of '{r.auto_scaling_group}' not found",
                fix="AWS keeps refresh history for six weeks; check the id",
            )
        ref = found[0]
        if ref["Status"] != "Successful":
            raise RolloutError(
                f"instance refresh {r.refresh_id} of '{r.auto_scaling_group}' ended {ref['Status']} at "
                f"{ref.get('PercentageComplete', 0)}%: {ref.get('StatusReason') or 'no reason given'}",
                resource=f"{r.region}/{r.auto_scaling_group}",
                fix="read the group's activity history; the AMI is kept. Release a fixed version or roll back "
                "(ami_rollback)",
            )
        self.log.info("%s", refresh_line(r.auto_scaling_group, {"InstanceRefreshes": [ref]}))
        return r.ended(ref).to_xcom()
