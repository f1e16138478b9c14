"""What one release task hands to the next, as typed records.

Each record is a frozen dataclass the operators read by attribute (so the type checker
follows a rename), serialised to plain JSON-able dicts at the XCom boundary (``to_xcom``)
and read back strictly (``from_xcom``): a missing or unknown key is a clear error naming the
record, not a KeyError three tasks later. Never a secret in any of them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, Self, TypeVar, cast

from amirelease import catalog
from amirelease.errors import ReleaseError

T = TypeVar("T", bound="Handoff")


class HandoffError(ReleaseError):
    """An upstream task's XCom does not have the shape this task expects."""


@dataclass(frozen=True)
class Handoff:
    """Base: a strict dict round trip, decoded by the fields' types (``_decode``)."""

    def to_xcom(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(dataclasses.asdict(self))
        return plain

    @classmethod
    def from_xcom(cls, data: Any) -> Self:
        """Strictly, by the field types: a nested record is read by its own ``from_xcom``,
        ``tuple[X, ...]`` from a list, ``X | None`` as X or None; anything else as it is."""
        if isinstance(data, cls):
            return data
        if isinstance(data, str) and data.startswith("{"):
            # An XCom that a trigger ends its task with (TaskSuccessEvent(xcoms=...): the refresh
            # wait's) is stored JSON-encoded once more than a task's own (Airflow 3.3's
            # XComModel.set json.dumps it into a JSON column), and the task SDK reads it as a string.
            try:
                data = json.loads(data)
            except ValueError:
                pass  # not JSON: _check says what was expected
        _check(cls, data)
        hints = _hints(cast(Hashable, cls))
        return cls(**{k: _decode(hints[k], v) for k, v in data.items()})


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    """The init fields' resolved types (annotations are strings here: ``from __future__``)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _decode(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(options[0], value) if len(options) == 1 else value
    if isinstance(tp, type) and issubclass(tp, Handoff):
        return tp.from_xcom(value)
    if origin is tuple:
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_decode(inner, v) for v in value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _check(cls: type, data: Any) -> set[str]:
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    if not isinstance(data, dict):
        raise HandoffError(
            f"{cls.__name__}: expected a mapping from the upstream task, got {type(data).__name__}",
            fix="clear the upstream task so it runs again with this version of the pipeline",
        )
    missing = sorted(required - set(data))
    unknown = sorted(set(data) - names)
    if missing or unknown:
        raise HandoffError(
            f"{cls.__name__} from the upstream task has missing {missing or '-'} / unknown {unknown or '-'} keys",
            fix="the upstream task ran with another version of the pipeline: clear it so it runs again",
        )
    return names


# --- preflight -> everyone --------------------------------------------------------------


@dataclass(frozen=True)
class RegionNetwork(Handoff):
    region: str
    vpc_id: str
    vpc_cidr: str
    subnet_ids: tuple[str, ...]


@dataclass(frozen=True)
class BundleRef(Handoff):
    """Where a release's bundle is (ledger bucket) and its sha256."""

    key: str
    sha256: str


class _Regional(Protocol):
    @property
    def region(self) -> str: ...


R = TypeVar("R", bound=_Regional)


def _in_region(items: Sequence[R], region: str, missing: str, fix: str) -> R:
    """The item of ``region`` in a hand-off's per-region list; a HandoffError in words if none."""
    for item in items:
        if item.region == region:
            return item
    raise HandoffError(f"{missing} for region {region}", fix=fix)


@dataclass(frozen=True)
class ReleasePlan(Handoff):
    """The release as decided by preflight: every later task acts on this, nothing else.

    ``catalog_entry`` is the app's catalog document as bundled; ``app_spec`` parses it, so a
    re-release's tasks use the recorded entry, not today's catalog. What the entry already says
    (platform, toolchain, run list, regions) is read from it, not carried twice.
    """

    app: str
    version: str
    release_id: str
    ami_name: str
    cookbook_versions: dict[str, str]
    packer_template_digest: str
    source_ami: str
    source_ami_name: str
    networks: tuple[RegionNetwork, ...]
    account_id: str
    pipeline_run: str
    bundle: BundleRef
    catalog_entry: dict[str, Any]
    git_ref: str | None = None
    notes: str | None = None
    triggered_by: str | None = None
    re_release_of: str | None = None
    source_bundle: BundleRef | None = None  # a re-release: the bundle of the release it repeats
    source: dict[str, Any] | None = None  # git-sourced app: repository (no credentials), path, ref, commit
    rebuild_of: str | None = None  # a rebuild on purpose: the release id of the version's release it bakes again
    rebuild_reason: str | None = None
    stage: str = ""  # the stage this run applies, refreshes and verifies ("": the first; catalog.Stage)
    promoted_from: str | None = None  # an ami_promote run: the stage the release was verified in before

    @cached_property
    def app_spec(self) -> catalog.App:
        return catalog.parse_app(self.catalog_entry, f"{self.app}.yaml (bundle {self.bundle.sha256[:12]})")

    @property
    def stage_spec(self) -> catalog.Stage:
        return self.app_spec.stage(self.stage)

    @property
    def targets(self) -> tuple[catalog.Target, ...]:
        """This run's stage's groups (an app without stages: all of them)."""
        return self.stage_spec.targets

    @property
    def platform(self) -> str:
        return self.app_spec.platform

    @property
    def toolchain(self) -> str:
        return self.app_spec.toolchain

    @property
    def run_list(self) -> tuple[str, ...]:
        """The stacked Chef run list (platform base cookbook first, then the app's)."""
        return tuple(self.app_spec.run_list)

    @property
    def home_region(self) -> str:
        """The region Packer builds in; the others get copies."""
        return self.app_spec.home_region

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions this run's stage applies and refreshes in."""
        return tuple(self.stage_spec.regions)

    @property
    def verify_rules(self) -> dict[str, Any]:
        """How this run's stage is verified: the app's ``verify:``, with the stage's own over it."""
        return self.app_spec.verify_rules(self.stage)

    @property
    def image_regions(self) -> tuple[str, ...]:
        """Every region the bake leaves an AMI in: all stages' (the same AMI goes through them)."""
        return tuple(self.app_spec.regions)

    def network(self, region: str) -> RegionNetwork:
        return _in_region(self.networks, region, "the plan has no network", "clear preflight so it runs again")


# --- bake -> smoke test, apply, roll-out, record ----------------------------------------------


@dataclass(frozen=True)
class BakeResult(Handoff):
    release_id: str
    ami_id: str  # in the home region
    amis: dict[str, str]  # region -> AMI id
    source_ami: str
    reused: bool
    provisioned: bool = False  # Chef ran (Packer source `provisioned`): the image carries its identity file


# --- smoke test -> record ---------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeCommandResult(Handoff):
    name: str
    exit_code: int | None
    problem: str | None
    status: str = ""


@dataclass(frozen=True)
class SmokeResult(Handoff):
    ami_id: str
    instance_id: str
    passed: bool
    commands: tuple[SmokeCommandResult, ...]
    launched_from: str  # "launch template <name>" or "plain run_instances"


# --- Terraform: check + apply ---------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceChange(Handoff):
    address: str
    resource_type: str
    action: str  # create | update | delete | replace | read | noop | move | import
    reason: str = ""  # Terraform's reason for the action, e.g. "tainted" (a create that failed half-way)


@dataclass(frozen=True)
class PlanSummary(Handoff):
    add: int
    change: int
    destroy: int
    changes: tuple[ResourceChange, ...] = ()

    def line(self) -> str:
        return f"{self.add} to add, {self.change} to change, {self.destroy} to destroy"


@dataclass(frozen=True)
class RegionPlan(Handoff):
    """One region's Terraform plan (check_infrastructure: a stand-in AMI, nothing applied)."""

    region: str
    state_key: str
    plan: PlanSummary


@dataclass(frozen=True)
class InfrastructureCheck(Handoff):
    regions: tuple[RegionPlan, ...]
    terraform_version: str


@dataclass(frozen=True)
class RegionInfrastructure(Handoff):
    """One region's apply: the plan applied and what the roll-out refreshes."""

    region: str
    state_key: str
    plan: PlanSummary
    launch_template_id: str
    launch_template_version: int
    auto_scaling_groups: tuple[str, ...]


@dataclass(frozen=True)
class InfrastructureResult(Handoff):
    regions: tuple[RegionInfrastructure, ...]

    def region(self, region: str) -> RegionInfrastructure:
        return _in_region(self.regions, region, "no Terraform apply", "clear apply_infrastructure")


# --- roll-out -> wait -> verify -------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshHandle(Handoff):
    """One group's instance refresh, as started by roll_out and finished by wait_for_refresh."""

    region: str
    auto_scaling_group: str
    refresh_id: str
    launch_template_id: str
    launch_template_version: int
    ami_id: str
    timeout_minutes: int
    status: str | None = None  # set by wait_for_refresh
    percentage_complete: int | None = None
    started_at: str | None = None  # AWS's StartTime and EndTime of the refresh (the record's phases)
    ended_at: str | None = None

    def ended(self, refresh: Mapping[str, Any]) -> RefreshHandle:
        """This handle with the end state of ``refresh`` (one DescribeInstanceRefreshes entry)."""
        return RefreshHandle(
            **{
                **self.to_xcom(),
                "status": refresh["Status"],
                "percentage_complete": refresh.get("PercentageComplete"),
                "started_at": _aws_time(refresh.get("StartTime")),
                "ended_at": _aws_time(refresh.get("EndTime")),
            }
        )


def _aws_time(value: Any) -> str | None:
    """A time from AWS (a datetime from boto3, or text) as the phases write it."""
    from datetime import UTC, datetime

    if isinstance(value, datetime):
        from amirelease.phases import iso

        return iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    return str(value) if value else None


# --- verify -> record ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupCheck(Handoff):
    region: str
    auto_scaling_group: str
    ami_id: str
    in_service: int
    on_new_ami: int
    target_groups_healthy: bool
    alarms: dict[str, str]


@dataclass(frozen=True)
class VerifySummary(Handoff):
    groups: tuple[GroupCheck, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    verified: bool


# --- rollback: preflight (resolve_target) -> mark_rolled_back -----------------------------------------


@dataclass(frozen=True)
class RollbackTarget(Handoff):
    """What a rollback re-releases, and what it replaces."""

    app: str
    version: str
    target_release_id: str
    bundle: BundleRef
    git_ref: str | None
    current_release_id: str | None
    current_version: str | None
    current_amis: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    # an automatic roll-forward (operators/roll_forward.py): the failed release it replaces, which
    # is marked and held instead of what the fleet runs (AWS may have rolled the refresh back)
    replaces_release_id: str | None = None
    replaces_version: str | None = None
    replaces_amis: dict[str, str] = field(default_factory=dict)

    @property
    def replaced(self) -> tuple[str | None, str | None, dict[str, str]]:
        """(release id, version, AMIs) of the release this rollback replaces and marks."""
        if self.replaces_release_id:
            return self.replaces_release_id, self.replaces_version, self.replaces_amis
        return self.current_release_id, self.current_version, self.current_amis


def from_xcom_list(kind: type[T], items: Any) -> list[T]:
    """A mapped task's XComs (or a list XCom) as typed records."""
    if items is None:
        return []
    if isinstance(items, dict):
        items = [items]
    if hasattr(items, "__len__") and hasattr(items, "__getitem__"):  # a mapped task's lazy XCom sequence:
        return [kind.from_xcom(items[i]) for i in range(len(items))]  # index it (iterating probes past the end)
    return [kind.from_xcom(i) for i in items]
