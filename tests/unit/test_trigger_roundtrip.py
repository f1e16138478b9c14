"""The instance-refresh trigger survives the triggerer's round trip (as Airflow's own trigger
tests check for each trigger): ``serialize()`` gives a classpath and kwargs that build the same
trigger again, with every setting kept, so a deferred wait resumes with what the task asked."""

from __future__ import annotations

import importlib

from amirelease.triggers.instance_refresh import InstanceRefreshCompleteTrigger


def test_serialize_then_rebuild_gives_the_same_trigger():
    trigger = InstanceRefreshCompleteTrigger(
        auto_scaling_group="demo-web-asg",
        refresh_id="r-0123",
        waiter_delay=7,
        waiter_max_attempts=33,
        aws_conn_id="aws_other",
        region_name="eu-west-1",
        verify=False,
        botocore_config={"retries": {"mode": "standard", "max_attempts": 10}},
    )
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert cls is InstanceRefreshCompleteTrigger

    again = cls(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert (again.auto_scaling_group, again.refresh_id) == ("demo-web-asg", "r-0123")
    assert (again.waiter_delay, again.attempts, again.aws_conn_id, again.region_name) == (
        7,
        33,
        "aws_other",
        "eu-west-1",
    )
    assert again.verify is False and again.botocore_config == {"retries": {"mode": "standard", "max_attempts": 10}}
    assert again.waiter_args == {"AutoScalingGroupName": "demo-web-asg", "InstanceRefreshIds": ["r-0123"]}
