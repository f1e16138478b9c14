"""Test-wide environment: an isolated AIRFLOW_HOME, this repo's DAGs and plugins.

Set before anything imports airflow (pytest imports this conftest first).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = REPO / ".airflow-test"
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


@pytest.fixture
def release_env(sandbox, vault_sandbox, airflow_db, monkeypatch):
    """Everything a release needs: the reset AWS sandbox, Vault, the DB, and the pipeline's
    deployment settings for an account with no reachable hosts (as the demo uses)."""
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__PACKER_SOURCE", "unprovisioned")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LEDGER_BUCKET", "ami-release-ledger-123456789012")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__REFRESH_POLL_SECONDS", "1")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__LOCK_POKE_SECONDS", "1")
    monkeypatch.setenv("AIRFLOW__AMI_RELEASE__SMOKE_POLL_SECONDS", "1")
    sandbox.configure(checkpoint_delay_scale=0.02)  # the example app's 30 s checkpoint delay -> 0.6 s
    return sandbox
