"""The pipeline's secrets, read from Vault with the provider's VaultHook.

Every value read is registered with Airflow's secret masker before anything else can
see it, so it is redacted from task logs even if a tool echoes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk.configuration import conf
from airflow.sdk.log import mask_secret

from amirelease.catalog import SecretRef
from amirelease.errors import PreflightError

if TYPE_CHECKING:  # the provider's hook (and hvac) load when a task reads secrets, not when a DAG file is parsed
    from airflow.providers.hashicorp.hooks.vault import VaultHook


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
    """Read an app's ``<prefix>/<app>/...`` secrets (KV) with a token that can read only those.

    The pipeline's AppRole (the Airflow connection) reads no secret itself: for each read it
    mints, through the token role ``ami-release-app``, a child token carrying only the app's
    policy ``ami-app-<app>`` (15 minutes, not renewable, ``meta.app`` for the audit log), reads
    with it and revokes it. So Vault itself refuses one app's release another app's secrets,
    whatever a catalog entry asks for. Values are masked as they arrive.

    :param vault_conn_id: the Airflow Vault connection (the pipeline's AppRole).
    """

    def __init__(self, vault_conn_id: str = "vault_default") -> None:
        self.vault_conn_id = vault_conn_id

    def _app_client(self, hook: VaultHook, app_name: str) -> Any:
        """An hvac client holding a fresh token that may read only `app_name`'s folder."""
        import hvac
        from hvac.exceptions import VaultError

        from amirelease.vault_bootstrap import APP_TOKEN_TTL, TOKEN_ROLE, app_policy_name

        base = hook.get_conn()
        try:
            created = base.auth.token.create(
                role_name=TOKEN_ROLE,
                policies=[app_policy_name(app_name)],
                ttl=APP_TOKEN_TTL,
                renewable=False,
                meta={"app": app_name, "purpose": "ami-release"},
            )
        except VaultError as exc:
            raise PreflightError(
                f"Vault refused the pipeline a token for app '{app_name}' ({type(exc).__name__})",
                resource=f"vault connection {self.vault_conn_id}",
                fix=f"configure Vault for per-app tokens: the token role {TOKEN_ROLE} and the pipeline policy that may "
                "use it (python -m amirelease.vault_bootstrap; docs/trust.md)",
            ) from None
        token = created["auth"]["client_token"]
        mask_secret(token)
        settings = base.adapter._kwargs  # TLS and timeouts as the connection set them (hvac's from_adapter reads these)
        return hvac.Client(
            url=base.url,
            token=token,
            cert=settings.get("cert"),
            verify=settings.get("verify", True),
            timeout=settings.get("timeout", 30),
            proxies=settings.get("proxies"),
            namespace=base.adapter.namespace,
            session=base.adapter.session,
        )

    def read(self, app_name: str, refs: tuple[SecretRef, ...]) -> Secrets:
        """Every key the app asks for; raise PreflightError naming what is missing."""
        out = Secrets()
        if not refs:
            return out
        from airflow.providers.hashicorp.hooks.vault import VaultHook
        from hvac.exceptions import Forbidden, InvalidPath, VaultError  # hvac is the provider's own dependency

        from amirelease.vault_bootstrap import app_policy_name

        hook = VaultHook(vault_conn_id=self.vault_conn_id)
        prefix = vault_path_prefix()
        mount = hook.vault_client.mount_point or "secret"
        kv2 = hook.vault_client.kv_engine_version == 2
        client = self._app_client(hook, app_name)
        try:
            for ref in refs:
                full = f"{prefix}/{ref.path}"
                version = 0
                try:
                    if kv2:
                        found = client.secrets.kv.v2.read_secret_version(
                            path=full, mount_point=mount, raise_on_deleted_version=True
                        )
                        data: dict[str, Any] | None = found["data"]["data"]
                        version = int((found["data"].get("metadata") or {}).get("version") or 0)
                    else:
                        data = client.secrets.kv.v1.read_secret(path=full, mount_point=mount)["data"]
                except InvalidPath:
                    data = None
                except Forbidden:
                    raise PreflightError(
                        f"Vault denied app '{app_name}' the secret '{full}'",
                        resource=f"vault policy {app_policy_name(app_name)}",
                        fix=f"an app reads only its own folder {mount}/{prefix}/{app_name}/: keep its secrets there; "
                        f"if they are there, write the app's policy (python -m amirelease.vault_bootstrap app-policies "
                        f"{app_name})",
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
                        fix=f"write it (keys: {', '.join(ref.keys)}), e.g. 'bao kv put {mount}/{full} "
                        f"{ref.keys[0]}=...', or correct 'secrets' in the app's definition",
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
        finally:
            try:
                client.auth.token.revoke_self()
            except VaultError:  # it expires in minutes anyway
                pass
        return out
