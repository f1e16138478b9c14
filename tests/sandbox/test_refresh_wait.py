"""wait_for_refresh in deferrable mode against the sandbox: it defers only while a refresh
runs (a refresh that has already ended is summarised at once: deferring it lets the trigger
fire before the scheduler has seen the deferral, apache/airflow#66374)."""

from __future__ import annotations

import asyncio
import time

import pytest
from airflow.exceptions import TaskDeferred
from airflow.triggers.base import TaskSuccessEvent

from amirelease.handoffs import RefreshHandle
from amirelease.operators.rollout import WaitForInstanceRefreshOperator
from amirelease.triggers.instance_refresh import InstanceRefreshCompleteTrigger, next_poll, wait_blocking
from tests.sandbox.test_refresh import ASG, clients, new_version, wait_done


def _start(sb, preferences, delay=2):
    ec2, asg = clients(sb)
    ami, desired = new_version(sb, ec2)
    rid = asg.start_instance_refresh(AutoScalingGroupName=ASG, DesiredConfiguration=desired, Preferences=preferences)[
        "InstanceRefreshId"
    ]
    lt = desired["LaunchTemplate"]
    handle = RefreshHandle(
        region="us-east-1",
        auto_scaling_group=ASG,
        refresh_id=rid,
        launch_template_id=lt["LaunchTemplateId"],
        launch_template_version=int(lt["Version"]),
        ami_id=ami,
        timeout_minutes=5,
    )
    op = WaitForInstanceRefreshOperator(
        task_id="wait_for_refresh", refresh=handle.to_xcom(), deferrable=True, waiter_delay=delay
    )
    return asg, rid, op


def test_a_running_refresh_is_deferred_to_the_triggerer(fleet):
    fleet.configure(refresh_batch_seconds=30)  # still running when the operator looks
    asg, rid, op = _start(fleet, {"MinHealthyPercentage": 66})
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, InstanceRefreshCompleteTrigger)
    assert trigger.refresh_id == rid and trigger.auto_scaling_group == ASG and trigger.waiter_delay == 2
    asg.cancel_instance_refresh(AutoScalingGroupName=ASG)


def test_an_ended_refresh_is_summarised_without_deferring(fleet):
    fleet.configure(refresh_batch_seconds=0.05)
    asg, rid, op = _start(fleet, {"MinHealthyPercentage": 66})
    assert wait_done(asg, rid)["Status"] == "Successful"
    result = op.execute({})  # no TaskDeferred
    assert result["status"] == "Successful" and result["percentage_complete"] == 100 and result["refresh_id"] == rid


def _refresh(percent: int, status: str = "InProgress", reason: str | None = None) -> dict:
    return {"InstanceRefreshes": [{"Status": status, "PercentageComplete": percent, "StatusReason": reason}]}


def test_polls_come_sooner_as_the_refresh_nears_its_end():
    assert next_poll(_refresh(0), 10) == 10  # most of it left: the configured delay
    assert next_poll(_refresh(50), 10) == 5
    assert next_poll(_refresh(66), 10) == pytest.approx(3.4)
    assert next_poll(_refresh(95), 10) == 2  # never under a fifth of the delay
    assert next_poll(_refresh(95), 3) == 1  # nor under one second
    assert next_poll(_refresh(95), 0.5) == 0.5  # a delay under 1 s is kept as asked
    # it cannot end while it waits at a checkpoint (possibly an hour): no sooner polls there
    waiting = "Waiting for checkpoint at 66% to pass: checkpoint delay of 3600 seconds."
    assert next_poll(_refresh(66, reason=waiting), 10) == 10
    assert next_poll(_refresh(0, status="Pending"), 10) == 10
    assert next_poll({"InstanceRefreshes": []}, 10) == 10


def _pauses_after(lines: list[tuple[float, str]], text: str) -> list[float]:
    return [b[0] - a[0] for a, b in zip(lines, lines[1:], strict=False) if text in a[1]]


DELAY = 6


class _Lines:
    """A logger that keeps (moment, line) of each info line."""

    def __init__(self, lines: list[tuple[float, str]]) -> None:
        self.lines = lines

    def info(self, fmt: str, *args: object) -> None:
        self.lines.append((time.monotonic(), fmt % args))

    def __getattr__(self, name: str):
        return lambda *a, **k: None


@pytest.mark.parametrize("mode", ["blocking", "deferred"])
def test_the_wait_polls_sooner_once_most_of_the_fleet_is_replaced(fleet, mode):
    """Both waits (the worker's and the triggerer's) follow next_poll against a real refresh: after
    AWS reports 66 % the next poll comes in about a third of the delay, not a whole delay later."""
    fleet.configure(refresh_batch_seconds=2.5)  # three batches of one instance: 0, 33, 66, 100 %
    asg, rid, op = _start(fleet, {"MinHealthyPercentage": 66}, delay=DELAY)
    lines: list[tuple[float, str]] = []
    if mode == "blocking":
        from amirelease.hooks.autoscaling import AutoScalingHook

        hook = AutoScalingHook(aws_conn_id="aws_default", region_name="us-east-1")
        last = wait_blocking(hook, ASG, rid, DELAY, 20, lambda line: lines.append((time.monotonic(), line)))
        assert last["InstanceRefreshes"][0]["Status"] == "Successful", last
    else:
        with pytest.raises(TaskDeferred) as deferred:  # the trigger as the operator hands it over
            op.execute({})
        trigger = deferred.value.trigger

        async def first_event():
            async for event in trigger.run():
                return event

        trigger._log = _Lines(lines)  # the trigger's own log lines, with the moment each was written
        event = asyncio.run(first_event())
        # a success ends the task on the triggerer, with the summary the operator would return
        assert isinstance(event, TaskSuccessEvent), event
        summary = event.xcoms["return_value"]
        from amirelease.phases import iso

        [ref] = asg.describe_instance_refreshes(AutoScalingGroupName=ASG, InstanceRefreshIds=[rid])["InstanceRefreshes"]
        assert summary == {
            **op.refresh,
            "status": "Successful",
            "percentage_complete": 100,
            "started_at": iso(ref["StartTime"]),  # AWS's own times: the record's refresh phase
            "ended_at": iso(ref["EndTime"]),
        }, summary
    assert any(" 66 %" in line for _, line in lines), lines  # the wait saw the last batch under way
    assert lines[-1][1].startswith(f"{ASG} 100 %"), lines
    after_66 = _pauses_after(lines, " 66 %")
    assert after_66 and max(after_66) < 0.6 * DELAY, (after_66, lines)  # 0.34 × 6 s = 2.0 s, plus one call
    assert min(_pauses_after(lines, " 0 %") or [DELAY]) >= DELAY - 0.5, lines  # far from the end: the delay
