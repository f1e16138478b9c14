"""Make time pass in the sandbox account by ageing it, instead of running code in the future.

``age_account(sb, days=8)`` moves, for every image the account owns (in every region):

* ``CreationDate`` (and its root snapshot's ``StartTime``) ``days`` back;
* the image's ``DeprecationTime``, the end of a deregistration-protection cooldown and
  ``lastLaunchedTime``, and the Recycle Bin's enter/exit times, ``days`` back;
* the due date in every mark tag written in Cloud Custodian's ``mark-for-op`` format
  (``<message>: <op>@YYYY/MM/DD`` or ``... @YYYY/MM/DD HHMM UTC``, any tag key) ``days``
  back, keeping its format.

So "eight days later" is the account as it will look in eight days, read with today's
clock: an image made 55 days ago is 63 days old, a mark due in 7 days is due since
yesterday. Tools that take "now" from the wall clock (Custodian, Airflow's scheduler)
and our own code see the same account. Whole days only: a date-only mark cannot move by
a fraction of a day.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from moto.ec2.models import ec2_backends

from . import images, recycle_bin
from .state import LOCK

# op@date as Custodian writes it: %Y/%m/%d, optionally " %H%M %Z"
_MARK = re.compile(r"(?P<head>[A-Za-z0-9_-]+@)(?P<date>\d{4}/\d{1,2}/\d{1,2})(?P<time> \d{4})?(?P<tail>.*)$")


def shift_mark(value: str, days: int) -> str:
    """The mark tag value with its due date ``days`` earlier; other values unchanged."""
    match = _MARK.search(value)
    if not match:
        return value
    try:
        due = datetime.strptime(match.group("date"), "%Y/%m/%d")
    except ValueError:
        return value
    time_part = match.group("time") or ""
    shifted = (due - timedelta(days=days)).strftime("%Y/%m/%d")
    return value[: match.start()] + match.group("head") + shifted + time_part + match.group("tail")


def age_account(sb: Any, days: int, *, regions: list[str] | None = None) -> int:
    """Age every own image of the sandbox account by ``days`` whole days; returns how many."""
    if int(days) != days or days < 0:
        raise ValueError(f"days must be a whole, non-negative number of days, got {days!r}")
    delta = timedelta(days=int(days))
    aged = 0
    with LOCK:
        backends = ec2_backends[sb.account_id]
        for region in regions or list(backends.keys()):
            backend = backends[region]
            for ami in list(backend.amis.values()):
                if str(getattr(ami, "owner_id", "")) != sb.account_id:
                    continue
                created = ami.creation_date
                if isinstance(created, str):
                    created = datetime.fromisoformat(created.replace("Z", "+00:00")).replace(tzinfo=None)
                ami.creation_date = created - delta
                snapshot = getattr(ami, "ebs_snapshot", None)
                if snapshot is not None and getattr(snapshot, "start_time", None) is not None:
                    start = snapshot.start_time
                    if isinstance(start, datetime):
                        snapshot.start_time = start - delta
                tags = backend.tags.get(ami.id) or {}
                for key, value in list(tags.items()):
                    new = shift_mark(value, int(days))
                    if new != value:
                        tags[key] = new
                images.shift_times(ami, delta)  # DeprecationTime, protection cooldown, lastLaunchedTime
                aged += 1
        recycle_bin.age(sb.account_id, delta)  # Recycle Bin enter/exit times
    return aged
