"""Read the release ledger and manage forensic holds from a shell.

  python -m amirelease.cli history APP [--json]
  python -m amirelease.cli release-hold APP RELEASE_ID --reason "..."
  python -m amirelease.cli restore-ami AMI --reason "..." [--region R]
  python -m amirelease.cli recycle-bin-rules [--region R] [--create]
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
from amirelease.constants import DEFAULT_AWS_CONN_ID
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


def _restore(args: argparse.Namespace) -> int:
    from amirelease.aws import AwsClients
    from amirelease.retention.policy import load_policy
    from amirelease.retention.restore import restore_ami

    region = args.region or AwsClients(aws_conn_id=args.aws_conn_id).base_hook().region_name
    try:
        done = restore_ami(
            image_id=args.ami,
            region=str(region),
            reason=args.reason,
            by=_shell_user(),
            aws_conn_id=args.aws_conn_id,
            policy=load_policy(args.policy),
        )
    except ReleaseError as exc:
        print(f"not restored: {exc}", file=sys.stderr)
        return 2
    print(done.summary())
    return 0


def _rules(args: argparse.Namespace) -> int:
    from amirelease.aws import AwsClients
    from amirelease.retention import recycle_aws
    from amirelease.retention.policy import load_policy
    from amirelease.retention.recycle import coverage

    policy = load_policy(args.policy)
    if not policy.recycle_bin:
        print(f"recycle_bin is off in {policy.source}: retention deregisters without a Recycle Bin window")
        return 0
    clients = AwsClients(aws_conn_id=args.aws_conn_id)
    missing = 0
    for region in args.region or list(policy.regions):
        rbin = clients.rbin(region)
        if args.create:
            cov, created = recycle_aws.create_rules(rbin, policy)
            for rule in created:
                print(f"{region}: created {rule['ResourceType']} rule {rule['Identifier']} ({rule['RuleArn']})")
        else:
            cov = coverage(recycle_aws.read_rules(rbin), policy)
        print(f"{region}: {'covered' if cov.covered else 'NOT covered'}: {cov.reason}")
        missing += not cov.covered
    if missing and not args.create:
        print("create them with: make recycle-bin-rules CREATE=1 (python -m amirelease.cli recycle-bin-rules --create)")
    return 1 if missing else 0


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
    p.add_argument("--aws-conn-id", default=DEFAULT_AWS_CONN_ID)
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
    ra = sub.add_parser(
        "restore-ami",
        help="bring a deregistered AMI and its snapshots back from the Recycle Bin; unmarked, held, recorded",
    )
    ra.add_argument("ami")
    ra.add_argument("--reason", required=True)
    ra.add_argument("--region", help="default: the connection's region")
    ra.add_argument("--policy", help="the retention policy file (default: as the DAGs read it)")
    rr = sub.add_parser(
        "recycle-bin-rules",
        help="show whether Recycle Bin rules keep what retention deregisters; --create makes the missing ones",
    )
    rr.add_argument("--region", action="append", help="default: the policy's regions (repeatable)")
    rr.add_argument("--create", action="store_true", help="create the rules the policy asks for that are missing")
    rr.add_argument("--policy", help="the retention policy file (default: as the DAGs read it)")
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
    if args.cmd == "restore-ami":
        return _restore(args)
    if args.cmd == "recycle-bin-rules":
        return _rules(args)
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
