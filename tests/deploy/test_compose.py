"""Lint of the multi-machine deployment (no Docker engine here: the file is checked, not run)."""

from __future__ import annotations

import re

import yaml

from amirelease.catalog import toolchains
from tests.conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def test_every_toolchain_queue_has_a_bake_worker_with_packer():
    served = {}
    for name, svc in SERVICES.items():
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
    envs = [SERVICES[r]["environment"] for r in roles]
    assert all(e == envs[0] for e in envs)
    env = envs[0]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__AMI_RELEASE__PACKER_SOURCE"] == "provisioned"
    # credentials only through ${VAR} substitution from the operator's environment
    assert re.search(r"\$\{VAULT_SECRET_ID:\?", env["AIRFLOW_CONN_VAULT_DEFAULT"])
    assert "aws_secret_access_key" not in str(env).lower() and '"password"' not in env["AIRFLOW_CONN_AWS_DEFAULT"]


def test_dependencies_and_images():
    for name, svc in SERVICES.items():
        assert svc.get("image"), name
        for dep in svc.get("depends_on") or {}:
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
    assert (REPO / "Dockerfile").exists() and (REPO / "deploy/bao.hcl").exists()
