"""The pipeline's secrets, read from Vault with the provider's VaultHook.

Every value read is registered with Airflow's secret masker before anything else can
see it, so it is redacted from task logs even if a tool echoes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow.providers.hashicorp.hooks.vault import VaultHook
from airflow.sdk.configuration import conf
from airflow.sdk.log import mask_secret

from amirelease.catalog import SecretRef
from amirelease.errors import PreflightError


def vault_path_prefix() -> str:
    return str(conf.get("ami_release", "vault_path_prefix", fallback="ami-pipeline")).strip("/")


@dataclass
class Secrets:
    """Values by key (masked as read) and the KV version each came from (0: KV v1)."""

    values: dict[str, str] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def clear(self) -> None:
        self.values.clear()


class PipelineSecrets:
    """Read ``<prefix>/<path>`` secrets (KV) for an app; values masked as they arrive.

    :param vault_conn_id: the Airflow Vault connection (the pipeline's AppRole).
    """

    def __init__(self, vault_conn_id: str = "vault_default") -> None:
        self.vault_conn_id = vault_conn_id

    def read(self, app_name: str, refs: tuple[SecretRef, ...]) -> Secrets:
        """Every key the app asks for; raise PreflightError naming what is missing."""
        out = Secrets()
        if not refs:
            return out
        from hvac.exceptions import Forbidden, VaultError  # hvac is the provider's own dependency

        hook = VaultHook(vault_conn_id=self.vault_conn_id)
        prefix = vault_path_prefix()
        mount = hook.vault_client.mount_point
        for ref in refs:
            full = f"{prefix}/{ref.path}"
            version = 0
            try:
                if hook.vault_client.kv_engine_version == 2:
                    found = hook.get_secret_including_metadata(secret_path=full)
                    data: dict[str, Any] | None = (found or {}).get("data", {}).get("data") if found else None
                    version = int(((found or {}).get("data", {}).get("metadata") or {}).get("version") or 0)
                else:
                    data = hook.get_secret(secret_path=full)
            except Forbidden:
                raise PreflightError(
                    f"Vault denied reading secret '{full}' for app '{app_name}'",
                    resource=f"vault connection {self.vault_conn_id}",
                    fix=f"grant the pipeline's AppRole policy 'read' on {mount}/data/{full}",
                ) from None
            except VaultError as exc:
                raise PreflightError(
                    f"Vault error reading secret '{full}': {type(exc).__name__}",
                    resource=f"vault connection {self.vault_conn_id}",
                    fix="check that Vault is reachable and unsealed and the AppRole credentials are valid",
                ) from None
            if data is None:
                raise PreflightError(
                    f"Vault secret '{full}' needed by app '{app_name}' does not exist",
                    resource=f"vault connection {self.vault_conn_id}",
                    fix=f"write it (keys: {', '.join(ref.keys)}), e.g. 'bao kv put {mount}/{full} {ref.keys[0]}=...', "
                    "or correct 'secrets' in the app's catalog file",
                )
            missing = [k for k in ref.keys if not data.get(k)]
            if missing:
                raise PreflightError(
                    f"Vault secret '{full}' lacks key(s) {', '.join(missing)} needed by app '{app_name}'",
                    fix=f"add the key(s) to {full} in Vault",
                )
            for k in ref.keys:
                value = str(data[k])
                mask_secret(value)
                if k in out.values and out.values[k] != value:
                    raise PreflightError(
                        f"secret key '{k}' is defined twice with different values for app '{app_name}'",
                        fix="use distinct key names",
                    )
                out.values[k] = value
                out.versions[k] = version
        return out
