"""CloudWatch alarms as AWS answers for them, where moto 5.2.5 does not.

* ``PutCompositeAlarm``, which moto does not answer at all (its backend keeps a composite alarm
  as an alarm with a rule; ``PutMetricAlarm`` passes ``AlarmRule`` through). ``AlarmName`` and
  ``AlarmRule`` are required; actions up to 5 each. A new composite alarm starts in
  ``INSUFFICIENT_DATA``. The rule is kept, not evaluated: the sandbox's alarms change state by
  ``SetAlarmState`` (the API reference allows it for composite alarms too), never by
  themselves.
* ``DescribeAlarms`` with the API reference's filters and paging. moto returns composite alarms
  beside metric alarms whatever is asked; AWS returns **only metric alarms unless
  ``AlarmTypes`` names ``CompositeAlarm``** (a caller that forgets it sees a composite alarm as
  missing, and the sandbox must show that). ``AlarmNames`` up to 100, ``MaxRecords`` 1-100
  (default 50), ``NextToken``; errors as AWS's: a list too long or a value out of range is
  ``ValidationError`` / ``InvalidParameterValue``, a token the sandbox did not make
  ``InvalidNextToken``. ``ChildrenOfAlarmName``/``ParentsOfAlarmName`` are not modelled.
"""

from __future__ import annotations

from typing import Any

from moto.cloudwatch.exceptions import ValidationError
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult, EmptyResult

from .alarm_history import page_asked, token_at

_ORIGINAL: dict[str, Any] = {}
DEFAULT_RECORDS = 50
MAX_NAMES = 100
MAX_ACTIONS = 5


def _put_composite_alarm(self: Any) -> EmptyResult:
    name, rule = self._get_param("AlarmName"), self._get_param("AlarmRule")
    if not name or not rule:
        missing = "AlarmName" if not name else "AlarmRule"
        raise ValidationError(f"1 validation error detected: Value null at '{missing}' failed to satisfy constraint")
    actions = {key: self._get_param(key, []) or [] for key in ("AlarmActions", "OKActions", "InsufficientDataActions")}
    for key, values in actions.items():
        if len(values) > MAX_ACTIONS:
            raise ValidationError(f"The collection {key} must not have a size greater than {MAX_ACTIONS}.")
    enabled = self._get_param("ActionsEnabled")
    new = name not in self.cloudwatch_backend.alarms
    alarm = self.cloudwatch_backend.put_metric_alarm(
        name=name,
        namespace=None,
        metric_name=None,
        comparison_operator=None,
        evaluation_periods=None,
        period=None,
        threshold=None,
        statistic=None,
        description=self._get_param("AlarmDescription"),
        dimensions=[],
        alarm_actions=actions["AlarmActions"],
        ok_actions=actions["OKActions"],
        insufficient_data_actions=actions["InsufficientDataActions"],
        actions_enabled=enabled in (None, True, "true"),
        rule=rule,
        tags=self._get_param("Tags", []) or [],
    )
    if new:  # moto starts every alarm in OK; AWS starts a composite alarm with nothing evaluated yet
        alarm.state_value = "INSUFFICIENT_DATA"
        alarm.state_reason = "Unchecked: Initial alarm creation"
    return EmptyResult()


def _describe_alarms(self: Any) -> ActionResult:
    names = self._get_param("AlarmNames", []) or []
    if len(names) > MAX_NAMES:
        raise ValidationError(
            f"1 validation error detected: Value at 'alarmNames' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_NAMES}"
        )
    types = self._get_param("AlarmTypes", []) or ["MetricAlarm"]  # AWS: metric alarms unless asked
    offset, max_records = page_asked(self, default=DEFAULT_RECORDS)
    everything = _ORIGINAL["describe_alarms"](self).result
    alarms = sorted(
        [
            *(everything["MetricAlarms"] if "MetricAlarm" in types else []),
            *(everything["CompositeAlarms"] if "CompositeAlarm" in types else []),
        ],
        key=lambda a: a.name,  # AWS lists alarms by name
    )
    page = alarms[offset : offset + max_records]
    result: dict[str, Any] = {
        "MetricAlarms": [a for a in page if a.rule is None],
        "CompositeAlarms": [a for a in page if a.rule is not None],
    }
    if offset + max_records < len(alarms):
        result["NextToken"] = token_at(offset + max_records)
    return ActionResult(result)


def install() -> None:
    if "describe_alarms" not in _ORIGINAL:
        _ORIGINAL["describe_alarms"] = CloudWatchResponse.describe_alarms
        CloudWatchResponse.describe_alarms = _describe_alarms  # type: ignore[method-assign]
        CloudWatchResponse.put_composite_alarm = _put_composite_alarm  # type: ignore[attr-defined]
