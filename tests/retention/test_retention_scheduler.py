"""The issue's attacks against a real Airflow (standalone: scheduler, DAG processor, API server)
and the sandbox, through the REST API as a caller would make them:

1. A manual run dated now with ``data_interval_end`` 400 days ahead deregistered images whose
   marks were not due, and images built that day. Now: ``ami_retention`` refuses manual runs
   (HTTP 400); on ``ami_retention_manual`` such a run decides as of the wall clock, so
   nothing is deregistered that was not due by the wall clock.
2. A run with a ``logical_date`` 400 days ahead held the one active-run slot and blocked the
   schedule. Now: refused on ``ami_retention``; on ``ami_retention_manual`` it never runs
   a task, and the next scheduled ``ami_retention`` run starts on time.
3. A manual dry run from the form with "Unpause on trigger" started the scheduled DAG.
   Now: the dry run is a run of ``ami_retention_manual`` (no schedule): unpausing it leaves
   ``ami_retention`` paused with no run, and the dry run changes nothing on EC2.

The schedule is set to every minute here ([ami_release] retention_schedule) so that "the
next scheduled run" comes within a minute.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox.demo import Airflow, standalone_env
from tests.retention.conftest import LEDGER_BUCKET

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
MARK = "maid_status"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Airflow(Airflow):
    """The demo's `airflow standalone` runner, in a home of its own."""

    def __init__(self, env: dict[str, str], api_port: int, home: Path) -> None:
        super().__init__(env, api_port)
        self.home = home
        self.log_path = home / "standalone.log"

    def password(self) -> str | None:
        try:
            return json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text()).get("admin")
        except (OSError, ValueError):
            return None

    def status(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        try:
            return 200, self.api(method, path, body)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _wait_run(af: _Airflow, dag_id: str, run_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(2)
    raise AssertionError(f"{dag_id} run {run_id} did not finish in {timeout:.0f}s; see {af.log_path}")


def _tags(sb) -> dict[str, dict[str, str]]:
    images = sb.client("ec2", internal=True).describe_images(Owners=["self"])["Images"]
    return {i["Name"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])} for i in images}


@pytest.fixture
def airflow(sandbox, tmp_path):
    home = tmp_path / "airflow"
    dags = tmp_path / "dags"
    home.mkdir()
    dags.mkdir()
    for name in ("ami_retention.py", "ami_retention_manual.py"):
        shutil.copy(REPO / "dags" / name, dags / name)
    port = _free_port()
    env = standalone_env(home, dags, port, parallelism=2, dag_refresh_seconds=5)
    env.update(
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        AIRFLOW__AMI_RELEASE__RETENTION_SCHEDULE="* * * * *",
        AIRFLOW__AMI_RELEASE__LEDGER_BUCKET=LEDGER_BUCKET,
        AWS_ENDPOINT_URL=sandbox.endpoint_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=sandbox.region,
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"region_name": sandbox.region, "endpoint_url": sandbox.endpoint_url},
            }
        ),
    )
    af = _Airflow(env, port, home)
    try:
        af.start(timeout=300)
        af.wait_for_dag("ami_retention", timeout=240)
        af.wait_for_dag("ami_retention_manual", timeout=240)
        yield af
    finally:
        af.stop()


def test_attacks_through_the_api_and_the_schedule(sandbox, airflow):
    af, sb = airflow, sandbox
    wall = datetime.now(UTC)
    tomorrow = f"Resource does not meet policy: deregister@{wall + timedelta(days=1):%Y/%m/%d}"
    sb.create_image("marked-due-tomorrow", age_days=90, tags={MARK: tomorrow})
    sb.create_image("prod-previous", age_days=0)
    sb.create_image("failed-release", age_days=0.2, tags={"ForensicHold": "rollback", "ForensicHoldReason": "INC-1"})
    before = _tags(sb)

    # 1 + 2 on the scheduled DAG: refused, nothing created
    for body in (
        {
            "logical_date": _iso(wall),
            "data_interval_start": _iso(wall),
            "data_interval_end": _iso(wall + timedelta(days=400)),
        },
        {"logical_date": _iso(wall + timedelta(days=400))},
    ):
        code, text = af.status("POST", "/api/v2/dags/ami_retention/dagRuns", body)
        assert code == 400 and "does not allow manual runs" in text, (code, text)
    assert af.api("GET", "/api/v2/dags/ami_retention/dagRuns")["total_entries"] == 0

    # 3: a dry run "with Unpause on trigger": the manual DAG is unpaused, the scheduled one is not touched
    af.api("PATCH", "/api/v2/dags/ami_retention_manual", {"is_paused": False})
    sb.reset_request_counts()
    run = af.api(
        "POST", "/api/v2/dags/ami_retention_manual/dagRuns", {"logical_date": None, "conf": {"mode": "dry_run"}}
    )
    assert _wait_run(af, "ami_retention_manual", run["dag_run_id"])["state"] == "success"
    writes = {a for a in sb.request_counts() if not a.split(":")[1].startswith(("Describe", "Get", "List", "Head"))}
    assert writes == {"s3:PutObject"} and _tags(sb) == before  # only the dry run's report
    assert af.api("GET", "/api/v2/dags/ami_retention")["is_paused"] is True
    assert af.api("GET", "/api/v2/dags/ami_retention/dagRuns")["total_entries"] == 0

    # 1 on the manual DAG, applying: acts as of the wall clock
    body = {
        "logical_date": _iso(wall),
        "data_interval_start": _iso(wall),
        "data_interval_end": _iso(wall + timedelta(days=400)),
        "conf": {"mode": "apply"},
    }
    run = af.api("POST", "/api/v2/dags/ami_retention_manual/dagRuns", body)
    assert _wait_run(af, "ami_retention_manual", run["dag_run_id"])["state"] == "success"
    after = _tags(sb)
    assert set(before) - set(after) == {"demo-web-0.9.4"}  # the only mark due by the wall clock
    assert after["marked-due-tomorrow"][MARK] == tomorrow
    for name in ("prod-previous", "failed-release"):
        assert MARK not in after[name]

    # 2 on the manual DAG: dated 400 days ahead, it never runs a task ...
    future = af.api(
        "POST", "/api/v2/dags/ami_retention_manual/dagRuns", {"logical_date": _iso(wall + timedelta(days=400))}
    )
    # ... and the schedule goes on: the next scheduled run starts on time and succeeds
    unpaused = datetime.now(UTC)
    af.api("PATCH", "/api/v2/dags/ami_retention", {"is_paused": False})
    deadline = time.monotonic() + 200
    on_time = None
    while time.monotonic() < deadline and on_time is None:
        runs = af.api("GET", "/api/v2/dags/ami_retention/dagRuns?order_by=-run_after&limit=5")["dag_runs"]
        for r in runs:
            run_after = datetime.fromisoformat(r["run_after"].replace("Z", "+00:00"))
            if run_after > unpaused and r["state"] == "success":
                on_time = r
        time.sleep(3)
    assert on_time is not None, f"no scheduled run after {unpaused}; see {af.log_path}"
    assert on_time["run_type"] == "scheduled"
    started = datetime.fromisoformat(on_time["start_date"].replace("Z", "+00:00"))
    run_after = datetime.fromisoformat(on_time["run_after"].replace("Z", "+00:00"))
    assert (started - run_after).total_seconds() < 45, on_time
    stuck = af.api("GET", f"/api/v2/dags/ami_retention_manual/dagRuns/{future['dag_run_id']}")
    assert stuck["state"] in ("queued", "running")
    tis = af.api("GET", f"/api/v2/dags/ami_retention_manual/dagRuns/{future['dag_run_id']}/taskInstances")
    assert all(t["state"] in (None, "scheduled", "none") for t in tis["task_instances"]), tis
