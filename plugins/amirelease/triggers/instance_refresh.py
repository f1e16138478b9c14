"""Deferrable wait for an EC2 Auto Scaling instance refresh (runs on the triggerer)."""

from __future__ import annotations

from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger

from amirelease.hooks.autoscaling import AutoScalingHook

STATUS_QUERIES = [
    "InstanceRefreshes[0].Status",
    "InstanceRefreshes[0].PercentageComplete",
    "InstanceRefreshes[0].InstancesToUpdate",
    "InstanceRefreshes[0].StatusReason",
]


class InstanceRefreshCompleteTrigger(AwsBaseWaiterTrigger):
    """Fires when the refresh is Successful; errors on Failed, Cancelled, RollbackSuccessful/Failed."""

    aws_hook_class = AutoScalingHook

    def __init__(
        self,
        *,
        auto_scaling_group: str,
        refresh_id: str,
        waiter_delay: int = 15,
        waiter_max_attempts: int = 480,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict | None = None,
    ) -> None:
        super().__init__(
            serialized_fields={"auto_scaling_group": auto_scaling_group, "refresh_id": refresh_id},
            waiter_name="instance_refresh_complete",
            waiter_args={"AutoScalingGroupName": auto_scaling_group, "InstanceRefreshIds": [refresh_id]},
            failure_message=f"Instance refresh {refresh_id} of {auto_scaling_group} did not succeed",
            status_message=f"Instance refresh {refresh_id} of {auto_scaling_group} [status, % complete, instances to update, reason]",
            status_queries=STATUS_QUERIES,
            return_key="refresh_id",
            return_value=refresh_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            region_name=region_name,
            verify=verify,
            botocore_config=botocore_config,
        )
