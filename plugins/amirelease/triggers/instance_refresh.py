"""Waiting for an EC2 Auto Scaling instance refresh: one waiter, polled the same way blocking
(in a worker slot) and deferred (on the triggerer), with one short status line per poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent
from botocore.exceptions import WaiterError
from pydantic import JsonValue

from amirelease.constants import DEFAULT_AWS_CONN_ID
from amirelease.hooks.autoscaling import AutoScalingHook

WAITER = "instance_refresh_complete"


def refresh_line(group: str, response: Mapping[str, Any]) -> str:
    """'demo-web-asg 66 % · 1 to update · waiting at checkpoint 34 %' (pure)."""
    refreshes = response.get("InstanceRefreshes") or []
    if not refreshes:
        return f"{group}: refresh not found"
    r = refreshes[0]
    status = r.get("Status", "?")
    parts = [f"{group} {r.get('PercentageComplete', 0)} %", f"{r.get('InstancesToUpdate', '?')} to update"]
    reason = (r.get("StatusReason") or "").strip()
    if status == "InProgress" and "checkpoint" in reason.lower():
        cps = (r.get("Preferences") or {}).get("CheckpointPercentages") or []
        reached = [c for c in cps if c <= int(r.get("PercentageComplete") or 0)]
        parts.append(f"waiting at checkpoint {reached[-1]} %" if reached else "waiting at a checkpoint")
    elif status != "InProgress":
        parts.append(status + (f": {reason}" if reason and status not in ("Successful", "Pending") else ""))
    return " · ".join(parts)


def next_poll(response: Mapping[str, Any], delay: float) -> float:
    """Seconds until the next DescribeInstanceRefreshes after ``response`` (pure).

    ``delay`` (``refresh_poll_seconds``) while most of the refresh is left, and while it waits at
    a checkpoint (it cannot end there: a checkpoint delay may be an hour); sooner as it nears its
    end: ``delay`` times the share left, never under a fifth of ``delay`` nor 1 s. The wait then
    ends within a few seconds of the refresh rather than up to one ``delay`` after it (the
    release's time to the fleet), for a bounded number of extra calls: about 2.6 times the calls
    of a fixed delay over a refresh that progresses evenly, all of them in its last stretch.
    """
    refreshes = response.get("InstanceRefreshes") or []
    if not refreshes:
        return delay
    r = refreshes[0]
    if r.get("Status") != "InProgress" or "checkpoint" in (r.get("StatusReason") or "").lower():
        return delay
    left = 100 - min(100, max(0, int(r.get("PercentageComplete") or 0)))
    floor = min(delay, max(1.0, delay / 5))  # a fifth of the delay, not under 1 s nor over the delay
    return max(floor, delay * left / 100)


def wait_blocking(
    hook: AutoScalingHook, group: str, refresh_id: str, delay: int, attempts: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Poll until the refresh ends (sooner near its end: ``next_poll``), for at most ``delay ×
    attempts`` seconds; returns the last DescribeInstanceRefreshes response.
    Success and failure are the waiter's acceptors (waiters/autoscaling.json)."""
    waiter = hook.get_waiter(WAITER)
    args: dict[str, Any] = {"AutoScalingGroupName": group, "InstanceRefreshIds": [refresh_id]}
    deadline = time.monotonic() + delay * attempts
    while True:
        try:
            waiter.wait(**args, WaiterConfig={"MaxAttempts": 1})
            answer = hook.conn.describe_instance_refreshes(AutoScalingGroupName=group, InstanceRefreshIds=[refresh_id])
            say(refresh_line(group, answer))
            return dict(answer)
        except WaiterError as err:
            last: dict[str, Any] = err.last_response or {}
            say(refresh_line(group, last))
            if "terminal failure" in str(err):
                return dict(last)
        pause = next_poll(last, delay)
        if time.monotonic() + pause > deadline:
            return {"TimedOut": True}
        time.sleep(pause)


class InstanceRefreshCompleteTrigger(AwsBaseWaiterTrigger):
    """Fires when the refresh ends: status "success" when Successful, "error" otherwise
    (Failed, Cancelled, RollbackSuccessful/Failed, gone, or out of attempts).

    Given the task's ``handle``, a success ends the task right here (``TaskSuccessEvent``, the
    handle with the refresh's end state as its XCom), without a resume on a worker: one task
    start less between the refresh's end and the release's verification. A failure resumes the
    task, which fails it in words.

    :param auto_scaling_group: the group being refreshed.
    :param refresh_id: the InstanceRefreshId that StartInstanceRefresh returned.
    :param waiter_delay: the most seconds between two DescribeInstanceRefreshes calls (fewer near
        the refresh's end: ``next_poll``).
    :param waiter_max_attempts: with ``waiter_delay``, how long the trigger waits before it gives up
        ("error"): ``waiter_delay × waiter_max_attempts`` seconds.
    :param aws_conn_id: the Airflow AWS connection.
    :param region_name: the group's region (default: the connection's).
    :param verify: TLS verification for the endpoint, as the provider's hooks take it.
    :param botocore_config: botocore Config settings, as the provider's hooks take them.
    :param handle: the task's RefreshHandle (``to_xcom()``); None: a success resumes the task too.
    """

    aws_hook_class = AutoScalingHook

    def __init__(
        self,
        *,
        auto_scaling_group: str,
        refresh_id: str,
        waiter_delay: int = 15,
        waiter_max_attempts: int = 480,
        aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        handle: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            serialized_fields={"auto_scaling_group": auto_scaling_group, "refresh_id": refresh_id, "handle": handle},
            waiter_name=WAITER,
            waiter_args={"AutoScalingGroupName": auto_scaling_group, "InstanceRefreshIds": [refresh_id]},
            failure_message=f"Instance refresh {refresh_id} of {auto_scaling_group} did not succeed",
            status_message=f"{auto_scaling_group}",
            status_queries=["InstanceRefreshes[0].Status"],
            return_key="refresh_id",
            return_value=refresh_id,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            region_name=region_name,
            verify=verify,
            botocore_config=botocore_config,
        )
        self.auto_scaling_group = auto_scaling_group
        self.refresh_id = refresh_id
        self.handle = handle

    def hook(self) -> Any:
        """The provider's way, with the deployment's retry policy (retry.py) on the hook."""
        from amirelease.aws import with_retry_policy

        return with_retry_policy(super().hook())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self.hook()
        group = self.auto_scaling_group
        # the same time limit as before (waiter_delay × waiter_max_attempts), counted in seconds:
        # polls come sooner near the refresh's end (next_poll)
        deadline = time.monotonic() + self.waiter_delay * self.attempts
        # the operator polled just before deferring: the first poll here waits one delay
        pause: float = self.waiter_delay
        async with await hook.get_async_conn() as client:
            waiter = hook.get_waiter(WAITER, deferrable=True, client=client)
            while time.monotonic() + pause <= deadline:
                await asyncio.sleep(pause)
                try:
                    await waiter.wait(**self.waiter_args, WaiterConfig={"MaxAttempts": 1})
                    response = await client.describe_instance_refreshes(**self.waiter_args)
                    self.log.info("%s", refresh_line(group, response))
                    yield self._success(response)
                    return
                except WaiterError as err:
                    response = err.last_response or {}
                    self.log.info("%s", refresh_line(group, response))
                    if "terminal failure" in str(err):
                        yield TriggerEvent(
                            {"status": "error", "message": refresh_line(group, response), "refresh_id": self.refresh_id}
                        )
                        return
                pause = next_poll(response, self.waiter_delay)
        yield TriggerEvent(
            {
                "status": "error",
                "message": f"{group}: still not finished after {self.waiter_delay * self.attempts} seconds",
                "refresh_id": self.refresh_id,
            }
        )

    def _success(self, response: Mapping[str, Any]) -> TriggerEvent:
        if self.handle is None:
            return TriggerEvent({"status": "success", "refresh_id": self.refresh_id})
        from amirelease.handoffs import RefreshHandle

        ended = RefreshHandle.from_xcom(self.handle).ended(response["InstanceRefreshes"][0])
        return TaskSuccessEvent(xcoms={"return_value": cast(JsonValue, ended.to_xcom())})
