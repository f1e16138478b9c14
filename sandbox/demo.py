"""`make demo` and `make up`: Airflow (standalone: scheduler, triggerer, dag processor, API
server, LocalExecutor, SQLite) wired to the sandbox, and one real release through it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandbox.runtime import REPO, SandboxRuntime

AIRFLOW_HOME = REPO / ".airflow"
SIMPLE_AUTH_NOTICE = (
    "== NOTE: this sandbox Airflow uses the SIMPLE auth manager (one 'admin' user, no roles, no\n"
    "   DAG-level permissions): fine on your machine, not for production. The production shape\n"
    "   (FAB auth manager; roles Admin, release-manager, Viewer) is docker-compose.yaml: `make cluster`."
)


def standalone_env(
    home: Path, dags: Path, api_port: int, *, parallelism: int = 4, dag_refresh_seconds: int = 30
) -> dict[str, str]:
    """The environment of an `airflow standalone` on this machine: this checkout's plugins,
    the given home and DAG folder, the API on 127.0.0.1:<api_port>; no AIRFLOW_* setting of
    the caller's shell leaks in. (The demo's, and the tests that run a scheduler of their own.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    bindir = str(Path(sys.executable).parent)
    env.update(
        PATH=f"{bindir}:{env.get('PATH', '')}",
        PYTHONPATH=f"{REPO / 'plugins'}:{REPO}",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__PARALLELISM=str(parallelism),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{api_port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        # Airflow's 5 s default failed a task before it ran when the API server was busy
        # ("Workload execution failed ... ReadTimeout"); standalone shares one machine with it all.
        AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT="30",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=str(dag_refresh_seconds),
    )
    return env


def airflow_env(rt: SandboxRuntime, api_port: int) -> dict[str, str]:
    env = standalone_env(AIRFLOW_HOME, REPO / "dags", api_port)
    env["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = "True"
    env.update(rt.env())
    return env


class Airflow:
    """`airflow standalone` in its own process group, and a small REST client for it."""

    def __init__(self, env: dict[str, str], api_port: int) -> None:
        self.env = env
        self.base = f"http://127.0.0.1:{api_port}"
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None
        self.log_path = AIRFLOW_HOME / "standalone.log"

    def start(self, timeout: float = 240) -> None:
        AIRFLOW_HOME.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("airflow")), "standalone"],
            env=self.env,
            cwd=str(REPO),
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited ({self.proc.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=2) as r:
                    if r.status == 200 and self.password():
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(1)
        raise RuntimeError(f"Airflow did not become ready in {timeout:.0f}s; see {self.log_path}")

    def password(self) -> str | None:
        f = AIRFLOW_HOME / "simple_auth_manager_passwords.json.generated"
        try:
            return json.loads(f.read_text()).get("admin")
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 45) -> None:
        """SIGTERM the whole process group and wait until every member (scheduler,
        triggerer, dag processor, API server, their workers) has exited, not just standalone."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            self.proc.poll()  # reap standalone itself
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                os.killpg(pgid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.2)
        self.proc.wait()
        self.proc = None

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        if self.token is None and not path.startswith("/auth"):
            self.token = self.api("POST", "/auth/token", {"username": "admin", "password": self.password()})[
                "access_token"
            ]
        req = urllib.request.Request(
            self.base + path, method=method, data=json.dumps(body).encode() if body is not None else None
        )
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        # A GET is safe to repeat: on a loaded machine the API server can take over a minute to
        # answer one request, which must not end a release the demo is only watching.
        attempts = 3 if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    data = r.read()
                    return json.loads(data) if data else {}
            except (TimeoutError, urllib.error.URLError) as exc:
                if isinstance(exc, urllib.error.HTTPError) or attempt == attempts:
                    raise
                print(f"   (the API server did not answer {path} in 60 s; asking again)", flush=True)
        raise AssertionError("unreachable")

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"/api/v2/dags/{dag_id}")
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
            time.sleep(2)
        raise RuntimeError(f"DAG {dag_id} was not parsed within {timeout:.0f}s; see {self.log_path}")


@contextmanager
def sandbox_with_airflow(
    api_port: int, refresh_batch_seconds: float, env_overrides: dict[str, str] | None = None, quiet: bool = False
) -> Iterator[tuple[SandboxRuntime, Airflow]]:
    """The sandbox, then `airflow standalone` wired to it; both stopped on the way out."""
    say = (lambda *_: None) if quiet else print
    rt = SandboxRuntime(refresh_batch_seconds=refresh_batch_seconds)
    say("== starting the sandbox (local AWS account + Vault)")
    rt.start()
    say(rt.describe())
    af = Airflow({**airflow_env(rt, api_port), **(env_overrides or {})}, api_port)
    try:
        say(f"== starting Airflow (standalone, log: {af.log_path.relative_to(REPO)})")
        af.start()
        assert af.proc is not None and rt.vault is not None
        say(f"   processes: airflow standalone group {af.proc.pid}, openbao {rt.vault.pid}")
        say(SIMPLE_AUTH_NOTICE)
        yield rt, af
    finally:
        af.stop()
        rt.stop()
        say("== stopped Airflow and the sandbox")


def run_demo(
    version: str,
    app: str,
    api_port: int,
    refresh_batch_seconds: float,
    keep_running: bool = False,
    first_version: str = "1.0.0",
) -> int:
    """Two releases on a fresh sandbox account: the first creates the app's fleet with its
    Terraform module; the second changes its image and rolls it out with an instance refresh."""
    t0 = time.monotonic()
    overrides, refs = _git_source(app, first_version, version)
    with sandbox_with_airflow(api_port, refresh_batch_seconds, overrides) as (rt, af):
        for dag_id in ("ami_release", "ami_promote"):  # ami_promote: the staged second release's production
            af.wait_for_dag(dag_id)
            af.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        ok = True
        for n, (ver, what) in enumerate(
            (
                (first_version, "first release: Terraform creates the fleet"),
                (version, "next release: a new image, rolled out by an instance refresh"),
            ),
            1,
        ):
            conf = {"app": app, "version": ver, "notes": f"make demo ({what})"}
            if ver in refs:
                conf["git_ref"] = refs[ver]
            run = af.api("POST", "/api/v2/dags/ami_release/dagRuns", {"logical_date": None, "conf": conf})
            run_id = run["dag_run_id"]
            print(f"\n== {n}/2 {what}: ami_release {app} {ver}  run {run_id}")
            print(f"   watch it: {af.base}/dags/ami_release/runs/{run_id}  (admin / {af.password()})")
            state = _follow(af, run_id)
            ok = state == "success"
            _summary(rt, af, run_id, ok)
            if not ok:
                break
            if n == 2 and app in STAGED:
                ok = _promote(rt, af, app, ver, run_id)
        print(
            f"== release {'SUCCEEDED' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s (wall time, both releases "
            "and Airflow's start-up)"
        )
        if keep_running:
            print("== --keep: Airflow and the sandbox keep running; Ctrl-C stops them")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1


def _git_source(app: str, first_version: str, version: str) -> tuple[dict[str, str], dict[str, str]]:
    """demo-web released from its own git repository, made here (.sandbox/git, no git server):
    the app team's AMI project at two tags, the second with a changed cookbook attribute; the
    central catalog entry (.sandbox/catalog/apps) names the repository. Other apps: include/."""
    if app != "demo-web":
        return {}, {}
    from sandbox.gitsource import make_project_repo

    catalog_dir = REPO / ".sandbox" / "catalog" / "apps"
    if catalog_dir.exists():
        shutil.rmtree(catalog_dir)
    repo = make_project_repo(REPO / ".sandbox" / "git", REPO / "include", app, catalog_dir)
    repo.tag(f"v{first_version}")
    definition = repo.definition()
    definition.setdefault("attributes", {}).setdefault("demo_web", {})["banner"] = f"demo-web {version}"
    production = definition.pop("targets")
    region = production[0]["region"]
    definition["stages"] = [  # from this tag on, releases go to staging first, then production behind a gate
        {
            "name": "staging",
            "targets": [
                {"region": region, "auto_scaling_group": f"{app}-staging-asg", "launch_template": f"{app}-staging"}
            ],
            "variables": {
                "name_suffix": "-staging",
                "listener_rule_priority": 110,
                "host_name": f"{app}-staging.internal",
                "min_size": 1,
                "desired_capacity": 1,
            },
            "verify": {"alarms": [f"{app}-staging-5xx", f"{app}-staging-latency"]},
        },
        {"name": "production", "targets": production, "state": ""},  # keeps the state 1.0.0 made
    ]
    repo.write_definition(definition)
    repo.commit(f"{app} {version}: a banner; released through staging, then production")
    repo.tag(f"v{version}")
    print(f"== {app}'s AMI project is in the git repository {repo.url} (deploy/ami), tags v{first_version}, v{version}")
    print(f"   from v{version} on, its definition lists stages: staging, then production behind an approval")
    return {"AMI_RELEASE_APPS_DIR": str(catalog_dir)}, {first_version: f"v{first_version}", version: f"v{version}"}


STAGED = ("demo-web",)  # apps whose second demo release goes through stages (_git_source)


def _promote(rt: SandboxRuntime, af: Airflow, app: str, version: str, release_run: str) -> bool:
    """The staged release's production: the ami_promote run its next_stage task started waits at
    its gate; the demo answers it through the REST API, as a release manager would in the UI."""
    plan = _xcom(af, release_run, "preflight") or {}
    run_id = f"promote_{app}__{plan.get('release_id')}__production"
    print(f"\n== 3/3 promotion to production: ami_promote {app} {version}  run {run_id}")
    print(f"   watch it: {af.base}/dags/ami_promote/runs/{run_id}")
    deadline = time.monotonic() + 600
    state = None
    while state != "awaiting_input":
        if time.monotonic() > deadline:
            print(f"   the approval gate never waited for input (approve: {state})")
            return False
        try:
            state = af.api("GET", f"/api/v2/dags/ami_promote/dagRuns/{run_id}/taskInstances/approve").get("state")
            if af.api("GET", f"/api/v2/dags/ami_promote/dagRuns/{run_id}")["state"] in ("success", "failed"):
                _follow(af, run_id, dag_id="ami_promote")  # ended before its gate: print its tasks
                tis = af.api("GET", f"/api/v2/dags/ami_promote/dagRuns/{run_id}/taskInstances")["task_instances"]
                failed = [t["task_id"] for t in tis if t["state"] == "failed"]
                reason = _xcom(af, run_id, failed[0], key="failure", dag_id="ami_promote") if failed else None
                print(f"   the promotion ended before its gate, at {failed}: {reason or 'see its task logs'}")
                return False
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # the run is made by next_stage a moment after the release ends
                raise
        time.sleep(2)
    print(
        "   approve waits for input (no worker slot, no lock held). The demo approves it through the REST API as "
        "admin; in real use a release manager answers it in the Airflow UI (Required Actions)"
    )
    af.api(
        "PATCH",
        f"/api/v2/dags/ami_promote/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails",
        {"chosen_options": ["Approve"], "params_input": {"reason": "make demo: approved through the API"}},
    )
    ok = _follow(af, run_id, dag_id="ami_promote") == "success"
    entry = _xcom(af, run_id, "record", dag_id="ami_promote") or {}
    bake = _xcom(af, release_run, "bake") or {}
    print("\n== summary (production)")
    gate = entry.get("gate") or {}
    print(f"   gate           {gate.get('answer')} by {gate.get('by')}: {gate.get('reason')}")
    for applied in entry.get("applied") or []:
        p = applied["plan"]
        changed = ", ".join(f"{c['address']} ({c['action']})" for c in p["changes"] if c["action"] != "noop")
        print(
            f"   terraform      {applied['region']}: {p['add']} to add, {p['change']} to change, {p['destroy']} to "
            f"destroy: {changed or 'no changes'}"
        )
    _groups(rt, entry.get("targets") or [], bake)
    ver = entry.get("verification") or {}
    print(f"   verification   {'passed' if ver.get('verified') else 'FAILED'} (the same AMI as staging: one bake)")
    print(f"   ledger         {entry.get('outcome')}: stage production of {plan.get('release_id')}")
    return ok and entry.get("outcome") == "succeeded"


def _groups(rt: SandboxRuntime, targets: list[dict[str, Any]], bake: dict[str, Any]) -> None:
    import boto3

    kw = dict(endpoint_url=rt.aws.endpoint_url, aws_access_key_id="testing", aws_secret_access_key="testing")
    for t in targets:
        asg = boto3.client("autoscaling", region_name=t["region"], **kw)
        ec2 = boto3.client("ec2", region_name=t["region"], **kw)
        groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[t["auto_scaling_group"]])["AutoScalingGroups"]
        if not groups:
            print(f"   group          {t['region']}/{t['auto_scaling_group']}: does not exist")
            continue
        ids = [i["InstanceId"] for i in groups[0]["Instances"] if i["LifecycleState"] == "InService"]
        reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"] if ids else []
        images = [i["ImageId"] for r in reservations for i in r["Instances"]]
        on_new = sum(1 for im in images if im == (bake.get("amis") or {}).get(t["region"]))
        print(
            f"   group          {t['region']}/{t['auto_scaling_group']}: {on_new}/{len(ids)} in-service instances on "
            "the new AMI"
        )


def _follow(af: Airflow, run_id: str, timeout: float = 1800, dag_id: str = "ami_release") -> str:
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tis = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        for ti in sorted(tis, key=lambda t: (t.get("start_date") or "9", t["task_id"])):
            key = f"{ti['task_id']}[{ti['map_index']}]" if ti["map_index"] >= 0 else ti["task_id"]
            if ti.get("state") and seen.get(key) != ti["state"]:
                seen[key] = ti["state"]
                print(f"   {time.strftime('%H:%M:%S')}  {key:<32} {ti['state']}")
        state = af.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            return state
        time.sleep(2)
    return "timeout"


def _xcom(
    af: Airflow, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value", dag_id: str = "ami_release"
):
    try:
        return af.api(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}?map_index={map_index}&deserialize=true",
        )["value"]
    except urllib.error.HTTPError:
        return None


def _chef_run(rt: SandboxRuntime, release_id: str) -> str:
    """What chef-solo was given on the sandbox's SSH builder for this release (sandbox/builders)."""
    state = rt.aws.handle_control("GET", "builders", {})[1]  # type: ignore[union-attr]
    if not state["enabled"]:
        return f"not run: no SSH builder in this sandbox ({state['reason']})"
    for runs in state["chef_runs"].values():
        for run in runs:
            release = (run.get("node") or {}).get("ami_release") or {}
            if release.get("release_id") == release_id:
                cookbooks = ", ".join(f"{p} sha256 {c['sha256'][:12]}" for p, c in run["cookbooks"].items())
                return (
                    f"over SSH on the sandbox's builder (recorded, not converged): run list "
                    f"{' '.join(run['run_list'] or [])}, version {release.get('version')}, cookbooks {cookbooks}, "
                    f"exit {run['exit_code']}"
                )
    return "no Chef run recorded for this release (see the bake's log)"


def _summary(rt: SandboxRuntime, af: Airflow, run_id: str, ok: bool) -> None:
    record = _xcom(af, run_id, "record") or {}
    plan = _xcom(af, run_id, "preflight") or {}
    bake = _xcom(af, run_id, "bake") or {}
    bucket = os.environ.get("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", rt.env()["AIRFLOW__AMI_RELEASE__LEDGER_BUCKET"])
    print("\n== summary")
    if not plan:  # preflight failed: there is no release yet, only the reason
        reason = _xcom(af, run_id, "preflight", key="failure")
        print(f"   preflight      failed: {reason or 'the task ended before it could say why (see its log)'}")
        print(f"   task logs      {AIRFLOW_HOME.relative_to(REPO)}/logs/dag_id=ami_release/run_id={run_id}/")
        return
    print(f"   release id     {plan.get('release_id')}")
    print(
        f"   AMI            {bake.get('amis')}  (from vendor image {plan.get('source_ami')} "
        f"{plan.get('source_ami_name')})"
    )
    # the ledger record's: the plan hands over the catalog entry, not the run list derived from it
    print(f"   run list       {' '.join(record.get('run_list') or [])}")
    source = plan.get("source")
    if source:
        where = f"{source['repository']} {source['ref']}"
        print(f"   source         {where} = commit {source['commit']} ({source['path']})")
    print(f"   bundle         s3://{bucket}/{(plan.get('bundle') or {}).get('key')}")
    print(f"   chef-solo      {_chef_run(rt, str(plan.get('release_id')))}")
    for applied in (record.get("infrastructure") or {}).get("applied") or []:
        p = applied["plan"]
        changed = ", ".join(f"{c['address']} ({c['action']})" for c in p["changes"] if c["action"] != "noop")
        print(
            f"   terraform      {applied['region']}: {p['add']} to add, {p['change']} to change, {p['destroy']} to "
            f"destroy: {changed or 'no changes'}"
        )
    print(
        f"   ledger         {record.get('outcome')}: s3://{bucket}/releases/{plan.get('app')}/{plan.get('release_id')}.json"
    )
    stage = next(iter(record.get("stages") or {}), None)  # a staged release: its first stage's groups only
    _groups(rt, ((record.get("stages") or {}).get(stage) or {}).get("targets") or record.get("targets") or [], bake)
    versions = {v["auto_scaling_group"]: v for v in record.get("launch_template_versions") or []}
    for r in record.get("refreshes") or []:
        lt = versions.get(r["auto_scaling_group"], {})
        print(
            f"   refresh        {r['auto_scaling_group']}: {r['refresh_id']} -> launch template "
            f"{lt.get('launch_template_id')} v{lt.get('launch_template_version')}"
        )
    ver = record.get("verification") or {}
    if ver:
        print(
            f"   verification   {'passed' if ver.get('verified') else 'FAILED'}: "
            + "; ".join(
                f"{g['auto_scaling_group']} {g['on_new_ami']}/{g['in_service']} on new AMI, "
                f"targets healthy={g['target_groups_healthy']}, alarms={g['alarms']}"
                for g in ver.get("groups", [])
            )
        )
    if not ok:
        tis = af.api("GET", f"/api/v2/dags/ami_release/dagRuns/{run_id}/taskInstances")["task_instances"]
        failed = [t["task_id"] for t in tis if t["state"] == "failed"]
        print(f"   failed tasks   {failed}; task logs under {AIRFLOW_HOME.relative_to(REPO)}/logs/")


def run_airflow(api_port: int, refresh_batch_seconds: float) -> int:
    try:
        with sandbox_with_airflow(api_port, refresh_batch_seconds) as (rt, af):
            print(f"\nAirflow UI: {af.base}   login: admin / {af.password()}  (simple auth manager: sandbox only)")
            print(f"AWS CLI against the sandbox: source {rt.env_file.relative_to(REPO)}")
            print("Ctrl-C stops Airflow and the sandbox.")
            while af.proc and af.proc.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    return 0
