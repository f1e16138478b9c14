"""``sts:AssumeRole`` as AWS answers it: only into a role that exists and trusts the caller.

moto 5.2.5 hands out credentials for *any* role ARN ("the role does not need to exist"), and
those credentials land in the ARN's account: moto keys every backend by account id and maps an
assumed session's access key to the role's account. That is what lets the sandbox hold several
accounts in one server (an AWS Organization's member accounts), but a stock moto would let a
run "assume" a role that was never created, so the failure an operator meets most often with
several accounts (the role is missing in one account, or does not trust ours) could not happen.

As AWS documents it (STS API reference, AssumeRole; IAM user guide, "Troubleshooting IAM
roles"), AssumeRole is refused with ``AccessDenied`` (HTTP 403) and the message
``User: <caller ARN> is not authorized to perform: sts:AssumeRole on resource: <role ARN>``
when:

* the role does not exist in the account its ARN names (AWS does not say "no such role": the
  answer is the same AccessDenied, so that roles cannot be probed), or
* the role's trust policy has no ``Allow`` statement for ``sts:AssumeRole`` whose ``AWS``
  principal is ``*``, the caller's account id, the caller's account root
  (``arn:aws:iam::<caller>:root``) or the caller's own ARN.

What this does not evaluate (moto's leniency kept): ``Condition`` blocks and ``Deny``
statements of the trust policy, the caller's own identity policy, SCPs. The app roles'
session-tag condition (``aws:RequestTag/App``) is therefore not enforced here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from moto.core.exceptions import AccessDeniedError
from moto.iam.models import iam_backends
from moto.sts import responses as _sts_responses

_ROLE_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:.*/)?([^/]+)$")
_ORIGINAL: dict[str, Any] = {}


class AccessDenied(AccessDeniedError):
    """HTTP 403 ``AccessDenied`` (moto's own error of its IAM-authorisation path)."""

    def __init__(self, caller_arn: str, role_arn: str) -> None:
        super().__init__(user_arn=caller_arn, action=f"sts:AssumeRole on resource: {role_arn}")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def trusts(trust_policy: str | dict[str, Any] | None, caller_account: str, caller_arn: str) -> bool:
    """Whether an ``Allow`` statement for ``sts:AssumeRole`` names the caller as an AWS principal."""
    if not trust_policy:
        return False
    doc = json.loads(trust_policy) if isinstance(trust_policy, str) else trust_policy
    accepted = {"*", caller_account, caller_arn, f"arn:aws:iam::{caller_account}:root"}
    for statement in _as_list(doc.get("Statement")):
        if statement.get("Effect") != "Allow":
            continue
        actions = {str(a) for a in _as_list(statement.get("Action"))}
        if not actions & {"sts:AssumeRole", "sts:*", "*"}:
            continue
        principal = statement.get("Principal")
        if principal == "*":
            return True
        if isinstance(principal, dict) and accepted & {str(p) for p in _as_list(principal.get("AWS"))}:
            return True
    return False


def find_role(role_arn: str) -> Any | None:
    """The IAM role an ARN names, in the account the ARN names (None: no such role)."""
    match = _ROLE_ARN.match(role_arn or "")
    if not match:
        return None
    partition, account, name = match.groups()
    backend = iam_backends[account][partition]
    for role in backend.get_roles():
        if role.name == name and role.arn == role_arn:
            return role
    return None


def _r_assume_role(self: Any) -> Any:
    role_arn = self._get_param("RoleArn") or ""
    caller_account = self.get_current_account()
    _, caller_arn, _ = self.backend.get_caller_identity(self.get_access_key(), self.region)
    role = find_role(role_arn)
    if role is None or not trusts(role.assume_role_policy_document, caller_account, caller_arn):
        raise AccessDenied(caller_arn, role_arn)
    return _ORIGINAL["assume_role"](self)


def install() -> None:
    """Idempotent: refuse AssumeRole into roles that do not exist or do not trust the caller."""
    if "assume_role" not in _ORIGINAL:
        _ORIGINAL["assume_role"] = _sts_responses.TokenResponse.assume_role
    _sts_responses.TokenResponse.assume_role = _r_assume_role  # type: ignore[method-assign]


def uninstall() -> None:
    if "assume_role" in _ORIGINAL:
        _sts_responses.TokenResponse.assume_role = _ORIGINAL["assume_role"]  # type: ignore[method-assign]


__all__ = ["AccessDenied", "find_role", "install", "trusts", "uninstall"]
