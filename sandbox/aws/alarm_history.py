"""CloudWatch ``DescribeAlarmHistory``, which moto 5.2.5 does not answer (its alarms keep a bare
list of previous states and no API reads it).

As the CloudWatch API reference describes it:

* **What is kept**: a ``ConfigurationUpdate`` item when an alarm is created or its definition
  replaced (``PutMetricAlarm``; AWS also records updates this way) and a ``StateUpdate`` item
  each time its state *changes* (``SetAlarmState`` here; AWS's own evaluations as well): summary
  ``Alarm updated from OK to ALARM``, ``HistoryData`` a JSON document with ``oldState`` and
  ``newState`` (``stateValue``, ``stateReason``). Setting the state an alarm already has changes
  nothing and is not recorded. History outlives a deleted alarm (AWS keeps it for 30 days;
  the sandbox's account never gets that old).
* **Filters**: ``AlarmName`` (none: every alarm of the region), ``AlarmTypes``
  (``MetricAlarm``/``CompositeAlarm``), ``HistoryItemType``, ``StartDate``/``EndDate``
  (inclusive), ``ScanBy`` (``TimestampDescending``, the default, or ``TimestampAscending``).
* **Paging**: ``MaxRecords`` 1-100 (default 100), ``NextToken``; a token the sandbox did not
  make is ``InvalidNextToken``, a ``MaxRecords`` out of range ``InvalidParameterValue``.

``Action`` items (alarm actions run) and contributor items are not modelled: the sandbox runs no
alarm actions.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dateutil import parser as dtparser
from moto.cloudwatch import models as _cw
from moto.cloudwatch.exceptions import CloudWatchException, InvalidParameterValue
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult
from moto.core.utils import utcnow

_ORIGINAL: dict[str, Any] = {}
MAX_RECORDS = 100


class InvalidNextToken(CloudWatchException):
    code = "InvalidNextToken"


@dataclass(frozen=True)
class Item:
    account: str
    region: str
    alarm: str
    alarm_type: str
    timestamp: datetime
    kind: str
    summary: str
    data: str

    def shape(self) -> dict[str, Any]:
        return {
            "AlarmName": self.alarm,
            "AlarmType": self.alarm_type,
            "Timestamp": self.timestamp,
            "HistoryItemType": self.kind,
            "HistorySummary": self.summary,
            "HistoryData": self.data,
        }


HISTORY: list[Item] = []  # every region's and account's, in the order things happened


def _keep(backend: Any, alarm: Any, when: datetime, kind: str, summary: str, data: dict[str, Any]) -> None:
    HISTORY.append(
        Item(
            account=backend.account_id,
            region=backend.region_name,
            alarm=alarm.name,
            alarm_type="CompositeAlarm" if getattr(alarm, "rule", None) else "MetricAlarm",
            timestamp=when,
            kind=kind,
            summary=summary,
            data=json.dumps({"version": "1.0", **data}),
        )
    )


def _put_metric_alarm(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    existed = name in self.alarms
    alarm = _ORIGINAL["put_metric_alarm"](self, name, *args, **kwargs)
    done, kind = ("updated", "Update") if existed else ("created", "Create")
    _keep(self, alarm, utcnow(), "ConfigurationUpdate", f'Alarm "{name}" {done}', {"type": kind})
    return alarm


def _set_alarm_state(self: Any, alarm_name: str, reason: str, reason_data: str, state_value: str) -> None:
    alarm = self.alarms.get(alarm_name)
    old_value, old_reason = (alarm.state_value, alarm.state_reason) if alarm is not None else (None, None)
    _ORIGINAL["set_alarm_state"](self, alarm_name, reason, reason_data, state_value)  # validates, raises
    if old_value == state_value:
        return
    alarm = self.alarms[alarm_name]
    _keep(
        self,
        alarm,
        alarm.state_updated_timestamp,
        "StateUpdate",
        f"Alarm updated from {old_value} to {state_value}",
        {
            "oldState": {"stateValue": old_value, "stateReason": old_reason},
            "newState": {"stateValue": state_value, "stateReason": reason},
        },
    )


def _when(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = dtparser.parse(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def page_asked(response: Any, *, default: int) -> tuple[int, int]:
    """(offset, MaxRecords) of a CloudWatch listing request: MaxRecords 1-100 (else
    InvalidParameterValue), a NextToken the sandbox made (else InvalidNextToken)."""
    raw_max, token = response._get_param("MaxRecords"), response._get_param("NextToken")
    max_records = default if raw_max in (None, "") else int(raw_max)
    if not 1 <= max_records <= MAX_RECORDS:
        raise InvalidParameterValue(f"The value {max_records} for parameter MaxRecords is not valid.")
    if not token:
        return 0, max_records
    try:
        return int(json.loads(base64.b64decode(token))["o"]), max_records
    except (ValueError, KeyError, TypeError):
        raise InvalidNextToken("The service returned an invalid next token.") from None


def token_at(offset: int) -> str:
    return base64.b64encode(json.dumps({"o": offset}).encode()).decode()


def _describe_alarm_history(self: Any) -> ActionResult:
    backend = self.cloudwatch_backend
    name = self._get_param("AlarmName")
    types = self._get_param("AlarmTypes") or ["MetricAlarm"]  # AWS: metric alarms unless asked
    kind = self._get_param("HistoryItemType")
    start, end = _when(self._get_param("StartDate")), _when(self._get_param("EndDate"))
    ascending = self._get_param("ScanBy") == "TimestampAscending"
    offset, max_records = page_asked(self, default=MAX_RECORDS)
    items = [
        i
        for i in HISTORY
        if i.account == backend.account_id
        and i.region == backend.region_name
        and (not name or i.alarm == name)
        and i.alarm_type in types
        and (not kind or i.kind == kind)
        and (start is None or _aware(i.timestamp) >= start)
        and (end is None or _aware(i.timestamp) <= end)
    ]
    items.sort(key=lambda i: _aware(i.timestamp), reverse=not ascending)
    page = items[offset : offset + max_records]
    result: dict[str, Any] = {"AlarmHistoryItems": [i.shape() for i in page]}
    if offset + max_records < len(items):
        result["NextToken"] = token_at(offset + max_records)
    return ActionResult(result)


def install() -> None:
    if "put_metric_alarm" not in _ORIGINAL:
        _ORIGINAL["put_metric_alarm"] = _cw.CloudWatchBackend.put_metric_alarm
        _cw.CloudWatchBackend.put_metric_alarm = _put_metric_alarm  # type: ignore[method-assign]
        _ORIGINAL["set_alarm_state"] = _cw.CloudWatchBackend.set_alarm_state
        _cw.CloudWatchBackend.set_alarm_state = _set_alarm_state  # type: ignore[method-assign]
        CloudWatchResponse.describe_alarm_history = _describe_alarm_history  # type: ignore[attr-defined]


def reset() -> None:
    """Forget every alarm's history (the sandbox's reset: moto's backends are emptied as well)."""
    HISTORY.clear()
