"""An app's CloudWatch alarms, read one way by verify and by a gate's soak.

``DescribeAlarms`` returns only *metric* alarms unless ``AlarmTypes`` asks for composite ones as
well: an app that watches a composite alarm (one rule over several alarms, the usual way to
page someone once instead of five times) would otherwise see it as missing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

ALARM_TYPES: list[Literal["MetricAlarm", "CompositeAlarm"]] = ["MetricAlarm", "CompositeAlarm"]
NAMES_PER_CALL = 100  # DescribeAlarms takes up to 100 names


def alarm_states(cloudwatch: CloudWatchClient, names: list[str]) -> dict[str, str]:
    """``name -> state`` (OK, ALARM, INSUFFICIENT_DATA) of each of these alarms that exists,
    metric or composite, every page read; an alarm that does not exist is absent."""
    found: dict[str, str] = {}
    for at in range(0, len(names), NAMES_PER_CALL):
        pages = cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNames=names[at : at + NAMES_PER_CALL], AlarmTypes=ALARM_TYPES
        )
        for page in pages:
            for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                found[alarm["AlarmName"]] = alarm["StateValue"]
    return found
