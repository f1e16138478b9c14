"""The record's phases (amirelease/phases.py): each step's own report in the pipeline's order,
the refresh from AWS's own times, and the line the Releases page shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from amirelease.handoffs import RefreshHandle
from amirelease.phases import phase, phases_of, summary

T0 = datetime(2026, 12, 6, 2, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_step_reports_its_time_and_its_tools():
    p = phase(at(0), at(61.25), {"packer": 58.04})
    assert p == {
        "started_at": "2026-12-06T02:00:00.000Z",
        "ended_at": "2026-12-06T02:01:01.250Z",
        "seconds": 61.2,
        "tools": {"packer": 58.0},
    }
    assert "tools" not in phase(at(0), at(1))


def test_phases_follow_the_pipeline_and_the_refresh_is_aws_s_own_time():
    handle = RefreshHandle("us-east-1", "web-a", "r-1", "lt-1", 3, "ami-1", 60)
    a = handle.ended({"Status": "Successful", "StartTime": at(30), "EndTime": at(120)}).to_xcom()
    b = {**handle.to_xcom(), "auto_scaling_group": "web-b", "started_at": "2026-12-06T02:00:31Z"}  # still running
    c = {**handle.to_xcom(), "auto_scaling_group": "web-c", "started_at": "2026-12-06T02:00:29Z",
         "ended_at": "2026-12-06T02:01:50Z"}  # fmt: skip
    reported = {
        "bake": phase(at(5), at(20), {"packer": 14}),
        "preflight": phase(at(0), at(2)),
        "verify": phase(at(125), at(126)),
        "wait_for_refresh": phase(at(28), at(29)),  # the worker's part; the refresh is AWS's
        "smoke_test": None,  # did not run
    }
    order = ["preflight", "bake", "smoke_test", "roll_out", "wait_for_refresh", "verify", "record"]
    got = phases_of(order, reported, [a, b, c])
    assert [p["step"] for p in got] == ["preflight", "bake", "wait_for_refresh", "verify"]
    refresh = got[2]
    assert refresh["started_at"] == "2026-12-06T02:00:29.000Z" and refresh["ended_at"] == "2026-12-06T02:02:00.000Z"
    assert refresh["seconds"] == 91.0
    assert [(g["auto_scaling_group"], g["seconds"]) for g in refresh["groups"]] == [("web-a", 90.0), ("web-c", 81.0)]
    assert phases_of(order, reported, [b])[2]["step"] == "verify"  # no refresh ended: no refresh phase


def test_the_releases_page_line():
    phases = [
        {"step": "bake", "seconds": 62.4},
        {"step": "smoke_test", "seconds": 12.0},
        {"step": "wait_for_refresh", "seconds": 3725},
        {"step": "verify", "seconds": 0.44},
        {"step": "mystery"},
    ]
    assert summary(phases) == "bake 1 min 2 s · smoke test 12 s · refresh 1 h 2 min · verify 0.4 s"
    assert summary(None) == "" and summary({"bake": 1}) == ""
