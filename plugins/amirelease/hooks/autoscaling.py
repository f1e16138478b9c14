"""EC2 Auto Scaling: the hook the Amazon provider does not ship.

A thin ``AwsGenericHook["AutoScalingClient"]`` (typed, as the provider types its own hooks) over
the ``autoscaling`` client, with our custom waiter (``instance_refresh_complete``,
waiters/autoscaling.json) since botocore has none for instance refreshes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

from amirelease.constants import ACTIVE_REFRESH_STATES

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient  # noqa: F401 (named as a string in the class's base)
    from mypy_boto3_autoscaling.type_defs import (
        AutoScalingGroupTypeDef,
        InstanceRefreshTypeDef,
        LaunchTemplateSpecificationTypeDef,
        RefreshPreferencesTypeDef,
    )


class AutoScalingHook(AwsGenericHook["AutoScalingClient"]):
    """Interact with EC2 Auto Scaling (``boto3.client("autoscaling")``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "autoscaling"
        super().__init__(*args, **kwargs)

    @property
    def waiter_path(self) -> Path | None:
        path = Path(__file__).parents[1] / "waiters" / "autoscaling.json"
        return path if path.exists() else None

    def describe_group(self, name: str) -> AutoScalingGroupTypeDef | None:
        groups = self.conn.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return groups[0] if groups else None

    def refreshes(self, group: str, refresh_ids: list[str] | None = None) -> list[InstanceRefreshTypeDef]:
        """Refreshes of a group, newest first (AWS returns them so)."""
        if refresh_ids:
            answer = self.conn.describe_instance_refreshes(AutoScalingGroupName=group, InstanceRefreshIds=refresh_ids)
        else:
            answer = self.conn.describe_instance_refreshes(AutoScalingGroupName=group)
        return answer.get("InstanceRefreshes", [])

    def active_refresh(self, group: str) -> InstanceRefreshTypeDef | None:
        for r in self.refreshes(group):
            if r["Status"] in ACTIVE_REFRESH_STATES:
                return r
        return None

    def start_refresh(
        self,
        group: str,
        desired_launch_template: LaunchTemplateSpecificationTypeDef,
        preferences: RefreshPreferencesTypeDef,
    ) -> str:
        refresh_id: str = self.conn.start_instance_refresh(
            AutoScalingGroupName=group,
            Strategy="Rolling",
            DesiredConfiguration={"LaunchTemplate": desired_launch_template},
            Preferences=preferences,
        )["InstanceRefreshId"]
        return refresh_id
