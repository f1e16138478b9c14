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


def _read(client: hvac.Client, path: str) -> dict:
    return client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)


def test_the_pipeline_approle_reads_no_secret_but_mints_per_app_tokens(vault_sandbox):
    client = _login(vault_sandbox)
    policies = client.auth.token.lookup_self()["data"]["policies"]
    assert "ami-pipeline" in policies and "root" not in policies
    with pytest.raises(hvac.exceptions.Forbidden):
        _read(client, "ami-pipeline/demo-web/bake")  # the platform-wide identity reads nothing itself

    token = client.auth.token.create(role_name="ami-release-app", policies=["ami-app-demo-web"], ttl="5m")
    app = hvac.Client(url=vault_sandbox.url, token=token["auth"]["client_token"])
    assert set(_read(app, "ami-pipeline/demo-web/bake")["data"]["data"]) == {"chef_data_bag_secret", "artifact_token"}
    with pytest.raises(hvac.exceptions.Forbidden):  # Vault itself refuses another app's folder
        _read(app, "ami-pipeline/demo-win/bake")
    # the token role hands out app policies only: never the pipeline's own, never root
    for forbidden in (["ami-pipeline"], ["root"], ["default-plus"]):
        with pytest.raises((hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)):
            client.auth.token.create(role_name="ami-release-app", policies=forbidden, ttl="5m")


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


def test_an_app_cannot_read_another_apps_secret_even_if_its_entry_names_it(vault_sandbox):
    """The `intruder` pattern: a catalog entry that names demo-web's folder. The catalog refuses it
    (tests/unit/test_sources.py); here Vault itself refuses, whatever the entry says."""
    with pytest.raises(PreflightError) as exc:
        PipelineSecrets("vault_default").read("demo-win", (SecretRef("demo-web/runtime", ("api_token",)),))
    assert "Vault denied app 'demo-win' the secret 'ami-pipeline/demo-web/runtime'" in str(exc.value)
    assert vault_sandbox.seeded["ami-pipeline/demo-web/runtime"]["api_token"] not in str(exc.value)


def test_each_read_uses_a_fresh_token_that_is_revoked_after(vault_sandbox):
    seen = []

    class Recording(PipelineSecrets):
        def _app_client(self, hook, app_name):
            client = super()._app_client(hook, app_name)
            seen.append(client)
            return client

    reader = Recording("vault_default")
    for _ in range(2):
        reader.read("demo-web", (SecretRef("demo-web/bake", ("artifact_token",)),))
    assert len(seen) == 2 and seen[0].token != seen[1].token  # one token per read
    for client in seen:
        with pytest.raises(hvac.exceptions.Forbidden):  # revoked: Vault no longer knows it
            client.auth.token.lookup_self()


def test_stop_leaves_no_server(vault_sandbox):
    from sandbox.vault import VaultSandbox

    vs = VaultSandbox().start()
    pid = vs._proc.pid
    vs.stop()
    import os

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
