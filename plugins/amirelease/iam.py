"""Least-privilege IAM: what each part of the system may call on AWS, declared next to the code
that calls it, printed as policy documents per worker role.

Who declares:
  * every operator: ``iam_role`` and ``iam_actions`` (class attributes; calls made through the
    Amazon provider's hooks);
  * Packer's own calls during a bake (hooks/packer.py ``PACKER_IAM_ACTIONS``);
  * Terraform's S3 state backend (hooks/terraform.py ``BACKEND_IAM_ACTIONS``) and each app's
    module (``infrastructure.iam_actions`` in the app's catalog file);
  * the Releases page and the CLI (ui/webapp.py ``CONSOLE_IAM_ACTIONS``).

Roles (one IAM role per kind of machine):
  bake       toolchain workers: Packer, Terraform (check and apply; ami_drift's read-only plan), the bake task
  deploy     default workers and the triggerer: preflight, lock, smoke test, roll-out, waits, verify, record, rollback,
             notifications, ami_drift's targets and report
  retention  the worker that runs ami_retention
  retention-account  the role in each account the retention policy names (``accounts:``),
             assumed by the retention worker
  console    the API server (Releases page, lifting holds) and people using the CLI

``tests/test_zz_iam_policy.py`` holds the declarations against the calls the end-to-end tests
really made in the sandbox: nothing called that is not declared, nothing declared never called.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

ROLES = ("bake", "deploy", "retention", "retention-account", "console")

# Calls that need no IAM permission at all.
NO_PERMISSION = frozenset({"sts:GetCallerIdentity"})

# Declared (and in the policies) although no sandbox test can make them, each with the reason;
# the IAM test holds everything else to "declared == called".
NOT_EXERCISED = {
    "ec2:CopyImage": "Packer copies the AMI only for an app that targets several regions",
    "ec2:DescribeRegions": "Packer's provisioned source checks the region; the sandbox builds the unprovisioned one",
    # tags given at creation are authorised as a tagging action; the sandbox sees one call
    "ec2:CreateTags": "(for Terraform) tags on the security group and launch template, given at creation",
    "elasticloadbalancing:AddTags": "tags on the target group and the rule, given when Terraform creates them",
    "autoscaling:CreateOrUpdateTags": "tags on the group, given when Terraform creates it",
    "cloudwatch:TagResource": "tags on the alarms, given when Terraform creates them",
    "ssm:AddTagsToResource": "tags on the parameter, given when Terraform creates it",
    "sts:TagSession": "authorises AssumeRole's session tag App=<app>: no request of its own",
}

# Request names -> the IAM action that authorises them, where the two differ.
REQUEST_TO_ACTION = {
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:CopyObject": "s3:PutObject",
    "s3:GetObjectTagging": "s3:GetObjectTagging",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "elbv2:DescribeTargetHealth": "elasticloadbalancing:DescribeTargetHealth",
}


def iam_action(request: str) -> str | None:
    """The IAM action for a request name as the sandbox logs it ("service:Operation"), or None."""
    if request in NO_PERMISSION:
        return None
    return REQUEST_TO_ACTION.get(request, request)


@dataclass(frozen=True)
class Grant:
    role: str
    sender: str  # airflow (the provider's hooks) | packer | terraform
    who: str
    actions: tuple[str, ...]


def grants() -> list[Grant]:
    """Every declaration, from the code and the catalog (imports are local: safe anywhere)."""
    from amirelease import catalog
    from amirelease.drift.operators import DriftPlanOperator, DriftReportOperator, DriftTargetsOperator
    from amirelease.hooks.packer import PACKER_IAM_ACTIONS
    from amirelease.hooks.terraform import BACKEND_IAM_ACTIONS
    from amirelease.operators.bake import BakeAmiOperator
    from amirelease.operators.gate import StageGateOperator
    from amirelease.operators.infrastructure import ApplyInfrastructureOperator, CheckInfrastructureOperator
    from amirelease.operators.lock import ReleaseLockSensor
    from amirelease.operators.preflight import ReleasePreflightOperator
    from amirelease.operators.promote import PromotePreflightOperator
    from amirelease.operators.record import RecordReleaseOperator
    from amirelease.operators.retention import AmiRetentionOperator
    from amirelease.operators.rollback import MarkRolledBackOperator
    from amirelease.operators.rollout import RollOutOperator, WaitForInstanceRefreshOperator
    from amirelease.operators.smoke import SmokeTestOperator
    from amirelease.operators.verify import VerifyReleaseOperator
    from amirelease.ui.webapp import CONSOLE_IAM_ACTIONS

    operators: list[Any] = [
        ReleasePreflightOperator, CheckInfrastructureOperator, ReleaseLockSensor, BakeAmiOperator,
        SmokeTestOperator, ApplyInfrastructureOperator, RollOutOperator, WaitForInstanceRefreshOperator,
        VerifyReleaseOperator, RecordReleaseOperator, MarkRolledBackOperator,
        AmiRetentionOperator, PromotePreflightOperator, StageGateOperator,  # ami_promote (the rest: the release's)
        DriftTargetsOperator, DriftPlanOperator, DriftReportOperator,  # ami_drift (drift/)
    ]  # fmt: skip
    out = [
        Grant(getattr(op, "iam_role", "deploy"), "airflow", op.__name__, tuple(getattr(op, "iam_actions", ())))
        for op in operators
    ]
    # the release DAGs' notification callbacks (notify.py: the provider's SnsNotifier)
    out.append(Grant("deploy", "airflow", "release notifications (notify.py)", ("sns:Publish",)))
    entries = catalog.load_entries().values()
    scoped = [a for a in entries if a.aws_role]
    if scoped:  # the workers assume each app's role for its Packer and Terraform
        out.append(Grant("bake", "airflow", "assuming app roles", ("sts:AssumeRole", "sts:TagSession")))
    if len(scoped) < len(entries):  # some app still runs with the workers' own role
        out.append(Grant("bake", "packer", "Packer (amazon-ebs builder)", PACKER_IAM_ACTIONS))
        out.append(Grant("bake", "terraform", "Terraform's S3 state backend", BACKEND_IAM_ACTIONS))
    for app in entries:
        role = app_role(app.name) if app.aws_role else "bake"
        if role != "bake":
            out.append(Grant(role, "packer", f"{app.name}'s bake (Packer)", PACKER_IAM_ACTIONS))
            out.append(Grant(role, "terraform", f"{app.name}'s Terraform state", BACKEND_IAM_ACTIONS))
        if app.iam_actions:
            out.append(Grant(role, "terraform", f"{app.name}'s Terraform module", app.iam_actions))
    from amirelease.operators.retention_accounts import ACCOUNT_ROLE_IAM_ACTIONS, ASSUME_IAM_ACTIONS
    from amirelease.retention.aws import IAM_ACTIONS as RETENTION_AWS_IAM_ACTIONS

    # retention/aws.py's template cross-check (beside the operator's own declaration)
    out.append(Grant("retention", "airflow", "retention's launch template cross-check", RETENTION_AWS_IAM_ACTIONS))

    # retention across accounts (the policy's accounts:): the worker assumes each account's role,
    # which may do what the region task does in that account except write the ledger (S3)
    out.append(Grant("retention", "airflow", "assuming the policy accounts' roles", ASSUME_IAM_ACTIONS))
    out.append(Grant("retention-account", "airflow", "retention in a policy account", ACCOUNT_ROLE_IAM_ACTIONS))
    out.append(Grant("console", "airflow", "Releases page and CLI", CONSOLE_IAM_ACTIONS))
    from amirelease.retention.restore import RESTORE_IAM_ACTIONS, RULES_IAM_ACTIONS

    out.append(Grant("console", "airflow", "restore-ami (CLI)", RESTORE_IAM_ACTIONS))
    from amirelease.protection import IAM_ACTIONS as PROTECTION_IAM_ACTIONS

    # lifting a hold / restoring an image moves deregistration protection (protection.py)
    out.append(Grant("console", "airflow", "deregistration protection (holds)", PROTECTION_IAM_ACTIONS))
    out.append(Grant("console", "airflow", "recycle-bin-rules (CLI)", RULES_IAM_ACTIONS))
    return out


def app_role(app: str) -> str:
    return f"app:{app}"


def actions_by_role() -> dict[str, list[str]]:
    """The workers' roles, then one role per app that has its own (catalog aws.role_arn)."""
    found: dict[str, set[str]] = defaultdict(set)
    for g in grants():
        found[g.role].update(g.actions)
    apps = sorted(r for r in found if r.startswith("app:"))
    return {role: sorted(found.get(role, set())) for role in (*ROLES, *apps)}


_READ = ("Describe", "List", "Get", "Head")
_CREATE = ("Create", "Run", "Register", "Copy", "Put", "Import", "Allocate", "Request", "Authorize")


def app_policy(app: str, ledger_bucket: str | None = None) -> dict[str, Any]:
    """The permission policy of an app's role: its tools' actions, mutations confined to resources
    tagged App=<the session's App tag>, its own state objects and SSM parameters.

    A starting point to review, not a proof: AWS evaluates the conditions; the sandbox (moto)
    does not, so the suite checks only that the actions cover every call the app's tools made."""
    actions = actions_by_role()[app_role(app)]
    s3 = [a for a in actions if a.startswith("s3:")]
    ssm = [a for a in actions if a.startswith("ssm:") and a.split(":", 1)[1].startswith(("Get", "Put", "Add"))]
    rest = [a for a in actions if a not in s3 and a not in ssm]
    read = [a for a in rest if a.split(":", 1)[1].startswith(_READ)]
    create = [a for a in rest if a not in read and a.split(":", 1)[1].startswith(_CREATE)]
    change = [a for a in rest if a not in read and a not in create]
    tag = "${aws:PrincipalTag/App}"
    statements: list[dict[str, Any]] = [{"Sid": "Read", "Effect": "Allow", "Action": read, "Resource": "*"}]
    for sid, actions, condition in (
        ("CreateOnlyTaggedForThisApp", create, {"StringEqualsIfExists": {"aws:RequestTag/App": tag}}),
        ("ChangeOnlyThisAppsResources", change, {"StringEquals": {"aws:ResourceTag/App": tag}}),
    ):
        if actions:
            statements.append(
                {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": "*", "Condition": condition}
            )
    if ssm:
        statements.append(
            {"Sid": "OwnParameters", "Effect": "Allow", "Action": ssm, "Resource": f"arn:aws:ssm:*:*:parameter/{app}/*"}
        )
    if s3:
        bucket = ledger_bucket or "*"
        statements.append(
            {
                "Sid": "OwnTerraformState",
                "Effect": "Allow",
                "Action": s3,
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/terraform/{app}/*"],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def app_trust_policy(app: str, workers_role_arn: str) -> dict[str, Any]:
    """Who may assume the app's role: the toolchain workers' role, only with the session tag App=<app>."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": workers_role_arn},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {"StringEquals": {"aws:RequestTag/App": app}},
            }
        ],
    }


def policy(role: str, ledger_bucket: str | None = None) -> dict[str, Any]:
    """An IAM policy document for one role. S3 is scoped to the ledger bucket when it is known."""
    actions = actions_by_role()[role]
    s3 = [a for a in actions if a.startswith("s3:")]
    other = [a for a in actions if not a.startswith("s3:")]
    statements: list[dict[str, Any]] = []
    if other:
        statements.append({"Sid": "Aws", "Effect": "Allow", "Action": other, "Resource": "*"})
    if s3:
        resources = [f"arn:aws:s3:::{ledger_bucket}", f"arn:aws:s3:::{ledger_bucket}/*"] if ledger_bucket else ["*"]
        statements.append({"Sid": "LedgerBucket", "Effect": "Allow", "Action": s3, "Resource": resources})
    return {"Version": "2012-10-17", "Statement": statements}


def markdown() -> str:
    """The README's permission list (generated; tests check the README has exactly this)."""
    lines = ["| role | runs | actions |", "|---|---|---|"]
    runs = {
        "bake": "toolchain workers (the bake and Terraform tasks; Packer and Terraform of apps without a role)",
        "deploy": "default workers, triggerer",
        "retention": "the ami_retention worker",
        "retention-account": (
            "each account the retention policy names (`accounts:`): assumed by the ami_retention worker"
        ),
        "console": "API server (Releases page), the CLI",
    }
    for role, actions in actions_by_role().items():
        who = runs.get(role) or f"{role[4:]}'s Packer and Terraform (assumed per release, session tag App={role[4:]})"
        lines.append(f"| `{role}` | {who} | {', '.join(f'`{a}`' for a in actions)} |")
    return "\n".join(lines)


def documents(role: str | None = None, ledger_bucket: str | None = None) -> str:
    roles = [role] if role else list(ROLES)
    return json.dumps({r: policy(r, ledger_bucket) for r in roles}, indent=2)
