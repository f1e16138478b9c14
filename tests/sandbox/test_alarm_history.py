"""sandbox/aws/alarm_history.py: CloudWatch DescribeAlarmHistory as the API reference describes it
(state changes and configuration updates, filters, time window, order, paging, errors)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.sandbox.conftest import code_of, no_retry_client


@pytest.fixture
def cw(sandbox):
    return no_retry_client(sandbox, "cloudwatch")


def _states(cw, name: str, **kw) -> list[str]:
    items = cw.describe_alarm_history(AlarmName=name, HistoryItemType="StateUpdate", **kw)["AlarmHistoryItems"]
    return [i["HistorySummary"] for i in items]


def test_state_changes_are_kept_newest_first_and_only_when_the_state_changes(sandbox, cw):
    sandbox.put_alarm("web-5xx")
    sandbox.put_alarm("other-5xx")
    cw.set_alarm_state(AlarmName="web-5xx", StateValue="ALARM", StateReason="5xx above 5")
    cw.set_alarm_state(AlarmName="web-5xx", StateValue="ALARM", StateReason="still")  # no change: not kept
    cw.set_alarm_state(AlarmName="web-5xx", StateValue="OK", StateReason="quiet again")
    cw.set_alarm_state(AlarmName="other-5xx", StateValue="ALARM", StateReason="someone else's")
    assert _states(cw, "web-5xx") == ["Alarm updated from ALARM to OK", "Alarm updated from OK to ALARM"]
    assert _states(cw, "web-5xx", ScanBy="TimestampAscending") == [
        "Alarm updated from OK to ALARM",
        "Alarm updated from ALARM to OK",
    ]
    [newest, _] = cw.describe_alarm_history(AlarmName="web-5xx", HistoryItemType="StateUpdate")["AlarmHistoryItems"]
    data = json.loads(newest["HistoryData"])
    assert data["oldState"]["stateValue"] == "ALARM" and data["newState"] == {
        "stateValue": "OK",
        "stateReason": "quiet again",
    }
    assert newest["AlarmName"] == "web-5xx" and newest["AlarmType"] == "MetricAlarm"
    created = cw.describe_alarm_history(AlarmName="web-5xx", HistoryItemType="ConfigurationUpdate")
    assert [i["HistorySummary"] for i in created["AlarmHistoryItems"]] == ['Alarm "web-5xx" created']
    # no AlarmName: every alarm of the region
    every = cw.describe_alarm_history(HistoryItemType="StateUpdate")["AlarmHistoryItems"]
    assert sorted({i["AlarmName"] for i in every}) == ["other-5xx", "web-5xx"] and len(every) == 3


def test_the_time_window_is_inclusive_and_excludes_what_came_before(sandbox, cw):
    sandbox.put_alarm("web-5xx")
    cw.set_alarm_state(AlarmName="web-5xx", StateValue="ALARM", StateReason="before the window")
    time.sleep(1.1)
    start = datetime.now(UTC)
    cw.set_alarm_state(AlarmName="web-5xx", StateValue="OK", StateReason="inside")
    assert _states(cw, "web-5xx", StartDate=start, EndDate=datetime.now(UTC) + timedelta(seconds=1)) == [
        "Alarm updated from ALARM to OK"
    ]
    assert _states(cw, "web-5xx", EndDate=start - timedelta(seconds=0.5)) == ["Alarm updated from OK to ALARM"]
    assert _states(cw, "web-5xx", StartDate=datetime.now(UTC) + timedelta(minutes=1)) == []


def test_paging_with_max_records_and_next_token(sandbox, cw):
    sandbox.put_alarm("flappy")
    for n in range(7):
        cw.set_alarm_state(AlarmName="flappy", StateValue="ALARM" if n % 2 == 0 else "OK", StateReason=f"flap {n}")
    seen, token, pages = [], None, 0
    while True:
        kw = {"NextToken": token} if token else {}
        page = cw.describe_alarm_history(AlarmName="flappy", HistoryItemType="StateUpdate", MaxRecords=3, **kw)
        seen += [json.loads(i["HistoryData"])["newState"]["stateReason"] for i in page["AlarmHistoryItems"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert pages == 3 and seen == [f"flap {n}" for n in reversed(range(7))]
    pager = cw.get_paginator("describe_alarm_history")
    paginated = pager.paginate(AlarmName="flappy", PaginationConfig={"PageSize": 2})
    assert sum(len(p["AlarmHistoryItems"]) for p in paginated) == 8  # 7 state changes and the creation


def test_errors_as_aws_answers_them(sandbox, cw):
    sandbox.put_alarm("web-5xx")
    assert code_of(lambda: cw.describe_alarm_history(NextToken="not-ours")) == "InvalidNextToken"
    assert code_of(lambda: cw.describe_alarm_history(MaxRecords=101)) == "InvalidParameterValue"
    # an alarm that never existed has no history (not an error)
    assert cw.describe_alarm_history(AlarmName="nope")["AlarmHistoryItems"] == []


def test_history_outlives_a_deleted_alarm_and_a_reset_forgets_it(sandbox, cw):
    sandbox.put_alarm("web-5xx")
    cw.set_alarm_state(AlarmName="web-5xx", StateValue="ALARM", StateReason="x")
    cw.delete_alarms(AlarmNames=["web-5xx"])
    assert _states(cw, "web-5xx") == ["Alarm updated from OK to ALARM"]
    sandbox.reset()
    assert _states(cw, "web-5xx") == []
