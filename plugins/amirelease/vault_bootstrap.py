"""Bootstrap a fresh Vault/OpenBao server for the release pipeline, and keep it going.

    python -m amirelease.vault_bootstrap tls --out deploy/tls            # CA + server certificate
    python -m amirelease.vault_bootstrap init --url https://vault:8200 --ca-cert deploy/tls/ca.pem
    python -m amirelease.vault_bootstrap rotate-secret-id --url ... --ca-cert ...   (VAULT_TOKEN set)
    python -m amirelease.vault_bootstrap app-policies --url ... [app ...]           (VAULT_TOKEN set)

``init`` runs once against a new server with persistent storage: it initialises it (the
unseal keys and the initial root token are printed once and written nowhere), unseals it,
mounts KV v2 at ``secret/``, enables AppRole, writes the pipeline policy (it reads no secret:
it may only mint a short-lived token for one app through the token role ``ami-release-app``),
one policy per app of the catalog (``ami-app-<app>``: read ``secret/data/<prefix>/<app>/*``),
creates the ``ami-pipeline`` role and prints the Airflow connection (role_id + secret_id).
A new app's policy: ``app-policies`` (docs/trust.md). Optional ``--seed FILE`` writes initial secrets
(a YAML file shaped like ``sandbox/vault.yaml``). docs/configuration.md walks through it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

POLICY_NAME = "ami-pipeline"
ROLE_NAME = "ami-pipeline"
KV_MOUNT = "secret"


APP_POLICY_PREFIX = "ami-app-"
TOKEN_ROLE = "ami-release-app"  # the token role the pipeline mints per-app, per-read tokens with
APP_TOKEN_TTL = "15m"


def app_policy_name(app: str) -> str:
    return f"{APP_POLICY_PREFIX}{app}"


def pipeline_policy(prefix: str, mount: str = KV_MOUNT) -> str:
    """The pipeline's own AppRole reads no secret at all: it may only mint, through the token
    role, a short-lived token carrying one app's policy (hooks/vault.py does, per read)."""
    return f'path "auth/token/create/{TOKEN_ROLE}" {{ capabilities = ["update"] }}\n'


def app_policy(prefix: str, app: str, mount: str = KV_MOUNT) -> str:
    """Read on one app's folder only: <mount>/data/<prefix>/<app>/* (KV v2 data + metadata)."""
    prefix = prefix.strip("/")
    return (
        f'path "{mount}/data/{prefix}/{app}/*" {{ capabilities = ["read"] }}\n'
        f'path "{mount}/metadata/{prefix}/{app}/*" {{ capabilities = ["read", "list"] }}\n'
    )


def write_app_policies(client: Any, prefix: str, apps: list[str]) -> list[str]:
    """One policy per app (idempotent); an app added to the catalog needs its policy written."""
    for app in apps:
        client.sys.create_or_update_policy(name=app_policy_name(app), policy=app_policy(prefix, app))
    return [app_policy_name(a) for a in apps]


def connection_json(host: str, port: int, role_id: str, secret_id: str, ca_cert: str | None) -> str:
    """The Airflow connection ``vault_default`` (AIRFLOW_CONN_VAULT_DEFAULT), TLS when a CA is given."""
    extra: dict[str, Any] = {"auth_type": "approle", "kv_engine_version": 2, "use_tls": ca_cert is not None}
    if ca_cert:
        extra["client_kwargs"] = {"verify": ca_cert}
    conn = {
        "conn_type": "vault",
        "host": host,
        "port": port,
        "schema": KV_MOUNT,
        "login": role_id,
        "password": secret_id,
        "extra": extra,
    }
    return json.dumps(conn)


def _client(url: str, ca_cert: str | None, token: str | None = None) -> Any:
    import hvac

    verify: str | bool = ca_cert if ca_cert else True
    return hvac.Client(url=url, token=token, verify=verify)


def cmd_init(args: argparse.Namespace) -> int:
    client = _client(args.url, args.ca_cert)
    if client.sys.is_initialized():
        print(
            f"ERROR: {args.url} is already initialised; nothing was changed. "
            "To add or rotate the pipeline's AppRole credentials see docs/configuration.md.",
            file=sys.stderr,
        )
        return 2
    result = client.sys.initialize(secret_shares=args.key_shares, secret_threshold=args.key_threshold)
    keys: list[str] = list(result["keys_base64"])
    root: str = result["root_token"]
    print(
        "== initialised. Unseal keys and the initial root token, shown ONCE and stored nowhere.\n"
        f"   Hand the {args.key_shares} key(s) to different people; any {args.key_threshold} unseal the server."
    )
    for i, key in enumerate(keys, 1):
        print(f"   unseal key {i}: {key}")
    print(f"   initial root token: {root}")
    print("   (revoke the root token when you have seeded your secrets: bao token revoke -self)")
    for key in keys[: args.key_threshold]:
        client.sys.submit_unseal_key(key)
    if client.sys.is_sealed():
        print("ERROR: the server is still sealed after the threshold of keys", file=sys.stderr)
        return 1
    print("== unsealed")
    client.token = root
    wait_until_active(client)
    from amirelease import catalog

    apps = sorted(catalog.load_entries())
    configure(client, args.prefix, apps)
    print(
        f"== KV v2 at {KV_MOUNT}/, AppRole auth, policy {POLICY_NAME} (reads no secret: mints per-app tokens through "
        f"the token role {TOKEN_ROLE}), one policy per app ({', '.join(app_policy_name(a) for a in apps)}: each "
        f"reads {KV_MOUNT}/data/{args.prefix}/<app>/* only)"
    )
    if args.seed:
        paths = seed(client, Path(args.seed))
        print(f"== seeded {len(paths)} secret(s) from {args.seed}: {', '.join(paths)}")
    role_id = client.auth.approle.read_role_id(role_name=ROLE_NAME)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(role_name=ROLE_NAME)["data"]["secret_id"]
    _print_connection(args, role_id, secret_id)
    return 0


def wait_until_active(client: Any, timeout: float = 60.0) -> None:
    """After unsealing, integrated storage elects its leader; requests fail until it has."""
    import hvac.exceptions

    deadline = time.monotonic() + timeout
    while True:
        try:
            leader = client.sys.read_leader_status()
            if not leader.get("ha_enabled") or leader.get("is_self"):
                client.sys.list_mounted_secrets_engines()
                return
        except (hvac.exceptions.VaultError, OSError) as exc:  # not active yet (requests' errors are OSErrors)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become active in {timeout:.0f}s: {exc}") from exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not become active in {timeout:.0f}s")
        time.sleep(0.25)


def configure(client: Any, prefix: str, apps: list[str] | None = None) -> None:
    """KV v2 mount, AppRole auth method, the pipeline policy and role, the token role and
    one policy per app (idempotent)."""
    mounts = client.sys.list_mounted_secrets_engines()
    mounts = mounts.get("data", mounts)
    if f"{KV_MOUNT}/" not in mounts:
        client.sys.enable_secrets_engine(backend_type="kv", path=KV_MOUNT, options={"version": "2"})
    auths = client.sys.list_auth_methods()
    auths = auths.get("data", auths)
    if "approle/" not in auths:
        client.sys.enable_auth_method(method_type="approle")
    client.sys.create_or_update_policy(name=POLICY_NAME, policy=pipeline_policy(prefix))
    client.auth.approle.create_or_update_approle(
        role_name=ROLE_NAME,
        token_policies=[POLICY_NAME],
        token_ttl="1h",
        token_max_ttl="4h",
        secret_id_ttl="0",  # no expiry: rotate on your schedule (rotate-secret-id)
    )
    # Tokens minted for one app: only ami-app-* policies, never the pipeline's or root; not
    # renewable, short, children of the pipeline's token (revoked with it).
    client.write(
        f"auth/token/roles/{TOKEN_ROLE}",
        allowed_policies_glob=f"{APP_POLICY_PREFIX}*",
        disallowed_policies=f"root,{POLICY_NAME}",
        orphan=False,
        renewable=False,
        token_explicit_max_ttl="1h",
        token_type="service",
    )
    write_app_policies(client, prefix, list(apps or []))


def seed(client: Any, path: Path) -> list[str]:
    import hvac.exceptions
    import yaml

    data = yaml.safe_load(path.read_text())
    prefix = str(data["path_prefix"]).strip("/")
    written = []
    for sub, values in data["secrets"].items():
        full = f"{prefix}/{sub}"
        for attempt in range(50):  # a new KV v2 mount refuses writes while it finishes upgrading
            try:
                client.secrets.kv.v2.create_or_update_secret(path=full, secret=values, mount_point=KV_MOUNT)
                break
            except hvac.exceptions.VaultError as exc:
                if "upgrad" not in str(exc).lower() or attempt == 49:
                    raise
                time.sleep(0.2)
        written.append(full)
    return written


def cmd_app_policies(args: argparse.Namespace) -> int:
    """Write (or update) the Vault policy of every app in the catalog, or of the apps named."""
    token = os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN")
    if not token:
        print("ERROR: set VAULT_TOKEN to a token allowed to write sys/policies/acl/ami-app-*", file=sys.stderr)
        return 2
    apps = args.apps
    if not apps:
        from amirelease import catalog

        apps = sorted(catalog.load_entries())
    client = _client(args.url, args.ca_cert, token)
    for name in write_app_policies(client, args.prefix, apps):
        print(f"== policy {name}: read {KV_MOUNT}/data/{args.prefix}/{name.removeprefix(APP_POLICY_PREFIX)}/*")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    token = os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN")
    if not token:
        print("ERROR: set VAULT_TOKEN to a token allowed to write auth/approle/role/ami-pipeline/secret-id")
        return 2
    client = _client(args.url, args.ca_cert, token)
    role_id = client.auth.approle.read_role_id(role_name=ROLE_NAME)["data"]["role_id"]
    new = client.auth.approle.generate_secret_id(role_name=ROLE_NAME)["data"]
    print(f"== new secret_id for role {ROLE_NAME} (accessor {new['secret_id_accessor']})")
    _print_connection(args, role_id, new["secret_id"])
    print(
        "== next: put VAULT_SECRET_ID in .env, restart the Airflow roles, then destroy the old one:\n"
        f"   bao write auth/approle/role/{ROLE_NAME}/secret-id-accessor/destroy secret_id_accessor=<old accessor>\n"
        f"   (list accessors: bao list auth/approle/role/{ROLE_NAME}/secret-id)"
    )
    return 0


def _print_connection(args: argparse.Namespace, role_id: str, secret_id: str) -> None:
    host = args.airflow_host or args.url.split("://", 1)[1].rsplit(":", 1)[0]
    port = int(args.url.rsplit(":", 1)[1]) if args.url.count(":") == 2 else 8200
    print("== the Airflow connection vault_default; for docker compose put these two lines in .env:")
    print(f"VAULT_ROLE_ID={role_id}")
    print(f"VAULT_SECRET_ID={secret_id}")
    print("== or, for any other deployment, the connection itself:")
    ca = args.airflow_ca_cert or args.ca_cert
    print(f"AIRFLOW_CONN_VAULT_DEFAULT='{connection_json(host, port, role_id, secret_id, ca)}'")


def cmd_tls(args: argparse.Namespace) -> int:
    """A private CA and a server certificate for the Vault listener (365 days)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ami-release vault CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=args.days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in args.hosts.split(","):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, args.hosts.split(",")[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=args.days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (out / "ca.pem").write_bytes(ca.public_bytes(pem))
    (out / "vault.pem").write_bytes(cert.public_bytes(pem))
    key_file = out / "vault-key.pem"
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_file.chmod(0o640)
    # The CA key is not kept: a new certificate means a new CA (re-run this command).
    print(f"== wrote {out}/ca.pem (give to Airflow), {out}/vault.pem and {out}/vault-key.pem (the Vault listener)")
    print(f"   names: {args.hosts}; valid {args.days} days; the CA's private key was not kept")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m amirelease.vault_bootstrap",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def server_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--url", default=os.environ.get("VAULT_ADDR", "https://vault:8200"))
        sp.add_argument("--ca-cert", default=os.environ.get("VAULT_CACERT"), help="CA bundle to verify the server")
        sp.add_argument("--airflow-host", help="Vault host name as Airflow reaches it (default: from --url)")
        sp.add_argument("--airflow-ca-cert", help="the CA path as Airflow's workers see it (default: --ca-cert)")
        sp.add_argument("--prefix", default="ami-pipeline", help="[ami_release] vault_path_prefix")

    init = sub.add_parser("init", help="initialise, unseal and configure a new server")
    server_args(init)
    init.add_argument("--key-shares", type=int, default=5)
    init.add_argument("--key-threshold", type=int, default=3)
    init.add_argument("--seed", help="YAML of initial secrets (path_prefix + secrets), e.g. sandbox/vault.yaml")
    init.set_defaults(func=cmd_init)
    rot = sub.add_parser("rotate-secret-id", help="issue a new AppRole secret_id (VAULT_TOKEN from the environment)")
    server_args(rot)
    rot.set_defaults(func=cmd_rotate)
    pol = sub.add_parser("app-policies", help="write each app's Vault policy (VAULT_TOKEN from the environment)")
    server_args(pol)
    pol.add_argument("apps", nargs="*", help="apps (default: every app in the catalog)")
    pol.set_defaults(func=cmd_app_policies)
    tls = sub.add_parser("tls", help="generate a CA and a server certificate for the Vault listener")
    tls.add_argument("--out", default="deploy/tls")
    tls.add_argument("--hosts", default="vault,localhost,127.0.0.1", help="comma-separated DNS names / IPs")
    tls.add_argument("--days", type=int, default=365)
    tls.set_defaults(func=cmd_tls)
    args = p.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
