"""The bake runs beside the Terraform check (issue 21): a check that fails while Packer runs
stops the bake — Packer interrupted, its builder removed, no AMI — and the bake names the check.

dag.test() runs one task at a time, so a check cannot fail *while* a bake runs there; the
release tests cover the other orders (the check failed before the bake: the bake stops before
Packer; the bake finished first: record deregisters the refused release's AMI). Here the bake
runs for real against the sandbox, and only the check's state comes from a stand-in for
Airflow's task-state API (`ti.get_task_states`), which turns to "failed" once Packer is
mid-build."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from amirelease.errors import BakeError
from amirelease.handoffs import ReleasePlan
from amirelease.operators.bake import BakeAmiOperator, key_pair_name
from amirelease.operators.preflight import ReleasePreflightOperator
from tests.release.conftest import clients, run_images, running_instances

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet-b")]

RUN_ID = "manual__bake-beside-check"


class CheckState:
    """What Airflow would answer for the check's state: running, then failed when told."""

    def __init__(self) -> None:
        self.failed = threading.Event()
        self.asked = 0

    def ti(self) -> SimpleNamespace:
        def get_task_states(dag_id, run_ids, task_ids):
            self.asked += 1
            state = "failed" if self.failed.is_set() else "running"
            return {RUN_ID: {t: state for t in task_ids}}

        return SimpleNamespace(dag_id="ami_release", run_id=RUN_ID, try_number=1, get_task_states=get_task_states)


def test_a_check_failing_mid_bake_interrupts_packer_and_keeps_nothing(fleet_env):
    sb = fleet_env
    ec2, _, _ = clients(sb)
    plan = ReleasePreflightOperator(
        task_id="preflight", app="demo-web", version="7.7.7", region_name="us-east-1"
    ).execute({"run_id": RUN_ID})  # stores the bundle the bake reads
    rid = ReleasePlan.from_xcom(plan).release_id
    sb.faults.delay("ec2:StopInstances", seconds=20, times=1)  # Packer mid-build, its builder running
    check = CheckState()

    def fail_the_check_mid_build() -> None:
        while sb.request_counts().get("ec2:StopInstances", 0) < 1:
            threading.Event().wait(0.2)
        assert running_instances(sb, "ami-bake-builder", rid)
        check.failed.set()

    watcher = threading.Thread(target=fail_the_check_mid_build, daemon=True)
    watcher.start()
    op = BakeAmiOperator(
        task_id="bake", plan=plan, region_name="us-east-1", gates=["check_infrastructure"], gate_poll_seconds=1
    )
    with pytest.raises(BakeError) as err:
        op.execute({"run_id": RUN_ID, "ti": check.ti()})
    watcher.join(timeout=5)
    assert check.failed.is_set() and check.asked >= 2
    words = str(err.value)
    assert "stopped because check_infrastructure failed" in words and "Packer was interrupted" in words, words
    assert "check_infrastructure's error" in words
    # nothing kept: no AMI, no builder, no security group, no key pair
    assert sb.request_counts().get("ec2:CreateImage", 0) == 0 and run_images(sb, RUN_ID) == []
    assert running_instances(sb, "ami-bake-builder", rid) == []
    assert not ec2.describe_security_groups(Filters=[{"Name": "tag:ReleaseId", "Values": [rid]}])["SecurityGroups"]
    assert not ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [key_pair_name(rid)]}])["KeyPairs"]


def test_a_check_that_failed_before_the_bake_stops_it_before_anything_is_made(fleet_env):
    sb = fleet_env
    plan = ReleasePreflightOperator(
        task_id="preflight", app="demo-web", version="7.7.8", region_name="us-east-1"
    ).execute({"run_id": RUN_ID + "-2"})
    check = CheckState()
    check.failed.set()
    ti = check.ti()
    ti.run_id = RUN_ID  # the stand-in answers under RUN_ID
    before = dict(sb.request_counts())
    op = BakeAmiOperator(task_id="bake", plan=plan, region_name="us-east-1", gates=["check_infrastructure"])
    with pytest.raises(BakeError, match="before Packer started: nothing was built"):
        op.execute({"run_id": RUN_ID, "ti": ti})
    made = {k: v - before.get(k, 0) for k, v in sb.request_counts().items() if v != before.get(k, 0)}
    assert not [k for k in made if k.split(":", 1)[1].startswith(("Create", "Run", "Authorize"))], made
