"""One release per app at a time: a second release of the same app waits for the first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from amirelease.ledger import utcnow
from tests.conftest import REPO
from tests.release.conftest import clients, ledger_records, load_dag, outcome
from tests.release.invariant import ledger_tells_the_truth

# the tests that release on a shared demo-web fleet run in two groups ("fleet", "fleet-b": each on one
# worker, with its own fleet built once; tests/conftest.py fleet_env)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet-b")]

RUN_A = """
import sys
sys.path[:0] = [{plugins!r}, {dags!r}, {repo!r}]
import ami_release
dr = ami_release.dag.test(run_conf={{"app": "demo-web", "version": "5.0.0", "notes": "A"}})
print("RESULT", dr.run_id, dr.state)
"""


def test_second_release_of_same_app_waits_for_the_first(fleet_env, tmp_path):
    sb = fleet_env
    since = utcnow()
    sb.configure(refresh_batch_seconds=1.0)  # keep A's roll-out going long enough to overlap
    _, asg, s3 = clients(sb)
    code = RUN_A.format(plugins=str(REPO / "plugins"), dags=str(REPO / "dags"), repo=str(REPO))
    a = subprocess.Popen(
        [sys.executable, "-c", code],
        env=os.environ.copy(),
        stdout=(tmp_path / "a.log").open("w"),  # a file, not a pipe: A must never block on its own log
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # wait until A holds the app's lock
            keys = [
                o["Key"]
                for o in s3.list_objects_v2(Bucket="ami-release-ledger-123456789012", Prefix="locks/").get(
                    "Contents", []
                )
            ]
            if "locks/demo-web.json" in keys:
                break
            assert a.poll() is None and time.monotonic() < deadline, "release A never took the lock"
            time.sleep(0.2)
        holder = json.loads(
            s3.get_object(Bucket="ami-release-ledger-123456789012", Key="locks/demo-web.json")["Body"].read()
        )

        b = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "5.1.0", "notes": "B"})
        a.wait(timeout=300)
        out = (tmp_path / "a.log").read_text()
    finally:
        if a.poll() is None:
            a.kill()
    result = [line.split() for line in out.splitlines() if line.startswith("RESULT")]
    assert result and result[0][2] == "success", out[-2000:]
    assert holder["run_id"] == result[0][1] != b.run_id
    assert b.state == "success", outcome(b)

    records = {r["pipeline_run"]: r for r in ledger_records(sb)}
    ra, rb = records[result[0][1]], records[b.run_id]
    refreshes = {
        r["InstanceRefreshId"]: r
        for r in asg.describe_instance_refreshes(AutoScalingGroupName="demo-web-asg")["InstanceRefreshes"]
    }
    a_refresh, b_refresh = refreshes[ra["refreshes"][0]["refresh_id"]], refreshes[rb["refreshes"][0]["refresh_id"]]
    assert b_refresh["StartTime"] >= a_refresh["EndTime"]  # B rolled out only after A had finished
    assert rb["started_at"] <= ra["finished_at"]  # ...although B was triggered while A ran
    assert ledger_tells_the_truth(sb, since) == []  # B is live, as the ledger says
