#!/usr/bin/env python3
"""Generate the deployment's shared secrets once, into .env (docker compose reads it).

    python3 deploy/keys.py            # writes the missing keys to .env; never changes an existing one
    python3 deploy/keys.py --print    # print a fresh set, write nothing

Every Airflow role must share the same values:
  AIRFLOW_FERNET_KEY      [core] fernet_key: encrypts connections and variables in the DB.
                          Changing it makes stored secrets unreadable (rotate with
                          `airflow rotate-fernet-key`, see docs/configuration.md).
  AIRFLOW_API_SECRET_KEY  [api] secret_key: signs the log-fetch requests between roles.
  AIRFLOW_JWT_SECRET      [api_auth] jwt_secret: signs API and task tokens (HS512: >= 64 bytes).
  POSTGRES_PASSWORD       the metadata database's password.
  AIRFLOW_ADMIN_PASSWORD  the first admin user's password (created by airflow-init).
Placeholders you fill in later:
  VAULT_ROLE_ID / VAULT_SECRET_ID   printed by the Vault bootstrap (vault-bootstrap init)
  AMI_RELEASE_LEDGER_BUCKET         your versioned S3 bucket for the release ledger

Standard library only: runs with any python3 >= 3.8, before anything is installed.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

ENV_FILE = Path(__file__).resolve().parents[1] / ".env"


def fernet_key() -> str:
    """A Fernet key: 32 random bytes, url-safe base64 (what cryptography's Fernet.generate_key returns)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def generate() -> dict[str, str]:
    return {
        "AIRFLOW_FERNET_KEY": fernet_key(),
        "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(48),
        "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(64),  # 64 random bytes -> 86 characters
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(18),
    }


PLACEHOLDERS = {"VAULT_ROLE_ID": "", "VAULT_SECRET_ID": "", "AMI_RELEASE_LEDGER_BUCKET": ""}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--print", action="store_true", help="print a fresh set to stdout; write nothing")
    p.add_argument("--env-file", default=str(ENV_FILE))
    args = p.parse_args(argv)
    fresh = generate()
    if args.print:
        for k, v in {**fresh, **PLACEHOLDERS}.items():
            print(f"{k}={v}")
        return 0
    path = Path(args.env_file)
    existing = path.read_text() if path.exists() else ""
    have = {line.split("=", 1)[0].strip() for line in existing.splitlines() if "=" in line}
    added = [k for k in {**fresh, **PLACEHOLDERS} if k not in have]
    if not added:
        print(f"{path}: every key is already there; nothing changed")
        return 0
    lines = [] if existing.endswith("\n") or not existing else [""]
    lines += [f"{k}={fresh.get(k, PLACEHOLDERS.get(k, ''))}" for k in added]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{path}: added {', '.join(added)} (mode 0600; keep it out of version control)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
