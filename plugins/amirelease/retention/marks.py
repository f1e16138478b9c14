"""The mark tag, in Cloud Custodian's ``mark-for-op`` (``maid_status``) format.

Custodian writes ``<message>: <op>@<date>`` where ``<date>`` is ``%Y/%m/%d`` or, when
the policy used ``hours``, ``%Y/%m/%d %H%M %Z``. Custodian itself reads the value with
``rsplit(':', 1)`` / ``split('@', 1)`` and dateutil; we read the same shapes (and a few
near relatives such as ISO dates and ``HH:MM``) without dateutil, and write exactly
``Resource does not meet policy: deregister@YYYY/MM/DD``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

# the op is the word right before the last '@'; the date is everything after it
_OP_AT_DATE = re.compile(r"([A-Za-z0-9_-]+)@([^@]*)$")
_DATE = re.compile(
    r"^(?P<y>\d{4})[/-](?P<m>\d{1,2})[/-](?P<d>\d{1,2})"
    r"(?:[ T](?P<H>\d{2}):?(?P<M>\d{2})(?::?(?P<S>\d{2})(?:\.\d+)?)?)?"
    r"\s*(?P<tz>Z|UTC|GMT|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Mark:
    op: str
    due: datetime  # aware, UTC
    raw: str


def parse_due(text: str) -> datetime | None:
    """Parse the date part of a mark; None if unreadable. A date without a time means 00:00 UTC."""
    match = _DATE.match(text.strip())
    if not match:
        return None
    g = match.groupdict()
    tz = UTC
    if g["tz"] and g["tz"].upper() not in ("Z", "UTC", "GMT"):
        sign = 1 if g["tz"][0] == "+" else -1
        digits = g["tz"][1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        due = datetime(
            int(g["y"]),
            int(g["m"]),
            int(g["d"]),
            int(g["H"] or 0),
            int(g["M"] or 0),
            int(g["S"] or 0),
            tzinfo=tz,
        )
    except ValueError:
        return None
    return due.astimezone(UTC)


def parse_mark(value: str | None) -> Mark | None:
    """Read a mark tag value tolerantly; None if it is not a ``<op>@<date>`` mark we can read."""
    if not value:
        return None
    match = _OP_AT_DATE.search(value)
    if not match:
        return None
    due = parse_due(match.group(2))
    if due is None:
        return None
    return Mark(op=match.group(1), due=due, raw=value)


def due_date_for(now: datetime, grace_days: int) -> datetime:
    """The due date of a mark made at ``now``: the first UTC midnight at or after now + grace.

    The mark carries only a date, so rounding *up* guarantees at least ``grace_days``
    between marking and deregistration (Custodian truncates, which can shorten it by a day).
    """
    target = now.astimezone(UTC) + timedelta(days=grace_days)
    midnight = target.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == target else midnight + timedelta(days=1)


def format_mark(due: datetime, *, op: str = "deregister", message: str = "Resource does not meet policy") -> str:
    return f"{message}: {op}@{due.astimezone(UTC):%Y/%m/%d}"
