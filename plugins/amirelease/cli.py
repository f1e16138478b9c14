"""Read the release ledger and manage forensic holds from a shell.

  python -m amirelease.cli history APP [--json]
  python -m amirelease.cli release-hold APP RELEASE_ID --reason "..."
  python -m amirelease.cli iam-policy [--role bake|deploy|retention|console] [--bucket LEDGER] [--markdown]
  python -m amirelease.cli iam-policy --app demo-web [--bucket LEDGER] [--workers-role ARN]

Uses the same Airflow connection as the DAGs (aws_default, e.g. AIRFLOW_CONN_AWS_DEFAULT)
and [ami_release] ledger_bucket. `make history APP=demo-web` runs it against the sandbox.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from amirelease import iam
from amirelease.aws import AwsClients
from amirelease.errors import ReleaseError
from amirelease.holds import lift_hold
from amirelease.ledger import Ledger, ledger_bucket


def _ledger(conn_id: str) -> Ledger:
    return Ledger(AwsClients(aws_conn_id=conn_id).s3(), ledger_bucket())


def _shell_user() -> str:
    """Who lifts a hold from a shell, as the ledger records it."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"{name} (command line)"


def format_history(records: list[dict[str, Any]]) -> str:
    """A table, oldest first (pure)."""
    head = ("started", "version", "release id", "kind", "outcome", "AMI", "hold", "reason / failure")
    rows = [head]
    for r in records:
        amis = ",".join(f"{v}" for v in (r.get("amis") or {}).values()) or "-"
        of = r.get("re_release_of") or r.get("rebuild_of")
        kind = r.get("kind", "release") + (f" of {of}" if of else "")
        why = r.get("failure_reason") if r.get("outcome") == "failed" else r.get("rebuild_reason") or r.get("reason")
        hold = "held" if r.get("forensic_hold") and not r["forensic_hold"].get("released_at") else "-"
        rows.append(
            (
                r.get("started_at") or "-",
                r.get("version") or "-",
                r.get("release_id") or "-",
                kind,
                (r.get("outcome") or "-") + (" (rolled back)" if r.get("rolled_back") else ""),
                amis,
                hold,
                (why or "-")[:70],
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m amirelease.cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--aws-conn-id", default="aws_default")
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("history", help="an app's releases and rollbacks, oldest first")
    h.add_argument("app")
    h.add_argument("--json", action="store_true")
    rh = sub.add_parser(
        "release-hold", help="lift the forensic hold on a release's AMI(s); recorded in the ledger with the reason"
    )
    rh.add_argument("app")
    rh.add_argument("release_id")
    rh.add_argument("--reason", required=True)
    ip = sub.add_parser("iam-policy", help="the IAM policy documents the workers' roles need (JSON)")
    ip.add_argument("--role", choices=list(iam.ROLES))
    ip.add_argument("--bucket", help="the ledger bucket, to scope the S3 statements to it")
    ip.add_argument("--markdown", action="store_true", help="the table the README shows")
    ip.add_argument("--app", help="an app's own role: its permission policy and its trust policy")
    ip.add_argument("--workers-role", default="arn:aws:iam::<account>:role/<toolchain workers' role>")
    args = p.parse_args(argv)
    if args.cmd == "iam-policy":
        if args.app:
            docs = {
                "permissions": iam.app_policy(args.app, args.bucket),
                "trust": iam.app_trust_policy(args.app, args.workers_role),
            }
            print(json.dumps(docs, indent=2))
            return 0
        print(iam.markdown() if args.markdown else iam.documents(args.role, args.bucket))
        return 0
    if args.cmd == "history":
        ledger = _ledger(args.aws_conn_id)
        records = ledger.history(args.app)
        print(
            json.dumps(records, indent=2)
            if args.json
            else format_history(records)
            if records
            else f"no releases of {args.app} in the ledger"
        )
        return 0
    try:
        lifted = lift_hold(
            app=args.app, release_id=args.release_id, reason=args.reason, by=_shell_user(), aws_conn_id=args.aws_conn_id
        )
    except ReleaseError as exc:
        print(f"hold not lifted: {exc}", file=sys.stderr)
        return 2
    for region, ami in sorted(lifted.gone.items()):
        print(f"{ami} ({region}) no longer exists; nothing to untag there")
    print(lifted.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
