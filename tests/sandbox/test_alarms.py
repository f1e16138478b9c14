"""sandbox/aws/alarms.py: PutCompositeAlarm, and DescribeAlarms as AWS answers it (only metric
alarms unless AlarmTypes asks for composite ones; MaxRecords and NextToken; errors)."""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import code_of, no_retry_client

BOTH = ["MetricAlarm", "CompositeAlarm"]


@pytest.fixture
def cw(sandbox):
    return no_retry_client(sandbox, "cloudwatch")


def _names(answer: dict) -> tuple[list[str], list[str]]:
    return [a["AlarmName"] for a in answer["MetricAlarms"]], [a["AlarmName"] for a in answer["CompositeAlarms"]]


def test_a_composite_alarm_is_listed_only_when_asked_for(sandbox, cw):
    sandbox.put_alarm("web-5xx")
    sandbox.put_alarm("web-latency")
    cw.put_composite_alarm(AlarmName="web-health", AlarmRule='ALARM("web-5xx") OR ALARM("web-latency")')
    names = ["web-5xx", "web-health"]

    assert _names(cw.describe_alarms(AlarmNames=names)) == (["web-5xx"], [])  # AWS's default: metric alarms
    assert _names(cw.describe_alarms(AlarmNames=names, AlarmTypes=["CompositeAlarm"])) == ([], ["web-health"])
    answer = cw.describe_alarms(AlarmNames=names, AlarmTypes=BOTH)
    assert _names(answer) == (["web-5xx"], ["web-health"])
    [composite] = answer["CompositeAlarms"]
    assert composite["AlarmRule"] == 'ALARM("web-5xx") OR ALARM("web-latency")'
    assert composite["StateValue"] == "INSUFFICIENT_DATA"

    cw.set_alarm_state(AlarmName="web-health", StateValue="ALARM", StateReason="a child is in ALARM")
    [composite] = cw.describe_alarms(AlarmNames=["web-health"], AlarmTypes=BOTH)["CompositeAlarms"]
    assert composite["StateValue"] == "ALARM"
    [item] = cw.describe_alarm_history(
        AlarmName="web-health", AlarmTypes=["CompositeAlarm"], HistoryItemType="StateUpdate"
    )["AlarmHistoryItems"]
    assert item["AlarmType"] == "CompositeAlarm" and item["HistorySummary"].endswith("to ALARM")


def test_alarms_come_in_pages_of_max_records_in_name_order(sandbox, cw):
    for n in range(7):
        sandbox.put_alarm(f"a-{n}")
    for n in range(3):
        cw.put_composite_alarm(AlarmName=f"c-{n}", AlarmRule='ALARM("a-0")')
    pages = list(cw.get_paginator("describe_alarms").paginate(AlarmTypes=BOTH, PaginationConfig={"PageSize": 4}))
    seen = [_names(p) for p in pages]
    assert [len(m) + len(c) for m, c in seen] == [4, 4, 2], seen
    assert [n for m, c in seen for n in m + c] == [*(f"a-{n}" for n in range(7)), "c-0", "c-1", "c-2"]
    assert "NextToken" not in pages[-1]


def test_what_aws_refuses_the_sandbox_refuses(sandbox, cw):
    sandbox.put_alarm("web-5xx")
    assert code_of(lambda: cw.describe_alarms(AlarmNames=[f"x-{n}" for n in range(101)])) == "ValidationError"
    assert code_of(lambda: cw.describe_alarms(MaxRecords=101)) == "InvalidParameterValue"
    assert code_of(lambda: cw.describe_alarms(NextToken="not-ours")) == "InvalidNextToken"
    too_many = [f"arn:aws:sns:us-east-1:123456789012:t{n}" for n in range(6)]
    assert code_of(lambda: cw.put_composite_alarm(AlarmName="c", AlarmRule="TRUE", AlarmActions=too_many)) == (
        "ValidationError"
    )
    assert _names(cw.describe_alarms(AlarmTypes=BOTH)) == (["web-5xx"], [])  # nothing refused was made
