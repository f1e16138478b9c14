"""The mark as an AWS deprecation, as a pure function: which images' ``DeprecationTime`` to set
or cancel so that AWS shows what the mark says.

* An image this run marks, or that stays marked and eligible with its due time ahead, should
  be deprecated at the mark's due time (to the minute: AWS rounds to the minute).
* An image this run unmarks (a use found, a hold added, a policy change) loses the
  deprecation *its mark* set (``DeprecationTime`` equal to the old due time); a deprecation
  somebody else set at another time is left alone.
* Due times already passed are not set (AWS refuses a deprecation time in the past): the image
  goes (or waits for the Recycle Bin) within the run anyway.

Comparing with what AWS shows every run makes it self-healing: a failed call is made again by
the next run, and a steady account costs no call at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from amirelease.retention.decide import Action, Plan
from amirelease.retention.model import Image


def _minute(when: datetime | None) -> datetime | None:
    return None if when is None else when.replace(second=0, microsecond=0)


def changes(plan: Plan, images: Iterable[Image], now: datetime) -> tuple[list[tuple[str, datetime]], list[str]]:
    """(``[(image id, deprecate at)]`` to set, ``[image id]`` to cancel)."""
    current = {i.image_id: _minute(i.deprecation_time) for i in images}
    to_set: list[tuple[str, datetime]] = []
    to_clear: list[str] = []
    for d in plan.decisions:
        if d.image_id not in current or d.due is None:
            continue
        have = current[d.image_id]
        want = _minute(d.due)
        marked_ahead = d.action is Action.MARK or (d.action is Action.KEEP and not d.protections)
        if marked_ahead and want is not None and d.due > now and have != want:
            to_set.append((d.image_id, d.due))
        elif d.action is Action.UNMARK and have is not None and have == want:
            to_clear.append(d.image_id)
    return to_set, to_clear
