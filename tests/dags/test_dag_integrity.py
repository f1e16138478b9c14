"""Every DAG file imports cleanly, fast, and without touching the network (no AWS, no Vault)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

DAG_FILES = sorted(p.name for p in (REPO / "dags").glob("*.py"))

# Runs in a fresh interpreter so nothing cached by other tests hides a parse-time import.
PROBE = r"""
import json, socket, sys, time
class Blocked(RuntimeError): pass
def refuse(*a, **k): raise Blocked(f"network use at DAG parse time: {a[:1]}")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
t0 = time.monotonic()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print("ERRORS", json.dumps(dict(bag.import_errors)))
print("DAGS", json.dumps(sorted(bag.dag_ids)))
print("SECONDS", round(time.monotonic() - t0, 2))
"""


def _parse(folder=None):
    import os

    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(folder or REPO / "dags")],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for line in out.stdout.splitlines()
        if line.split(" ", 1)[0] in ("ERRORS", "DAGS", "SECONDS")
    }
    return json.loads(lines["ERRORS"]), json.loads(lines["DAGS"]), float(lines["SECONDS"])


@pytest.fixture(scope="module")
def parsed():
    try:
        from airflow.dag_processing.dagbag import DagBag  # noqa: F401
    except ImportError:  # pragma: no cover
        pytest.fail("airflow.dag_processing.dagbag.DagBag moved; update the probe")
    return _parse()


def test_no_import_errors_with_network_blocked(parsed):
    errors, dags, _ = parsed
    assert errors == {}, errors


def test_expected_dags_present(parsed):
    _, dags, _ = parsed
    assert {"ami_release", "ami_rollback", "ami_retention", "ami_drift"} <= set(dags)


def test_drift_dag_plans_on_each_toolchains_queue():
    """ami_drift: per toolchain of the catalog, targets -> a mapped plan on that toolchain's queue
    (the workers with Terraform) -> one report that runs whatever the plans did."""
    import importlib

    sys.path.insert(0, str(REPO / "dags"))
    try:
        dag = importlib.import_module("ami_drift").dag
    finally:
        sys.path.remove(str(REPO / "dags"))
    assert set(dag.task_ids) == {
        "targets_packer_chef_linux",
        "plan_packer_chef_linux",
        "targets_packer_chef_windows",
        "plan_packer_chef_windows",
        "report",
    }
    assert dag.get_task("plan_packer_chef_linux").queue == "packer-chef-linux"
    assert dag.get_task("plan_packer_chef_windows").queue == "packer-chef-windows"
    assert dag.get_task("report").trigger_rule == "all_done"
    assert dag.timetable.expression == "0 * * * *"  # @hourly, [ami_release] drift_schedule unset


def test_every_dag_file_defines_a_dag(parsed):
    _, dags, _ = parsed
    assert len(dags) >= len(DAG_FILES)


def test_release_dag_shape_and_params():
    sys.path.insert(0, str(REPO / "dags"))
    import ami_release

    dag = ami_release.dag
    assert dag.params["app"] and set(dag.params.get_param("app").schema["enum"]) == {"demo-web", "demo-win"}
    # one task per step; the cluster policy (amirelease/routing.py) routes the toolchain's to its queue
    ids = {t.task_id for t in dag.tasks}
    assert {"check_infrastructure", "bake", "apply_infrastructure"} <= ids, ids
    assert not {"route_toolchain", "baked", "applied"} & ids and not [i for i in ids if "." in i], ids
    assert dag.get_task("record").is_teardown and dag.get_task("preflight").is_setup
    assert dag.get_task("release_lock").mode == "reschedule"
    # the critical path (issue 21): the check beside the bake, both under the lock; the smoke test and the
    # apply after both (the apply plans while the smoke test runs and applies only after it passed)
    assert dag.get_task("release_lock").downstream_task_ids == {"check_infrastructure", "bake"}
    assert dag.get_task("bake").gates == ["check_infrastructure"]
    assert dag.get_task("smoke_test").upstream_task_ids == {"preflight", "bake", "check_infrastructure"}
    assert dag.get_task("apply_infrastructure").upstream_task_ids == {"preflight", "bake", "check_infrastructure"}
    assert dag.get_task("apply_infrastructure").after == "smoke_test"
    assert {"apply_infrastructure", "smoke_test"} <= dag.get_task("roll_out").upstream_task_ids
    assert not dag.render_template_as_native_obj  # text parameters stay text (1.10 is not 1.1)
    rollback = __import__("ami_rollback").dag
    assert not rollback.render_template_as_native_obj
    assert rollback.get_task("preflight").upstream_task_ids == set()  # it resolves the target itself: one start
    # a rollback decides under the app's lock (issue 26): mark_rolled_back after release_lock and the check;
    # the bake runs beside it and stops if it refuses; nothing is smoke-tested or applied before the mark
    mark = rollback.get_task("mark_rolled_back")
    assert mark.upstream_task_ids == {"release_lock", "check_infrastructure"}, mark.upstream_task_ids
    assert mark.downstream_task_ids == {"smoke_test", "apply_infrastructure"}
    assert rollback.get_task("bake").gates == ["check_infrastructure", "mark_rolled_back"]
    # stages (issue 20): every release and rollback ends by offering the next stage (a teardown)
    for d in (dag, rollback):
        assert d.get_task("next_stage").is_teardown and "next_stage" in d.get_task("record").downstream_task_ids


def test_promote_dag_waits_at_its_gate_before_the_lock():
    """ami_promote: one stage of a verified release; the gate (Airflow's HITL ApprovalOperator)
    comes before the app's lock, so a pending approval never holds up a rollback or a release."""
    sys.path.insert(0, str(REPO / "dags"))
    import ami_promote
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    dag = ami_promote.dag
    assert "bake" not in dag.task_ids and "smoke_test" not in dag.task_ids  # one bake per release
    gate = dag.get_task("approve")
    assert isinstance(gate, ApprovalOperator) and gate.defaults == ["Reject"]  # no answer is a rejection
    assert gate.upstream_task_ids == {"check_infrastructure"} and gate.downstream_task_ids == {"release_lock"}
    assert dag.get_task("release_lock").downstream_task_ids == {"apply_infrastructure"}
    assert dag.get_task("apply_infrastructure").after is None
    assert dag.get_task("record").is_teardown and dag.get_task("preflight").is_setup
    assert {"roll_forward", "next_stage"} <= dag.get_task("record").downstream_task_ids
    assert set(dag.params) == {"app", "release_id", "stage", "until_stage", "emergency"}


def test_the_probe_catches_network_at_parse_time(tmp_path):
    """The guard above is real: a DAG file that calls AWS at import is reported as broken."""
    (tmp_path / "bad_dag.py").write_text(
        "import boto3\n"
        "from datetime import datetime\n"
        "from airflow.sdk import DAG\n"
        "boto3.client('ec2', region_name='us-east-1', endpoint_url='http://127.0.0.1:9').describe_images()\n"
        "with DAG('bad', schedule=None, start_date=datetime(2026, 1, 1)):\n    pass\n"
    )
    errors, dags, _ = _parse(tmp_path)
    assert "bad" not in dags and any("network use at DAG parse time" in e for e in errors.values()), errors
