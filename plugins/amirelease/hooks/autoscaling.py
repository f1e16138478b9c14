"""EC2 Auto Scaling: the hook the Amazon provider does not ship.

A thin AwsBaseHook over the ``autoscaling`` client, with our custom waiter
(``instance_refresh_complete``, waiters/autoscaling.json) since botocore has none
for instance refreshes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from amirelease.constants import ACTIVE_REFRESH_STATES


class AutoScalingHook(AwsBaseHook):
    """Interact with EC2 Auto Scaling (``boto3.client("autoscaling")``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "autoscaling"
        super().__init__(*args, **kwargs)

    @property
    def waiter_path(self) -> Path | None:
        path = Path(__file__).parents[1] / "waiters" / "autoscaling.json"
        return path if path.exists() else None

    def describe_group(self, name: str) -> dict[str, Any] | None:
        groups = self.conn.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return groups[0] if groups else None

    def refreshes(self, group: str, refresh_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Refreshes of a group, newest first (AWS returns them so)."""
        kwargs: dict[str, Any] = {"AutoScalingGroupName": group}
        if refresh_ids:
            kwargs["InstanceRefreshIds"] = refresh_ids
        found: list[dict[str, Any]] = self.conn.describe_instance_refreshes(**kwargs).get("InstanceRefreshes", [])
        return found

    def active_refresh(self, group: str) -> dict[str, Any] | None:
        for r in self.refreshes(group):
            if r["Status"] in ACTIVE_REFRESH_STATES:
                return r
        return None

    def start_refresh(self, group: str, desired_launch_template: dict[str, Any], preferences: dict[str, Any]) -> str:
        refresh_id: str = self.conn.start_instance_refresh(
            AutoScalingGroupName=group,
            Strategy="Rolling",
            DesiredConfiguration={"LaunchTemplate": desired_launch_template},
            Preferences=preferences,
        )["InstanceRefreshId"]
        return refresh_id
