"""The pipeline's secrets, read from Vault with the provider's VaultHook.

Every value read is registered with Airflow's secret masker before anything else can
see it, so it is redacted from task logs even if a tool echoes it.
"""

from __future__ import annotations

from airflow.providers.hashicorp.hooks.vault import VaultHook
from airflow.sdk.configuration import conf
from airflow.sdk.log import mask_secret

from amirelease.errors import PreflightError


def vault_path_prefix() -> str:
    return conf.get("ami_release", "vault_path_prefix", fallback="ami-pipeline").strip("/")


class PipelineSecrets:
    """Read ``<prefix>/<path>`` secrets (KV) for an app's bake; values masked as they arrive."""

    def __init__(self, vault_conn_id: str = "vault_default") -> None:
        self.vault_conn_id = vault_conn_id

    def _hook(self) -> VaultHook:
        return VaultHook(vault_conn_id=self.vault_conn_id)

    def read(
        self, app_name: str, paths: tuple[tuple[str, tuple[str, ...]], ...], check_only: bool = False
    ) -> dict[str, str]:
        """Return {key: value} for every key the app asks for; raise PreflightError naming what is missing."""
        if not paths:
            return {}
        from hvac.exceptions import Forbidden, VaultError  # hvac is the provider's own dependency

        hook = self._hook()
        values: dict[str, str] = {}
        prefix = vault_path_prefix()
        for path, keys in paths:
            full = f"{prefix}/{path}"
            try:
                data = hook.get_secret(secret_path=full)
            except Forbidden:
                raise PreflightError(
                    f"Vault denied reading secret '{full}' for app '{app_name}'",
                    resource=f"vault connection {self.vault_conn_id}",
                    fix=f"grant the pipeline's AppRole policy 'read' on {hook.vault_client.mount_point}/data/{full}",
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
                    fix=f"write it (keys: {', '.join(keys)}), e.g. 'bao kv put {hook.vault_client.mount_point}/{full} {keys[0]}=...', or correct 'secrets' in the app's catalog file",
                )
            missing = [k for k in keys if not data.get(k)]
            if missing:
                raise PreflightError(
                    f"Vault secret '{full}' lacks key(s) {', '.join(missing)} needed by app '{app_name}'",
                    fix=f"add the key(s) to {full} in Vault",
                )
            for k in keys:
                value = str(data[k])
                mask_secret(value)
                if k in values and values[k] != value:
                    raise PreflightError(
                        f"secret key '{k}' is defined twice with different values for app '{app_name}'",
                        fix="use distinct key names",
                    )
                values[k] = value
        if check_only:
            return {k: "***" for k in values}
        return values
