"""wait_for_refresh in deferrable mode against the sandbox: it defers only while a refresh
runs (a refresh that has already ended is summarised at once: deferring it lets the trigger
fire before the scheduler has seen the deferral, apache/airflow#66374)."""

from __future__ import annotations

import pytest
from airflow.exceptions import TaskDeferred

from amirelease.handoffs import RefreshHandle
from amirelease.operators.rollout import WaitForInstanceRefreshOperator
from amirelease.triggers.instance_refresh import InstanceRefreshCompleteTrigger
from tests.sandbox.test_refresh import ASG, clients, new_version, wait_done


def _start(sb, preferences):
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
        task_id="wait_for_refresh", refresh=handle.to_xcom(), deferrable=True, waiter_delay=2
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
