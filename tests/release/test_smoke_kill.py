"""A killed smoke test leaves no instance behind (Airflow calls on_kill on SIGTERM/timeout)."""

from __future__ import annotations

import threading
import time

import pytest

from amirelease.handoffs import BakeResult
from amirelease.operators.preflight import ReleasePreflightOperator
from amirelease.operators.smoke import SmokeTestOperator
from tests.release.conftest import running_instances

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet-b")]


def test_on_kill_terminates_the_smoke_instance(fleet_env, monkeypatch):
    sb = fleet_env
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__SMOKE_POLL_SECONDS", "0.2")
    # The instance's SSM agent never registers, so the task is still busy when it is killed.
    sb.faults.fail("ssm:SendCommand", code="InvalidInstanceId", times=10_000)
    plan = ReleasePreflightOperator(
        task_id="preflight", app="demo-web", version="6.6.6", region_name="us-east-1"
    ).execute({"run_id": "manual__smoke-kill"})
    ami = sb.account["vendor_images"]["amazon-linux"]
    bake = BakeResult(
        release_id="kill-test", ami_id=ami, amis={"us-east-1": ami}, source_ami=ami, reused=False
    ).to_xcom()
    op = SmokeTestOperator(task_id="smoke_test", plan=plan, bake=bake, region_name="us-east-1")
    errors: list[BaseException] = []

    def run():
        try:
            op.execute({})
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not running_instances(sb, "ami-smoke-test"):
        assert time.monotonic() < deadline and t.is_alive(), errors
        time.sleep(0.2)
    op.on_kill()
    assert running_instances(sb, "ami-smoke-test") == []
    sb.faults.clear()
    t.join(timeout=60)
