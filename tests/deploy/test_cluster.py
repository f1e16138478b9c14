"""The multi-machine shape, run for real: docker-compose.yaml's Airflow roles as processes
(CeleryExecutor, FAB auth manager) with real PostgreSQL, Redis and a non-dev OpenBao over TLS,
against the sandbox AWS account. Driven only through the REST API, as people use it.

What it proves: a release bakes on the toolchain worker and nowhere else, its refresh wait
defers to the triggerer, every task log is readable through the API (shared logs + [api]
secret_key), secrets come from the bootstrapped Vault; a rollback by the release manager;
a retention dry run by the admin; the viewer's trigger is refused and creates nothing; an
anonymous call gets 401; every process stops and no port stays open.

Issue 26's scenarios ride on the same runs (no second cluster, no extra release): two apps at once
(demo-win released beside demo-web 1.0.0, neither waiting for the other); two releases of one app
at once (1.1.0 queued on the lock behind 1.0.0); the same trigger twice at once on each DAG (sent
together: a release is one run and a 409 in words — the trigger guard's per-app lock, a Postgres
advisory lock also shown to hold across two processes —, manual retention two distinct runs, never
the database's error; the rollback as a double click, answered 409 naming the first); a released version again
(409 in words, no run); manual retention (apply) during a bake; a rollback triggered during
1.1.0's instance refresh (it waits on the lock and decides under it). After all of them: the
ledger tells the truth (tests/release/invariant.py), one AMI per release record and nothing left
over (builder/smoke instances, Packer security groups and key pairs).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox.cluster import Api, Cluster
from sandbox.vault import VaultSandbox
from tests.release.conftest import ledger_records, run_images
from tests.release.invariant import ami_problems, ledger_tells_the_truth, leftovers

# The two whole-system tests (this and tests/demo) run one after the other on one xdist worker:
# together on 2 cores they starve each other. Each takes minutes; the timeouts allow for a loaded CI machine.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("system"), pytest.mark.timeout(1500)]

APP = "demo-web"
OTHER_APP = "demo-win"  # the sandbox catalog's second app: its own toolchain queue and worker
BAKE = "bake"
BAKE_HOST = "bake-worker-linux"
# everything the Linux toolchain's workers (Packer, Terraform) run, and nothing else
TOOLCHAIN_TASKS = (BAKE, "check_infrastructure", "apply_infrastructure")  # routed by the cluster policy


def _runs(api: Api, dag_id: str) -> int:
    return int(api.get(f"/api/v2/dags/{dag_id}/dagRuns")["total_entries"])


def _tis(api: Api, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return list(api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"])


def _key(ti: dict[str, Any]) -> str:
    return ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")


def _trigger(api: Api, dag_id: str, conf: dict[str, Any]) -> tuple[int, Any]:
    return api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})


class Follower:
    """Polls runs, remembering every state each task instance was seen in (to see 'deferred')."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.seen: dict[tuple[str, str], set[str]] = {}

    def poll(self, dag_id: str, run_id: str) -> str:
        for ti in _tis(self.api, dag_id, run_id):
            self.seen.setdefault((run_id, _key(ti)), set()).add(str(ti["state"]))
        return str(self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait(self, dag_id: str, run_id: str, timeout: float = 420, until: Any = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.poll(dag_id, run_id)
            if until is not None and until():
                return state
            if until is None and state in ("success", "failed"):
                return state
            time.sleep(0.5)
        raise AssertionError(f"{dag_id} {run_id} still running after {timeout}s: {self.seen}")


def _failure_report(cl: Cluster, admin: Api, dag_id: str, run_id: str) -> str:
    lines = []
    for ti in _tis(admin, dag_id, run_id):
        lines.append(f"{_key(ti)}: {ti['state']} on {ti.get('hostname')}")
        if ti["state"] == "failed":
            status, body = _log(admin, dag_id, run_id, ti)
            lines.append(str(body)[-3000:])
    return "\n".join(lines)


def _log(api: Api, dag_id: str, run_id: str, ti: dict[str, Any]) -> tuple[int, Any]:
    path = (
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
        f"?map_index={ti['map_index']}&full_content=true"
    )
    return api.call("GET", path)


def _log_text(body: Any) -> str:
    content = body.get("content") if isinstance(body, dict) else body
    if isinstance(content, list):
        return "\n".join(str(c.get("event", c)) if isinstance(c, dict) else str(c) for c in content)
    return str(content)


# -- issue 26: triggers that meet ------------------------------------------------------------------
def _at_once(api: Api, dag_id: str, conf: dict[str, Any]) -> list[tuple[int, Any]]:
    """The same trigger twice at the same moment (a double submit, a webhook re-sent before the
    first answer): both requests are sent together, neither waits for the other's answer."""
    api.token or api.login()
    start = threading.Barrier(2)

    def send() -> tuple[int, Any]:
        start.wait()
        return _trigger(api, dag_id, conf)

    with ThreadPoolExecutor(2) as pool:
        return [f.result() for f in [pool.submit(send), pool.submit(send)]]


def _twice(api: Api, dag_id: str, conf: dict[str, Any]) -> tuple[tuple[int, Any], tuple[int, Any]]:
    """The same trigger twice, the second sent as soon as the first is answered (a double click)."""
    api.token or api.login()
    t0 = time.monotonic()
    first = _trigger(api, dag_id, conf)
    second = _trigger(api, dag_id, conf)
    print(f"{dag_id} triggered twice in {time.monotonic() - t0:.2f}s", flush=True)
    return first, second


LOCK_PROBE = """
import sys
from amirelease.ui.trigger_guard import db_lock, db_unlock
conn = db_lock("trigger:probe", wait=float(sys.argv[1]))
print("held" if conn is not None else "not held", flush=True)
sys.stdin.read()  # hold it until the test closes our stdin
if conn is not None:
    db_unlock(conn, "trigger:probe")
"""


def _advisory_lock_holds_across_processes(cl: Cluster) -> None:
    """The guard's lock as API server replicas see it: a second process does not get the app's
    lock while the first holds it, and gets it once it is let go (the cluster's Postgres)."""
    env = cl.role_env("api-server")
    python = str(cl.venv / "bin" / "python") if cl.venv else "python3"

    def probe(wait: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [python, "-c", LOCK_PROBE, str(wait)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def answer(proc: subprocess.Popen[str]) -> str:  # its last line (log lines may come first)
        return proc.communicate("", timeout=120)[0].strip().splitlines()[-1]

    first = probe(0)
    assert first.stdout is not None
    line = ""
    for raw in first.stdout:  # log lines may come first; the loop ends at the answer or at its exit
        line = raw.strip()
        if line in ("held", "not held"):
            break
    assert line == "held"
    assert answer(probe(0.5)) == "not held"  # gives up after 0.5 s: the first holds it
    assert first.stdin is not None
    first.stdin.close()  # the first lets go
    assert first.wait(timeout=60) == 0
    assert answer(probe(0.5)) == "held"


def _two_runs(dag_id: str, answers: list[tuple[int, Any]]) -> tuple[str, str]:
    [(s1, b1), (s2, b2)] = answers
    assert s1 == s2 == 200, (dag_id, answers)
    a, b = b1["dag_run_id"], b2["dag_run_id"]
    assert a != b, (dag_id, a, b)
    return a, b


def _when(ti_or_run: dict[str, Any], field: str) -> datetime:
    value = ti_or_run.get(field)
    assert value, (field, ti_or_run)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _ti(api: Api, dag_id: str, run_id: str, key: str) -> dict[str, Any]:
    [ti] = [t for t in _tis(api, dag_id, run_id) if _key(t) == key]
    return ti


def _sandbox(cl: Cluster) -> Any:
    """What tests/release's helpers need of a sandbox: its endpoint (the cluster's sandbox account)."""
    from tests.release.conftest import LEDGER_BUCKET

    assert cl.sandbox_env["AIRFLOW__AMI_RELEASE__LEDGER_BUCKET"] == LEDGER_BUCKET, cl.sandbox_env
    return SimpleNamespace(endpoint_url=cl.sandbox_env["AWS_ENDPOINT_URL"])


def _refreshing_onto(sb: Any, run_id: str, group: str) -> bool:
    """The group's instance refresh is under way and an instance in service runs that run's AMI."""
    from tests.release.conftest import clients, group_images, run_images

    _, asg, _ = clients(sb)
    refreshes = asg.describe_instance_refreshes(AutoScalingGroupName=group)["InstanceRefreshes"]
    if not refreshes or refreshes[0]["Status"] not in ("Pending", "InProgress"):
        return False
    return bool({i["ImageId"] for i in run_images(sb, run_id)} & group_images(sb, group))


def _own_images(sb: Any, app: str) -> list[dict[str, Any]]:
    from tests.release.conftest import clients

    ec2, _, _ = clients(sb)
    return list(ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:App", "Values": [app]}])["Images"])


def test_compose_shape_releases_rolls_back_and_enforces_roles():
    t0 = time.monotonic()
    # Not pytest's tmp_path: a concurrent pytest run on the machine may prune it while we run.
    root = Path(tempfile.mkdtemp(prefix="ami-cluster-test-"))
    # checkpoint delays at full length (demo-web pauses 30 s at 34 %): every refresh outlasts the
    # wait's first poll, so the release and rollback waits surely defer to the triggerer (at 0.02
    # a refresh on a quiet machine could end before the wait polled: no deferral to see)
    cl = Cluster(root=root, checkpoint_delay_scale=1.0, say=lambda *a: print(*a, flush=True))
    try:
        cl.start()
        anonymous, admin = Api(cl.base, None, None), cl.api("admin")
        rm, viewer = cl.api("release-manager"), cl.api("viewer")

        # the trigger guard's per-app lock across processes (before any run: it takes a few
        # process starts, which must not eat into the windows the scenarios below wait for)
        _advisory_lock_holds_across_processes(cl)

        # -- who may do what -------------------------------------------------------------------
        assert anonymous.call("GET", "/api/v2/dags")[0] == 401
        assert anonymous.call("POST", "/api/v2/dags/ami_release/dagRuns", {"logical_date": None})[0] == 401
        for dag_id in (
            "ami_release",
            "ami_rollback",
            "ami_retention",
            "ami_retention_manual",
            "ami_drift",
            "ami_promote",
        ):
            deadline = time.monotonic() + 180
            while admin.call("GET", f"/api/v2/dags/{dag_id}")[0] != 200:
                assert time.monotonic() < deadline, f"{dag_id} not parsed; see {cl.log_of('dag-processor')}"
                time.sleep(1)
        for dag_id in ("ami_release", "ami_rollback"):
            assert admin.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})[0] == 200
        # DAG-level permissions are synced by the DAG processor: wait until the release manager has them
        deadline = time.monotonic() + 120
        status, body = _trigger(rm, "ami_release", {"app": APP, "version": "1.0.0", "notes": "cluster test"})
        while status == 403 and time.monotonic() < deadline:
            time.sleep(1)
            status, body = _trigger(rm, "ami_release", {"app": APP, "version": "1.0.0", "notes": "cluster test"})
        assert status == 200, (status, body)
        r1 = body["dag_run_id"]
        # two apps at once: demo-win (its own lock, its own toolchain worker) beside demo-web 1.0.0
        status, body = _trigger(rm, "ami_release", {"app": OTHER_APP, "version": "3.0.0", "notes": "cluster test"})
        assert status == 200, (status, body)
        w1 = body["dag_run_id"]
        assert viewer.get("/api/v2/dags/ami_release")["dag_id"] == "ami_release"  # the viewer reads
        status, body = _trigger(viewer, "ami_rollback", {"app": APP, "reason": "viewer must not roll back"})
        assert status == 403, (status, body)
        assert _runs(admin, "ami_rollback") == 0, "a refused trigger created a run"
        assert _trigger(viewer, "ami_release", {"app": APP, "version": "9.9.9"})[0] == 403
        assert _trigger(rm, "ami_retention_manual", {"mode": "dry_run"})[0] == 403  # retention: admin only
        assert _trigger(admin, "ami_retention", {})[0] == 400  # the scheduled DAG takes no manual runs
        # a stage's gate (ami_promote's approve, issue 20): a release manager may answer it, a viewer may not.
        # No run waits here, so the release manager passes the permission check and finds nothing (404)
        gate = "/api/v2/dags/ami_promote/dagRuns/no-such-run/taskInstances/approve/-1/hitlDetails"
        answer = {"chosen_options": ["Approve"], "params_input": {}}
        assert viewer.call("PATCH", gate, answer)[0] == 403
        deadline = time.monotonic() + 120  # ami_promote's DAG-level permissions: synced by the DAG processor
        while (status := rm.call("PATCH", gate, answer)[0]) == 403 and time.monotonic() < deadline:
            time.sleep(1)
        assert status == 404, status
        assert viewer.call("POST", "/api/v2/connections", {"connection_id": "x", "conn_type": "http"})[0] == 403
        assert rm.call("POST", "/api/v2/connections", {"connection_id": "x", "conn_type": "http"})[0] == 403
        assert admin.call("POST", "/api/v2/connections", {"connection_id": "x", "conn_type": "http"})[0] == 201
        assert admin.call("DELETE", "/api/v2/connections/x")[0] == 204

        # -- retention dry run (admin), beside the releases ----------------------------------
        status, body = _trigger(admin, "ami_retention_manual", {"mode": "dry_run"})
        assert status == 200, (status, body)
        ret = body["dag_run_id"]
        assert admin.call("PATCH", "/api/v2/dags/ami_retention_manual", {"is_paused": False})[0] == 200

        # -- release 1.0.0, then 1.1.0 (queued behind the app's lock) --------------------------
        sb = _sandbox(cl)
        f = Follower(admin)
        f.wait("ami_release", r1, until=lambda: "success" in f.seen.get((r1, "release_lock"), set()))
        # 1.1.0 sent twice at once: one run and a 409 in words naming it (the trigger guard hands
        # one trigger of an app at a time to Airflow: an advisory lock on this Postgres)
        answers = _at_once(rm, "ami_release", {"app": APP, "version": "1.1.0", "notes": "cluster test 2"})
        created = [b["dag_run_id"] for status, b in answers if status == 200]
        assert len(created) == 1, answers
        [(status, b)] = [a for a in answers if a[0] != 200]
        assert status == 409 and b["detail"].startswith(
            f"Not started: {APP} 1.1.0 is already being released by run {created[0]} ("
        ), answers
        print(f"1.1.0 sent twice at once: {[a[0] for a in answers]}", flush=True)
        runs_before = _runs(admin, "ami_release")

        # -- during 1.0.0's bake: manual retention (apply), and each other DAG twice in one second
        f.wait("ami_release", r1, until=lambda: "running" in f.seen.get((r1, BAKE), set()))
        applied = _two_runs("ami_retention_manual", _at_once(admin, "ami_retention_manual", {"mode": "apply"}))
        retention_runs = _runs(admin, "ami_retention")
        for status, body in _at_once(admin, "ami_retention", {}):  # the scheduled DAG: refused in words, twice
            assert (status, body) == (400, {"detail": "Dag with dag_id: 'ami_retention' does not allow manual runs"})
        assert _runs(admin, "ami_retention") == retention_runs
        drift = _two_runs("ami_drift", _at_once(admin, "ami_drift", {}))  # paused: its runs stay queued
        for run_id in drift:
            assert admin.call("DELETE", f"/api/v2/dags/ami_drift/dagRuns/{run_id}")[0] == 204

        assert f.wait("ami_release", r1) == "success", _failure_report(cl, admin, "ami_release", r1)
        t_release = time.monotonic() - t0
        # r2: the 1.1.0 run that got the lock; r2x: the other one, if both triggers made a run
        deadline = time.monotonic() + 300
        while not (
            holders := [r for r in created if _ti(admin, "ami_release", r, "release_lock")["state"] == "success"]
        ):
            assert time.monotonic() < deadline, f"no 1.1.0 run got the lock: {created}"
            time.sleep(0.5)
        [r2] = holders
        r2x = next((r for r in created if r != r2), None)
        # -- a released version again: 409 in words (the release, its AMI, the ways on); no run
        [rec1] = [r for r in ledger_records(sb, APP) if r["pipeline_run"] == r1]
        status, body = _trigger(rm, "ami_release", {"app": APP, "version": "1.0.0", "notes": "again"})
        assert status == 409, (status, body)
        assert body["detail"] == (
            f"Not started: {APP} 1.0.0 was already released: release {rec1['release_id']} (finished "
            f"{rec1['finished_at']}, AMI {rec1['amis']['us-east-1']}, run ami_release/{r1}). To go on: to bring that "
            "release back, trigger ami_rollback with target 1.0.0; to bake the same version again on purpose "
            "(today's base image, a security patch), trigger ami_release again with 'rebuild' ticked and a rebuild "
            "reason; to release a change, give it a new version."
        ), body
        assert _runs(admin, "ami_release") == runs_before, "a refused trigger created a run"

        # -- a rollback during 1.1.0's instance refresh: it resolves at once, waits on the lock,
        # and decides under it (1.1.0 is still what runs, so it goes on and replaces 1.1.0)
        f.wait("ami_release", r2, timeout=600, until=lambda: _refreshing_onto(sb, r2, "demo-web-asg"))
        reason = {"app": APP, "reason": "1.1.0 breaks checkout (cluster test)"}
        first, second = _twice(rm, "ami_rollback", reason)
        assert first[0] == 200, first
        rb = first[1]["dag_run_id"]
        assert second[0] == 409 and second[1]["detail"].startswith(
            (
                f"Not started: a rollback of {APP} is already queued: run {rb}",
                f"Not started: a rollback of {APP} is already running: run {rb}",
            )
        ), second
        assert f.wait("ami_release", r2) == "success", _failure_report(cl, admin, "ami_release", r2)
        assert f.wait("ami_rollback", rb) == "success", _failure_report(cl, admin, "ami_rollback", rb)
        if r2x is not None:  # the second 1.1.0 run: refused once it held the lock, nothing built
            assert f.wait("ami_release", r2x) == "failed", _failure_report(cl, admin, "ami_release", r2x)
            lock_ti = _ti(admin, "ami_release", r2x, "release_lock")
            assert lock_ti["state"] == "failed", _failure_report(cl, admin, "ami_release", r2x)
            words = str(_log(admin, "ami_release", r2x, lock_ti)[1])  # the refusal is in the log's error detail
            assert f"{APP} 1.1.0 was already released: release " in words, words[-3000:]
            assert "while this run waited for the release lock; nothing was built for this run" in words, words[-3000:]
            assert _ti(admin, "ami_release", r2x, BAKE)["state"] != "success"
            assert run_images(sb, r2x) == []
        r2_refresh = _ti(admin, "ami_release", r2, "wait_for_refresh[0]")
        proposed = _ti(admin, "ami_rollback", rb, "preflight")  # resolves the target
        assert _when(proposed, "end_date") < _when(r2_refresh, "end_date"), (proposed, r2_refresh)  # asked mid-refresh
        decided = _ti(admin, "ami_rollback", rb, "mark_rolled_back")
        r2_record = _ti(admin, "ami_release", r2, "record")
        assert _when(decided, "start_date") >= _when(r2_record, "start_date"), (decided, r2_record)  # under the lock
        assert "1.1.0" in str(
            admin.get(f"/api/v2/dags/ami_rollback/dagRuns/{rb}/taskInstances/preflight/xcomEntries/rollback_target")
        )
        run = admin.get(f"/api/v2/dags/ami_rollback/dagRuns/{rb}")
        assert run["triggering_user_name"] == "release-manager"
        hold = admin.get(f"/api/v2/dags/ami_rollback/dagRuns/{rb}/taskInstances/preflight/xcomEntries/rollback_target")
        assert "1.0.0" in str(hold["value"]), hold

        assert f.wait("ami_retention_manual", ret, timeout=240) == "success", _failure_report(
            cl, admin, "ami_retention_manual", ret
        )
        r1_bake, r1_rec = _ti(admin, "ami_release", r1, BAKE), _ti(admin, "ami_release", r1, "record")
        for run_id in applied:
            assert f.wait("ami_retention_manual", run_id, timeout=240) == "success", _failure_report(
                cl, admin, "ami_retention_manual", run_id
            )
            [applied_ti] = [t for t in _tis(admin, "ami_retention_manual", run_id) if t["task_id"] == "retention"]
            # triggered during the bake (18 s here); it ran while 1.0.0 was in flight: its AMI baked, not yet recorded
            assert _when(r1_bake, "start_date") < _when(applied_ti, "start_date") < _when(r1_rec, "start_date"), (
                applied_ti,
                r1_bake,
                r1_rec,
            )
            report = admin.get(
                f"/api/v2/dags/ami_retention_manual/dagRuns/{run_id}/taskInstances/retention/xcomEntries/return_value"
                f"?map_index={applied_ti['map_index']}"
            )
            assert "'dry_run': False" in str(report["value"]), report
        assert f.wait("ami_release", w1, timeout=300) == "success", _failure_report(cl, admin, "ami_release", w1)
        # the two apps did not wait for each other: each held its own lock while the other held its
        w_lock, w_record = _ti(admin, "ami_release", w1, "release_lock"), _ti(admin, "ami_release", w1, "record")
        r1_lock, r1_record = _ti(admin, "ami_release", r1, "release_lock"), _ti(admin, "ami_release", r1, "record")
        assert _when(w_lock, "end_date") < _when(r1_record, "start_date"), (w_lock, r1_record)
        assert _when(r1_lock, "end_date") < _when(w_record, "start_date"), (r1_lock, w_record)

        # -- what every scenario above must leave: a ledger that tells the truth, one AMI per
        # release, nothing left over
        for app, group in ((APP, "demo-web-asg"), (OTHER_APP, "demo-win-asg")):
            assert ledger_tells_the_truth(sb, app=app, group=group) == [], app
            records = ledger_records(sb, app)
            assert ami_problems(_own_images(sb, app), records) == [], app
        kinds = sorted((r["version"], r["kind"], r["outcome"]) for r in ledger_records(sb, APP))
        assert kinds == [
            ("1.0.0", "re-release", "succeeded"),
            ("1.0.0", "release", "succeeded"),
            ("1.1.0", "release", "succeeded"),
        ], kinds
        [rec2] = [r for r in ledger_records(sb, APP) if r["pipeline_run"] == r2]
        [rb_rec] = [r for r in ledger_records(sb, APP) if r["pipeline_run"] == rb]
        assert (rec2.get("rolled_back") or {}).get("by_release_id") == rb_rec["release_id"], rec2
        assert leftovers(sb) == {"builder/smoke instances": [], "Packer security groups": [], "Packer key pairs": []}
        [region_ti] = [t for t in _tis(admin, "ami_retention_manual", ret) if t["task_id"] == "retention"]
        report = admin.get(
            f"/api/v2/dags/ami_retention_manual/dagRuns/{ret}/taskInstances/retention/xcomEntries/return_value"
            f"?map_index={region_ti['map_index']}"
        )
        assert "'dry_run': True" in str(report["value"]), report

        # -- where things ran ---------------------------------------------------------------------
        for dag_id, run_id in (("ami_release", r1), ("ami_release", r2), ("ami_rollback", rb)):
            tis = {_key(t): t for t in _tis(admin, dag_id, run_id)}
            for task_id in TOOLCHAIN_TASKS:
                ti = tis[task_id]
                assert ti["state"] == "success" and ti["queue"] == "packer-chef-linux", ti
                assert ti["hostname"] == BAKE_HOST, ti
            assert not [k for k in tis if "packer-chef-windows" in k], tis  # one task per step, no per-toolchain copies
            others = {k: t["hostname"] for k, t in tis.items() if k not in TOOLCHAIN_TASKS and t["try_number"]}
            assert BAKE_HOST not in others.values(), f"a non-toolchain task ran on the bake worker: {others}"
            assert set(others.values()) == {"worker"}, others  # everything else on the default worker
            if run_id != r1:  # r1 creates the fleet: its refresh has ended before the wait (no deferral)
                assert "deferred" in f.seen[(run_id, "wait_for_refresh[0]")], f.seen
        # the bake worker's own log names the bake task and no other
        bake_log = cl.log_of(BAKE_HOST).read_text()
        assert "task_id='bake'" in bake_log
        assert "task_id='smoke_test'" not in bake_log and "smoke_test" not in bake_log

        # -- every task log through the API, and no secret in any of them ------------------------
        seeded = VaultSandbox().secrets_file
        import yaml

        secret_values = [v for vals in yaml.safe_load(seeded.read_text())["secrets"].values() for v in vals.values()]
        read = 0
        for dag_id, run_id in (("ami_release", r1), ("ami_rollback", rb), ("ami_retention_manual", ret)):
            for ti in _tis(admin, dag_id, run_id):
                if not ti["try_number"]:
                    continue
                status, body = _log(viewer, dag_id, run_id, ti)
                assert status == 200, (dag_id, _key(ti), status, body)
                text = _log_text(body)
                assert len(text) > 50 and "secret_key" not in text and "Could not read" not in text, (
                    dag_id,
                    _key(ti),
                    text[:2000],
                )
                assert not any(s in text for s in secret_values), f"a Vault secret in the log of {_key(ti)}"
                if ti["task_id"] == "wait_for_refresh" and run_id == rb:
                    assert "Pausing task as DEFERRED" in text, text[-2000:]
                if ti["task_id"] == "wait_for_refresh" and run_id == r1:
                    assert "already ended; no need to defer" in text, text[-2000:]
                read += 1
        assert read >= 20
        print(f"release 1 done {t_release:.0f}s after start; all runs {time.monotonic() - t0:.0f}s")
    finally:
        cl.stop()
    left = cl.listening()
    assert not left, f"ports still open after stop: {left}"
    alive = [name for name, p in cl.procs.items() if p.group_alive()]
    assert not alive, f"processes still running after stop: {alive}"
    elapsed = time.monotonic() - t0
    # a figure, not an assertion (timing belongs in bench/); hangs are caught by the timeout mark
    print(f"cluster test wall time {elapsed:.0f}s; timings {cl.timings}")
    shutil.rmtree(root, ignore_errors=True)  # kept when anything above failed, for its logs


def test_one_ami_per_release_record_is_checked_in_words():
    """The check the scenarios above end with (tests/release/invariant.py ami_problems), pure."""

    def image(ami: str, rid: str) -> dict[str, Any]:
        return {"ImageId": ami, "Tags": [{"Key": "ReleaseId", "Value": rid}]}

    records = [
        {"release_id": "r1", "outcome": "succeeded", "amis": {"us-east-1": "ami-1"}},
        {"release_id": "r2", "outcome": "succeeded", "amis": {"us-east-1": "ami-2"}},
        {"release_id": "r3", "outcome": "failed", "amis": {}},
    ]
    older = {"ImageId": "ami-0", "Tags": [{"Key": "App", "Value": "demo-web"}]}  # before the pipeline: no release's
    assert ami_problems([image("ami-1", "r1"), image("ami-2", "r2"), older], records) == []
    assert ami_problems([image("ami-1", "r1"), image("ami-2", "r2"), image("ami-9", "r2")], records) == [
        "release r2 has 2 AMIs: ['ami-2', 'ami-9']",
        "r2's record names ['ami-2'], AWS holds ['ami-2', 'ami-9']",
    ]
    assert ami_problems([image("ami-1", "r1"), image("ami-2", "r2"), image("ami-3", "r3")], records) == [
        "AMI ['ami-3'] of r3, which has no succeeded release record"
    ]
    assert ami_problems([image("ami-1", "r1")], records) == ["r2's AMI ['ami-2'] is gone"]
