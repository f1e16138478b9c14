"""The ami_retention DAG file: wiring only, no I/O at parse time."""

from __future__ import annotations

import socket
from datetime import UTC
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dag(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("network access at DAG parse time")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import runpy

    return runpy.run_path(str(REPO / "dags" / "ami_retention.py"))["dag"]


def test_dag_shape(dag):
    assert dag.dag_id == "ami_retention"
    assert dag.timetable.expression == "*/5 * * * *"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.doc_md and "RetainIndefinitely=true" in dag.doc_md
    assert set(dag.task_ids) == {"policy_regions", "retention"}
    assert dag.params["dry_run"] is None
    retention = dag.get_task("retention")
    assert "policy_regions" in retention.upstream_task_ids


def test_dry_run_param_accepts_only_bool_or_empty(dag):
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict(dag.params)
    for ok in (True, False, None):
        params["dry_run"] = ok
        params.validate()
    with pytest.raises(Exception):
        params["dry_run"] = "yes"
        params.validate()


def test_operator_style():
    from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

    from amirelease.operators.retention import AmiRetentionOperator, coerce_dry_run, run_now

    op = AmiRetentionOperator(task_id="t", region_name="eu-west-1", dry_run="{{ params.dry_run }}")
    assert AmiRetentionOperator.aws_hook_class is EC2Hook
    assert {"aws_conn_id", "region_name", "verify", "policy_path", "dry_run"} <= set(op.template_fields)
    assert op._hook_parameters["api_type"] == "client_type"
    assert [coerce_dry_run(v) for v in (None, "", "None", True, "false", "true")] == [
        None,
        None,
        None,
        True,
        False,
        True,
    ]
    from datetime import datetime

    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert run_now({"data_interval_end": t, "logical_date": None}) == t
    assert run_now({"data_interval_end": None, "logical_date": t}) == t
