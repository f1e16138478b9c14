"""The docker-compose.yaml shape, run as processes on this machine (no Docker engine needed).

Real servers: PostgreSQL (own data dir), Redis, OpenBao (non-dev: raft storage, TLS, the
shipped ``deploy/bao.hcl``), bootstrapped by ``amirelease.vault_bootstrap init``; the sandbox
AWS account (``python -m sandbox up --no-vault``, its own process); and every Airflow role of
``docker-compose.yaml`` (api-server, scheduler, dag-processor, triggerer, the default worker,
one worker per toolchain queue) as its own process with its own AIRFLOW_HOME.

The Airflow environment is *taken from docker-compose.yaml* (and the image's ``ENV`` from the
Dockerfile): ``${VAR}`` substitution as compose does it, then only host names, ports and
container paths are rewritten (postgres:5432 -> 127.0.0.1:<free port>, /opt/airflow/logs ->
the shared logs dir, ...). What the harness adds on top is listed in :func:`Cluster.role_env`:
the sandbox standing in for AWS, per-role home/ports/host name, and the venv on PATH.

The roles run from a virtualenv built from the runtime lock (requirements.txt, what the image
installs), cached under .cluster/ by the lock's hash.

Used by ``make cluster`` (``python -m sandbox cluster``) and bench/org_retention.py; its REST
client (:class:`Api`) and the compose-file helpers also by tests/deploy/test_compose.py, which
runs the same file in a Docker engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandbox.runtime import REPO

COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
RUNTIME_LOCK = REPO / "requirements.txt"
CLUSTER_DIR = REPO / ".cluster"
IMAGE_PREFIX = "ami-release"
ONE_OFF = {"airflow-init"}

# What the sandbox replaces in the compose environment (it stands in for the AWS account).
SANDBOX_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AIRFLOW_CONN_AWS_DEFAULT",
)
# How the bake reaches the sandbox's builders (sandbox/runtime.py builder_settings), when set.
BUILDER_KEY_PREFIXES = (
    "AIRFLOW__AMI_RELEASE__PACKER_SOURCE",
    "AIRFLOW__AMI_RELEASE__BUILDER_",
    "AIRFLOW__AMI_RELEASE__CHEF_PREINSTALLED",
)
# Faster polling than production; the behaviour is the same.
FAST_POLLING = {
    "AIRFLOW__AMI_RELEASE__REFRESH_POLL_SECONDS": "1",
    "AIRFLOW__AMI_RELEASE__LOCK_POKE_SECONDS": "1",
    "AIRFLOW__AMI_RELEASE__SMOKE_POLL_SECONDS": "1",
}
HOSTNAME_MODULE = '''"""Per-role host name: each compose service is its own host; here they share one machine."""
import os
import socket


def hostname():
    return os.environ.get("CLUSTER_ROLE_HOSTNAME") or socket.getfqdn()
'''


def _redact(text: str) -> str:
    """The bootstrap's one-time unseal keys and root token never go into an error message or log."""
    return re.sub(r"(?m)^(\s*(unseal key \d+|initial root token):).*$", r"\1 <redacted>", text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# --- compose file --------------------------------------------------------------------------
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's variable substitution: $$, ${VAR}, $VAR, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        val = variables.get(name)
        if op in (":-", ":?"):
            missing = not val
        else:
            missing = val is None
        if op and op.endswith("-") and missing:
            return arg
        if op and op.endswith("?") and missing:
            raise ValueError(f"compose variable {name} is required: {arg}")
        return val or ""

    return _VAR.sub(sub, value)


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def airflow_services(compose: dict[str, Any]) -> list[str]:
    """Services built from our image that `docker compose up` starts (not one-off tools)."""
    return [
        name
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).startswith(IMAGE_PREFIX) and not svc.get("profiles") and name not in ONE_OFF
    ]


def dockerfile_env(path: Path = DOCKERFILE) -> dict[str, str]:
    """The image's ENV lines (``ENV A=1 \\ B=2``)."""
    text = path.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().upper().startswith("ENV "):
            for item in shlex.split(line.strip()[4:]):
                k, _, v = item.partition("=")
                env[k] = v
    return env


def load_keys_module() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_keys", REPO / "deploy" / "keys.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- processes -----------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    stop_signal: int = signal.SIGTERM

    def alive(self) -> bool:
        return self.popen.poll() is None

    def group_alive(self) -> bool:
        try:
            os.killpg(self.popen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    signalled: bool = False

    def signal(self) -> None:
        if not self.signalled:
            self.signalled = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, self.stop_signal)

    def stop(self, timeout: float = 30) -> None:
        self.signal()
        deadline = time.monotonic() + timeout
        while self.group_alive():
            self.popen.poll()
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.1)
        self.popen.wait()


def _uv() -> list[str]:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    return [found] if Path(found).exists() else [sys.executable, "-m", "uv"]


def runtime_venv(lock: Path = RUNTIME_LOCK, cache: Path = CLUSTER_DIR) -> Path:
    """A virtualenv with exactly the runtime lock (what the image installs), cached by the lock's hash."""
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    venv = cache / f"runtime-{digest}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".venv.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            for old in cache.glob("runtime-*"):  # one cached runtime venv at a time
                shutil.rmtree(old, ignore_errors=True)
            subprocess.run([*_uv(), "venv", "--quiet", "--python", "3.11", str(venv)], check=True)
            subprocess.run(
                [*_uv(), "pip", "sync", "--quiet", "--python", str(venv / "bin" / "python"), "--compile-bytecode"]
                + [str(lock)],
                check=True,
            )
            (venv / ".complete").write_text(str(lock) + "\n")
    return venv


def _pg_bin(tool: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), key=lambda p: int(p.parts[-3]))
    if found:
        return str(found[-1])
    which = shutil.which(tool)
    if not which:
        raise RuntimeError(f"PostgreSQL's {tool} not found: run make setup (installs Debian's postgresql)")
    return which


@dataclass
class User:
    username: str
    password: str
    role: str


@dataclass
class Cluster:
    root: Path
    api_port: int = 0
    refresh_batch_seconds: float = 1.0
    checkpoint_delay_scale: float = 0.02
    say: Any = print
    procs: dict[str, Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    sandbox_env: dict[str, str] = field(default_factory=dict)
    venv: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    pg_root: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # every role's, over compose's (a bench's settings)

    # -- layout ------------------------------------------------------------------------------
    @property
    def logs(self) -> Path:
        return self.root / "proc-logs"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports['api-server']}"

    def log_of(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, **kw: Any) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.log_of(name)
        stop_signal = kw.pop("stop_signal", signal.SIGTERM)
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=kw.pop("cwd", str(self.root)),
            **kw,
        )
        p = Proc(name, proc, log, stop_signal)
        self.procs[name] = p
        return p

    def _wait(self, what: str, check: Any, timeout: float, proc: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc and not self.procs[proc].alive():
                raise RuntimeError(f"{proc} exited ({self.procs[proc].popen.returncode}); see {self.log_of(proc)}")
            try:
                if check():
                    return
            except (OSError, ValueError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready in {timeout:.0f}s" + (f"; see {self.log_of(proc)}" if proc else ""))

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> Cluster:
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.compose = load_compose()
        self.services = airflow_services(self.compose)
        keys = load_keys_module()
        self.keys = keys.generate()
        for name in ("postgres", "redis", "vault", "vault-cluster", "api-server"):
            self.ports[name] = free_port()
        if self.api_port:
            self.ports["api-server"] = self.api_port
        self.say("== starting PostgreSQL, Redis, OpenBao and the sandbox AWS account")
        self._start_sandbox()
        self._start_redis()
        self._start_postgres()
        self.venv = runtime_venv()
        self.timings["runtime_venv"] = time.monotonic() - t0
        self._start_vault()
        self._wait_sandbox()
        self._wait_postgres()
        self.timings["servers"] = time.monotonic() - t0
        self.say(f"   servers ready in {self.timings['servers']:.0f}s")
        self._init_airflow()
        self.timings["init"] = time.monotonic() - t0
        self.say("== starting the Airflow roles: " + ", ".join(self.services))
        for svc in self.services:
            self._start_role(svc)
        self._wait_roles()
        self._create_users()
        self.timings["ready"] = time.monotonic() - t0
        self.say(f"   cluster ready in {self.timings['ready']:.0f}s")
        return self

    def _start_sandbox(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
        argv = [sys.executable, "-m", "sandbox", "up", "--aws-port", "0", "--no-vault"]
        argv += ["--state-dir", str(self.root / "sandbox"), "--refresh-batch-seconds", str(self.refresh_batch_seconds)]
        argv += ["--checkpoint-delay-scale", str(self.checkpoint_delay_scale)]
        self._spawn("sandbox", argv, env=env, cwd=str(REPO))

    def _wait_sandbox(self) -> None:
        env_sh = self.root / "sandbox" / "env.sh"
        self._wait("sandbox", env_sh.exists, 60, proc="sandbox")
        for line in env_sh.read_text().splitlines():
            if line.startswith("export "):
                k, _, v = line[len("export ") :].partition("=")
                self.sandbox_env[k] = shlex.split(v)[0] if v else ""
        self.ports["sandbox"] = int(self.sandbox_env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])

    def _start_redis(self) -> None:
        d = self.root / "redis"
        d.mkdir(exist_ok=True)
        argv = ["redis-server", "--port", str(self.ports["redis"]), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(d), "--daemonize", "no"]
        self._spawn("redis", argv)

    def _as_postgres_user(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError("running as root and no 'postgres' user to run PostgreSQL as") from exc
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _start_postgres(self) -> None:
        as_pg = self._as_postgres_user()
        # Its own directory outside self.root: when we are root, PostgreSQL runs as 'postgres',
        # which must reach its data dir (pytest's and mkdtemp's parents are private).
        self.pg_root = Path(tempfile.mkdtemp(prefix="ami-cluster-pg-"))
        self.pg_root.chmod(0o711)
        data, sock = self.pg_root / "data", self.pg_root / "sock"
        pwfile = self.pg_root / "pw"
        pwfile.write_text(self.keys["POSTGRES_PASSWORD"] + "\n")
        for d in (data, sock):
            d.mkdir(exist_ok=True)
        if as_pg:
            for p in (data, sock, pwfile):
                os.chown(p, as_pg["user"], as_pg["group"])
        subprocess.run(
            [_pg_bin("initdb"), "-D", str(data), "-U", "airflow", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"]
            + ["--auth-local=trust", "--auth-host=scram-sha-256"],
            check=True,
            stdout=open(self.log_of("initdb"), "ab"),
            stderr=subprocess.STDOUT,
            **as_pg,
        )
        pwfile.unlink()
        argv = [_pg_bin("postgres"), "-D", str(data), "-p", str(self.ports["postgres"]), "-k", str(sock)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"]
        argv += ["-c", "full_page_writes=off", "-c", "max_connections=300"]
        self._spawn("postgres", argv, stop_signal=signal.SIGINT, **as_pg)

    def _wait_postgres(self) -> None:
        import psycopg2  # in the dev venv (and the runtime one)

        def ready() -> bool:
            with contextlib.closing(
                psycopg2.connect(
                    host="127.0.0.1",
                    port=self.ports["postgres"],
                    user="airflow",
                    password=self.keys["POSTGRES_PASSWORD"],
                    dbname="postgres",
                    connect_timeout=2,
                )
            ) as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow'")
                    if not cur.fetchone():
                        cur.execute("CREATE DATABASE airflow")
            return True

        def safe_ready() -> bool:
            try:
                return ready()
            except psycopg2.OperationalError:
                return False

        self._wait("PostgreSQL", safe_ready, 60, proc="postgres")

    def _start_vault(self) -> None:
        """OpenBao from the shipped deploy/bao.hcl (paths/addresses rewritten), bootstrapped for real."""
        from sandbox.vault import bao_binary

        tls = self.root / "tls"
        self._run_runtime(
            ["python", "-m", "amirelease.vault_bootstrap", "tls", "--out", str(tls), "--hosts", "vault,127.0.0.1"]
        )
        hcl = (REPO / "deploy" / "bao.hcl").read_text()
        vp, vc = self.ports["vault"], self.ports["vault-cluster"]
        rewrites = {
            "/openbao/data": str(self.root / "vault-data"),
            "/openbao/tls": str(tls),
            "0.0.0.0:8200": f"127.0.0.1:{vp}",
            "0.0.0.0:8201": f"127.0.0.1:{vc}",
            "https://vault:8200": f"https://127.0.0.1:{vp}",
            "https://vault:8201": f"https://127.0.0.1:{vc}",
        }
        for old, new in rewrites.items():
            if old not in hcl:
                raise RuntimeError(f"deploy/bao.hcl no longer contains {old!r}: update sandbox/cluster.py")
            hcl = hcl.replace(old, new)
        (self.root / "vault-data").mkdir(exist_ok=True)
        (self.root / "bao.hcl").write_text(hcl)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        self._spawn("vault", [bao_binary(), "server", f"-config={self.root / 'bao.hcl'}"], env=env)
        ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))

        def answering() -> bool:
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{vp}/v1/sys/health", timeout=2, context=ctx)
            except urllib.error.HTTPError:
                pass  # 501 not initialised / 503 sealed: it answers over verified TLS
            return True

        self._wait("OpenBao", answering, 30, proc="vault")
        out = self._run_runtime(
            ["python", "-m", "amirelease.vault_bootstrap", "init", "--url", f"https://127.0.0.1:{vp}"]
            + ["--ca-cert", str(tls / "ca.pem"), "--key-shares", "1", "--key-threshold", "1"]
            + ["--seed", str(REPO / "sandbox" / "vault.yaml")],
            capture=True,
        )
        found = dict(re.findall(r"^(VAULT_ROLE_ID|VAULT_SECRET_ID)=(\S+)$", out, re.M))
        if set(found) != {"VAULT_ROLE_ID", "VAULT_SECRET_ID"}:
            raise RuntimeError("vault_bootstrap init printed no AppRole credentials")
        self.keys.update(found)
        # The unseal key and root token were printed once to our pipe and are dropped here.
        self.bootstrap_output_lines = len(out.splitlines())

    def _run_runtime(self, argv: list[str], capture: bool = False, extra_env: dict[str, str] | None = None) -> str:
        venv = self.venv = self.venv or runtime_venv()
        env = self._base_env()
        env.update(PYTHONPATH=str(REPO / "plugins"), **(extra_env or {}))
        argv = [str(venv / "bin" / argv[0]), *argv[1:]] if (venv / "bin" / argv[0]).exists() else argv
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=str(self.root))
        if res.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv[:4])} failed ({res.returncode}):\n{_redact(res.stdout[-3000:])}{res.stderr[-3000:]}"
            )
        return res.stdout if capture else ""

    def _base_env(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER", "LOGNAME")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        assert self.venv is not None
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    # -- the Airflow environment, from the compose file -----------------------------------------
    def compose_variables(self) -> dict[str, str]:
        """What .env would hold: generated keys, Vault credentials from the bootstrap, the ledger bucket."""
        return {
            **self.keys,
            "AMI_RELEASE_LEDGER_BUCKET": self.sandbox_env["AIRFLOW__AMI_RELEASE__LEDGER_BUCKET"],
            "AWS_REGION": self.sandbox_env["AWS_DEFAULT_REGION"],
        }

    def host_map(self) -> dict[str, str]:
        p = self.ports
        return {
            "postgres:5432": f"127.0.0.1:{p['postgres']}",
            "redis:6379": f"127.0.0.1:{p['redis']}",
            "vault:8200": f"127.0.0.1:{p['vault']}",
            "api-server:8080": f"127.0.0.1:{p['api-server']}",
            "localhost:8080": f"127.0.0.1:{p['api-server']}",
        }

    def path_map(self, service: str) -> list[tuple[str, str]]:
        """Container paths -> local paths, from the service's volumes and the image's layout."""
        svc = self.compose["services"][service]
        mapping: list[tuple[str, str]] = []
        for vol in svc.get("volumes") or []:
            src, dst = vol.split(":")[:2]
            if src.startswith("./deploy/tls"):
                local = str(self.root / "tls") + src[len("./deploy/tls") :]
            elif src.startswith("."):
                local = str(REPO / src)
            else:  # a named volume: one directory shared by every role that mounts it
                local = str(self.root / "volumes" / src)
                Path(local).mkdir(parents=True, exist_ok=True)
            mapping.append((dst, local))
        mapping += [("/opt/airflow", str(self.root / "homes" / service)), ("/opt/ami-release", str(REPO))]
        return sorted(mapping, key=lambda kv: -len(kv[0]))

    def _rewrite(self, value: str, service: str) -> str:
        hosts = self.host_map()
        if value.startswith("{"):
            obj = json.loads(value)
            hp = f"{obj.get('host')}:{obj.get('port')}"
            if hp in hosts:
                obj["host"], port = hosts[hp].split(":")
                obj["port"] = int(port)
            return self._rewrite_paths(json.dumps(obj), service)
        for old, new in hosts.items():
            value = re.sub(rf"(?<=[/@]){re.escape(old)}(?![0-9])", new, value)
        return self._rewrite_paths(value, service)

    def _rewrite_paths(self, value: str, service: str) -> str:
        for old, new in self.path_map(service):
            value = re.sub(rf"{re.escape(old)}(?=$|[/\"'])", new, value)
        return value

    def compose_env(self, service: str) -> dict[str, str]:
        """The service's environment exactly as docker compose would pass it, hosts/ports/paths rewritten."""
        variables = self.compose_variables()
        image_env = dockerfile_env()
        raw = {**image_env, **(self.compose["services"][service].get("environment") or {})}
        return {k: self._rewrite(interpolate(str(v), variables), service) for k, v in raw.items()}

    def role_env(self, service: str) -> dict[str, str]:
        """Everything a role's process gets: compose_env + what this machine needs. The one place
        to add per-role settings (a worker's PATH for terraform, a plugin mirror, ...)."""
        env = self._base_env()
        env.update(self.compose_env(service))
        env.update({k: self.sandbox_env[k] for k in SANDBOX_KEYS})  # the sandbox is the AWS account
        env.update({k: v for k, v in self.sandbox_env.items() if k.startswith(BUILDER_KEY_PREFIXES)})
        env.update(FAST_POLLING)
        env.update(self.extra_env)
        home = Path(env["AIRFLOW_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        pylib = self.root / "pylib"
        pylib.mkdir(exist_ok=True)
        (pylib / "cluster_hostname.py").write_text(HOSTNAME_MODULE)
        env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{pylib}"
        # each container has its own host name and its own log-server ports; here they share one host
        env["CLUSTER_ROLE_HOSTNAME"] = service
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "cluster_hostname.hostname"
        env["AIRFLOW__API__HOST"] = "127.0.0.1"
        env["AIRFLOW__API__PORT"] = str(self.ports["api-server"])
        env["AIRFLOW__API__WORKERS"] = "1"
        for key, port_name in (
            ("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", f"{service}-log"),
            ("AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT", f"{service}-trigger-log"),
        ):
            self.ports.setdefault(port_name, free_port())
            env[key] = str(self.ports[port_name])
        return env

    def role_command(self, service: str) -> list[str]:
        cmd = list(self.compose["services"][service]["command"])
        if cmd[:3] == ["airflow", "celery", "worker"]:
            cmd += ["--celery-hostname", f"{service}@%h"]  # compose: one host name per container
        return cmd

    def _init_airflow(self) -> None:
        self.say("== airflow-init: " + " ".join(self.compose["services"]["airflow-init"]["command"][-1:]))
        env = self.role_env("airflow-init")
        res = subprocess.run(
            self.role_command("airflow-init"),
            env=env,
            cwd=str(self.root),
            stdout=open(self.log_of("airflow-init"), "ab"),
            stderr=subprocess.STDOUT,
            timeout=300,
        )
        if res.returncode != 0:
            raise RuntimeError(f"airflow-init failed ({res.returncode}); see {self.log_of('airflow-init')}")
        self.users["admin"] = User("admin", self.keys["AIRFLOW_ADMIN_PASSWORD"], "Admin")

    def _start_role(self, service: str) -> None:
        self._spawn(service, self.role_command(service), env=self.role_env(service))

    def _create_users(self) -> None:
        """The release manager and the viewer, created by the admin through the FAB users API."""
        admin = self.api("admin")
        for username, role in (("release-manager", "release-manager"), ("viewer", "Viewer")):
            user = User(username, secrets.token_urlsafe(12), role)
            body = {
                "username": username,
                "password": user.password,
                "first_name": username,
                "last_name": "User",
                "email": f"{username}@example.invalid",
                "roles": [{"name": role}],
            }
            status, resp = admin.call("POST", "/auth/fab/v1/users", body)
            if status not in (200, 201):
                raise RuntimeError(f"creating user {username} ({role}) failed: {status} {resp}")
            self.users[username] = user

    def _wait_roles(self, timeout: float = 150) -> None:
        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=3) as r:
                h = json.loads(r.read())
            return all(
                (h.get(c) or {}).get("status") == "healthy"
                for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            )

        for svc in self.services:
            if not self.procs[svc].alive():
                raise RuntimeError(f"{svc} exited ({self.procs[svc].popen.returncode}); see {self.log_of(svc)}")
        self._wait("api-server health (scheduler, triggerer, dag processor)", healthy, timeout, proc="api-server")
        for svc in self.services:
            if "worker" in self.role_command(svc):
                self._wait(f"{svc} (celery ready)", lambda s=svc: " ready." in self.log_of(s).read_text(), 90, proc=svc)

    # -- REST ------------------------------------------------------------------------------------
    def api(self, user: str | None = None) -> Api:
        u = self.users[user] if user else None
        return Api(self.base, u.username if u else None, u.password if u else None)

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        # the Airflow roles together (SIGTERM to each process group, then wait), then the servers
        roles = [self.procs[s] for s in self.services if s in self.procs]
        for p in roles:
            p.signal()
        for p in roles:
            p.stop(timeout=45)
        for name in ("vault", "sandbox", "redis", "postgres", *self.procs):
            if name in self.procs:
                self.procs[name].stop(timeout=20)
        if self.pg_root:
            shutil.rmtree(self.pg_root, ignore_errors=True)

    def listening(self) -> list[str]:
        return [f"{name}:{port}" for name, port in self.ports.items() if port_open(port)]

    def describe(self) -> str:
        lines = [
            f"Airflow UI/API  {self.base}   (FAB auth manager)",
            *(f"  user {u.username:<16} password {u.password:<20} role {u.role}" for u in self.users.values()),
            f"PostgreSQL      127.0.0.1:{self.ports['postgres']} db airflow (user airflow)",
            f"Redis           127.0.0.1:{self.ports['redis']}",
            f"OpenBao (TLS)   https://127.0.0.1:{self.ports['vault']}  CA {self.root / 'tls' / 'ca.pem'}",
            f"AWS (sandbox)   {self.sandbox_env.get('AWS_ENDPOINT_URL')}",
            f"roles           {', '.join(self.services)}; logs in {self.logs}",
        ]
        return "\n".join(lines)


class Api:
    """A small REST client: JWT from /auth/token (FAB auth manager), JSON in and out."""

    def __init__(self, base: str, username: str | None, password: str | None) -> None:
        self.base, self.username, self.password = base, username, password
        self.token: str | None = None

    def login(self) -> str:
        status, body = self.call(
            "POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False
        )
        if status not in (200, 201):
            raise RuntimeError(f"login as {self.username} failed: {status} {body}")
        self.token = str(body["access_token"])
        return self.token

    def call(
        self, method: str, path: str, body: Any = None, auth: bool = True, accept: str = "application/json"
    ) -> tuple[int, Any]:
        if auth and self.username and not self.token:
            self.login()
        req = urllib.request.Request(
            self.base + path, method=method, data=json.dumps(body).encode() if body is not None else None
        )
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", accept)
        if auth and self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                data, status = r.read(), r.status
        except urllib.error.HTTPError as exc:
            data, status = exc.read(), exc.code
        try:
            return status, json.loads(data) if data else {}
        except ValueError:
            return status, data.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body}")
        return body


def run_cluster(api_port: int = 0) -> int:
    """`make cluster`: start everything in .cluster/run, print how to use it, stop on Ctrl-C/SIGTERM."""
    root = CLUSTER_DIR / "run"
    shutil.rmtree(root, ignore_errors=True)
    cl = Cluster(root=root, api_port=api_port, refresh_batch_seconds=3.0, checkpoint_delay_scale=0.1)
    try:
        cl.start()
        print("\n" + cl.describe())
        print(
            f"\nTrigger a release: log in as release-manager at {cl.base}, DAG ami_release: unpause it, Trigger.\n"
            f"Stop: Ctrl-C here, or kill {os.getpid()}. Everything stops; nothing stays on a port."
        )
        while all(cl.procs[s].alive() for s in cl.services):
            time.sleep(1)
        print("a role exited: " + ", ".join(s for s in cl.services if not cl.procs[s].alive()))
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cl.stop()
        left = cl.listening()
        print("== stopped" + (f"; STILL LISTENING: {left}" if left else "; no port left open"))
