"""A real Airflow API server (with this repo's plugins) for the UI tests, on a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import REPO

LEDGER_BUCKET = "ami-release-ledger-123456789012"
# simple auth manager users: ADMIN may do everything; VIEWER may only read
USERS = {"admin": "ADMIN", "viewer": "VIEWER"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiServer:
    """`airflow api-server` in its own process group, wired to the sandbox account."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "api-server.log"
        self.passwords = {user: f"{user}-pw-{os.getpid()}" for user in USERS}
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        passwords_file = self.workdir / "passwords.json"
        passwords_file.write_text(json.dumps(self.passwords))
        env = dict(os.environ)  # AIRFLOW_HOME, the test DB, AIRFLOW_CONN_AWS_DEFAULT (sandbox) from tests/conftest.py
        env.update(
            PYTHONPATH=f"{REPO / 'plugins'}:{REPO}",
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__BASE_URL=self.base,
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__API_AUTH__JWT_SECRET=f"ui-tests-{os.getpid()}-{time.time()}",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(f"{u}:{r}" for u, r in USERS.items()),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords_file),
            AIRFLOW__AMI_RELEASE__LEDGER_BUCKET=LEDGER_BUCKET,
        )
        return env

    def start(self) -> ApiServer:
        airflow = Path(sys.executable).with_name("airflow")
        self.proc = subprocess.Popen(
            [str(airflow), "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            env=self.env(),
            cwd=str(REPO),
            stdout=open(self.log_path, "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"airflow api-server exited ({self.proc.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"airflow api-server not ready in {timeout:.0f}s; see {self.log_path}")

    def serialize_dags(self) -> None:
        """This repo's DAGs into the server's metadata DB, as a DAG processor would (for triggers)."""
        airflow = Path(sys.executable).with_name("airflow")
        subprocess.run(
            [str(airflow), "dags", "reserialize"],
            env=self.env(),
            cwd=str(REPO),
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def token(self, user: str) -> str:
        body = json.dumps({"username": user, "password": self.passwords[user]}).encode()
        req = urllib.request.Request(
            f"{self.base}/auth/token", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return str(json.loads(r.read())["access_token"])

    def stop(self) -> None:
        if self.proc is None:
            return
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
