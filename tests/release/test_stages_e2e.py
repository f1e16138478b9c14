"""Stages end to end (issue 20 items 1-2): demo-web released through staging, then promoted to
production behind Airflow's HITL gate, answered through a real API server (the deployment's auth
manager: FAB's, amirelease.auth; its users in FAB's roles) by REST and in Chromium.

One bake: ami_release bakes, smoke-tests and releases to staging; its next_stage task queues
ami_promote for production, which waits at `approve` (state awaiting_input: no process, no
worker slot, no lock). The gate is left to time out once (the scheduler's own timeout sweep
resolves it as a rejection), rejected once by a user with a reason (a viewer may not answer),
then approved: production refreshes with the same AMI. Every answer is in the ledger."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.release.conftest import clients, group_images, ledger_records, load_dag, outcome, run_images, task_states

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("stages")]

VERSION = "7.1.0"
STAGING_GROUP = "demo-web-staging-asg"
PROD_GROUP = "demo-web-asg"
TIMEOUT_MINUTES = 0.5  # production's gate: long enough to answer, short enough to let it time out once
SOAK_MINUTES = 0.1  # before production's gate asks: staging's alarms quiet for the last 6 s
AUTOMATIC_SOAK_MINUTES = 0.6  # 7.2.0's automatic gate: longer than preflight + check (~10 s), so the gate waits


@pytest.fixture
def staged_include(tmp_path, monkeypatch):
    """include/ with demo-web's definition in two stages: staging (its own copy of the app:
    name suffix, listener rule, one instance, its own state) and production (the groups and
    state demo-web had before it had stages)."""
    root = tmp_path / "include"
    shutil.copytree(REPO / "include", root)
    entry = root / "apps" / "demo-web.yaml"
    doc = yaml.safe_load(entry.read_text())
    production = doc.pop("targets")
    doc["stages"] = [
        {
            "name": "staging",
            "targets": [
                {"region": "us-east-1", "auto_scaling_group": STAGING_GROUP, "launch_template": "demo-web-staging"}
            ],
            "variables": {
                "name_suffix": "-staging",
                "listener_rule_priority": 110,
                "host_name": "demo-web-staging.internal",
                "min_size": 1,
                "desired_capacity": 1,
            },
            "verify": {"alarms": ["demo-web-staging-5xx", "demo-web-staging-latency"]},
        },
        {
            "name": "production",
            "targets": production,
            "state": "",
            # only rm may answer (ops, another release manager, may not); staging's alarms quiet first
            "approval": {"timeout_minutes": TIMEOUT_MINUTES, "approvers": ["rm"], "soak_minutes": SOAK_MINUTES},
        },
    ]
    entry.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("AMI_RELEASE_INCLUDE_DIR", str(root))
    return root


@pytest.fixture
def api(release_env, tmp_path):
    """A real `airflow api-server` on the tests' metadata DB with the deployment's auth manager
    (FAB's, amirelease.auth): admin (Admin), rm and ops (release-manager), viewer (Viewer)."""
    from tests.ui.fab import FabApiServer

    server = FabApiServer(tmp_path).prepare().start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _awaiting(dag_id: str = "ami_promote") -> Any:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter(
                TaskInstance.dag_id == dag_id, TaskInstance.task_id == "approve", TaskInstance.state == "awaiting_input"
            )
            .one_or_none()
        )
        return (ti.run_id, ti.trigger_timeout) if ti is not None else None


def _end_leftover_gates() -> None:
    """Gates of ami_promote runs an interrupted earlier session left waiting in the shared
    metadata DB (dag.test() runs stop with their process, their task rows do not): failed, as a
    scheduler would have ended them, so the approver answers only this test's gate."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(TaskInstance).filter(
            TaskInstance.dag_id == "ami_promote", TaskInstance.state == "awaiting_input"
        ).update({TaskInstance.state: "failed"}, synchronize_session=False)


def _answer(api, user: str, run_id: str, option: str, reason: str) -> tuple[int, str]:
    url = f"{api.base}/api/v2/dags/ami_promote/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"
    body = json.dumps({"chosen_options": [option], "params_input": {"reason": reason}}).encode()
    req = urllib.request.Request(
        url,
        data=body,
        method="PATCH",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api.token(user)}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


class Approver(threading.Thread):
    """Answers the gate from outside the run, as a person in the UI would: waits until the
    `approve` task is awaiting input, then does ``act`` (its result kept in ``seen``)."""

    def __init__(self, act, api) -> None:
        super().__init__(daemon=True)
        self.act, self.api, self.seen, self.error = act, api, {}, None

    def run(self) -> None:
        found = None
        try:
            deadline = time.monotonic() + 600
            while (found := _awaiting()) is None:
                assert time.monotonic() < deadline, "the gate never waited for input"
                time.sleep(0.5)
            self.seen = self.act(*found) or {}
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            if found is not None:  # end the waiting run, so the test reports this error instead of hanging
                _answer(self.api, "rm", found[0], "Reject", f"the test's approver failed: {exc}"[:400])


class StateSeconds:
    """Seconds the `approve` task of one ami_promote run spent in each state, sampled every 0.5 s
    from the metadata DB (a running task holds a worker slot; awaiting_input and deferred do not)."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id, self.seconds = run_id, {}

    def sample(self) -> None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            query = session.query(TaskInstance.state).filter_by(dag_id="ami_promote", task_id="approve")
            state = query.filter_by(run_id=self.run_id).scalar() if self.run_id else None
        if state is not None:
            self.seconds[str(state)] = self.seconds.get(str(state), 0) + 0.5
        time.sleep(0.5)


class Sampler(threading.Thread):
    """StateSeconds for the ami_promote run that starts after this thread (its run id found by
    being new), until ``stop`` is set."""

    def __init__(self) -> None:
        from airflow.models import DagRun

        super().__init__(daemon=True)
        self.before = {r.run_id for r in DagRun.find(dag_id="ami_promote")}
        self.stop, self.held = threading.Event(), StateSeconds()

    def run(self) -> None:
        from airflow.models import DagRun

        while not self.stop.is_set():
            if self.held.run_id is None:
                new = [r.run_id for r in DagRun.find(dag_id="ami_promote") if r.run_id not in self.before]
                self.held.run_id = new[0] if new else None
            self.held.sample()


def _sweep_timeouts() -> None:
    """The scheduler's own sweep of awaiting-input tasks past their deadline (dag.test() runs
    no scheduler): Airflow's SchedulerJobRunner.check_awaiting_input_timeouts, unchanged."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()


def _record(sb, release_id: str) -> dict:
    return next(r for r in ledger_records(sb) if r["release_id"] == release_id)


def _promote(api, conf: dict, act) -> tuple[Any, Approver]:
    approver = Approver(act, api)
    approver.start()
    dr = load_dag("ami_promote").test(run_conf=conf)
    approver.join(timeout=60)
    assert approver.error is None, approver.error
    return dr, approver


def test_a_release_goes_through_staging_and_reaches_production_only_once_approved(release_env, staged_include, api):
    from airflow.models import DagRun

    from tests.notify.sns import Inbox

    sb = release_env
    _end_leftover_gates()
    _, asg, _ = clients(sb)
    inbox = Inbox(sb)
    dr = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": VERSION})
    states = task_states(dr)
    assert dr.state == "success" and states["next_stage"] == "success", states
    [ami] = run_images(sb, dr.run_id)
    [record] = [r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id]
    rid = record["release_id"]
    assert record["stages"]["staging"]["outcome"] == "succeeded" and set(record["stages"]) == {"staging"}
    assert group_images(sb, STAGING_GROUP) == {ami["ImageId"]}
    # production is untouched: nothing was applied there (its group does not exist yet in this account)
    assert not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[PROD_GROUP])["AutoScalingGroups"]
    [queued] = DagRun.find(dag_id="ami_promote", run_id=f"promote_demo-web__{rid}__production")
    conf = queued.conf
    assert conf == {"app": "demo-web", "release_id": rid, "stage": "production", "emergency": False}
    told = [m["Subject"] for m in inbox.drain()]
    assert told == [f"Release demo-web {VERSION}: started", f"Release demo-web {VERSION} [staging]: SUCCEEDED"], told

    # 0. staging's alarm is in ALARM: the soak fails the promotion before anyone is asked
    staging_alarm = "demo-web-staging-5xx"
    cw = sb.client("cloudwatch")
    cw.set_alarm_state(AlarmName=staging_alarm, StateValue="ALARM", StateReason="5xx above threshold (test)")
    try:
        soured = load_dag("ami_promote").test(run_conf=conf)
    finally:
        cw.set_alarm_state(AlarmName=staging_alarm, StateValue="OK", StateReason="quiet again (test)")
    states = task_states(soured)
    assert states["approve"] == "success" and states["apply_infrastructure"] == "skipped", states
    entry = _record(sb, rid)["stages"]["production"]
    assert entry["outcome"] == "soak failed" and entry["gate"]["by"] == "soak (automatic check)", entry
    assert f"alarm {staging_alarm} (us-east-1) is in ALARM" in entry["gate"]["reason"], entry
    told = inbox.drain()
    assert [m["Subject"] for m in told] == [f"Promotion demo-web {VERSION} [production]: not promoted"], told
    assert not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[PROD_GROUP])["AutoScalingGroups"]

    # 1. nobody answers: the gate times out and that is a rejection. While it waits, its state is
    #    sampled every 0.5 s (as docs/benchmarks.md measures the refresh wait's worker-slot seconds)
    def let_it_time_out(run_id, deadline):
        held = StateSeconds(run_id)
        while (deadline - _utcnow()).total_seconds() > -1:
            held.sample()
        _sweep_timeouts()
        return {"held": held.seconds}

    timed_out, approver = _promote(api, conf, let_it_time_out)
    held = approver.seen["held"]
    print(f"gate wait, seconds per state of `approve` (0.5 s samples): {held}")
    assert held.get("awaiting_input", 0) >= 15 and not held.get("running"), held  # no worker slot while it waits
    states = task_states(timed_out)
    assert states["approve"] == "success" and states["apply_infrastructure"] == "skipped", states
    assert states["record"] == "success", states
    entry = _record(sb, rid)["stages"]["production"]
    assert entry["outcome"] == "timed out" and entry["gate"]["by"] is None, entry
    told = inbox.drain()
    promotion = f"Promotion demo-web {VERSION} [production]"
    assert [m["Subject"] for m in told] == [f"{promotion}: waits for approval", f"{promotion}: not promoted"], told
    assert "Asked to act: web-team on-call (#web-oncall) - one of rm (named by the app" in told[0]["Message"]
    assert "timed out at the gate before production: nothing was changed there" in told[1]["Message"]
    assert not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[PROD_GROUP])["AutoScalingGroups"]

    # 2. a viewer may not answer, nor ops (a release manager the app does not name), nor an admin;
    #    rm (named) rejects, saying why
    def reject(run_id, _deadline):
        return {
            "viewer": _answer(api, "viewer", run_id, "Approve", "me too"),
            "ops": _answer(api, "ops", run_id, "Approve", "looks fine to me"),
            "admin": _answer(api, "admin", run_id, "Approve", "I may do everything else"),
            "rm": _answer(api, "rm", run_id, "Reject", "CAB-42: not during the freeze"),
        }

    rejected, approver = _promote(api, conf, reject)
    assert approver.seen["viewer"][0] == 403 and "not a respondent" not in approver.seen["viewer"][1], approver.seen
    for refused in ("ops", "admin"):
        assert approver.seen[refused][0] == 403 and "not a respondent" in approver.seen[refused][1], approver.seen
    assert approver.seen["rm"][0] == 200, approver.seen
    assert task_states(rejected)["apply_infrastructure"] == "skipped"
    entry = _record(sb, rid)["stages"]["production"]
    assert entry["outcome"] == "rejected" and entry["gate"] == {
        "answer": "rejected",
        "by": "rm",
        "reason": "CAB-42: not during the freeze",
    }, entry
    assert not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[PROD_GROUP])["AutoScalingGroups"]

    # 3. approved in the Airflow UI, in a real browser: production runs the same AMI, verified; the gate
    #    showed staging's verification and the plan
    def approve(run_id, _deadline):
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            ti = session.query(TaskInstance).filter_by(dag_id="ami_promote", run_id=run_id, task_id="approve").one()
            shown = [(d.subject, d.body) for d in session.query(HITLDetail).filter(HITLDetail.ti_id == ti.id)]
        return {"shown": shown, "page": _approve_in_the_browser(api, run_id, "CAB-43 approved")}

    approved, approver = _promote(api, conf, approve)
    states = task_states(approved)
    assert approved.state == "success" and states["verify"] == "success", states
    assert states["next_stage"] == "skipped", states  # production is the last stage
    told = [m["Subject"] for m in inbox.drain()]
    assert told[-2:] == [f"{promotion}: waits for approval", f"{promotion}: SUCCEEDED"], told
    assert "response successful" in approver.seen["page"]
    [(subject, body)] = approver.seen["shown"]
    assert subject == f"Promote demo-web {VERSION} to production?", subject
    soaked = "Soak passed: staging's alarms (demo-web-staging-5xx, demo-web-staging-latency) "
    assert body.startswith(soaked), body[:300]
    assert f"{STAGING_GROUP} (us-east-1): 1/1 in service on {ami['ImageId']}, targets healthy" in body, body
    assert "### Terraform plan for production" in body and "to add" in body, body
    assert group_images(sb, PROD_GROUP) == {ami["ImageId"]}
    assert group_images(sb, STAGING_GROUP) == {ami["ImageId"]}
    assert len(run_images(sb, dr.run_id)) == 1 and not run_images(sb, approved.run_id)  # one bake
    record = _record(sb, rid)
    entry = record["stages"]["production"]
    assert entry["outcome"] == "succeeded" and entry["gate"] == {
        "answer": "approved",
        "by": "rm",
        "reason": "CAB-43 approved",
    }, entry
    assert entry["verification"]["verified"] and entry["run_id"] == approved.run_id
    assert record["stages"]["staging"]["outcome"] == "succeeded"
    # the same release cannot be promoted to production twice
    again = load_dag("ami_promote").test(run_conf=conf)
    assert again.state == "failed" and task_states(again)["preflight"] == "failed"
    _a_failed_production_rolls_forward_once(sb, api, inbox, good=record, good_ami=ami["ImageId"], entry=staged_include)


def _a_failed_production_rolls_forward_once(sb, api, inbox, good: dict, good_ami: str, entry) -> None:
    """7.2.0's definition makes production's gate automatic (a quiet soak is the approval): it
    passes staging, waits out the soak with nobody asked and goes to production, whose
    verification fails (production's alarm in ALARM: the instance refresh itself succeeds; a failed
    refresh's roll-forward is tests/release/test_release_e2e.py's): its roll_forward starts exactly
    one ami_rollback, up to production and without
    waiting at the gate (the app opted in); the rollback re-releases 7.1.0 through staging, then
    production."""
    from airflow.models import DagRun

    doc = yaml.safe_load((entry / "apps" / "demo-web.yaml").read_text())
    doc["stages"][1]["approval"] = {"soak_minutes": AUTOMATIC_SOAK_MINUTES, "automatic": True}
    (entry / "apps" / "demo-web.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    release = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "7.2.0"})
    assert release.state == "success", outcome(release)
    [bad] = [r for r in ledger_records(sb) if r["pipeline_run"] == release.run_id]
    [queued] = DagRun.find(dag_id="ami_promote", run_id=f"promote_demo-web__{bad['release_id']}__production")
    inbox.drain()
    sampler = Sampler()
    sampler.start()
    cw = sb.client("cloudwatch")  # production's alarm (7.2.0's apply leaves it as it is: only the AMI changes)
    cw.set_alarm_state(AlarmName="demo-web-5xx", StateValue="ALARM", StateReason="5xx above threshold (test)")
    try:
        failed = load_dag("ami_promote").test(run_conf=queued.conf)  # nobody answers: the soak decides
    finally:
        cw.set_alarm_state(AlarmName="demo-web-5xx", StateValue="OK", StateReason="quiet again (test)")
        sampler.stop.set()
        sampler.join(timeout=10)
    print(f"automatic gate's soak, seconds per state of `approve` (0.5 s samples): {sampler.held.seconds}")
    # the soak's wait (a trigger; dag.test runs it in line and shows the task queued meanwhile) did
    # not run in the task: a sleeping execute would be `running` all along. (On a loaded machine
    # preflight and check can outlast the soak; then there is nothing to wait, and the gate's end
    # after the soak, below, still holds.)
    held = sampler.held.seconds
    assert held.get("running", 0) <= 2, held
    states = task_states(failed)
    assert failed.state == "failed" and states["roll_forward"] == "success", states
    staged = _record(sb, bad["release_id"])["stages"]
    gate = staged["production"]["gate"]
    assert gate["answer"] == "approved" and gate["by"] == "soak (automatic check)", gate
    assert f"watched for {AUTOMATIC_SOAK_MINUTES:g} min" in gate["reason"], gate
    assert gate["reason"].endswith(": quiet"), gate
    # the gate waited out the soak (it began before staging had run 7.2.0 that long), asking nobody
    verified = _parse(staged["staging"]["finished_at"])
    assert _gate_ended(failed.run_id) >= verified + timedelta(minutes=AUTOMATIC_SOAK_MINUTES), (verified, gate)
    entry = _record(sb, bad["release_id"])["stages"]["production"]
    assert entry["outcome"] == "failed" and entry["failed_task"] == "verify", entry
    assert "alarm demo-web-5xx is ALARM" in entry["failure_reason"], entry
    # the metadata DB outlives a session: this release's are the runs that replace it
    autos = [r for r in DagRun.find(dag_id="ami_rollback") if (r.conf or {}).get("replaces") == bad["release_id"]]
    assert [r.run_id for r in autos] == [f"rollback_demo-web__auto_{bad['release_id']}"], autos
    conf = autos[0].conf
    assert conf["replaces"] == bad["release_id"] and conf["until_stage"] == "production" and conf["emergency"]
    told = " ".join(m["Subject"] for m in inbox.drain())
    assert "automatic rollback started" in told and "waits for approval" not in told, told  # nobody was asked

    rollback = load_dag("ami_rollback").test(run_conf=conf)
    assert rollback.state == "success", outcome(rollback)
    [re_release] = [r for r in ledger_records(sb) if r["pipeline_run"] == rollback.run_id]
    assert re_release["re_release_of"] == good["release_id"] and re_release["stages"]["staging"]["outcome"] == (
        "succeeded"
    )
    [then] = DagRun.find(dag_id="ami_promote", run_id=f"promote_demo-web__{re_release['release_id']}__production")
    assert then.conf["emergency"] and then.conf["until_stage"] == "production", then.conf
    emergency = load_dag("ami_promote").test(run_conf=then.conf)  # nobody answers: the gate does not wait
    states = task_states(emergency)
    assert emergency.state == "success" and states["next_stage"] == "skipped", states
    entry = _record(sb, re_release["release_id"])["stages"]["production"]
    assert entry["outcome"] == "succeeded" and entry["gate"]["by"] == "emergency (no gate)", entry
    new_ami = re_release["amis"]["us-east-1"]
    assert new_ami != good_ami and group_images(sb, PROD_GROUP) == group_images(sb, STAGING_GROUP) == {new_ami}
    marked = _record(sb, bad["release_id"])
    assert marked["rolled_back"]["by_release_id"] == re_release["release_id"] and marked["forensic_hold"]


def _approve_in_the_browser(api, run_id: str, reason: str) -> str:
    """Log in to the Airflow UI as the release manager rm (FAB's sign-in form; Chromium, as the
    Releases page tests), open the gate's
    Required Action page, give a reason and press Approve. Playwright's sync API lives in the
    thread that starts it: this runs whole inside the Approver thread."""
    from urllib.parse import quote

    from playwright.sync_api import sync_playwright

    from tests.ui.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            # FAB's sign-in form, then the gate's page (the run id, encoded)
            gate = f"{api.base}/dags/ami_promote/runs/{quote(run_id, safe='')}/tasks/approve/required_actions"
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"{api.base}/auth/login/")
            page.locator("input[name=username]").fill("rm")
            page.locator("input[name=password]").fill(api.passwords["rm"])
            page.get_by_role("button", name="Sign In").click()
            page.wait_for_load_state()
            page.goto(gate)
            shots = ARTIFACTS / "stages"
            shots.mkdir(parents=True, exist_ok=True)
            try:
                page.get_by_text("Promote demo-web").first.wait_for(timeout=60_000)
                page.locator("#element_reason").fill(reason)  # Airflow's form field for the gate's "reason" param
                page.screenshot(path=str(shots / "gate.png"), full_page=True)
                page.get_by_role("button", name="Approve").click()
                page.get_by_text("response successful").first.wait_for(timeout=60_000)
                return page.content()
            except Exception:
                page.screenshot(path=str(shots / "gate-failed.png"), full_page=True)
                (shots / "gate-failed.txt").write_text(page.inner_text("body"))
                raise
        finally:
            browser.close()


def _utcnow():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _parse(stamp: str):
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _gate_ended(run_id: str):
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id="ami_promote", run_id=run_id, task_id="approve").one()
        return ti.end_date
