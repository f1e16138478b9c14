"""Helpers for end-to-end releases through Airflow's dag.test() against the sandbox."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import boto3
import pytest

from tests.conftest import REPO

LEDGER_BUCKET = "ami-release-ledger-123456789012"

MUTATING = (
    "Create",
    "Run",
    "Start",
    "Put",
    "Delete",
    "Terminate",
    "Modify",
    "Register",
    "Deregister",
    "Copy",
    "Update",
    "Attach",
    "Detach",
    "Cancel",
    "Rollback",
    "Send",
    "Authorize",
    "Import",
    "Stop",
)


RELEASE_IN_ITS_OWN_PROCESS = """
import sys
sys.path[:0] = [{plugins!r}, {dags!r}, {repo!r}]
import ami_release
dr = ami_release.dag.test(run_conf={conf!r})
print("RESULT", dr.run_id, dr.state)
"""


class ReleaseHoldingTheLock:
    """A release run in its own process (its own dag.test), started and waited for by a test
    that acts while that release holds the app's lock; ``result`` is (run id, state) after."""

    def __init__(self, s3, tmp_path, conf: dict, what: str = "release A", bucket: str = LEDGER_BUCKET) -> None:
        self.s3, self.log, self.conf, self.what, self.bucket = s3, tmp_path / "a.log", conf, what, bucket
        self.result: tuple[str, str] | None = None
        self.output = ""

    def __enter__(self) -> ReleaseHoldingTheLock:
        code = RELEASE_IN_ITS_OWN_PROCESS.format(
            plugins=str(REPO / "plugins"), dags=str(REPO / "dags"), repo=str(REPO), conf=self.conf
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], env=os.environ.copy(), stdout=self.log.open("w"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 180
        while not self.lock_held():
            assert self.proc.poll() is None and time.monotonic() < deadline, f"{self.what} never took the lock"
            time.sleep(0.2)
        return self

    def lock_held(self, app: str = "demo-web") -> bool:
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return f"locks/{app}.json" in [o["Key"] for o in listed]

    def wait(self, timeout: float = 400) -> None:
        self.proc.wait(timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.output = self.log.read_text()
        found = [line.split() for line in self.output.splitlines() if line.startswith("RESULT")]
        self.result = (found[0][1], found[0][2]) if found else None


def mutations(sb) -> dict[str, int]:
    """AWS calls that change something, as counted by the sandbox since its last reset."""
    return {k: v for k, v in sb.request_counts().items() if k.split(":", 1)[1].startswith(MUTATING)}


def load_dag(name: str = "ami_release"):
    sys.modules.pop(name, None)
    if str(REPO / "dags") not in sys.path:
        sys.path.insert(0, str(REPO / "dags"))
    module = importlib.import_module(name)
    return module.dag


def clients(sb, region="us-east-1"):
    kw = dict(
        region_name=region, endpoint_url=sb.endpoint_url, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return boto3.client("ec2", **kw), boto3.client("autoscaling", **kw), boto3.client("s3", **kw)


def group_images(sb, group="demo-web-asg") -> set[str]:
    ec2, asg, _ = clients(sb)
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    ids = [i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService"]
    return {i["ImageId"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]}


def running_instances(sb, purpose: str, release_id: str | None = None) -> list[str]:
    """Instances of that purpose not terminated; of one release only when release_id is given
    (the fleet's account is shared by the tests of one worker: another test's leftovers are not
    this release's)."""
    ec2, _, _ = clients(sb)
    filters = [
        {"Name": "tag:Purpose", "Values": [purpose]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ]
    if release_id:
        filters.append({"Name": "tag:ReleaseId", "Values": [release_id]})
    res = ec2.describe_instances(Filters=filters)
    return [i["InstanceId"] for r in res["Reservations"] for i in r["Instances"]]


def run_images(sb, run_id: str) -> list[dict]:
    ec2, _, _ = clients(sb)
    return ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:PipelineRun", "Values": [run_id]}])["Images"]


def ledger_records(sb, app="demo-web") -> list[dict]:
    _, _, s3 = clients(sb)
    out = []
    for obj in s3.list_objects_v2(Bucket="ami-release-ledger-123456789012", Prefix=f"releases/{app}/").get(
        "Contents", []
    ):
        if obj["Key"].endswith(".json") and obj["Key"].count("/") == 2:  # records, not bundles
            body = s3.get_object(Bucket="ami-release-ledger-123456789012", Key=obj["Key"])["Body"].read()
            out.append(json.loads(body))
    return out


def builders(sb) -> dict:
    """The sandbox's builders: chef runs, Windows steps, image files (GET /_sandbox/builders)."""
    return sb.handle_control("GET", "builders", {})[1]


NOTHING_LEFT = {"builder instances": [], "security groups": [], "key pairs": [], "builder processes": {}}


def bake_leftovers(sb, release_id: str) -> dict:
    """What a bake of that release could leave: builder instances, its security group and key
    pair, builder processes of the sandbox (all empty: NOTHING_LEFT)."""
    ec2, _, _ = clients(sb)
    groups = ec2.describe_security_groups(Filters=[{"Name": "tag:ReleaseId", "Values": [release_id]}])
    return {
        "builder instances": running_instances(sb, "ami-bake-builder", release_id),
        "security groups": [g["GroupId"] for g in groups["SecurityGroups"]],
        "key pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if release_id in k["KeyName"]],
        "builder processes": builders(sb)["running"],
    }


def chef_run(sb, release_id: str) -> dict:
    """What chef-solo was given on the sandbox's SSH builder for that release (sandbox/builders)."""
    state = builders(sb)
    runs = [
        run
        for runs in state["chef_runs"].values()
        for run in runs
        if ((run.get("node") or {}).get("ami_release") or {}).get("release_id") == release_id
    ]
    assert len(runs) == 1, f"{len(runs)} Chef runs recorded for {release_id}"
    return runs[0]


def task_durations(dr) -> dict[str, float]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = (
            session.query(TaskInstance).filter(TaskInstance.dag_id == dr.dag_id, TaskInstance.run_id == dr.run_id).all()
        )
        return {ti.task_id: round(ti.duration or 0, 1) for ti in tis}


def task_states(dr) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = (
            session.query(TaskInstance).filter(TaskInstance.dag_id == dr.dag_id, TaskInstance.run_id == dr.run_id).all()
        )
        return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": ti.state for ti in tis}


def failure(dr, task_id: str) -> str:
    """The error a failed task left (XCom 'failure', callbacks.remember_failure)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(XComModel).filter_by(run_id=dr.run_id, task_id=task_id, key="failure").one().value


def outcome(dr) -> dict[str, object]:
    """The tasks' states and every error a task left, for an assertion's message: a run that
    failed on a busy machine says why in the test's report, not only which task."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dr.dag_id, run_id=dr.run_id, key="failure").all()
        errors = {f"{r.task_id}[{r.map_index}]" if r.map_index >= 0 else r.task_id: r.value for r in rows}
    return {"states": task_states(dr), "errors": errors}


@pytest.fixture
def release_dag():
    """The release DAG (the test also asks for the account it needs: release_env or fleet_env)."""
    return load_dag("ami_release")


def tool_processes(tool: str, pid: int) -> list[str]:
    """The `ps` lines of `tool` (packer, terraform) started by the task process `pid` (the
    hooks name the tool's working folder amirelease-<tool>-<pid>-…)."""
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"amirelease-{tool}-{pid}-" in line]


def kill_9_while_held(
    sb,
    target: Callable[..., object],
    args: tuple,
    *,
    call: str,
    tool: str,
    never: str,
    reach_within: float,
    die_within: float,
    at_kill: Callable[[], None] = lambda: None,
) -> int:
    """Run `target(*args)` as a forked task process; once it has sent `call` (held back by a
    delay fault, so the tool is mid-run), check `at_kill()`, kill -9 the task and wait until
    no `tool` process of it is left. Returns the dead task's pid."""
    task = multiprocessing.get_context("fork").Process(target=target, args=args)
    task.start()
    try:
        deadline = time.monotonic() + reach_within
        while sb.request_counts().get(call, 0) < 1:
            assert task.is_alive() and time.monotonic() < deadline, never
            time.sleep(0.2)
        assert tool_processes(tool, task.pid)
        at_kill()
        os.kill(task.pid, signal.SIGKILL)
        task.join(timeout=10)
        deadline = time.monotonic() + die_within
        while tool_processes(tool, task.pid):
            assert time.monotonic() < deadline, f"{tool} outlived its task: {tool_processes(tool, task.pid)}"
            time.sleep(0.2)
    finally:
        if task.is_alive():  # a failed assertion above must not leave the task running into the next test
            os.kill(task.pid, signal.SIGKILL)
            task.join(timeout=10)
    assert task.pid is not None
    return task.pid
