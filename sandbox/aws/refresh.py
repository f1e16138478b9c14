"""EC2 Auto Scaling instance refresh for moto (which has none: HTTP 500).

``StartInstanceRefresh``, ``DescribeInstanceRefreshes``, ``CancelInstanceRefresh``
and ``RollbackInstanceRefresh`` are added to moto's ``AutoScalingResponse``.
A refresh is a time-driven state machine advanced by the sandbox's ticker
thread (``tick_all``): every batch terminates old instances, launches their
replacements from the desired launch template version, and after
``refresh_batch_seconds`` of warm-up puts them InService and registers them
with the group's target groups.  See docs/sandbox.md for the exact semantics.
"""

from __future__ import annotations

import math
import traceback
import uuid
from datetime import timedelta
from typing import Any

from moto.autoscaling import models as as_models
from moto.autoscaling.exceptions import AutoscalingClientError, ValidationError
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult
from moto.core.utils import utcnow

from .state import RUNTIME

ACTIVE = {"Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking"}
REFRESHES: list[InstanceRefresh] = []

DEFAULT_PREFERENCES: dict[str, Any] = {
    "MinHealthyPercentage": 90,
    "SkipMatching": False,
    "AutoRollback": False,
    "ScaleInProtectedInstances": "Ignore",
    "StandbyInstances": "Ignore",
}


class InstanceRefreshInProgress(AutoscalingClientError):
    code = "InstanceRefreshInProgress"


class ActiveInstanceRefreshNotFound(AutoscalingClientError):
    code = "ActiveInstanceRefreshNotFound"


class IrreversibleInstanceRefresh(AutoscalingClientError):
    code = "IrreversibleInstanceRefresh"


def _version_number(lt: Any, version: Any) -> int:
    return int(lt.get_version(version if version is not None else "$Default").number)


class InstanceRefresh:
    def __init__(
        self,
        backend: Any,
        group: Any,
        strategy: str,
        desired: dict[str, Any] | None,
        preferences: dict[str, Any],
    ) -> None:
        self.id = str(uuid.uuid4())
        self.backend = backend
        self.group_name = group.name
        self.strategy = strategy
        self.status = "Pending"
        self.status_reason: str | None = None
        self.start_time = utcnow()
        self.end_time = None
        self.preferences = {**DEFAULT_PREFERENCES, **(preferences or {})}
        self.desired_configuration = desired or None
        self.rollback_details: dict[str, Any] | None = None

        if group.ec2_launch_template is None:
            raise ValidationError(
                "Instance refresh is only supported in the sandbox for groups that use a launch template."
            )
        ec2 = backend.ec2_backend
        # configuration the group has now (restored by a rollback)
        self.prev_lt = group.ec2_launch_template
        self.prev_version = group.launch_template_version
        self.prev_provided_version = group.provided_launch_template_version
        self.prev_number = _version_number(self.prev_lt, self.prev_version)
        # configuration the instances must end up on
        spec = (desired or {}).get("LaunchTemplate")
        if spec:
            if spec.get("LaunchTemplateId"):
                self.target_lt = ec2.get_launch_template(spec["LaunchTemplateId"])
            elif spec.get("LaunchTemplateName"):
                self.target_lt = ec2.get_launch_template_by_name(spec["LaunchTemplateName"])
            else:
                raise ValidationError(
                    "DesiredConfiguration.LaunchTemplate needs LaunchTemplateId or LaunchTemplateName."
                )
            self.target_version = spec.get("Version") or "$Default"
            self.target_provided_version = spec.get("Version")
        else:
            self.target_lt, self.target_version = self.prev_lt, self.prev_version
            self.target_provided_version = self.prev_provided_version
        self.target_number = _version_number(self.target_lt, self.target_version)

        capacity = group.desired_capacity or len(group.instance_states) or 1
        min_healthy = int(self.preferences.get("MinHealthyPercentage", 90))
        self.batch_size = max(1, capacity - math.ceil(capacity * min_healthy / 100))
        self.checkpoints = sorted(int(p) for p in self.preferences.get("CheckpointPercentages") or [])
        self.checkpoint_delay = float(self.preferences.get("CheckpointDelay", 3600) or 0)

        in_service = [s for s in group.instance_states if s.lifecycle_state == "InService"]
        if self.preferences.get("SkipMatching"):
            in_service = [s for s in in_service if not self._matches(s, group)]
        self.queue: list[str] = [s.instance.id for s in in_service]
        self.total = len(self.queue)
        self.done = 0
        self.inflight: list[str] = []
        self.ready_at = None
        self.wait_until = None
        self.new_ids: list[str] = []  # replacements launched by the forward phase
        self.launched = 0
        self.rollback_queue: list[str] = []
        self.rollback_total = 0
        self.rollback_done = 0

    # -- helpers -----------------------------------------------------------------------
    def _matches(self, state: Any, group: Any) -> bool:
        instance = state.instance
        recorded = getattr(instance, "sandbox_launch_template", None)
        if recorded is None:  # launched by moto itself, from the group's configuration
            recorded = (
                group.ec2_launch_template.id,
                _version_number(group.ec2_launch_template, group.launch_template_version),
            )
        return recorded == (self.target_lt.id, self.target_number)

    @property
    def group(self) -> Any:
        return self.backend.autoscaling_groups.get(self.group_name)

    @property
    def percentage(self) -> int:
        if self.total == 0:
            return 100
        return int(100 * self.done / self.total)

    @property
    def to_update(self) -> int:
        return len(self.queue) + len(self.inflight)

    def _launch(self, group: Any, lt: Any, number: int, count: int) -> list[str]:
        ec2 = self.backend.ec2_backend
        version = lt.get_version(number)
        subnets = group.vpc_zone_identifier.split(",") if group.vpc_zone_identifier else [None]
        tags = group.get_propagated_tags()
        tags[as_models.ASG_NAME_TAG] = group.name
        tags.update(version.instance_tags if hasattr(version, "instance_tags") else {})
        new_ids = []
        for _ in range(count):
            subnet_id = subnets[self.launched % len(subnets)]
            self.launched += 1
            placement = ec2.get_subnet(subnet_id).availability_zone if subnet_id else group.availability_zones[0]
            reservation = ec2.run_instances(
                version.image_id,
                1,
                version.user_data,
                version.security_groups,
                instance_type=version.instance_type,
                tags={"instance": dict(tags)},
                placement=placement,
                launch_template={"LaunchTemplateId": lt.id, "Version": str(number)},
                is_instance_type_default=False,
                subnet_id=subnet_id,
            )
            for instance in reservation.instances:
                instance.autoscaling_group = group
                instance.sandbox_launch_template = (lt.id, number)
                group.instance_states.append(
                    as_models.InstanceState(
                        instance,
                        lifecycle_state="Pending",
                        protected_from_scale_in=group.new_instances_protected_from_scale_in,
                        autoscaling_group=group,
                    )
                )
                new_ids.append(instance.id)
        return new_ids

    def _terminate(self, group: Any, ids: list[str]) -> None:
        if not ids:
            return
        gone = set(ids)
        group.instance_states = [s for s in group.instance_states if s.instance.id not in gone]
        self.backend.ec2_backend.terminate_instances(list(gone))
        self.backend.elbv2_backend.notify_terminate_instances(list(gone))
        self.backend.update_attached_elbs(group.name)

    def _start_batch(self, group: Any, queue: list[str], lt: Any, number: int, now: Any) -> None:
        batch, queue[:] = queue[: self.batch_size], queue[self.batch_size :]
        existing = {s.instance.id for s in group.instance_states}
        batch = [i for i in batch if i in existing]  # detached/terminated meanwhile: nothing to replace
        self._terminate(group, batch)
        self.inflight = self._launch(group, lt, number, len(batch)) if batch else []
        self.ready_at = now + timedelta(seconds=RUNTIME.config.refresh_batch_seconds)

    def _complete_batch(self, group: Any) -> None:
        ids = set(self.inflight)
        for state in group.instance_states:
            if state.instance.id in ids:
                state.lifecycle_state = "InService"
                state.health_status = "Healthy"
        self.backend.update_attached_target_groups(group.name)
        self.backend.update_attached_elbs(group.name)
        if self.status == "RollbackInProgress":
            self.rollback_done += len(self.inflight)
        else:
            self.done += len(self.inflight)
            self.new_ids.extend(self.inflight)
        self.inflight = []
        self.ready_at = None

    def _finish(self, status: str, now: Any) -> None:
        self.status = status
        self.end_time = now
        self.wait_until = None

    def _fail(self, reason: str, now: Any) -> None:
        self.status_reason = reason
        if self.preferences.get("AutoRollback") and self.desired_configuration:
            self._begin_rollback(reason, now)
        else:
            self._finish("Failed", now)

    def _begin_rollback(self, reason: str, now: Any) -> None:
        group = self.group
        if self.inflight and group is not None:
            self._complete_batch(group)  # counts as replaced; rolled back below
        self.status = "RollbackInProgress"
        self.wait_until = None
        existing = {s.instance.id for s in group.instance_states} if group else set()
        self.rollback_queue = [i for i in self.new_ids if i in existing]
        self.rollback_total = len(self.rollback_queue)
        self.rollback_done = 0
        self.rollback_details = {"RollbackReason": reason, "RollbackStartTime": now}

    # -- the state machine ------------------------------------------------------------
    def tick(self, now: Any) -> None:
        group = self.group
        if group is None:
            self._finish("Failed", now)
            self.status_reason = "The Auto Scaling group was deleted."
            return
        if self.status == "Pending":
            self.status = "InProgress"
        if self.inflight:
            if self.status != "Cancelling" and now < self.ready_at:
                return
            self._complete_batch(group)
        if self.status == "Cancelling":
            self._finish("Cancelled", now)
            return
        if self.status == "RollbackInProgress":
            if not self.rollback_queue:
                self._restore_previous(group)
                self._finish("RollbackSuccessful", now)
                return
            self._start_batch(group, self.rollback_queue, self.prev_lt, self.prev_number, now)
            return
        # forward phase (InProgress)
        if self.wait_until is not None:
            if now < self.wait_until:
                return
            self.wait_until = None
            self.status_reason = None
        fault = RUNTIME.faults.peek_refresh_fault(self.group_name)
        if fault is not None and self.percentage >= fault.percent and (self.done > 0 or fault.percent == 0):
            RUNTIME.faults.take_refresh_fault(self.group_name)
            self._fail(fault.reason, now)
            return
        if not self.queue:
            if self.desired_configuration and group.mixed_instances_policy is None:
                spec = {"LaunchTemplateId": self.target_lt.id}
                if self.target_provided_version is not None:
                    spec["Version"] = self.target_provided_version
                group._set_launch_configuration(None, spec, None)
            self.status_reason = None
            self._finish("Successful", now)
            return
        while self.checkpoints and self.checkpoints[0] <= self.percentage:
            reached = self.checkpoints.pop(0)
            if reached < 100 and self.done > 0:
                delay = self.checkpoint_delay * RUNTIME.config.checkpoint_delay_scale
                self.wait_until = now + timedelta(seconds=delay)
                self.status_reason = (
                    f"Waiting for checkpoint at {reached}% to pass: checkpoint delay of "
                    f"{int(self.checkpoint_delay)} seconds."
                )
                return
        self._start_batch(group, self.queue, self.target_lt, self.target_number, now)

    def _restore_previous(self, group: Any) -> None:
        if group.mixed_instances_policy is None:
            spec = {"LaunchTemplateId": self.prev_lt.id}
            if self.prev_provided_version is not None:
                spec["Version"] = self.prev_provided_version
            group._set_launch_configuration(None, spec, None)

    # -- API views ----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "AutoScalingGroupName": self.group_name,
            "InstanceRefreshId": self.id,
            "Status": self.status,
            "StartTime": self.start_time,
            "PercentageComplete": self.percentage,
            "InstancesToUpdate": self.to_update,
            "ProgressDetails": {
                "LivePoolProgress": {"PercentageComplete": self.percentage, "InstancesToUpdate": self.to_update},
                "WarmPoolProgress": {"PercentageComplete": 100, "InstancesToUpdate": 0},
            },
            "Preferences": self.preferences,
            "Strategy": self.strategy,
        }
        if self.status_reason:
            out["StatusReason"] = self.status_reason
        if self.end_time is not None:
            out["EndTime"] = self.end_time
        if self.desired_configuration:
            out["DesiredConfiguration"] = self.desired_configuration
        if self.rollback_details is not None:
            remaining = len(self.rollback_queue) + (len(self.inflight) if self.status == "RollbackInProgress" else 0)
            pct = 100 if self.rollback_total == 0 else int(100 * self.rollback_done / self.rollback_total)
            out["RollbackDetails"] = {
                **self.rollback_details,
                "PercentageCompleteOnRollback": pct,
                "InstancesToUpdateOnRollback": remaining,
                "ProgressDetailsOnRollback": {
                    "LivePoolProgress": {"PercentageComplete": pct, "InstancesToUpdate": remaining},
                    "WarmPoolProgress": {"PercentageComplete": 100, "InstancesToUpdate": 0},
                },
            }
        return out


# -- backend-level operations ---------------------------------------------------------------
def _refreshes_of(backend: Any, group_name: str) -> list[InstanceRefresh]:
    return [r for r in REFRESHES if r.backend is backend and r.group_name == group_name]


def _active(backend: Any, group_name: str) -> InstanceRefresh | None:
    return next((r for r in _refreshes_of(backend, group_name) if r.status in ACTIVE), None)


def _group(backend: Any, name: str) -> Any:
    group = backend.autoscaling_groups.get(name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup {name} not found")
    return group


def start_instance_refresh(
    backend: Any, name: str, strategy: str | None, desired: Any, preferences: Any
) -> InstanceRefresh:
    group = _group(backend, name)
    if strategy not in (None, "Rolling"):
        raise ValidationError(f"Strategy {strategy} is not supported; use Rolling.")
    if _active(backend, name) is not None:
        raise InstanceRefreshInProgress(
            "An Instance Refresh is already in progress and blocks the execution of this Instance Refresh."
        )
    mhp = (preferences or {}).get("MinHealthyPercentage")
    if mhp is not None and not 0 <= int(mhp) <= 100:
        raise ValidationError("MinHealthyPercentage must be between 0 and 100.")
    if (preferences or {}).get("AutoRollback") and not (desired or {}).get("LaunchTemplate"):
        raise ValidationError("AutoRollback requires a DesiredConfiguration with a launch template in the sandbox.")
    refresh = InstanceRefresh(backend, group, strategy or "Rolling", desired, preferences or {})
    REFRESHES.append(refresh)
    return refresh


def _in_progress(backend: Any, name: str) -> InstanceRefresh:
    """The group's pending/in-progress refresh, or AWS's ActiveInstanceRefreshNotFound."""
    _group(backend, name)
    refresh = _active(backend, name)
    if refresh is None or refresh.status not in ("Pending", "InProgress", "Baking"):
        raise ActiveInstanceRefreshNotFound(
            "No in progress or pending Instance Refresh found for Auto Scaling group " + name
        )
    return refresh


def cancel_instance_refresh(backend: Any, name: str) -> InstanceRefresh:
    refresh = _in_progress(backend, name)
    refresh.status = "Cancelling"
    return refresh


def rollback_instance_refresh(backend: Any, name: str) -> InstanceRefresh:
    refresh = _in_progress(backend, name)
    if not refresh.desired_configuration:
        raise IrreversibleInstanceRefresh(
            "The instance refresh was started without a desired configuration and cannot be rolled back."
        )
    refresh.status_reason = "Rollback requested by user."
    refresh._begin_rollback("Rollback requested by user.", utcnow())
    return refresh


def describe_instance_refreshes(backend: Any, name: str, ids: list[str] | None) -> list[InstanceRefresh]:
    found = [r for r in reversed(_refreshes_of(backend, name))]
    if ids:
        found = [r for r in found if r.id in ids]
    return found


def tick_all() -> None:
    now = utcnow()
    for refresh in list(REFRESHES):
        if refresh.status in ACTIVE:
            try:
                refresh.tick(now)
            except Exception as exc:  # noqa: BLE001 - a bug of the sandbox must fail the refresh, not stall it
                traceback.print_exc()
                refresh.status_reason = f"sandbox error while refreshing: {type(exc).__name__}: {exc}"
                refresh._finish("Failed", now)


def reset() -> None:
    REFRESHES.clear()


# -- wiring into moto's AutoScaling response class -----------------------------------------
def _start(self: AutoScalingResponse) -> ActionResult:
    refresh = start_instance_refresh(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        self._get_param("Strategy"),
        self._get_param("DesiredConfiguration"),
        self._get_param("Preferences"),
    )
    return ActionResult({"InstanceRefreshId": refresh.id})


def _describe(self: AutoScalingResponse) -> ActionResult:
    refreshes = describe_instance_refreshes(
        self.autoscaling_backend, self._get_param("AutoScalingGroupName"), self._get_param("InstanceRefreshIds")
    )
    max_records = self._get_int_param("MaxRecords") or 50
    token = self._get_param("NextToken")
    start = int(token) if token else 0
    page = refreshes[start : start + max_records]
    result: dict[str, Any] = {"InstanceRefreshes": [r.describe() for r in page]}
    if start + max_records < len(refreshes):
        result["NextToken"] = str(start + max_records)
    return ActionResult(result)


def _cancel(self: AutoScalingResponse) -> ActionResult:
    refresh = cancel_instance_refresh(self.autoscaling_backend, self._get_param("AutoScalingGroupName"))
    return ActionResult({"InstanceRefreshId": refresh.id})


def _rollback(self: AutoScalingResponse) -> ActionResult:
    refresh = rollback_instance_refresh(self.autoscaling_backend, self._get_param("AutoScalingGroupName"))
    return ActionResult({"InstanceRefreshId": refresh.id})


_ORIGINAL_LT = as_models.InstanceState.launch_template


def _instance_launch_template(self: Any) -> dict[str, Any] | None:
    recorded = getattr(self.instance, "sandbox_launch_template", None)
    if recorded is None:
        return _ORIGINAL_LT.fget(self)
    lt_id, number = recorded
    lt = self.instance.ec2_backend.get_launch_template(lt_id)
    return {"LaunchTemplateId": lt.id, "LaunchTemplateName": lt.name, "Version": str(number)}


_ORIGINAL_REPLACE = as_models.FakeAutoScalingGroup.replace_autoscaling_group_instances


def _replace_instances(self: Any, count_needed: int, propagated_tags: dict[str, str]) -> None:
    """Instances moto launches for a group (scale-out, health replacement) remember the
    template version they were launched from, as on AWS: a later change of the group's
    version (an UpdateAutoScalingGroup, e.g. by Terraform) does not make them "match" it."""
    before = {s.instance.id for s in self.instance_states}
    _ORIGINAL_REPLACE(self, count_needed, propagated_tags)
    lt = self.ec2_launch_template
    if lt is None:
        return
    number = _version_number(lt, self.launch_template_version)
    for state in self.instance_states:
        if state.instance.id not in before and getattr(state.instance, "sandbox_launch_template", None) is None:
            state.instance.sandbox_launch_template = (lt.id, number)


def install() -> None:
    as_models.FakeAutoScalingGroup.replace_autoscaling_group_instances = _replace_instances  # type: ignore[method-assign]
    AutoScalingResponse.start_instance_refresh = _start  # type: ignore[attr-defined]
    AutoScalingResponse.describe_instance_refreshes = _describe  # type: ignore[attr-defined]
    AutoScalingResponse.cancel_instance_refresh = _cancel  # type: ignore[attr-defined]
    AutoScalingResponse.rollback_instance_refresh = _rollback  # type: ignore[attr-defined]
    as_models.InstanceState.launch_template = property(_instance_launch_template)  # type: ignore[assignment]
