"""The gate's soak (operators/gate.py ``soak_problems``) against the sandbox's CloudWatch: the
alarms' history in the soak window decides, read page by page (DescribeAlarmHistory)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from amirelease.operators.gate import soak_problems
from tests.sandbox.conftest import no_retry_client

ALARMS = ["web-5xx", "web-latency"]


@pytest.fixture
def cw(sandbox):
    for name in ALARMS:
        sandbox.put_alarm(name)
    return no_retry_client(sandbox, "cloudwatch")


def _soak(cw, since, alarms=ALARMS):
    until = datetime.now(UTC) + timedelta(seconds=1)
    return soak_problems(lambda region: cw, list(alarms), ["us-east-1"], since, until)


def test_quiet_alarms_pass_and_what_happened_before_the_soak_does_not_count(cw):
    cw.set_alarm_state(AlarmName="web-5xx", StateValue="ALARM", StateReason="before the release got there")
    cw.set_alarm_state(AlarmName="web-5xx", StateValue="OK", StateReason="recovered")
    time.sleep(1.1)
    assert _soak(cw, datetime.now(UTC)) == []


def test_an_alarm_that_went_into_alarm_during_the_soak_fails_it_even_when_ok_again(cw):
    since = datetime.now(UTC) - timedelta(seconds=1)
    cw.set_alarm_state(AlarmName="web-latency", StateValue="ALARM", StateReason="p99 above 2 s")
    cw.set_alarm_state(AlarmName="web-latency", StateValue="OK", StateReason="back")
    [problem] = _soak(cw, since)
    assert problem.startswith("alarm web-latency (us-east-1) went into ALARM at "), problem


def test_an_alarm_in_alarm_since_before_the_soak_and_a_missing_alarm_fail_it(cw):
    cw.set_alarm_state(AlarmName="web-5xx", StateValue="ALARM", StateReason="long before")
    time.sleep(1.1)
    problems = _soak(cw, datetime.now(UTC), [*ALARMS, "web-gone"])
    assert problems == [
        "alarm web-5xx (us-east-1) is in ALARM",
        "alarm web-gone (us-east-1) does not exist: nothing to watch",
    ], problems


def test_every_page_of_the_history_is_read(cw):
    since = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(110):  # 220 changes: three pages of 100
        cw.set_alarm_state(AlarmName="web-5xx", StateValue="ALARM", StateReason=f"flap {n}")
        cw.set_alarm_state(AlarmName="web-5xx", StateValue="OK", StateReason=f"flap {n}")
    assert len(_soak(cw, since)) == 110


def test_a_composite_alarm_is_watched_like_a_metric_alarm(sandbox, cw):
    cw.put_composite_alarm(AlarmName="web-health", AlarmRule='ALARM("web-5xx") OR ALARM("web-latency")')
    cw.set_alarm_state(AlarmName="web-health", StateValue="OK", StateReason="quiet")
    since = datetime.now(UTC) - timedelta(seconds=1)
    assert _soak(cw, since, ["web-health"]) == []
    cw.set_alarm_state(AlarmName="web-health", StateValue="ALARM", StateReason="both children")
    cw.set_alarm_state(AlarmName="web-health", StateValue="OK", StateReason="back")
    [problem] = _soak(cw, since, ["web-health"])
    assert problem.startswith("alarm web-health (us-east-1) went into ALARM at "), problem
