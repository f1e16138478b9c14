"""The retention policy: a YAML file validated against a JSON schema when loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amirelease.constants import HOLD_REASON_TAG, HOLD_TAG
from amirelease.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_POLICY_PATH = REPO_ROOT / "include" / "policies" / "ami-retention.yaml"
SCHEMA_PATH = REPO_ROOT / "include" / "policies" / "ami-retention.schema.json"


@dataclass(frozen=True)
class Account:
    """One account retention runs in: a label, exactly one way in, its regions.

    ``aws_conn_id``: an Airflow AWS connection acting in that account. ``role_arn``: a role in
    that account that the workers' connection assumes (the Amazon provider's assume-role).
    """

    name: str
    regions: tuple[str, ...]
    aws_conn_id: str | None = None
    role_arn: str | None = None

    @property
    def role_account_id(self) -> str | None:
        """The account id a role ARN names (``arn:aws:iam::<id>:role/...``), else None."""
        return self.role_arn.split(":")[4] if self.role_arn else None

    @property
    def way_in(self) -> str:
        return f"role {self.role_arn}" if self.role_arn else f"connection {self.aws_conn_id}"

    def as_task_arg(self) -> dict[str, str]:
        """What a mapped retention task receives (plain, JSON-serialisable, no secret)."""
        out = {"name": self.name}
        if self.role_arn:
            out["role_arn"] = self.role_arn
        if self.aws_conn_id:
            out["aws_conn_id"] = self.aws_conn_id
        return out


@dataclass(frozen=True)
class RetentionPolicy:
    """Plain data: everything the decision function needs to know about the rule."""

    min_age_days: int = 60
    grace_days: int = 7
    regions: tuple[str, ...] = ("us-east-1",)
    protect_tag_key: str = "RetainIndefinitely"
    protect_tag_value: str = "true"
    mark_tag: str = "maid_status"
    mark_op: str = "deregister"
    mark_message: str = "Resource does not meet policy"
    accepted_ops: frozenset[str] = field(default_factory=lambda: frozenset({"deregister", "delete"}))
    protect_launch_templates: bool = True
    protect_launch_configurations: bool = True
    hold_enabled: bool = True
    hold_tag: str = HOLD_TAG
    hold_reason_tag: str = HOLD_REASON_TAG
    max_deregistrations_per_run: int = 50
    # stop conditions (see consistency.py); the defaults are the safe ones
    group_instance_sample: int = 200
    max_missing_group_instances: int = 0
    min_live_vs_desired: float = 0.5
    # the Recycle Bin window (recycle.py): deregister only when rules keep image and snapshots
    recycle_bin: bool = True
    recycle_bin_tag_key: str = "AmiRetention"
    recycle_bin_tag_value: str = "recycle-bin"
    recycle_bin_days: int = 14
    # a mark is also an AWS deprecation (DeprecationTime = the mark's due time)
    mark_deprecates: bool = True
    # the scream test (scream.py): disable a marked image this many days before it is due (0: off)
    scream_test_days: int = 0
    # an image AWS says launched an instance within this many days is kept (0: off)
    recently_launched_days: int = 30
    # before a deregistration, DescribeImageReferences must find nothing (where the API answers)
    aws_reference_check: bool = True
    reference_version_depth: int = 10
    dry_run: bool = False
    report_max_items: int = 50
    # the accounts to run in (empty: the workers' own account through aws_default, as before)
    accounts: tuple[Account, ...] = ()
    source: str = "<defaults>"

    def targets(self) -> list[dict[str, Any]]:
        """One entry per retention task: ``{"region_name": r}`` when the policy names no accounts
        (the workers' own account), else ``{"region_name": r, "account": {...}}`` per account
        and region, in the policy's order."""
        if not self.accounts:
            return [{"region_name": r} for r in self.regions]
        return [{"region_name": r, "account": a.as_task_arg()} for a in self.accounts for r in a.regions]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> RetentionPolicy:
        """Build from an already validated mapping (see :func:`load_policy`)."""
        mark = data["mark"]
        prot = data["protections"]
        op = mark["op"]
        consistency = data.get("consistency") or {}
        defaults = cls()
        bin_setting = data.get("recycle_bin", True)  # YAML's `off` is False
        bin_conf = bin_setting if isinstance(bin_setting, dict) else {}
        bin_tag = bin_conf.get("tag") or {}
        return cls(
            min_age_days=data["min_age_days"],
            grace_days=data["grace_days"],
            regions=tuple(data["regions"]),
            protect_tag_key=data["protect_tag"]["key"],
            protect_tag_value=data["protect_tag"]["value"],
            mark_tag=mark["tag"],
            mark_op=op,
            mark_message=mark.get("message", "Resource does not meet policy"),
            accepted_ops=frozenset(mark.get("accepted_ops", [])) | {op},
            protect_launch_templates=prot["launch_templates"],
            protect_launch_configurations=prot["launch_configurations"],
            hold_enabled=prot["forensic_hold"]["enabled"],
            hold_tag=prot["forensic_hold"]["tag"],
            hold_reason_tag=prot["forensic_hold"].get("reason_tag", defaults.hold_reason_tag),
            max_deregistrations_per_run=data["max_deregistrations_per_run"],
            group_instance_sample=consistency.get("group_instance_sample", defaults.group_instance_sample),
            max_missing_group_instances=consistency.get(
                "max_missing_group_instances", defaults.max_missing_group_instances
            ),
            min_live_vs_desired=float(consistency.get("min_live_vs_desired", defaults.min_live_vs_desired)),
            recycle_bin=bin_setting is not False,
            recycle_bin_tag_key=bin_tag.get("key", defaults.recycle_bin_tag_key),
            recycle_bin_tag_value=bin_tag.get("value", defaults.recycle_bin_tag_value),
            recycle_bin_days=bin_conf.get("retention_days", defaults.recycle_bin_days),
            mark_deprecates=data.get("mark_deprecates", defaults.mark_deprecates),
            scream_test_days=data.get("scream_test_days", defaults.scream_test_days),
            recently_launched_days=prot.get("recently_launched_days", defaults.recently_launched_days),
            aws_reference_check=(prot.get("aws_references") or {}).get("enabled", defaults.aws_reference_check),
            reference_version_depth=(prot.get("aws_references") or {}).get(
                "version_depth", defaults.reference_version_depth
            ),
            dry_run=data["dry_run"],
            report_max_items=data.get("report", {}).get("max_items", 50),
            accounts=_accounts(data.get("accounts") or [], tuple(data["regions"]), source),
            source=source,
        )


def _accounts(items: list[dict[str, Any]], regions: tuple[str, ...], source: str) -> tuple[Account, ...]:
    """The validated ``accounts`` list; names must be unique (they are the reports' S3 keys)."""
    seen: set[str] = set()
    out = []
    for item in items:
        name = item["name"]
        if name in seen:
            raise ConfigError(
                f"retention policy names account {name!r} twice",
                resource=source,
                fix="give each entry of `accounts` its own name (it is the account's report prefix in S3)",
            )
        seen.add(name)
        out.append(
            Account(
                name=name,
                regions=tuple(item.get("regions") or regions),
                aws_conn_id=item.get("aws_conn_id"),
                role_arn=item.get("role_arn"),
            )
        )
    return tuple(out)


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def validate_policy_data(data: Any, *, source: str) -> None:
    """Raise ConfigError naming the file and every offending field."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
            lines.append(f"{where}: {err.message}")
        raise ConfigError(
            f"retention policy is invalid: {'; '.join(lines)}",
            resource=source,
            fix=f"correct the field(s) named above; the schema is {SCHEMA_PATH.name}",
        )


def load_policy(path: str | Path | None = None) -> RetentionPolicy:
    """Read, validate and return the policy at ``path``; default: the deployment setting
    ``[ami_release] retention_policy``, else include/policies/ami-retention.yaml."""
    import yaml

    if not path:
        from airflow.sdk.configuration import conf

        path = conf.get("ami_release", "retention_policy", fallback="") or DEFAULT_POLICY_PATH
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read retention policy: {exc.strerror}",
            resource=str(path),
            fix="check the policy_path of the retention task",
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"retention policy is not valid YAML: {exc}", resource=str(path)) from exc
    validate_policy_data(data, source=str(path))
    return RetentionPolicy.from_dict(data, source=str(path))
