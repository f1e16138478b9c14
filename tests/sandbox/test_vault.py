"""The sandbox Vault: a real OpenBao server; the pipeline logs in with its AppRole, not root."""

from __future__ import annotations

import hvac
import pytest

from amirelease.catalog import SecretRef
from amirelease.errors import PreflightError
from amirelease.hooks.vault import PipelineSecrets


def _login(vs) -> hvac.Client:
    client = hvac.Client(url=vs.url)
    client.auth.approle.login(role_id=vs.role_id, secret_id=vs.secret_id)
    return client


def test_approle_login_reads_the_pipeline_secrets(vault_sandbox):
    client = _login(vault_sandbox)
    assert client.is_authenticated()
    policies = client.auth.token.lookup_self()["data"]["policies"]
    assert "ami-pipeline" in policies and "root" not in policies
    data = client.secrets.kv.v2.read_secret_version(
        path="ami-pipeline/demo-web/bake", mount_point="secret", raise_on_deleted_version=True
    )
    assert set(data["data"]["data"]) == {"chef_data_bag_secret", "artifact_token"}


def test_approle_cannot_write_or_read_outside_its_paths(vault_sandbox):
    client = _login(vault_sandbox)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.create_or_update_secret(
            path="ami-pipeline/demo-web/bake", secret={"x": "y"}, mount_point="secret"
        )
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(
            path="other-team/db", mount_point="secret", raise_on_deleted_version=True
        )
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.enable_auth_method(method_type="userpass")


def test_wrong_secret_id_is_refused(vault_sandbox):
    client = hvac.Client(url=vault_sandbox.url)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.auth.approle.login(role_id=vault_sandbox.role_id, secret_id="00000000-0000-0000-0000-000000000000")


def test_airflow_vault_connection_uses_the_approle(vault_sandbox):
    """The provider's VaultHook, through AIRFLOW_CONN_VAULT_DEFAULT, as the DAGs use it."""
    got = PipelineSecrets("vault_default").read("demo-web", (SecretRef("demo-web/bake", ("artifact_token",)),))
    assert got.values == {"artifact_token": vault_sandbox.seeded["ami-pipeline/demo-web/bake"]["artifact_token"]}
    assert got.versions == {"artifact_token": 1}  # KV v2 metadata: Terraform rewrites a secret when it changes
    assert "approle" in vault_sandbox.connection_uri() and "root" not in vault_sandbox.connection_uri()
    with pytest.raises(PreflightError, match="does not exist"):
        PipelineSecrets("vault_default").read("demo-web", (SecretRef("demo-web/missing", ("x",)),))


def test_stop_leaves_no_server(vault_sandbox):
    from sandbox.vault import VaultSandbox

    vs = VaultSandbox().start()
    pid = vs._proc.pid
    vs.stop()
    import os

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
