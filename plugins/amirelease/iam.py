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
  bake       toolchain workers: Packer, Terraform (check and apply), the bake task
  deploy     default workers and the triggerer: preflight, lock, smoke test, roll-out, waits, verify, record, rollback
  retention  the worker that runs ami_retention
  console    the API server (Releases page, lifting holds) and people using the CLI

``tests/test_zz_iam_policy.py`` holds the declarations against the calls the end-to-end tests
really made in the sandbox: nothing called that is not declared, nothing declared never called.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

ROLES = ("bake", "deploy", "retention", "console")

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
    from amirelease.hooks.packer import PACKER_IAM_ACTIONS
    from amirelease.hooks.terraform import BACKEND_IAM_ACTIONS
    from amirelease.operators.bake import BakeAmiOperator
    from amirelease.operators.infrastructure import ApplyInfrastructureOperator, CheckInfrastructureOperator
    from amirelease.operators.lock import ReleaseLockSensor
    from amirelease.operators.preflight import ReleasePreflightOperator
    from amirelease.operators.record import RecordReleaseOperator
    from amirelease.operators.retention import AmiRetentionOperator
    from amirelease.operators.rollback import MarkRolledBackOperator, ResolveRollbackTargetOperator
    from amirelease.operators.rollout import RollOutOperator, WaitForInstanceRefreshOperator
    from amirelease.operators.smoke import SmokeTestOperator
    from amirelease.operators.verify import VerifyReleaseOperator
    from amirelease.ui.webapp import CONSOLE_IAM_ACTIONS

    operators: list[Any] = [
        ReleasePreflightOperator, CheckInfrastructureOperator, ReleaseLockSensor, BakeAmiOperator,
        SmokeTestOperator, ApplyInfrastructureOperator, RollOutOperator, WaitForInstanceRefreshOperator,
        VerifyReleaseOperator, RecordReleaseOperator, ResolveRollbackTargetOperator, MarkRolledBackOperator,
        AmiRetentionOperator,
    ]  # fmt: skip
    out = [
        Grant(getattr(op, "iam_role", "deploy"), "airflow", op.__name__, tuple(getattr(op, "iam_actions", ())))
        for op in operators
    ]
    out.append(Grant("bake", "packer", "Packer (amazon-ebs builder)", PACKER_IAM_ACTIONS))
    out.append(Grant("bake", "terraform", "Terraform's S3 state backend", BACKEND_IAM_ACTIONS))
    for app in catalog.load_entries().values():
        if app.iam_actions:
            out.append(Grant("bake", "terraform", f"{app.name}'s Terraform module", app.iam_actions))
    out.append(Grant("console", "airflow", "Releases page and CLI", CONSOLE_IAM_ACTIONS))
    return out


def actions_by_role() -> dict[str, list[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for g in grants():
        found[g.role].update(g.actions)
    return {role: sorted(found.get(role, set())) for role in ROLES}


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
        "bake": "toolchain workers (Packer, Terraform)",
        "deploy": "default workers, triggerer",
        "retention": "the ami_retention worker",
        "console": "API server (Releases page), the CLI",
    }
    for role, actions in actions_by_role().items():
        lines.append(f"| `{role}` | {runs[role]} | {', '.join(f'`{a}`' for a in actions)} |")
    return "\n".join(lines)


def documents(role: str | None = None, ledger_bucket: str | None = None) -> str:
    roles = [role] if role else list(ROLES)
    return json.dumps({r: policy(r, ledger_bucket) for r in roles}, indent=2)
