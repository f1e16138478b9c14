"""Drift in words from Terraform's JSON plan, the drift record's life, the live release per region,
the plan's variables, and the Releases page's drift rows (pure: no AWS, no Terraform)."""

from __future__ import annotations

from datetime import UTC, datetime

from amirelease.drift.operators import drift_variables, live_releases
from amirelease.drift.report import DriftedResource, is_news, next_record, read_plan, record_words
from amirelease.hooks.vault import Secrets
from amirelease.operators.infrastructure import variables_for

# the shape of `terraform show -json` (Terraform 1.11) for the drift the e2e test makes, plus noise
PLAN = {
    "resource_drift": [
        {
            "address": "aws_autoscaling_group.web",
            "mode": "managed",
            "type": "aws_autoscaling_group",
            "change": {
                "actions": ["update"],
                "before": {"max_size": 6, "desired_capacity": 3, "enabled_metrics": None, "tags_all": {"A": "1"}},
                "after": {"max_size": 10, "desired_capacity": 4, "enabled_metrics": [], "tags_all": {"A": "2"}},
                "before_sensitive": {},
                "after_sensitive": {},
            },
        },
        {
            "address": "aws_launch_template.web",
            "mode": "managed",
            "type": "aws_launch_template",
            "change": {
                "actions": ["update"],
                "before": {"default_version": 1, "user_data": "c2VjcmV0", "metadata_options": [{"http_tokens": "a"}]},
                "after": {"default_version": 2, "user_data": "b3RoZXI=", "metadata_options": [{"http_tokens": "b"}]},
                "before_sensitive": {"user_data": True},
                "after_sensitive": {"user_data": True},
            },
        },
        {  # moto reads back [] for null: drift Terraform would not revert is no drift
            "address": "aws_cloudwatch_metric_alarm.latency",
            "mode": "managed",
            "type": "aws_cloudwatch_metric_alarm",
            "change": {"actions": ["update"], "before": {"ok_actions": None}, "after": {"ok_actions": []}},
        },
        {
            "address": "aws_security_group.web",
            "mode": "managed",
            "type": "aws_security_group",
            "change": {"actions": ["delete"], "before": {"name": "x"}, "after": None},
        },
    ],
    "resource_changes": [
        {  # desired_capacity is under ignore_changes: the plan keeps the live value
            "address": "aws_autoscaling_group.web",
            "change": {
                "actions": ["update"],
                "before": {"max_size": 10, "desired_capacity": 4},
                "after": {"max_size": 6, "desired_capacity": 4},
            },
        },
        {
            "address": "aws_launch_template.web",
            "change": {
                "actions": ["update"],
                "before": {"default_version": 2, "user_data": "b3RoZXI=", "metadata_options": [{"http_tokens": "b"}]},
                "after": {"user_data": "c2VjcmV0", "metadata_options": [{"http_tokens": "a"}]},
                "after_unknown": {"default_version": True},
            },
        },
        {"address": "aws_cloudwatch_metric_alarm.latency", "change": {"actions": ["no-op"]}},
        {"address": "aws_security_group.web", "change": {"actions": ["create"]}},
        {"address": "aws_ssm_parameter.api_token", "change": {"actions": ["update"]}},
    ],
}


def test_drift_is_what_changed_outside_terraform_and_the_plan_would_revert():
    reading = read_plan(PLAN)
    by = {d.address: d for d in reading.drifted}
    assert set(by) == {"aws_autoscaling_group.web", "aws_launch_template.web", "aws_security_group.web"}
    assert [a.words() for a in by["aws_autoscaling_group.web"].attributes] == [
        "max_size: 6 -> 10",
    ]  # desired_capacity: the plan keeps it (ignored); enabled_metrics null -> [] is no change; no tags_all
    lt = [a.words() for a in by["aws_launch_template.web"].attributes]
    assert lt == [
        "default_version: 1 -> 2",
        "metadata_options[0].http_tokens: a -> b",
        "user_data: (sensitive) -> (sensitive)",
    ]
    assert by["aws_security_group.web"].words() == (
        "aws_security_group.web deleted outside Terraform: attributes not shown (a release would create it)"
    )
    assert reading.pending == ("aws_ssm_parameter.api_token (update)",)  # planned, but no drift explains it
    assert read_plan({"resource_drift": [], "resource_changes": []}).drifted == ()
    # without the plan's before/after (another Terraform shape): every drifted attribute, but
    # null and [] are one value
    bare = read_plan(
        {
            "resource_drift": [
                {"address": "x.y", "type": "x", "change": {"before": {"a": None, "b": 1}, "after": {"a": [], "b": 2}}}
            ],
            "resource_changes": [{"address": "x.y", "change": {"actions": ["update"]}}],
        }
    )
    assert [a.words() for a in bare.drifted[0].attributes] == ["b: 1 -> 2"]


def test_the_record_keeps_first_seen_while_drift_lasts_and_is_cleared_by_a_clean_plan():
    d = read_plan(PLAN).drifted
    release = {"release_id": "demo-web-1.0.0-a", "version": "1.0.0"}
    run = {"dag_id": "ami_drift", "run_id": "r1"}
    first = next_record(None, app="demo-web", region="us-east-1", release=release, drifted=d, now="T1", run=run)
    assert first is not None and first["first_seen"] == "T1" and first["last_seen"] == "T1"
    assert is_news(None, first)
    second = next_record(first, app="demo-web", region="us-east-1", release=release, drifted=d, now="T2", run=run)
    assert second is not None and second["first_seen"] == "T1" and second["last_seen"] == "T2"
    assert not is_news(first, second)  # the same drift: nobody is told again
    fewer = next_record(first, app="demo-web", region="us-east-1", release=release, drifted=d[:1], now="T3", run=run)
    assert is_news(first, fewer)  # what drifted changed: told
    newer = {"release_id": "demo-web-1.1.0-b", "version": "1.1.0"}
    other = next_record(first, app="demo-web", region="us-east-1", release=newer, drifted=d, now="T4", run=run)
    assert other is not None and other["first_seen"] == "T4" and is_news(first, other)  # another live release
    assert (
        next_record(first, app="demo-web", region="us-east-1", release=release, drifted=(), now="T5", run=run) is None
    )
    assert [DriftedResource.from_dict(r) for r in first["resources"]] == list(d)  # round trip
    assert record_words(first)[0].startswith("aws_autoscaling_group.web changed outside a release: ")


def test_the_live_release_of_a_region_is_the_newest_succeeded_one_that_applied_there():
    def rec(rid, outcome, finished, regions):
        return {
            "release_id": rid,
            "outcome": outcome,
            "finished_at": finished,
            "infrastructure": {"applied": [{"region": r} for r in regions]},
        }

    history = [
        rec("a", "succeeded", "2026-01-01T00:00:00Z", ["us-east-1", "eu-west-1"]),
        rec("b", "succeeded", "2026-01-03T00:00:00Z", ["us-east-1"]),
        rec("c", "failed", "2026-01-04T00:00:00Z", ["us-east-1"]),  # a failed release is not what runs
    ]
    live = live_releases(history)
    assert {r: v["release_id"] for r, v in live.items()} == {("", "us-east-1"): "b", ("", "eu-west-1"): "a"}
    assert live_releases([rec("c", "failed", "2026-01-04T00:00:00Z", ["us-east-1"])]) == {}


def test_with_stages_each_stage_runs_the_newest_release_verified_there():
    def staged(rid, **stages):
        return {
            "release_id": rid,
            "outcome": "succeeded",
            "finished_at": "2026-01-01T00:00:00Z",
            "stages": {
                name: {"outcome": outcome, "finished_at": at, "applied": [{"region": "us-east-1"}]}
                for name, (outcome, at) in stages.items()
            },
        }

    history = [
        staged("a", staging=("succeeded", "2026-01-01T00:00:00Z"), production=("succeeded", "2026-01-02T00:00:00Z")),
        staged("b", staging=("succeeded", "2026-01-03T00:00:00Z"), production=("rejected", "2026-01-04T00:00:00Z")),
    ]
    live = {k: v["release_id"] for k, v in live_releases(history).items()}
    assert live == {("staging", "us-east-1"): "b", ("production", "us-east-1"): "a"}


def test_the_drift_plan_gets_the_variables_the_release_applied(release_plan):
    plan = release_plan()
    secrets = Secrets(values={"api_token": "s"}, versions={"api_token": 3})
    want = variables_for(plan, "us-east-1", "ami-123", secrets)
    got = drift_variables(
        plan.app_spec, plan.network("us-east-1"), "us-east-1", plan.release_id, "ami-123", {"api_token": 3}
    )
    assert got == want


def test_the_releases_page_shows_drift_per_region_in_words():
    from amirelease.ui.present import drift_rows

    d = read_plan(PLAN).drifted
    record = next_record(
        None,
        app="demo-web",
        region="us-east-1",
        release={"release_id": "demo-web-1.0.0-a", "version": "1.0.0"},
        drifted=d,
        now="2026-12-05T10:00:00Z",
        run={"dag_id": "ami_drift", "run_id": "scheduled__x"},
    )
    rows = drift_rows([record], datetime(2026, 12, 5, 12, 0, tzinfo=UTC), "")
    assert len(rows) == 1
    row = rows[0]
    assert (row.region, row.version, row.release_id) == ("us-east-1", "1.0.0", "demo-web-1.0.0-a")
    assert "2 h ago" in row.since or "2 hours ago" in row.since, row.since
    assert (
        row.lines[0]
        == "aws_autoscaling_group.web changed outside a release: max_size: 6 -> 10 (a release would update it)"
    )
    assert row.run_href == "/dags/ami_drift/runs/scheduled__x"
    assert drift_rows([], datetime(2026, 12, 5, tzinfo=UTC), "") == []
