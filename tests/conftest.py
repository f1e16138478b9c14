"""Test-wide environment: an isolated AIRFLOW_HOME, this repo's DAGs and plugins.

Set before anything imports airflow (pytest imports this conftest first).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# One Airflow home (SQLite DB, logs) per pytest-xdist worker: workers never share a database.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
AIRFLOW_HOME = REPO / (f".airflow-test-{WORKER}" if WORKER else ".airflow-test")
ARTIFACTS = REPO / ".artifacts"
AIRFLOW_HOME.mkdir(exist_ok=True)

os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}"
os.environ.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://127.0.0.1:8080/execution/")
# No real AWS credentials or config from the developer's machine may leak into a test.
for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(var, None)


# --- the local AWS account (sandbox/aws) -------------------------------------------------
import json as _json  # noqa: E402

import pytest  # noqa: E402

_SANDBOX_TEST_BATCH_SECONDS = 0.2


@pytest.fixture(scope="session")
def aws_sandbox():
    """One in-process AwsSandbox for the whole session; AWS env + Airflow aws_default point at it."""
    from sandbox.aws import AwsSandbox

    sb = AwsSandbox(refresh_batch_seconds=_SANDBOX_TEST_BATCH_SECONDS).start()
    env = {
        "AWS_ENDPOINT_URL": sb.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": sb.region,
        "AIRFLOW_CONN_AWS_DEFAULT": _json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"region_name": sb.region, "endpoint_url": sb.endpoint_url},
            }
        ),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield sb
    finally:
        # every AWS call this worker's tests made, by sender: what tests/test_zz_iam_policy.py reads
        calls = ARTIFACTS / f"aws-calls-{WORKER or 'main'}.json"
        calls.parent.mkdir(exist_ok=True)
        calls.write_text(_json.dumps(sorted([*k, v] for k, v in sb.callers().items()), indent=1))
        # and which of them an app role's session signed: (sender, call, role ARN)
        roles = sb.assumed_roles()
        signed = {
            (who, call, roles[key]) for (who, call), keys in sb.access_keys().items() for key in keys if key in roles
        }
        (ARTIFACTS / f"aws-roles-{WORKER or 'main'}.json").write_text(_json.dumps(sorted(signed), indent=1))
        # what should never happen in the sandbox (a lost answer an SDK sent again, moto failing): the
        # clue to a flaky test, where Terraform's retry of a call that had worked met the changed account
        odd = sb.oddities()  # the product's SDKs only: a test's own client (sender "other") repeats on purpose
        odd["repeats"] = [r for r in odd["repeats"] if r.get("sender") != "other"]
        if odd["repeats"] or odd["errors"]:
            (ARTIFACTS / f"aws-oddities-{WORKER or 'main'}.json").write_text(_json.dumps(odd, indent=1))
        sb.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def sandbox(aws_sandbox):
    """The session sandbox, reset to the seeded account (faults cleared, counts zeroed)."""
    aws_sandbox.configure(refresh_batch_seconds=_SANDBOX_TEST_BATCH_SECONDS, checkpoint_delay_scale=1.0)
    aws_sandbox.reset()
    yield aws_sandbox


# --- Airflow metadata DB, the local Vault, and the release pipeline's configuration ---------
import fcntl as _fcntl  # noqa: E402
import subprocess as _subprocess  # noqa: E402
import sys as _sys  # noqa: E402


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated SQLite metadata DB in AIRFLOW_HOME (for dag.test()); migrated once."""
    db = AIRFLOW_HOME / "airflow.db"
    marker = AIRFLOW_HOME / ".migrated"
    with open(AIRFLOW_HOME / ".db.lock", "w") as lock:
        _fcntl.flock(lock, _fcntl.LOCK_EX)
        try:
            if not (db.exists() and marker.exists()):
                airflow = Path(_sys.executable).with_name("airflow")
                _subprocess.run(
                    [str(airflow), "db", "migrate"],
                    check=True,
                    env=os.environ.copy(),
                    stdout=_subprocess.DEVNULL,
                    timeout=300,
                )
                marker.touch()
        finally:
            _fcntl.flock(lock, _fcntl.LOCK_UN)
    from airflow import settings

    if settings.Session is None:
        settings.configure_orm()
    yield db


@pytest.fixture(scope="session")
def vault_sandbox():
    """A real OpenBao dev server with AppRole; vault_default logs in with the pipeline's role."""
    from sandbox.vault import VaultSandbox

    vs = VaultSandbox(log_path=AIRFLOW_HOME / "openbao.log").start()
    saved = os.environ.get("AIRFLOW_CONN_VAULT_DEFAULT")
    os.environ["AIRFLOW_CONN_VAULT_DEFAULT"] = vs.connection_uri()
    try:
        yield vs
    finally:
        vs.stop()
        if saved is None:
            os.environ.pop("AIRFLOW_CONN_VAULT_DEFAULT", None)
        else:
            os.environ["AIRFLOW_CONN_VAULT_DEFAULT"] = saved


def release_settings(monkeypatch) -> None:
    """The pipeline's deployment settings for an account with no reachable hosts (as the demo uses)."""
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__PACKER_SOURCE", "unprovisioned")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", "ami-release-ledger-123456789012")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__REFRESH_POLL_SECONDS", "1")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LOCK_POKE_SECONDS", "1")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__SMOKE_POLL_SECONDS", "1")
    # dag.test() runs one task at a time: an apply that comes before the smoke test waits briefly
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__APPLY_WAIT_SECONDS", "1")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__APPLY_POKE_SECONDS", "1")


def provisioned_settings(monkeypatch, sb) -> None:
    """Bake the provisioned source through the sandbox's SSH builders, set as `make demo` sets it
    (sandbox/runtime.py builder_settings); skips nothing: fails when this machine has no builders."""
    from sandbox.runtime import builder_settings

    settings = builder_settings(sb)
    assert settings["AIRFLOW__AMI_RELEASE__PACKER_SOURCE"] == "provisioned", (
        f"this machine runs no sandbox builders: {sb.state()['builders']['reason']} (make setup installs them)"
    )
    for key, value in settings.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def release_env(sandbox, vault_sandbox, airflow_db, monkeypatch):
    """Everything a release needs: the reset AWS sandbox (a fresh account, no app fleet yet),
    Vault, the DB, and the pipeline's settings."""
    release_settings(monkeypatch)
    sandbox.configure(checkpoint_delay_scale=0.02)  # the example app's 30 s checkpoint delay -> 0.6 s
    return sandbox


@pytest.fixture
def fleet_env(aws_sandbox, vault_sandbox, airflow_db, monkeypatch, request):
    """An account where demo-web already runs: its fleet made by a real first release (1.0.0)
    and kept across tests (a release takes a minute; the tests that share it each release
    on top of what is there). Made again whenever another test reset the account."""
    sb = aws_sandbox
    release_settings(monkeypatch)
    sb.configure(refresh_batch_seconds=_SANDBOX_TEST_BATCH_SECONDS, checkpoint_delay_scale=0.02)
    sb.faults.clear()
    missing = _demo_fleet_missing(sb)
    if missing:
        _fleet_build_noted(request.node.nodeid, missing)
        sb.reset()
        from tests.release.conftest import ledger_records, load_dag, task_states

        dr = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "1.0.0", "notes": "the fleet"})
        assert dr.state == "success", (
            f"the first release that makes the fleet failed: {task_states(dr)}; "
            f"ledger: {[(r.get('version'), r.get('failure_reason')) for r in ledger_records(sb)]}"
        )
    sb.faults.clear()
    sb.reset_request_counts()
    return sb


def _demo_fleet_missing(sb) -> str | None:
    """None when demo-web's fleet is there to release on; else what is missing (a test before
    this one reset the account, or left the lock)."""
    asg, s3 = sb.client("autoscaling"), sb.client("s3")
    if not asg.describe_auto_scaling_groups(AutoScalingGroupNames=["demo-web-asg"])["AutoScalingGroups"]:
        return "no group demo-web-asg"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="ami-release-ledger-123456789012").get("Contents", [])}
    if "terraform/demo-web/us-east-1/terraform.tfstate" not in keys:
        return "no Terraform state"
    return "the lock locks/demo-web.json is held" if "locks/demo-web.json" in keys else None


def _fleet_build_noted(nodeid: str, why: str) -> None:
    """Each build of the shared fleet costs a release (~1-2 minutes): which test paid it and why,
    in .artifacts/fleet-builds-<worker>.txt, to keep the fleet group's tests from undoing it."""
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / f"fleet-builds-{WORKER or 'main'}.txt").open("a") as f:
        f.write(f"{nodeid}: {why}\n")


# --- a release plan for pure tests (no AWS) ------------------------------------------------
@pytest.fixture
def release_plan():
    """A factory of ReleasePlans for demo-web, as preflight would make them."""
    import yaml

    from amirelease.handoffs import BundleRef, RegionNetwork, ReleasePlan

    entry = yaml.safe_load((REPO / "include/apps/demo-web.yaml").read_text())

    def make(**overrides):
        base = dict(
            app="demo-web",
            version="1.0.0",
            release_id="demo-web-1.0.0-abc",
            ami_name="demo-web-1.0.0-abc",
            cookbook_versions={"linux-base": "1.4.0", "demo-web": "2.3.1"},
            packer_template_digest="d" * 16,
            source_ami="ami-0a11a2023b0000002",
            source_ami_name="al2023-ami-2023.6-x86_64",
            networks=(
                RegionNetwork(
                    region="us-east-1", vpc_id="vpc-1", vpc_cidr="10.20.0.0/16", subnet_ids=("subnet-a", "subnet-b")
                ),
            ),
            account_id="123456789012",
            pipeline_run="manual__2026-01-01T00:00:00+00:00",
            bundle=BundleRef(key="releases/demo-web/demo-web-1.0.0-abc/bundle.tar.gz", sha256="e" * 64),
            catalog_entry=entry,
        )
        base.update(overrides)
        return ReleasePlan(**base)

    return make


def pytest_collection_finish(session):
    """Which tests this process runs (the IAM check needs to know the end-to-end tests ran)."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"collected-{WORKER or 'main'}.json").write_text(_json.dumps(sorted(i.nodeid for i in session.items)))
