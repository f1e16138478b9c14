"""The retention DAG files: wiring only, no I/O at parse time; the operator's style and "now"."""

from __future__ import annotations

import runpy
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _parse(monkeypatch, name):
    def refuse(*args, **kwargs):
        raise RuntimeError("network access at DAG parse time")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return runpy.run_path(str(REPO / "dags" / f"{name}.py"))["dag"]


@pytest.fixture
def dag(monkeypatch):
    return _parse(monkeypatch, "ami_retention")


@pytest.fixture
def manual(monkeypatch):
    return _parse(monkeypatch, "ami_retention_manual")


def test_scheduled_dag_shape(dag):
    assert dag.dag_id == "ami_retention"
    assert dag.timetable.expression == "*/5 * * * *"
    assert dag.catchup is False and dag.max_active_runs == 1
    # only the scheduler starts runs: a manual (e.g. future-dated) run is refused by the API
    assert {str(t.value) for t in dag.allowed_run_types} == {"scheduled"}
    assert dag.doc_md and "RetainIndefinitely=true" in dag.doc_md and "ami_retention_manual" in dag.doc_md
    assert set(dag.task_ids) == {"policy_regions", "retention", "retention_summary"}
    assert "mode" not in dag.params
    retention = dag.get_task("retention")
    assert "policy_regions" in retention.upstream_task_ids
    assert retention.partial_kwargs.get("mode") is None
    # one task per account x region, at most [ami_release] retention_max_parallel at once
    from amirelease.operators.retention_accounts import AccountRetentionOperator

    assert retention.operator_class is AccountRetentionOperator
    assert retention.partial_kwargs["max_active_tis_per_dagrun"] == 4
    summary = dag.get_task("retention_summary")
    assert summary.upstream_task_ids == {"policy_regions", "retention"}
    assert summary.trigger_rule == "all_done"  # it runs when a task failed, and names it


def test_parallel_tasks_are_a_deployment_setting(monkeypatch):
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__RETENTION_MAX_PARALLEL", "10")
    retention = _parse(monkeypatch, "ami_retention").get_task("retention")
    assert retention.partial_kwargs["max_active_tis_per_dagrun"] == 10
    from amirelease.errors import ConfigError

    for bad in ("0", "four", "-2"):
        monkeypatch.setenv("AIRFLOW__AMI_RELEASE__RETENTION_MAX_PARALLEL", bad)
        with pytest.raises(ConfigError, match=r"retention_max_parallel must be a whole number of at least 1"):
            _parse(monkeypatch, "ami_retention")


def test_schedule_is_a_deployment_setting(monkeypatch):
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__RETENTION_SCHEDULE", "*/15 * * * *")
    assert _parse(monkeypatch, "ami_retention").timetable.expression == "*/15 * * * *"


def test_manual_dag_has_no_schedule_and_an_explicit_mode(manual):
    assert manual.dag_id == "ami_retention_manual"
    assert manual.timetable.can_be_scheduled is False  # unpausing it starts nothing by itself
    assert manual.allowed_run_types is None
    param = manual.params.get_param("mode")
    assert param.value == "policy"
    assert param.schema["enum"] == ["policy", "dry_run", "apply"]
    assert set(param.schema["values_display"]) == {"policy", "dry_run", "apply"}
    assert "Dry run" in param.schema["values_display"]["dry_run"]
    assert manual.get_task("retention").partial_kwargs["mode"] == "{{ params.mode }}"


def test_mode_param_accepts_only_the_three_choices(manual):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(manual.params)
    for ok in ("policy", "dry_run", "apply"):
        params["mode"] = ok
        params.validate()
    with pytest.raises(ParamValidationError, match="mode"):
        params["mode"] = "yes"
        params.validate()


def test_operator_style():
    from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

    from amirelease.hooks.autoscaling import AutoScalingHook
    from amirelease.operators.retention import AmiRetentionOperator, coerce_dry_run

    op = AmiRetentionOperator(task_id="t", region_name="eu-west-1", mode="{{ params.mode }}")
    assert AmiRetentionOperator.aws_hook_class is EC2Hook
    assert isinstance(op.autoscaling_hook, AutoScalingHook) and op.autoscaling_hook.region_name == "eu-west-1"
    assert {"aws_conn_id", "region_name", "verify", "policy_path", "mode"} <= set(op.template_fields)
    assert op._hook_parameters["api_type"] == "client_type"
    assert AmiRetentionOperator(task_id="u", dry_run=True).mode is True  # the earlier keyword still works
    values = (None, "", "None", "policy", True, "false", "true", "dry_run", "apply")
    assert [coerce_dry_run(v) for v in values] == [None, None, None, None, True, False, True, True, False]


def test_iam_declaration():
    from amirelease.operators.retention import AmiRetentionOperator

    assert AmiRetentionOperator.iam_role == "retention"
    actions = AmiRetentionOperator.iam_actions
    assert len(actions) == len(set(actions)) and list(actions) == sorted(actions)
    assert {a.split(":")[0] for a in actions} == {"ec2", "autoscaling", "rbin", "s3", "sts"}


def test_now_is_never_ahead_of_the_wall_clock():
    from amirelease.operators.retention import effective_now, run_now, run_time

    wall = datetime(2026, 6, 1, 12, tzinfo=UTC)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert run_time({"data_interval_end": t, "logical_date": None}) == t
    assert run_time({"data_interval_end": None, "logical_date": t}) == t
    assert run_time({}) is None
    assert run_now({"data_interval_end": t, "logical_date": t}, wall) == t  # a re-run decides as of its date
    future = wall + timedelta(days=400)
    now, note = effective_now(future, wall)
    assert now == wall and "later than the wall clock" in note and "2027-07-06" in note and "2026-06-01" in note
    assert run_now({"logical_date": wall, "data_interval_end": future}, wall) == wall
    assert effective_now(wall - timedelta(seconds=5), wall) == (wall - timedelta(seconds=5), None)
    assert effective_now(None, wall) == (wall, None)
