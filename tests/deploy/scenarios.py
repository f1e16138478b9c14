"""What the container test (tests/deploy/test_compose.py) does through the REST API once the
shipped docker-compose.yaml is up: the releases, faults and meeting triggers a platform team's
cluster meets, driven only as people drive it (the REST API) plus the sandbox account's own view.

- who may do what: anonymous 401; the viewer's triggers 403 and no run made; retention is the
  admin's; a stage's gate answered by the release manager, not the viewer; connections admin only;
- two apps at once: demo-win 3.0.0 (its own lock, the Windows toolchain's worker) beside demo-web
  1.0.0, neither waiting for the other; a retention dry run by the admin beside both;
- the same trigger twice at once on each DAG (issue 26): 1.1.0 sent twice gives one run and a 409
  in words (the trigger guard's per-app Postgres advisory lock, also shown to hold across two
  processes of the api-server container); manual retention twice gives two runs; the scheduled
  retention DAG refuses manual runs in words; 1.1.0 waits on demo-web's lock behind 1.0.0;
- a released version again: 409 in words, no run;
- faults (issue 19 item 3): the scheduler and the worker running 1.1.0's bake restarted
  (`docker restart`) while Packer waits on AWS; 1.1.0 still ends once: one bake, one AMI, one
  refresh, one record; Postgres keeps the history;
- a rollback triggered as a double click during 1.1.0's instance refresh: one run and a 409; it
  resolves its target at once, waits on the lock and decides under it;
- where things ran: Packer and Terraform on the bake worker of the app's toolchain (the bake image),
  everything else on `worker`, each refresh wait deferred to the triggerer container;
- afterwards: the ledger tells the truth, one AMI per release record, every Packer image accounted
  for, every refresh of the group named by a record, nothing left over (builders, smoke instances,
  Packer security groups and key pairs), every task log readable by the viewer with no secret in it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import yaml

from tests.conftest import REPO

APP = "demo-web"
GROUP = "demo-web-asg"  # its one Auto Scaling group (include/apps/demo-web.yaml)
OTHER_APP = "demo-win"  # the catalog's second app: its own toolchain queue and worker
OTHER_GROUP = "demo-win-asg"
BAKE = "bake"
TOOLCHAIN_TASKS = (BAKE, "check_infrastructure", "apply_infrastructure")  # routed by the cluster policy
HOLD_SECONDS = 60  # the fault check: how long the sandbox holds Packer's StopInstances back


# -- REST helpers ------------------------------------------------------------------------------------
def tis(api: Any, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return list(api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"])


def key(ti: dict[str, Any]) -> str:
    return str(ti["task_id"]) + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")


def ti_of(api: Any, dag_id: str, run_id: str, name: str) -> dict[str, Any]:
    [ti] = [t for t in tis(api, dag_id, run_id) if key(t) == name]
    return ti


def runs(api: Any, dag_id: str) -> int:
    return int(api.get(f"/api/v2/dags/{dag_id}/dagRuns")["total_entries"])


def trigger(api: Any, dag_id: str, conf: dict[str, Any]) -> tuple[int, Any]:
    return api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})  # type: ignore[no-any-return]


def ti_log(api: Any, dag_id: str, run_id: str, ti: dict[str, Any]) -> tuple[int, Any]:
    return api.call(  # type: ignore[no-any-return]
        "GET",
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
        f"?map_index={ti['map_index']}&full_content=true",
    )


def log_text(body: Any) -> str:
    content = body.get("content") if isinstance(body, dict) else body
    if isinstance(content, list):
        return "\n".join(str(c.get("event", c)) if isinstance(c, dict) else str(c) for c in content)
    return str(content)


def when(ti_or_run: dict[str, Any], field: str) -> datetime:
    value = ti_or_run.get(field)
    assert value, (field, ti_or_run)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def failure_report(api: Any, dag_id: str, run_id: str) -> str:
    lines = []
    for ti in tis(api, dag_id, run_id):
        lines.append(f"{key(ti)}: {ti['state']} on {ti.get('hostname')} (try {ti['try_number']})")
        if ti["state"] == "failed":
            lines.append(str(ti_log(api, dag_id, run_id, ti)[1])[-3000:])
    return "\n".join(lines)


class Follower:
    """Polls runs, remembering every state each task instance was seen in (to see 'deferred'), and
    which triggerer (host name, job id) held a deferred task instance's trigger (the REST API's
    triggerer_job), by (run, task[map index])."""

    def __init__(self, api: Any, diagnose: Callable[[], str] = str) -> None:
        self.api, self.diagnose = api, diagnose
        self.seen: dict[tuple[str, str], set[str]] = {}
        self.held_by: dict[tuple[str, str], set[tuple[str, int]]] = {}

    def poll(self, dag_id: str, run_id: str) -> str:
        for ti in tis(self.api, dag_id, run_id):
            self.seen.setdefault((run_id, key(ti)), set()).add(str(ti["state"]))
            job = ti.get("triggerer_job") or {}
            if ti["state"] == "deferred" and job.get("hostname"):
                self.held_by.setdefault((run_id, key(ti)), set()).add((job["hostname"], job["id"]))
        return str(self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def saw(self, run_id: str, name: str, state: str) -> bool:
        return state in self.seen.get((run_id, name), set())

    def wait(self, dag_id: str, run_id: str, timeout: float = 900, until: Any = None) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.poll(dag_id, run_id)
            if until is not None and until():
                return state
            if until is None and state in ("success", "failed"):
                return state
            assert time.monotonic() < deadline, (
                f"{dag_id} {run_id} still {state} after {timeout} s: "
                f"{ {k: v for k, v in self.seen.items() if k[0] == run_id} }\n{self.diagnose()}"
            )
            time.sleep(0.5)

    def succeeds(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, dict[str, Any]]:
        """Waits for the run and asserts it succeeded; its task instances by task[map index]."""
        state = self.wait(dag_id, run_id, timeout)
        assert state == "success", f"{dag_id} {run_id} {state}:\n{failure_report(self.api, dag_id, run_id)}"
        return {key(ti): ti for ti in tis(self.api, dag_id, run_id)}


# -- issue 26: triggers that meet ----------------------------------------------------------------------
def at_once(api: Any, dag_id: str, conf: dict[str, Any]) -> list[tuple[int, Any]]:
    """The same trigger twice at the same moment (a double submit, a webhook re-sent before the
    first answer): both requests are sent together, neither waits for the other's answer."""
    api.token or api.login()
    start = threading.Barrier(2)

    def send() -> tuple[int, Any]:
        start.wait()
        return trigger(api, dag_id, conf)

    with ThreadPoolExecutor(2) as pool:
        return [f.result() for f in [pool.submit(send), pool.submit(send)]]


def twice(api: Any, dag_id: str, conf: dict[str, Any]) -> tuple[tuple[int, Any], tuple[int, Any]]:
    """The same trigger twice, the second sent as soon as the first is answered (a double click)."""
    api.token or api.login()
    return trigger(api, dag_id, conf), trigger(api, dag_id, conf)


def two_runs(dag_id: str, answers: list[tuple[int, Any]]) -> tuple[str, str]:
    [(s1, b1), (s2, b2)] = answers
    assert s1 == s2 == 200, (dag_id, answers)
    a, b = b1["dag_run_id"], b2["dag_run_id"]
    assert a != b, (dag_id, a, b)
    return a, b


# The trigger guard's lock as two API server replicas see it, run in the api-server container: the
# first probe takes the lock and holds it until the test creates a file; the second gives up.
LOCK_PROBE = """
import os, sys, time
from amirelease.ui.trigger_guard import db_lock, db_unlock
conn = db_lock("trigger:probe", wait=float(sys.argv[1]))
print("held" if conn is not None else "not held", flush=True)
while len(sys.argv) > 2 and not os.path.exists(sys.argv[2]):
    time.sleep(0.2)
if conn is not None:
    db_unlock(conn, "trigger:probe")
"""


def advisory_lock_holds_across_processes(compose: Any) -> None:
    """A second process does not get the app's lock while the first holds it, and gets it once it is
    let go (the compose file's Postgres, two processes in the api-server container)."""
    release = f"/tmp/lock-probe-{time.monotonic_ns()}"

    def answer(*argv: str) -> str:  # its last line (log lines may come first)
        out = compose("exec", "-T", "api-server", "python", "-c", LOCK_PROBE, *argv, timeout=180).stdout
        return str(out).strip().splitlines()[-1]

    first = compose.popen("exec", "-T", "api-server", "python", "-c", LOCK_PROBE, "0", release)
    try:
        assert first.stdout is not None
        line = ""
        for raw in first.stdout:  # log lines may come first; the loop ends at the answer or at its exit
            line = raw.strip()
            if line in ("held", "not held"):
                break
        assert line == "held", line
        assert answer("0.5") == "not held"  # gives up after 0.5 s: the first holds it
    finally:
        compose("exec", "-T", "api-server", "touch", release, check=False)  # the first lets go
        assert first.wait(timeout=120) == 0
    assert answer("0.5") == "held"


# -- the sandbox account's view ---------------------------------------------------------------------------
def refreshing_onto(sb: Any, run_id: str, group: str) -> bool:
    """The group's instance refresh is under way and an instance in service runs that run's AMI."""
    from tests.release.conftest import clients, group_images, run_images

    _, asg, _ = clients(sb)
    refreshes = asg.describe_instance_refreshes(AutoScalingGroupName=group)["InstanceRefreshes"]
    if not refreshes or refreshes[0]["Status"] not in ("Pending", "InProgress"):
        return False
    return bool({i["ImageId"] for i in run_images(sb, run_id)} & group_images(sb, group))


def own_images(sb: Any, app: str | None = None) -> list[dict[str, Any]]:
    from tests.release.conftest import clients

    ec2, _, _ = clients(sb)
    filters = [{"Name": "tag:App", "Values": [app]}] if app else []
    return list(ec2.describe_images(Owners=["self"], Filters=filters)["Images"])


def group_refreshes(sb: Any, group: str) -> list[str]:
    """Every instance refresh of the group (DescribeInstanceRefreshes, every page)."""
    from tests.release.conftest import clients

    _, asg, _ = clients(sb)
    ids: list[str] = []
    token = None
    while True:
        page = asg.describe_instance_refreshes(AutoScalingGroupName=group, **({"NextToken": token} if token else {}))
        ids += [r["InstanceRefreshId"] for r in page["InstanceRefreshes"]]
        if not (token := page.get("NextToken")):
            return ids


def builders_launched(sb: Any) -> list[str]:
    """Every Packer builder instance ever launched, terminated ones included."""
    from amirelease.constants import PURPOSE_BUILDER, TAG_PURPOSE
    from tests.release.conftest import clients

    ec2, _, _ = clients(sb)
    found = ec2.describe_instances(Filters=[{"Name": f"tag:{TAG_PURPOSE}", "Values": [PURPOSE_BUILDER]}])
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


# -- the scenarios ----------------------------------------------------------------------------------------
def run_scenarios(
    compose: Any, engine: Any, sandbox: Any, apis: dict[str, Any], lap: Callable[[str, float], float]
) -> None:
    from tests.release.conftest import ledger_records, run_images
    from tests.release.invariant import ami_problems, ledger_tells_the_truth, leftovers

    anonymous, admin, rm, viewer = apis["anonymous"], apis["admin"], apis["release-manager"], apis["viewer"]
    f = Follower(admin, compose.diagnose)
    t = time.monotonic()
    images_before = {i["ImageId"] for i in own_images(sandbox)}  # the account's own AMIs, tagged or not

    # the trigger guard's per-app lock across processes (before any run: two process starts in the
    # api-server container, which must not eat into the windows the scenarios below wait for)
    advisory_lock_holds_across_processes(compose)

    # -- who may do what --------------------------------------------------------------------------------
    assert anonymous.call("GET", "/api/v2/dags")[0] == 401
    assert anonymous.call("POST", "/api/v2/dags/ami_release/dagRuns", {"logical_date": None})[0] == 401
    for dag_id in ("ami_release", "ami_rollback", "ami_retention", "ami_retention_manual", "ami_drift", "ami_promote"):
        deadline = time.monotonic() + 180
        while admin.call("GET", f"/api/v2/dags/{dag_id}")[0] != 200:
            assert time.monotonic() < deadline, (
                f"{dag_id} not parsed:\n" + compose("logs", "--tail", "40", "dag-processor").stdout
            )
            time.sleep(1)
    for dag_id in ("ami_release", "ami_rollback", "ami_retention_manual"):
        assert admin.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})[0] == 200
    conf = {"app": APP, "version": "1.0.0", "notes": "compose test"}
    assert trigger(viewer, "ami_release", conf)[0] == 403
    deadline = time.monotonic() + 120  # DAG-level permissions are synced by the DAG processor
    while (answer := trigger(rm, "ami_release", conf))[0] == 403 and time.monotonic() < deadline:
        time.sleep(1)
    assert answer[0] == 200, answer
    r1 = answer[1]["dag_run_id"]
    # two apps at once: demo-win (its own lock, its own toolchain worker) beside demo-web 1.0.0
    status, body = trigger(rm, "ami_release", {"app": OTHER_APP, "version": "3.0.0", "notes": "compose test"})
    assert status == 200, (status, body)
    w1 = body["dag_run_id"]
    # a retention dry run by the admin, beside both releases
    status, body = trigger(admin, "ami_retention_manual", {"mode": "dry_run"})
    assert status == 200, (status, body)
    ret = body["dag_run_id"]
    assert viewer.get("/api/v2/dags/ami_release")["dag_id"] == "ami_release"  # the viewer reads
    status, body = trigger(viewer, "ami_rollback", {"app": APP, "reason": "viewer must not roll back"})
    assert status == 403, (status, body)
    assert runs(admin, "ami_rollback") == 0, "a refused trigger created a run"
    assert trigger(viewer, "ami_release", {"app": APP, "version": "9.9.9"})[0] == 403
    assert trigger(rm, "ami_retention_manual", {"mode": "dry_run"})[0] == 403  # retention: admin only
    assert trigger(admin, "ami_retention", {})[0] == 400  # the scheduled DAG takes no manual runs
    # a stage's gate (ami_promote's approve, issue 20): a release manager may answer it, a viewer may
    # not. No run waits here, so the release manager passes the permission check and finds nothing (404)
    gate = "/api/v2/dags/ami_promote/dagRuns/no-such-run/taskInstances/approve/-1/hitlDetails"
    choice = {"chosen_options": ["Approve"], "params_input": {}}
    assert viewer.call("PATCH", gate, choice)[0] == 403
    deadline = time.monotonic() + 120  # ami_promote's DAG-level permissions: synced by the DAG processor
    while (status := rm.call("PATCH", gate, choice)[0]) == 403 and time.monotonic() < deadline:
        time.sleep(1)
    assert status == 404, status
    assert viewer.call("POST", "/api/v2/connections", {"connection_id": "x", "conn_type": "http"})[0] == 403
    assert rm.call("POST", "/api/v2/connections", {"connection_id": "x", "conn_type": "http"})[0] == 403
    assert admin.call("POST", "/api/v2/connections", {"connection_id": "x", "conn_type": "http"})[0] == 201
    assert admin.call("DELETE", "/api/v2/connections/x")[0] == 204

    # -- 1.1.0 twice at once while 1.0.0 holds the lock: one run (queued behind 1.0.0) and a 409 ------
    f.wait("ami_release", r1, until=lambda: f.saw(r1, "release_lock", "success"))
    answers = at_once(rm, "ami_release", {"app": APP, "version": "1.1.0", "notes": "compose test 2"})
    created = [b["dag_run_id"] for status, b in answers if status == 200]
    assert len(created) == 1, answers
    [r2] = created
    [(status, b)] = [a for a in answers if a[0] != 200]
    assert status == 409 and b["detail"].startswith(
        f"Not started: {APP} 1.1.0 is already being released by run {r2} ("
    ), answers
    runs_before = runs(admin, "ami_release")

    # -- during 1.0.0's bake: manual retention (apply), and each other DAG twice in one second ----------
    f.wait("ami_release", r1, until=lambda: f.saw(r1, BAKE, "running"))
    applied = two_runs("ami_retention_manual", at_once(admin, "ami_retention_manual", {"mode": "apply"}))
    retention_runs = runs(admin, "ami_retention")
    for status, body in at_once(admin, "ami_retention", {}):  # the scheduled DAG: refused in words, twice
        assert (status, body) == (400, {"detail": "Dag with dag_id: 'ami_retention' does not allow manual runs"})
    assert runs(admin, "ami_retention") == retention_runs
    drift = two_runs("ami_drift", at_once(admin, "ami_drift", {}))  # paused: its runs stay queued
    for run_id in drift:
        assert admin.call("DELETE", f"/api/v2/dags/ami_drift/dagRuns/{run_id}")[0] == 204

    # -- the fault check's set-up: once 1.0.0's and demo-win's bakes are over (1.1.0 waits on the lock
    # until 1.0.0's record), Packer's next StopInstances, 1.1.0's bake's, is held back: a slow AWS
    f.wait("ami_release", r1, until=lambda: f.saw(r1, BAKE, "success"))
    f.wait("ami_release", w1, until=lambda: f.saw(w1, BAKE, "success") or f.saw(w1, BAKE, "failed"))
    r2_bake = ti_of(admin, "ami_release", r2, BAKE)
    assert r2_bake["state"] in (None, "scheduled", "queued"), (
        f"1.1.0's bake is {r2_bake['state']} already: demo-win's bake outlasted all of 1.0.0, so the fault "
        "check could not tell 1.1.0's StopInstances from another bake's"
    )
    sandbox.faults.delay("ec2:StopInstances", seconds=HOLD_SECONDS, times=1)
    stops_before = sandbox.callers().get(("packer", "ec2:StopInstances"), 0)
    r1_tis = f.succeeds("ami_release", r1)
    t = lap("release 1.0.0 (trigger to success, demo-win 3.0.0 beside it)", t)

    # -- a released version again: 409 in words (the release, its AMI, the ways on); no run ------------
    [rec1] = [r for r in ledger_records(sandbox, APP) if r["pipeline_run"] == r1]
    status, body = trigger(rm, "ami_release", {"app": APP, "version": "1.0.0", "notes": "again"})
    assert status == 409, (status, body)
    assert body["detail"] == (
        f"Not started: {APP} 1.0.0 was already released: release {rec1['release_id']} (finished "
        f"{rec1['finished_at']}, AMI {rec1['amis']['us-east-1']}, run ami_release/{r1}). To go on: to bring that "
        "release back, trigger ami_rollback with target 1.0.0; to bake the same version again on purpose "
        "(today's base image, a security patch), trigger ami_release again with 'rebuild' ticked and a rebuild "
        "reason; to release a change, give it a new version."
    ), body
    assert runs(admin, "ami_release") == runs_before, "a refused trigger created a run"
    # the viewer reads the bake's log through the API server (the shared logs volume)
    status, log = ti_log(viewer, "ami_release", r1, r1_tis[BAKE])
    assert status == 200 and "packer" in str(log).lower(), (status, str(log)[-2000:])

    # -- faults: the scheduler and the worker running 1.1.0's bake restarted while Packer waits --------
    deadline = time.monotonic() + 600
    while sandbox.callers().get(("packer", "ec2:StopInstances"), 0) == stops_before:
        state = f.poll("ami_release", r2)
        assert state in ("queued", "running") and time.monotonic() < deadline, (
            f"1.1.0's Packer never got to stopping its builder: {state}, {failure_report(admin, 'ami_release', r2)}"
        )
        time.sleep(1)
    bake = ti_of(admin, "ami_release", r2, BAKE)
    assert bake["state"] == "running" and bake["hostname"], bake
    running = {c["Config"]["Hostname"]: c for c in compose.containers(all_=False)}
    victims = {name: c for name, c in running.items() if compose.service_of(c) == "scheduler"}
    victims[bake["hostname"]] = running[bake["hostname"]]  # the worker running the bake
    started = {compose.service_of(c): c["State"]["StartedAt"] for c in victims.values()}
    t_fault = time.monotonic()
    engine.docker("restart", *(c["Id"] for c in victims.values()), timeout=300)
    lap(f"docker restart {' + '.join(sorted(started))} (1.1.0's bake running)", t_fault)
    restarted = {compose.service_of(c): c["State"]["StartedAt"] for c in compose.containers(all_=False)}
    assert all(restarted[svc] != at for svc, at in started.items()), (started, restarted)
    # Postgres keeps the history: the earlier runs, as they ended, listed after the restart
    listed = {r["dag_run_id"]: r["state"] for r in admin.get("/api/v2/dags/ami_release/dagRuns?limit=100")["dag_runs"]}
    assert listed.get(r1) == "success" and r2 in listed, listed

    # -- a rollback as a double click during 1.1.0's instance refresh: one run, a 409 naming it ---------
    f.wait("ami_release", r2, timeout=1200, until=lambda: refreshing_onto(sandbox, r2, GROUP))
    reason = {"app": APP, "reason": "1.1.0 breaks checkout (compose test)"}
    assert trigger(viewer, "ami_rollback", reason)[0] == 403
    first, second = twice(rm, "ami_rollback", reason)
    assert first[0] == 200, first
    rb = first[1]["dag_run_id"]
    assert second[0] == 409 and second[1]["detail"].startswith(
        (
            f"Not started: a rollback of {APP} is already queued: run {rb}",
            f"Not started: a rollback of {APP} is already running: run {rb}",
        )
    ), second
    r2_tis = f.succeeds("ami_release", r2, timeout=1200)
    t = lap("release 1.1.0 (the restarts, a rollback waiting on its lock)", t)
    rb_tis = f.succeeds("ami_rollback", rb)
    t = lap("rollback to 1.0.0", t)
    print(
        f"[compose test] 1.1.0's bake: try {r2_tis[BAKE]['try_number']}, states seen "
        f"{sorted(f.seen[(r2, BAKE)])}; Packer builders launched so far: {len(builders_launched(sandbox))} "
        "(one per bake try)",
        flush=True,
    )
    # the rollback resolved its target mid-refresh and decided under the lock (after 1.1.0's record)
    assert when(rb_tis["preflight"], "end_date") < when(r2_tis["wait_for_refresh[0]"], "end_date")
    assert when(rb_tis["mark_rolled_back"], "start_date") >= when(r2_tis["record"], "start_date")
    target = admin.get(f"/api/v2/dags/ami_rollback/dagRuns/{rb}/taskInstances/preflight/xcomEntries/rollback_target")
    assert "1.0.0" in str(target["value"]), target
    assert admin.get(f"/api/v2/dags/ami_rollback/dagRuns/{rb}")["triggering_user_name"] == "alice"

    # -- the retention runs and demo-win ------------------------------------------------------------------
    ret_ti = f.succeeds("ami_retention_manual", ret, timeout=300)
    report = next(ti for ti in ret_ti.values() if ti["task_id"] == "retention")
    xcom = f"/api/v2/dags/ami_retention_manual/dagRuns/{ret}/taskInstances/retention/xcomEntries/return_value"
    assert "'dry_run': True" in str(admin.get(f"{xcom}?map_index={report['map_index']}")["value"])
    for run_id in applied:
        applied_tis = f.succeeds("ami_retention_manual", run_id, timeout=300)
        applied_ti = next(ti for ti in applied_tis.values() if ti["task_id"] == "retention")
        # triggered during the bake; it ran while 1.0.0 was in flight: its AMI baked, not yet recorded
        assert when(r1_tis[BAKE], "start_date") < when(applied_ti, "start_date") < when(r1_tis["record"], "start_date")
        xcom = f"/api/v2/dags/ami_retention_manual/dagRuns/{run_id}/taskInstances/retention/xcomEntries/return_value"
        assert "'dry_run': False" in str(admin.get(f"{xcom}?map_index={applied_ti['map_index']}")["value"])
    w1_tis = f.succeeds("ami_release", w1, timeout=600)
    # the two apps did not wait for each other: each held its own lock while the other held its
    assert when(w1_tis["release_lock"], "end_date") < when(r1_tis["record"], "start_date")
    assert when(r1_tis["release_lock"], "end_date") < when(w1_tis["record"], "start_date")

    # -- exactly once, and a ledger that tells the truth -----------------------------------------------
    for app, group in ((APP, GROUP), (OTHER_APP, OTHER_GROUP)):
        assert ledger_tells_the_truth(sandbox, app=app, group=group) == [], app
        assert ami_problems(own_images(sandbox, app), ledger_records(sandbox, app)) == [], app
    records = ledger_records(sandbox, APP)
    kinds = sorted((r["version"], r["kind"], r["outcome"]) for r in records)
    assert kinds == [
        ("1.0.0", "re-release", "succeeded"),
        ("1.0.0", "release", "succeeded"),
        ("1.1.0", "release", "succeeded"),
    ], kinds
    [rec2] = [r for r in records if r["pipeline_run"] == r2]
    [rb_rec] = [r for r in records if r["pipeline_run"] == rb]
    assert (rec2.get("rolled_back") or {}).get("by_release_id") == rb_rec["release_id"], rec2
    # one AMI per release, every AMI the account owns counted (not only tagged ones), each the one its
    # record names; one image registered by Packer per release (the killed bake registered none)
    every = [*records, *ledger_records(sandbox, OTHER_APP)]
    recorded = {r["amis"][sandbox.region]: r["release_id"] for r in every if r["outcome"] == "succeeded"}
    new_images = {
        i["ImageId"]: next((x["Value"] for x in i.get("Tags") or [] if x["Key"] == "ReleaseId"), None)
        for i in own_images(sandbox)
        if i["ImageId"] not in images_before
    }
    assert new_images == recorded, (new_images, recorded)
    assert sandbox.callers().get(("packer", "ec2:CreateImage"), 0) == len(recorded), (
        sandbox.callers().get(("packer", "ec2:CreateImage")),
        recorded,
    )
    assert [i["ImageId"] for i in run_images(sandbox, r2)] == [rec2["amis"][sandbox.region]]
    # every refresh of the group is one a release record names; 1.1.0 started exactly one
    named = sorted(
        x["refresh_id"] for r in records for x in r.get("refreshes") or [] if x["auto_scaling_group"] == GROUP
    )
    assert sorted(group_refreshes(sandbox, GROUP)) == named, (group_refreshes(sandbox, GROUP), named)
    assert len([x for x in rec2.get("refreshes") or [] if x["auto_scaling_group"] == GROUP]) == 1, rec2
    assert leftovers(sandbox) == {"builder/smoke instances": [], "Packer security groups": [], "Packer key pairs": []}

    # -- where things ran ---------------------------------------------------------------------------------
    hostnames = {compose.service_of(c): c["Config"]["Hostname"] for c in compose.containers(all_=False)}
    placed = (("ami_release", r1, "linux"), ("ami_release", r2, "linux"), ("ami_rollback", rb, "linux"))
    for dag_id, run_id, platform in (*placed, ("ami_release", w1, "windows")):
        by_key = {key(t): t for t in tis(admin, dag_id, run_id)}
        worker = hostnames[f"bake-worker-{platform}"]
        for task_id in TOOLCHAIN_TASKS:  # Packer and Terraform: the bake image of the app's toolchain
            ti = by_key[task_id]
            assert ti["state"] == "success" and ti["queue"] == f"packer-chef-{platform}", ti
            assert ti["hostname"] == worker, (ti, hostnames)
        others = {k: t["hostname"] for k, t in by_key.items() if k not in TOOLCHAIN_TASKS and t["try_number"]}
        assert set(others.values()) == {hostnames["worker"]}, (others, hostnames)  # the rest on `worker`
        if run_id in (r2, rb):  # r1 creates the fleet: its refresh has ended before the wait (no deferral)
            # the refresh wait was deferred and its trigger held by the triggerer container, no other
            assert "deferred" in f.seen[(run_id, "wait_for_refresh[0]")], f.seen
            [(holder, job_id)] = f.held_by.get((run_id, "wait_for_refresh[0]")) or [("nobody", 0)]
            assert holder == hostnames["triggerer"], (f.held_by, hostnames)
            text = str(ti_log(admin, dag_id, run_id, by_key["wait_for_refresh[0]"])[1])
            assert "Pausing task as DEFERRED" in text, text[-2000:]
            assert re.search(rf"trigger {dag_id}/{re.escape(run_id)}/wait_for_refresh/0/\d+ \(ID \d+\) starting", text)
            # the trigger's log file (beside the task's, in the shared logs volume) is named after the job
            assert re.search(rf"/task_id=wait_for_refresh/map_index=0/attempt=\d+\.log\.trigger\.{job_id}\.log'", text)
    # the Linux bake worker's own output (docker logs) names the bake task and no other of the pipeline's
    bake_log = compose("logs", "--no-color", "bake-worker-linux").stdout
    assert "task_id='bake'" in bake_log, bake_log[-2000:]
    assert "smoke_test" not in bake_log and "task_id='record'" not in bake_log

    # -- every task log through the API, read by the viewer, and no secret in any of them --------------
    seeded = yaml.safe_load((REPO / "sandbox" / "vault.yaml").read_text())
    secret_values = [v for vals in seeded["secrets"].values() for v in vals.values()]
    assert secret_values
    read = 0
    for dag_id, run_id in (("ami_release", r1), ("ami_release", r2), ("ami_rollback", rb), ("ami_release", w1)):
        for ti in tis(admin, dag_id, run_id):
            if not ti["try_number"]:
                continue
            status, body = ti_log(viewer, dag_id, run_id, ti)
            assert status == 200, (dag_id, key(ti), status, body)
            text = log_text(body)
            assert len(text) > 50 and "secret_key" not in text and "Could not read" not in text, (
                dag_id,
                key(ti),
                text[:2000],
            )
            assert not any(s in text for s in secret_values), f"a Vault secret in the log of {dag_id} {key(ti)}"
            if ti["task_id"] == "wait_for_refresh" and run_id == r1:
                assert "already ended; no need to defer" in text, text[-2000:]
            read += 1
    assert read >= 30, read
    lap("checks after the runs", t)
