"""The whole sandbox in one object: the AWS account and Vault, plus the Airflow settings
that point at them (connections as AIRFLOW_CONN_* environment variables)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = REPO / ".sandbox"


class SandboxRuntime:
    def __init__(
        self,
        refresh_batch_seconds: float = 3.0,
        aws_port: int = 0,
        state_dir: Path = STATE_DIR,
        with_vault: bool = True,
        checkpoint_delay_scale: float = 1.0,
    ) -> None:
        self.refresh_batch_seconds = refresh_batch_seconds
        self.aws_port = aws_port
        self.state_dir = state_dir
        self.with_vault = with_vault  # False: AWS only (the cluster brings its own Vault)
        self.checkpoint_delay_scale = checkpoint_delay_scale
        self.env_file = state_dir / "env.sh"
        self.aws = None
        self.vault = None

    def start(self) -> SandboxRuntime:
        from sandbox.aws import AwsSandbox
        from sandbox.vault import VaultSandbox

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.aws = AwsSandbox(port=self.aws_port, refresh_batch_seconds=self.refresh_batch_seconds).start()
        if self.checkpoint_delay_scale != 1.0:
            self.aws.configure(checkpoint_delay_scale=self.checkpoint_delay_scale)
        try:
            if self.with_vault:
                self.vault = VaultSandbox(log_path=self.state_dir / "openbao.log").start()
        except BaseException:
            self.aws.stop()
            raise
        self._write_env()
        (self.state_dir / "sandbox.pid").write_text(str(os.getpid()))
        return self

    def stop(self) -> None:
        if self.vault:
            self.vault.stop()
            self.vault = None
        if self.aws:
            self.aws.stop()
            self.aws = None
        for f in ("sandbox.pid", "env.sh"):
            (self.state_dir / f).unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        """Environment for AWS clients and Airflow processes that use this sandbox."""
        aws_conn = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"region_name": self.aws.region, "endpoint_url": self.aws.endpoint_url},
        }
        env = {
            "AWS_ENDPOINT_URL": self.aws.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.aws.region,
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_conn),
            **builder_settings(self.aws),
            "AIRFLOW__AMI_RELEASE__LEDGER_BUCKET": "ami-release-ledger-123456789012",
            "AIRFLOW__AMI_RELEASE__REFRESH_POLL_SECONDS": "3",
            # the provider says "credentials retrieved" at INFO for every client: not for people
            "AIRFLOW__LOGGING__NAMESPACE_LEVELS": "airflow.providers.amazon.aws.utils.connection_wrapper=WARNING",
        }
        if self.vault:
            env["AIRFLOW_CONN_VAULT_DEFAULT"] = self.vault.connection_uri()
        return env

    def _write_env(self) -> None:
        lines = [f"export {k}={_shell_quote(v)}" for k, v in self.env().items()]
        self.env_file.write_text(
            "# written by `python -m sandbox up`; holds the sandbox AppRole secret_id\n" + "\n".join(lines) + "\n"
        )
        self.env_file.chmod(0o600)

    def describe(self) -> str:
        a = self.aws.account
        lines = [
            f"AWS (moto)   {self.aws.endpoint_url}  account {self.aws.account_id}  region {self.aws.region}",
            f"Vault (bao)  {self.vault.url}  AppRole 'ami-pipeline' (policy: read secret/ami-pipeline/*)"
            if self.vault
            else "Vault        not started (--no-vault)",
            f"  VPC {a.get('vpc_id')}  subnets {', '.join(a.get('subnet_ids', []))}",
            f"  vendor images {a.get('vendor_images')}",
            "  Packer builders: SSH servers at loopback addresses (Linux: provisioned source, chef-solo recorded)"
            if self.aws.state()["builders"]["enabled"]
            else f"  Packer builders: none ({self.aws.state()['builders']['reason']}): bakes skip Chef",
            f"  shared load balancer {str(a.get('load_balancer_arn', '')).rsplit('/', 2)[-2:][0]} "
            "(apps add their rules)",
            "  app fleets: none yet (each app's Terraform module creates its fleet in its first release)",
            f"  own aged AMIs: {len(a.get('aged_images', []))}",
        ]
        return "\n".join(lines)

    @staticmethod
    def stop_running(state_dir: Path = STATE_DIR) -> int:
        pid_file = state_dir / "sandbox.pid"
        if not pid_file.exists():
            print("no sandbox running")
            return 0
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid_file.unlink(missing_ok=True)
            print("stale pid file removed")
            return 0
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print("sandbox stopped")
                return 0
            time.sleep(0.1)
        print(f"sandbox (pid {pid}) did not stop in 10 s")
        return 1


def builder_settings(aws: object) -> dict[str, str]:
    """How the pipeline reaches Packer's builder in this sandbox. With builders (sandbox/builders:
    an SSH server at the loopback address the sandbox reports as the builder's public IP) Linux
    and Windows bakes build the provisioned source as on AWS: public IP, SSH from this machine,
    Chef already on the image (the chef-solo recorder). Machines where builders cannot run
    build the no-communicator source; the bake log says so."""
    state = aws.state()["builders"]  # type: ignore[attr-defined]
    if not state["enabled"]:
        return {"AIRFLOW__AMI_RELEASE__PACKER_SOURCE": "unprovisioned"}
    return {
        "AIRFLOW__AMI_RELEASE__PACKER_SOURCE": "provisioned",
        "AIRFLOW__AMI_RELEASE__BUILDER_SSH_INTERFACE": "public_ip",
        "AIRFLOW__AMI_RELEASE__BUILDER_PUBLIC_IP": "true",
        "AIRFLOW__AMI_RELEASE__BUILDER_INGRESS_CIDRS": "127.0.0.0/8",
        "AIRFLOW__AMI_RELEASE__BUILDER_SSH_TIMEOUT": "2m",
        "AIRFLOW__AMI_RELEASE__CHEF_PREINSTALLED": "true",
    }


def _shell_quote(v: str) -> str:
    return "'" + v.replace("'", "'\\''") + "'"
