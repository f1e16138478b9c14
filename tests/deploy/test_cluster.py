"""The multi-machine shape, run for real: docker-compose.yaml's Airflow roles as processes
(CeleryExecutor, FAB auth manager) with real PostgreSQL, Redis and a non-dev OpenBao over TLS,
against the sandbox AWS account. Driven only through the REST API, as people use it.

What it proves: a release bakes on the toolchain worker and nowhere else, its refresh wait
defers to the triggerer, every task log is readable through the API (shared logs + [api]
secret_key), secrets come from the bootstrapped Vault; a rollback by the release manager;
a retention dry run by the admin; the viewer's trigger is refused and creates nothing; an
anonymous call gets 401; every process stops and no port stays open.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from sandbox.cluster import Api, Cluster
from sandbox.vault import VaultSandbox

# The two whole-system tests (this and tests/demo) run one after the other on one xdist worker:
# together on 2 cores they starve each other. Each takes minutes; the timeouts allow for a loaded CI machine.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("system"), pytest.mark.timeout(1500)]

APP = "demo-web"
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

        # -- who may do what -------------------------------------------------------------------
        assert anonymous.call("GET", "/api/v2/dags")[0] == 401
        assert anonymous.call("POST", "/api/v2/dags/ami_release/dagRuns", {"logical_date": None})[0] == 401
        for dag_id in ("ami_release", "ami_rollback", "ami_retention", "ami_retention_manual"):
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
        assert viewer.get("/api/v2/dags/ami_release")["dag_id"] == "ami_release"  # the viewer reads
        status, body = _trigger(viewer, "ami_rollback", {"app": APP, "reason": "viewer must not roll back"})
        assert status == 403, (status, body)
        assert _runs(admin, "ami_rollback") == 0, "a refused trigger created a run"
        assert _trigger(viewer, "ami_release", {"app": APP, "version": "9.9.9"})[0] == 403
        assert _trigger(rm, "ami_retention_manual", {"mode": "dry_run"})[0] == 403  # retention: admin only
        assert _trigger(admin, "ami_retention", {})[0] == 400  # the scheduled DAG takes no manual runs
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
        f = Follower(admin)
        f.wait("ami_release", r1, until=lambda: "success" in f.seen.get((r1, "release_lock"), set()))
        status, body = _trigger(rm, "ami_release", {"app": APP, "version": "1.1.0", "notes": "cluster test 2"})
        assert status == 200, (status, body)
        r2 = body["dag_run_id"]
        assert f.wait("ami_release", r1) == "success", _failure_report(cl, admin, "ami_release", r1)
        t_release = time.monotonic() - t0
        assert f.wait("ami_release", r2) == "success", _failure_report(cl, admin, "ami_release", r2)

        # -- rollback by the release manager ----------------------------------------------------
        status, body = _trigger(rm, "ami_rollback", {"app": APP, "reason": "1.1.0 breaks checkout (cluster test)"})
        assert status == 200, (status, body)
        rb = body["dag_run_id"]
        assert f.wait("ami_rollback", rb) == "success", _failure_report(cl, admin, "ami_rollback", rb)
        run = admin.get(f"/api/v2/dags/ami_rollback/dagRuns/{rb}")
        assert run["triggering_user_name"] == "release-manager"
        hold = admin.get(
            f"/api/v2/dags/ami_rollback/dagRuns/{rb}/taskInstances/resolve_target/xcomEntries/return_value"
        )
        assert "1.0.0" in str(hold["value"]), hold

        assert f.wait("ami_retention_manual", ret, timeout=240) == "success", _failure_report(
            cl, admin, "ami_retention_manual", ret
        )
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
