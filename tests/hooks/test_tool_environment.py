"""Terraform and Packer see an allow-listed environment: never the worker's Airflow connections
(the Vault AppRole), its database URL, Fernet key or its own AWS credentials. Proven with real
Terraform (local-exec) and real Packer (shell-local) printing what they can see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amirelease.hooks.packer import PackerHook
from amirelease.hooks.terraform import TerraformHook
from amirelease.hooks.tool import base_environment, workdir

HERE = Path(__file__).parent
PLATFORM = {
    "AIRFLOW_CONN_VAULT_DEFAULT": "vault://role:s3cret-id@vault:8200",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:dbpass@db/airflow",
    "AIRFLOW__CORE__FERNET_KEY": "fernet-key-value",
    "AWS_SECRET_ACCESS_KEY": "worker-role-secret",
    "VAULT_TOKEN": "hvs.worker-token",
}
APP_AWS = {"AWS_ACCESS_KEY_ID": "app-key", "AWS_SECRET_ACCESS_KEY": "app-secret", "AWS_REGION": "us-east-1"}


@pytest.fixture
def platform_env(monkeypatch):
    for k, v in PLATFORM.items():
        monkeypatch.setenv(k, v)


def _assert_contained(seen: str) -> None:
    for name, value in PLATFORM.items():
        if name == "AWS_SECRET_ACCESS_KEY":
            continue
        assert name not in seen and value not in seen, name
    assert "worker-role-secret" not in seen  # the worker's own AWS identity
    assert "PATH=" in seen  # it is the real environment, just filtered


def test_base_environment_is_an_allow_list():
    env = base_environment({"PATH": "/bin", "LC_ALL": "C", "AIRFLOW_HOME": "/x", "SECRET": "y", **PLATFORM})
    assert env == {"PATH": "/bin", "LC_ALL": "C"}


def test_terraform_local_exec_sees_none_of_the_platforms_credentials(platform_env, tmp_path):
    hook, lines = TerraformHook(), []
    out = tmp_path / "tf-env.txt"
    with workdir("terraform") as wd:
        module = hook.prepare(HERE / "tf" / "leaky", wd, None)
        env = hook.environment(wd, APP_AWS, {"api_token": "app-secret-token"})
        assert hook.init(module, None, env, lines.append).returncode == 0, lines
        var_file = wd / "v.json"
        var_file.write_text(json.dumps({"out": str(out)}))
        plan = hook.plan(module, var_file, env, lines.append, out=wd / "p.tfplan", lock=False)
        assert plan.returncode == 0, lines
        assert hook.apply(module, wd / "p.tfplan", env, lines.append).returncode == 0, lines
    seen = out.read_text()
    _assert_contained(seen)
    assert "AWS_SECRET_ACCESS_KEY=app-secret" in seen  # what it is given: the app's credentials only


def test_packer_shell_local_sees_none_of_the_platforms_credentials(platform_env, tmp_path):
    out = tmp_path / "packer-env.txt"
    result = PackerHook().build(HERE / "leaky.pkr.hcl", {"out": str(out)}, secrets={}, aws_env=APP_AWS)
    assert result.returncode == 0, result.errors
    seen = out.read_text()
    _assert_contained(seen)
    assert "AWS_SECRET_ACCESS_KEY=app-secret" in seen
