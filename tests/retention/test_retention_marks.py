"""The mark tag: Custodian's maid_status format, read tolerantly, written exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from amirelease.retention.marks import due_date_for, format_mark, parse_mark

UTC = UTC


@pytest.mark.parametrize(
    ("value", "op", "due"),
    [
        ("Resource does not meet policy: deregister@2026/01/02", "deregister", datetime(2026, 1, 2, tzinfo=UTC)),
        # Custodian with `hours:` writes '%Y/%m/%d %H%M %Z'
        (
            "Resource does not meet policy: deregister@2026/01/02 1530 UTC",
            "deregister",
            datetime(2026, 1, 2, 15, 30, tzinfo=UTC),
        ),
        ("Resource does not meet policy: delete@2026/1/2", "delete", datetime(2026, 1, 2, tzinfo=UTC)),
        ("custom msg: deregister@2026-01-02", "deregister", datetime(2026, 1, 2, tzinfo=UTC)),
        ("custom msg : deregister@2026/01/02 15:30", "deregister", datetime(2026, 1, 2, 15, 30, tzinfo=UTC)),
        ("deregister@2026/01/02 1530 +0200", "deregister", datetime(2026, 1, 2, 13, 30, tzinfo=UTC)),
        ("mail ops@example.com: deregister@2026/01/02", "deregister", datetime(2026, 1, 2, tzinfo=UTC)),
        ("Resource does not meet policy: stop@2026/01/02", "stop", datetime(2026, 1, 2, tzinfo=UTC)),
    ],
)
def test_reads_custodian_marks(value, op, due):
    mark = parse_mark(value)
    assert mark is not None and mark.op == op and mark.due == due


@pytest.mark.parametrize(
    "value",
    [
        "",
        "true",
        "Resource does not meet policy",
        "deregister@",
        "deregister@soon",
        "deregister@2026/13/40",
        "Resource does not meet policy: deregister 2026/01/02",
    ],
)
def test_unreadable_marks_are_no_marks(value):
    assert parse_mark(value) is None


def test_writes_exactly_custodian_format():
    assert format_mark(datetime(2026, 1, 9, tzinfo=UTC)) == "Resource does not meet policy: deregister@2026/01/09"


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 8, tzinfo=UTC)),
        (datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC), datetime(2026, 1, 9, tzinfo=UTC)),
        (datetime(2026, 1, 1, 23, 59, tzinfo=UTC), datetime(2026, 1, 9, tzinfo=UTC)),
    ],
)
def test_due_date_rounds_up_so_grace_is_never_shortened(now, due):
    got = due_date_for(now, 7)
    assert got == due
    assert timedelta(days=7) <= got - now < timedelta(days=8)
    assert parse_mark(format_mark(got)).due == got
