"""The AWS side of retention: ask only for what the decision needs, concurrently; apply in batches.

Functions take boto3 clients (EC2, Auto Scaling) so the operator stays thin and the
sandbox can drive them. What one run asks, and why:

* ``DescribeImages(Owners=['self'])``, 1,000 per page: every own image (the decision is about them).
* ``DescribeAutoScalingGroups``, 100 per page (the API's maximum): the groups, their launch
  templates/configurations, desired capacities and instances (the stop conditions). Asked just
  before it, ``DescribeAccountLimits``: how many groups Auto Scaling counts in the region. A
  listing with fewer groups was cut short (a page or its NextToken lost), and a group it lacks
  could protect an image through its template alone: the run stops, changing nothing.
* ``DescribeLaunchTemplateVersions(Versions=['$Latest', '$Default'])`` without a template:
  the latest and default version of *every* template in the account, 200 per page (the
  API's maximum), instead of one call per template. Beside it ``DescribeLaunchTemplates``
  for the templates groups use, 200 ids per call: the exact numbers ``$Latest`` and
  ``$Default`` stand for. The cross-check: every (template, version number) a group uses
  that the listing did not return (cut short, or a pinned version) is asked directly, all of
  one template's versions in one call. Skipped when no group uses a template. Nothing is
  trusted to be whole: a listing cut short costs direct calls, never a protection.
* The recheck before deregistering asks ``DescribeLaunchTemplates`` again and only the
  versions the run has not read yet (a version never changes once made), not the listing.
* ``DescribeLaunchConfigurations(LaunchConfigurationNames=…)``, 50 names per call (the API's
  maximum): only configurations groups use; none when no group uses one.
* ``DescribeInstances`` of every live instance (a state filter only), 1,000 per page, once, side
  by side with the groups' listing: the usage of the *candidates* (own, old enough, not
  protected or held by a tag: see ``decide.needs_usage``; and not named by a template version or
  configuration a group uses, which protects it anyway) and the images group instances run.
* ``DescribeInstances`` with an ``instance-id`` filter (200 per call) for the sampled group
  instances (the stop conditions' second view, whatever the listing says) and for every group
  instance the listing lacked; one EC2 returns live by id that the listing lacked shows the
  listing is cut (``consistency``: the run stops).

The independent listings run on a small bounded thread pool (``POOL_WORKERS``), so on AWS
the wall time is about the slowest listing, not the sum. Any listing error is recorded and
stops the run (see ``consistency.py``); nothing is changed then.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from amirelease.errors import AwsErrorFamily, RetentionError, aws_error_family
from amirelease.errors import aws_error_code as _code
from amirelease.retention.consistency import (
    GONE_LIFECYCLE,
    LIVE_STATES,
    AccountView,
    doubtful_sample,
    select_sample,
)
from amirelease.retention.decide import Action, Decision, Plan, decide, needs_usage
from amirelease.retention.iam_actions import IAM_ACTIONS as IAM_ACTIONS  # calls beyond the operator's (iam.py)
from amirelease.retention.model import Image, Usage, image_from_api
from amirelease.retention.policy import RetentionPolicy
from amirelease.retention.references import (
    Numbers,
    TemplateKey,
    VersionKey,
    direct_asks,
    group_launch_configurations,
    group_template_specs,
    index_alias_versions,
    index_listed,
    launch_configuration_references,
    merge,
    numbered_asks,
    resolve_numbered,
    resolve_templates,
)

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client

log = logging.getLogger(__name__)

POOL_WORKERS = 8  # concurrent AWS reads of one run (botocore's pool holds 10 connections)
APPLY_WORKERS = 10  # concurrent DeregisterImage / DeleteSnapshot (one call per image or snapshot; no batch API)
IMAGE_PAGE = 1000  # DescribeImages MaxResults: 5-1000
INSTANCE_PAGE = 1000  # DescribeInstances MaxResults: 5-1000
TEMPLATE_PAGE = 200  # DescribeLaunchTemplateVersions / DescribeLaunchTemplates MaxResults: 1-200
TEMPLATE_IDS = 200  # DescribeLaunchTemplates: template ids (or names) per call, one page of 200
VERSIONS_PER_CALL = 200  # DescribeLaunchTemplateVersions: numbered versions of one template per call (a page)
GROUP_PAGE = 100  # DescribeAutoScalingGroups MaxRecords: at most 100
LC_NAMES = 50  # DescribeLaunchConfigurations LaunchConfigurationNames: at most 50
MAX_FILTER_VALUES = 200  # EC2 describe calls: filter values per call, all filters together
IMAGE_ID_BATCH = MAX_FILTER_VALUES - len(LIVE_STATES)  # image ids per call next to the state filter
TAG_BATCH = 500  # CreateTags/DeleteTags resource ids per call (up to 1000; AWS advises smaller batches)

T = TypeVar("T")


class ListingFailed(Exception):
    """A listing failed or was cut short; the message says which and why."""


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _collect(pages: Iterable[Mapping[str, Any]], key: str, what: str) -> list[Any]:
    """Every item under ``key`` of a paged listing (a typed client's ``get_paginator(...).paginate(...)``,
    which asks AWS only as it is read); any error (after botocore's retries) -> ListingFailed."""
    out: list[Any] = []
    try:
        for page in pages:
            out.extend(page.get(key, []))
    except ClientError as exc:
        raise ListingFailed(f"{what} ({_code(exc)}): {exc}") from exc
    except BotoCoreError as exc:  # PaginationError (repeated token), connection errors, timeouts
        raise ListingFailed(f"{what} ({type(exc).__name__}): {exc}") from exc
    return out


# ---------------------------------------------------------------- listing


def list_images(ec2: EC2Client, *, image_ids: Sequence[str] | None = None) -> list[Image]:
    """Own images (``Owners=['self']``), 1000 per page; only ``image_ids`` when given."""
    kwargs: dict[str, Any] = {"Owners": ["self"], "IncludeDisabled": True}
    if image_ids is None:
        items = _collect(
            ec2.get_paginator("describe_images").paginate(**kwargs, PaginationConfig={"PageSize": IMAGE_PAGE}),
            "Images",
            "DescribeImages",
        )
    else:
        items = []
        for batch in _chunks(list(image_ids), MAX_FILTER_VALUES):
            items += _collect(
                ec2.get_paginator("describe_images").paginate(
                    Filters=[{"Name": "image-id", "Values": batch}], **kwargs, PaginationConfig={"PageSize": IMAGE_PAGE}
                ),
                "Images",
                "DescribeImages (recheck)",
            )
    return [image_from_api(item) for item in items]


def list_instance_usage(ec2: EC2Client, image_ids: Sequence[str]) -> dict[str, list[str]]:
    """``image id -> [live instance ids]`` for these images (non-terminated instances only)."""
    usage: dict[str, list[str]] = defaultdict(list)
    for batch in _chunks(list(image_ids), IMAGE_ID_BATCH):
        reservations = _collect(
            ec2.get_paginator("describe_instances").paginate(
                Filters=[
                    {"Name": "image-id", "Values": batch},
                    {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
                ],
                PaginationConfig={"PageSize": INSTANCE_PAGE},
            ),
            "Reservations",
            f"DescribeInstances for {len(batch)} image(s)",
        )
        for reservation in reservations:
            for instance in reservation.get("Instances", []):
                if instance.get("State", {}).get("Name") in LIVE_STATES and instance.get("ImageId"):
                    usage[instance["ImageId"]].append(instance["InstanceId"])
    return dict(usage)


def list_live_instances(ec2: EC2Client) -> dict[str, tuple[str, str]]:
    """``instance id -> (state, image id)`` of every live (non-terminated) instance of the account:
    one paged ``DescribeInstances`` filtered by state only, 1,000 per page. It replaces one
    filtered call per 195 candidate images and one per 200 group instances: on AWS a filtered call
    costs a round trip like a page, and the account's instances are read once instead of in ~64
    pieces. Its completeness is cross-checked against the groups (``resolve_groups``)."""
    found: dict[str, tuple[str, str]] = {}
    reservations = _collect(
        ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": list(LIVE_STATES)}],
            PaginationConfig={"PageSize": INSTANCE_PAGE},
        ),
        "Reservations",
        "DescribeInstances (every live instance)",
    )
    for reservation in reservations:
        for instance in reservation.get("Instances", []):
            state = str(instance.get("State", {}).get("Name", ""))
            if state in LIVE_STATES and instance.get("InstanceId"):
                found[str(instance["InstanceId"])] = (state, str(instance.get("ImageId", "")))
    return found


def describe_instances_by_id(
    ec2: EC2Client, instance_ids: Sequence[str], launched: dict[str, datetime] | None = None
) -> dict[str, tuple[str, str]]:
    """``instance id -> (state, image id)`` as EC2 lists them (terminated included; unknown absent);
    their ``LaunchTime`` into ``launched`` when given."""
    found: dict[str, tuple[str, str]] = {}
    for batch in _chunks(list(instance_ids), MAX_FILTER_VALUES):
        reservations = _collect(
            ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-id", "Values": batch}], PaginationConfig={"PageSize": INSTANCE_PAGE}
            ),
            "Reservations",
            "DescribeInstances for sampled group instances",
        )
        for reservation in reservations:
            for instance in reservation.get("Instances", []):
                found[instance["InstanceId"]] = (
                    str(instance.get("State", {}).get("Name", "")),
                    str(instance.get("ImageId", "")),
                )
                if launched is not None and isinstance(instance.get("LaunchTime"), datetime):
                    launched[instance["InstanceId"]] = instance["LaunchTime"]
    return found


def count_groups(autoscaling: AutoScalingClient) -> int | None:
    """How many groups Auto Scaling counts in the region (``DescribeAccountLimits``), or None when
    it does not say (no permission, or an endpoint without the call: then logged, and the
    listing goes unchecked as before; AWS's own reference check still guards deregistration)."""
    try:
        return int(autoscaling.describe_account_limits()["NumberOfAutoScalingGroups"])
    except (ClientError, BotoCoreError, KeyError, TypeError, ValueError) as exc:
        log.warning(
            "Could not count the region's Auto Scaling groups (DescribeAccountLimits: %s); the listing of "
            "the groups is not cross-checked this run (allow autoscaling:DescribeAccountLimits)",
            exc,
        )
        return None


def list_groups(autoscaling: AutoScalingClient) -> list[dict[str, Any]]:
    """Every group, cross-checked against the region's count asked just before (a group made
    meanwhile only lengthens the listing; one deleted meanwhile may stop a run, and the next
    tries again): fewer groups than counted -> ListingFailed."""
    counted = count_groups(autoscaling)
    groups = _collect(
        autoscaling.get_paginator("describe_auto_scaling_groups").paginate(PaginationConfig={"PageSize": GROUP_PAGE}),
        "AutoScalingGroups",
        "DescribeAutoScalingGroups",
    )
    if counted is not None and len(groups) < counted:
        raise ListingFailed(
            f"DescribeAutoScalingGroups listed {len(groups)} group(s), but Auto Scaling counts {counted} in this "
            "region (DescribeAccountLimits): the listing was cut short, and a group it lacks may use an image "
            "through its launch template alone"
        )
    return groups


def describe_groups(autoscaling: AutoScalingClient, names: Sequence[str]) -> list[dict[str, Any]]:
    """The named groups as Auto Scaling lists them now (a group it does not return is left out)."""
    items: list[dict[str, Any]] = []
    for batch in _chunks(sorted(set(names)), GROUP_PAGE):
        items += _collect(
            autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
                AutoScalingGroupNames=batch, PaginationConfig={"PageSize": GROUP_PAGE}
            ),
            "AutoScalingGroups",
            "DescribeAutoScalingGroups (second read)",
        )
    return items


def left_their_groups(autoscaling: AutoScalingClient, doubtful: Sequence[tuple[str, str]]) -> frozenset[str]:
    """Of ``doubtful`` (group name, instance id) pairs, the instances their group, read again now,
    no longer lists as ``InService``: scaled in or replaced (an instance refresh) between the read
    of the groups and EC2's answer. Listings are not a snapshot of the account, on AWS as here.
    An instance whose group is not returned, or still lists it InService, is not among them; a
    failed second read returns none (the first read's doubt stands)."""
    if not doubtful:
        return frozenset()
    try:
        again = describe_groups(autoscaling, [g for g, _ in doubtful])
    except ListingFailed as exc:
        log.warning("Could not read the groups again to settle %d doubtful instance(s): %s", len(doubtful), exc)
        return frozenset()
    now = {
        str(g.get("AutoScalingGroupName")): {
            str(i.get("InstanceId")): i.get("LifecycleState") for i in g.get("Instances") or []
        }
        for g in again
    }
    left = frozenset(i for g, i in doubtful if g in now and now[g].get(i) != "InService")
    if left:
        log.info(
            "%d sampled instance(s) left their group while the run read the account (scale-in or instance "
            "refresh), not counted as missing: %s",
            len(left),
            ", ".join(sorted(left)[:5]),
        )
    return left


def list_alias_versions(ec2: EC2Client) -> list[dict[str, Any]]:
    """``$Latest`` and ``$Default`` of every launch template in the account (paged)."""
    return _collect(
        ec2.get_paginator("describe_launch_template_versions").paginate(
            Versions=["$Latest", "$Default"], ResolveAlias=True, PaginationConfig={"PageSize": TEMPLATE_PAGE}
        ),
        "LaunchTemplateVersions",
        "DescribeLaunchTemplateVersions ($Latest/$Default of all templates)",
    )


_TEMPLATE_GONE = (
    "InvalidLaunchTemplateId.NotFound",
    "InvalidLaunchTemplateName.NotFoundException",
    "InvalidLaunchTemplateId.Malformed",
)


def template_versions(
    ec2: EC2Client, template: TemplateKey, versions: list[str]
) -> tuple[list[dict[str, Any]], set[str]]:
    """(the versions AWS returned, the asked specs AWS says do not exist) for one template.

    Asked by ``LaunchTemplateId`` (or ``LaunchTemplateName``) and ``Versions``: a direct
    answer, not a listing. Any other error -> ListingFailed.
    """
    # one of two parameters, by the key's kind (so not checked by name: dict[str, Any])
    ident: dict[str, Any] = (
        {"LaunchTemplateId": template[1]} if template[0] == "id" else {"LaunchTemplateName": template[1]}
    )
    try:
        items = _collect(
            ec2.get_paginator("describe_launch_template_versions").paginate(
                **ident, Versions=versions, ResolveAlias=True, PaginationConfig={"PageSize": TEMPLATE_PAGE}
            ),
            "LaunchTemplateVersions",
            f"DescribeLaunchTemplateVersions {template[1]} {','.join(versions)}",
        )
        return items, set()
    except ListingFailed as failed:
        exc = failed.__cause__
        code = _code(exc) if isinstance(exc, ClientError) else ""
        if code in _TEMPLATE_GONE:
            return [], set(versions)
        if code == "InvalidLaunchTemplateId.VersionNotFound" and len(versions) > 1:
            # One missing version fails the whole call: ask for each version alone.
            items, absent = [], set()
            for version in versions:
                got, gone = template_versions(ec2, template, [version])
                items += got
                absent |= gone
            return items, absent
        if code == "InvalidLaunchTemplateId.VersionNotFound":
            return [], set(versions)
        raise


def lookup_template(
    ec2: EC2Client, template: TemplateKey, specs: list[str]
) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """({spec: version} for the asked specs AWS returned, {specs AWS says do not exist}).

    ``$Latest`` is asked alone (the one version returned *is* the latest); the other specs
    together, ``$Default`` being the returned version flagged ``DefaultVersion``.
    """
    found: dict[str, dict[str, Any]] = {}
    absent: set[str] = set()
    if "$Latest" in specs:
        items, gone = template_versions(ec2, template, ["$Latest"])
        absent |= gone
        if items:
            found["$Latest"] = max(items, key=lambda v: int(v.get("VersionNumber") or 0))
    rest = [s for s in specs if s != "$Latest"]
    if rest:
        items, gone = template_versions(ec2, template, rest)
        absent |= gone
        for item in items:
            found.setdefault(str(item.get("VersionNumber")), item)
            if item.get("DefaultVersion"):
                found["$Default"] = item
    return {s: v for s, v in found.items() if s in specs}, absent


def describe_templates(ec2: EC2Client, keys: Sequence[TemplateKey]) -> dict[TemplateKey, Numbers]:
    """``{template: (id, latest number, default number)}`` for these templates, asked by id and by
    name, ``TEMPLATE_IDS`` per call: what ``$Latest`` and ``$Default`` mean right now, exactly.

    A template AWS does not return is left out (its versions are then asked for by spec); an
    unknown template fails AWS's whole call, so then that batch is left out. Any other error ->
    ListingFailed.
    """
    out: dict[TemplateKey, Numbers] = {}
    for kind, param in (("id", "LaunchTemplateIds"), ("name", "LaunchTemplateNames")):
        values = sorted({k[1] for k in keys if k[0] == kind})
        for batch in _chunks(values, TEMPLATE_IDS):
            by_kind: dict[str, Any] = {param: batch}  # LaunchTemplateIds or LaunchTemplateNames
            try:
                items = _collect(
                    ec2.get_paginator("describe_launch_templates").paginate(
                        **by_kind, PaginationConfig={"PageSize": TEMPLATE_PAGE}
                    ),
                    "LaunchTemplates",
                    f"DescribeLaunchTemplates ({len(batch)} template(s) groups use)",
                )
            except ListingFailed as failed:
                exc = failed.__cause__
                if isinstance(exc, ClientError) and _code(exc) in _TEMPLATE_GONE:
                    log.info("DescribeLaunchTemplates: %s; asking those %d template(s) by spec.", exc, len(batch))
                    continue
                raise
            wanted = set(batch)
            for t in items:
                name = str(t.get("LaunchTemplateId") if kind == "id" else t.get("LaunchTemplateName") or "")
                latest, default = t.get("LatestVersionNumber"), t.get("DefaultVersionNumber")
                if name in wanted and t.get("LaunchTemplateId") and latest is not None and default is not None:
                    out[(kind, name)] = (str(t["LaunchTemplateId"]), int(latest), int(default))
    return out


def template_numbers(
    ec2: EC2Client, template_id: str, wanted: Sequence[int]
) -> tuple[dict[VersionKey, str], set[VersionKey]]:
    """({(id, number): image id} AWS returned, {(id, number) AWS says do not exist}) for these
    version numbers of one template: one ``DescribeLaunchTemplateVersions`` per ``VERSIONS_PER_CALL``.

    The answer is cross-checked: a number neither returned nor declared missing (an answer cut
    short) is asked for alone, once more.
    """
    found: dict[VersionKey, str] = {}
    absent: set[VersionKey] = set()

    def ask(batch: list[str]) -> None:
        items, gone = template_versions(ec2, ("id", template_id), batch)
        found.update({k: v for k, v in index_listed(items).items() if k[0] == template_id})
        absent.update((template_id, int(v)) for v in gone)

    for batch in _chunks([str(n) for n in wanted], VERSIONS_PER_CALL):
        ask(batch)
    if len(wanted) > 1:
        for n in wanted:
            if (template_id, n) not in found and (template_id, n) not in absent:
                ask([str(n)])
    return found, absent


def list_launch_configurations(autoscaling: AutoScalingClient, names: Sequence[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for batch in _chunks(list(names), LC_NAMES):
        items += _collect(
            autoscaling.get_paginator("describe_launch_configurations").paginate(
                LaunchConfigurationNames=batch, PaginationConfig={"PageSize": 100}
            ),
            "LaunchConfigurations",
            "DescribeLaunchConfigurations",
        )
    return items


def group_instance_ids(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every instance a group lists that is not on its way out (sorted, unique)."""
    return sorted(
        {
            str(i["InstanceId"])
            for g in groups
            for i in g.get("Instances") or []
            if i.get("InstanceId") and i.get("LifecycleState") not in GONE_LIFECYCLE
        }
    )


@dataclass
class Resolution:
    """What the groups reference, resolved: images their templates/configurations name, their
    instances as EC2 lists them by id, and what could not be read or resolved (the run stops)."""

    references: dict[str, list[str]] = field(default_factory=dict)
    group_instances: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (state, image id)
    warnings: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    versions: dict[VersionKey, str] = field(default_factory=dict)  # every template version seen: image id
    by_id: dict[str, tuple[str, str]] = field(default_factory=dict)  # group instances EC2 returned asked by id
    live: dict[str, tuple[str, str]] = field(default_factory=dict)  # the listing of every live instance, if read
    listing_lacked: list[str] = field(default_factory=list)  # InService group instances live by id, not listed

    def instance_usage(self) -> dict[str, list[str]]:
        """``image id -> [live group instance ids]``."""
        usage: dict[str, list[str]] = defaultdict(list)
        for instance_id, (state, image_id) in sorted(self.group_instances.items()):
            if state in LIVE_STATES and image_id:
                usage[image_id].append(instance_id)
        return dict(usage)


LISTING_RACE_MARGIN = timedelta(seconds=5)  # an instance launched this close to the listing's start may miss it


def _launched_during(launch_time: datetime | None, began: datetime | None) -> bool:
    """Whether an instance may have been launched after the listing of live instances began (so a
    whole listing may lack it): its ``LaunchTime`` at most ``LISTING_RACE_MARGIN`` before (EC2
    gives it to the second, and EC2's clock is not ours). Unknown launch time: no."""
    if launch_time is None or began is None:
        return False
    if launch_time.tzinfo is None:
        launch_time = launch_time.replace(tzinfo=UTC)
    return launch_time >= began - LISTING_RACE_MARGIN


def _settled(fut: Future[T] | None, default: T, errors: list[str]) -> T:
    """A listing's result, or `default` with its failure noted in `errors` (the run then stops)."""
    if fut is None:
        return default
    try:
        return fut.result()
    except ListingFailed as exc:
        errors.append(str(exc))
        return default


def resolve_groups(
    ec2: EC2Client,
    autoscaling: AutoScalingClient,
    groups: Sequence[Mapping[str, Any]],
    policy: RetentionPolicy,
    pool: ThreadPoolExecutor,
    *,
    known: Mapping[VersionKey, str] | None = None,
    known_instances: Mapping[str, tuple[str, str]] | None = None,
    live: Future[dict[str, tuple[str, str]]] | None = None,
    live_began: datetime | None = None,
    sample_ids: Sequence[str] = (),
) -> Resolution:
    """Resolve every launch template version, launch configuration and instance the groups name.

    Side by side: ``$Latest``/``$Default`` of all templates (the listing; skipped when ``known``
    is given: the versions an earlier resolution of this run saw), ``DescribeLaunchTemplates``
    for the templates the groups use (the exact numbers their ``$Latest`` and ``$Default`` are),
    the configurations by name, the group instances by id. Then the cross-check: every (template,
    version number) a group uses that neither the listing nor ``known`` holds is asked directly,
    all of one template's in one call (:func:`template_numbers`). A template
    ``DescribeLaunchTemplates`` did not return is asked for by spec as before (``$Latest`` alone:
    nothing tells which listed version is the latest). A reference still missing is
    *unresolved*: the caller must stop, changing nothing. ``known_instances``: group instances an
    earlier resolution of this run found (an instance's image never changes and a terminated one
    never comes back): only instances not among them are looked up again.

    ``live``: the listing of every live instance (:func:`list_live_instances`, begun at
    ``live_began``, side by side with the listing of the groups). Then only ``sample_ids`` (the
    stop conditions' sample: a second view, independent of the listing) are looked up by id at
    once, and after the listing every group instance it lacks (cut short, or not live): each group
    instance is resolved by one view or the other. ``listing_lacked``: the InService group
    instances EC2 returns live by id that the listing lacked although they were launched before
    it began (``LISTING_RACE_MARGIN``) - evidence the listing is incomplete
    (``consistency.stop_reasons``). One launched while the listing ran is not evidence (but it
    is resolved by id like the others, so its image is protected all the same).
    """
    out = Resolution()

    def result(fut: Future[T] | None, default: T) -> T:
        return _settled(fut, default, out.errors)

    used = group_template_specs(groups) if policy.protect_launch_templates else {}
    lc_users = group_launch_configurations(groups) if policy.protect_launch_configurations else {}
    f_alias = pool.submit(list_alias_versions, ec2) if used and not known else None
    f_numbers = pool.submit(describe_templates, ec2, sorted(used)) if used else None
    f_lcs = pool.submit(list_launch_configurations, autoscaling, sorted(lc_users)) if lc_users else None
    seen_instances = {i: v for i, v in (known_instances or {}).items()}
    group_ids = group_instance_ids(groups)
    if live is None:
        ids = [i for i in group_ids if i not in seen_instances]
    else:
        ids = sorted(set(sample_ids))
    launched: dict[str, datetime] = {}
    f_inst = pool.submit(describe_instances_by_id, ec2, ids, launched) if ids else None

    listed: list[dict[str, Any]] = result(f_alias, [])
    numbers: dict[TemplateKey, Numbers] = result(f_numbers, {})
    lt_refs: dict[str, list[str]] = {}
    if used and not out.errors:
        seen: dict[VersionKey, str] = dict(known or {})
        seen.update(index_listed(listed))
        asks = numbered_asks(used, numbers, seen)
        # templates DescribeLaunchTemplates did not return: by spec, every $Latest asked alone
        by_spec = {key: specs for key, specs in used.items() if key not in numbers}
        alias = index_alias_versions(listed)
        spec_asks = direct_asks(by_spec, alias, distrust_latest=True)
        if asks or spec_asks:
            log.info(
                "Asking AWS directly for versions of %d launch template(s) the listing of all templates lacked "
                "(%d listed, %d known), %d more by spec.",
                len(asks),
                len(listed),
                len(known or {}),
                len(spec_asks),
            )
        f_direct = [pool.submit(template_numbers, ec2, tid, wanted) for tid, wanted in asks.items()]
        f_spec = {key: pool.submit(lookup_template, ec2, key, specs) for key, specs in spec_asks.items()}
        absent_numbers: set[VersionKey] = set()
        for f_numbered in f_direct:
            got, gone = result(f_numbered, ({}, set()))
            seen.update(got)
            absent_numbers |= gone
        found: dict[TemplateKey, dict[str, dict[str, Any]]] = {}
        absent: dict[TemplateKey, set[str]] = {}
        for key, fut in f_spec.items():
            found[key], absent[key] = result(fut, ({}, set()))
            seen.update(index_listed(found[key].values()))
        by_number = resolve_numbered(used, numbers, seen, absent_numbers)
        by_name = resolve_templates(by_spec, alias, spec_asks, found, absent)
        lt_refs = merge(by_number[0], by_name[0])
        out.warnings += by_number[1] + by_name[1]
        out.unresolved += by_number[2] + by_name[2]
        out.versions = seen

    configurations: list[dict[str, Any]] = result(f_lcs, [])
    if lc_users and f_lcs is not None and not out.errors:
        missing = sorted(set(lc_users) - {str(c.get("LaunchConfigurationName")) for c in configurations})
        if missing:
            log.info("Asking AWS directly for %d launch configuration(s) its listing lacked.", len(missing))
            configurations += result(pool.submit(list_launch_configurations, autoscaling, missing), [])
            have = {str(c.get("LaunchConfigurationName")) for c in configurations}
            out.unresolved += [
                f"Auto Scaling group {', '.join(sorted(lc_users[name]))} uses launch configuration {name}, which "
                "AWS did not return, not even when asked for it by name (AWS does not delete a configuration a "
                "group uses, so its answer was incomplete; check: aws autoscaling describe-launch-configurations "
                f"--launch-configuration-names {name})"
                for name in missing
                if name not in have
            ]
    lc_refs = launch_configuration_references(configurations, groups)
    out.references = merge(lt_refs, lc_refs)
    listed_now = set(group_ids)
    by_id: dict[str, tuple[str, str]] = result(f_inst, {})
    from_listing: dict[str, tuple[str, str]] = {}
    if live is not None:
        failed = len(out.errors)
        out.live = result(live, {})
        if len(out.errors) == failed:  # else the run stops: nothing more to resolve
            lacking = [i for i in group_ids if i not in out.live and i not in by_id and i not in seen_instances]
            if lacking:
                log.info("Looking up by id %d group instance(s) the listing of live instances lacked.", len(lacking))
                by_id |= result(pool.submit(describe_instances_by_id, ec2, lacking, launched), {})
            in_service = {
                str(i["InstanceId"])
                for g in groups
                for i in g.get("Instances") or []
                if i.get("InstanceId") and i.get("LifecycleState") == "InService"
            }
            out.listing_lacked = sorted(
                i
                for i, (state, _) in by_id.items()
                if state in LIVE_STATES
                and i in in_service
                and i not in out.live
                and not _launched_during(launched.get(i), live_began)
            )
            from_listing = {i: out.live[i] for i in group_ids if i in out.live}
    out.by_id = by_id
    out.group_instances = {i: v for i, v in seen_instances.items() if i in listed_now} | from_listing | by_id
    return out


@dataclass
class Collected:
    """What one run read from AWS."""

    images: list[Image]
    usage: Usage
    account_id: str | None
    view: AccountView
    warnings: list[str] = field(default_factory=list)


def collect(
    ec2: EC2Client,
    autoscaling: AutoScalingClient,
    policy: RetentionPolicy,
    now: datetime,
    *,
    account_id: Callable[[], str] | None = None,
    workers: int = POOL_WORKERS,
) -> Collected:
    """List what the decision and the stop conditions need, on a pool of ``workers`` threads.

    Listing errors do not raise: they are returned in ``view.listing_errors`` (the run stops).
    """
    errors: list[str] = []

    def result(fut: Future[T] | None, default: T) -> T:
        return _settled(fut, default, errors)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="retention-aws") as pool:
        f_images = pool.submit(list_images, ec2)
        f_account = pool.submit(_account, account_id) if account_id is not None else None
        f_groups = pool.submit(list_groups, autoscaling)
        # Every live instance, side by side with the groups; cross-checked against them
        # (resolve_groups: the group instances it lacks are looked up by id).
        live_began = datetime.now(UTC)
        f_live = pool.submit(list_live_instances, ec2)

        groups: list[dict[str, Any]] = result(f_groups, [])
        sample = select_sample(groups, policy.group_instance_sample)
        resolution = resolve_groups(
            ec2,
            autoscaling,
            groups,
            policy,
            pool,
            live=f_live,
            live_began=live_began,
            sample_ids=[i for _, i in sample],
        )
        errors += resolution.errors
        references = resolution.references

        images: list[Image] = result(f_images, [])
        owner: str | None = result(f_account, "") or None
    # Candidates: images whose decision depends on their instances. An image a group's
    # template or configuration names is protected whatever runs it: not asked about.
    # (An image a group's instance runs stays a candidate: its listing is cross-checked.)
    candidates = [
        i.image_id for i in images if needs_usage(i, now, policy, account_id=owner) and i.image_id not in references
    ]
    wanted = set(candidates)
    listed_usage: dict[str, list[str]] = {}
    for instance_id, (_, image_id) in sorted(resolution.live.items()):
        if image_id in wanted:
            listed_usage.setdefault(image_id, []).append(instance_id)

    warnings = resolution.warnings
    for w in warnings:
        log.warning("%s", w)
    for u in resolution.unresolved:
        log.error("%s", u)
    found = resolution.by_id  # the sample as EC2 returns it by id, not from the listing
    view = AccountView(
        groups=groups,
        sample=sample,
        sample_found={i: found[i] for _, i in sample if i in found},
        candidates=frozenset(candidates),
        candidate_usage=listed_usage,
        listing_errors=tuple(errors),
        unresolved=tuple(resolution.unresolved),
        listing_lacked=tuple(resolution.listing_lacked),
    )
    if not (view.listing_errors or view.unresolved):  # else the run stops whatever the sample says
        view = replace(view, sample_left=left_their_groups(autoscaling, doubtful_sample(view)))
    return Collected(
        images=images,
        usage=Usage(
            instances=_union(listed_usage, resolution.instance_usage()),
            references=references,
            template_versions=resolution.versions,
            group_instances=resolution.group_instances,
        ),
        account_id=owner,
        view=view,
        warnings=warnings,
    )


def _union(*maps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in maps:
        for key, ids in m.items():
            out[key] = sorted({*out.get(key, ()), *ids})
    return out


def _account(fetch: Callable[[], str]) -> str:
    try:
        return fetch()
    except ClientError as exc:
        raise ListingFailed(f"GetCallerIdentity ({_code(exc)}): {exc}") from exc
    except BotoCoreError as exc:
        raise ListingFailed(f"GetCallerIdentity ({type(exc).__name__}): {exc}") from exc


# ---------------------------------------------------------------- applying


class ReferencesUnresolved(ListingFailed):
    """A reference a group makes could not be resolved; the message names each one."""


def recheck(
    ec2: EC2Client,
    autoscaling: AutoScalingClient,
    plan: Plan,
    policy: RetentionPolicy,
    *,
    account_id: str | None,
    workers: int = POOL_WORKERS,
) -> Plan:
    """Just before deregistering, re-read the images about to go (their tags and their
    instances: two calls per 195 images) and what the groups reference *now* (groups, their
    templates, configurations and instances, resolved as in :func:`collect`, every reference
    or nothing), side by side, and keep only the images still eligible.

    Raises ListingFailed if a listing fails, ReferencesUnresolved if a group's reference
    cannot be resolved: the caller then changes nothing.
    """
    ids = [d.image_id for d in plan.of(Action.DEREGISTER)]
    if not ids:
        return plan
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="retention-recheck") as pool:
        f_images = pool.submit(list_images, ec2, image_ids=ids)
        f_usage = pool.submit(list_instance_usage, ec2, ids)
        groups = list_groups(autoscaling)
        resolution = resolve_groups(
            ec2,
            autoscaling,
            groups,
            policy,
            pool,
            known=plan.template_versions,
            known_instances=plan.group_instances,
        )
        fresh_images, fresh_instances = f_images.result(), f_usage.result()
    if resolution.errors:
        raise ListingFailed("; ".join(resolution.errors))
    if resolution.unresolved:
        raise ReferencesUnresolved("; ".join(resolution.unresolved))
    fresh_usage = Usage(
        instances=_union(fresh_instances, resolution.instance_usage()), references=resolution.references
    )
    again = {
        d.image_id: d
        for d in decide(
            fresh_images,
            fresh_usage,
            plan.now,
            replace(policy, max_deregistrations_per_run=len(ids)),
            account_id=account_id,
        ).decisions
    }
    decisions = []
    for d in plan.decisions:
        if d.action is Action.DEREGISTER:
            now_d = again.get(d.image_id)
            if now_d is None:
                d = replace(d, action=Action.KEEP, snapshot_ids=(), reasons=("image vanished during the run",))
            elif now_d.action is not Action.DEREGISTER:
                d = replace(
                    d,
                    action=Action.KEEP,
                    snapshot_ids=(),
                    protections=now_d.protections,
                    reasons=("kept: no longer eligible at deregistration time", *now_d.reasons),
                )
        decisions.append(d)
    return replace(plan, decisions=tuple(decisions))


def _tag_call(call: Callable[..., Any], ids: list[str], tags: list[dict[str, str]], what: str) -> None:
    for batch in _chunks(ids, TAG_BATCH):
        try:
            call(Resources=batch, Tags=tags)
        except ClientError as exc:
            raise RetentionError(
                f"{what} failed ({_code(exc)}): {exc}",
                resource=f"{len(batch)} image(s) starting {batch[0]}",
                fix="check ec2:CreateTags/ec2:DeleteTags permissions; the next run retries",
            ) from exc


def _deregister(ec2: EC2Client, d: Decision) -> tuple[str, str | None]:
    """(image id, error or None); an image already gone counts as gone."""
    try:
        ec2.deregister_image(ImageId=d.image_id)
    except ClientError as exc:
        code = _code(exc)
        if aws_error_family(exc) is AwsErrorFamily.NOT_FOUND:
            log.info("%s was already deregistered (%s).", d.image_id, code)
            return d.image_id, None
        return d.image_id, f"deregister {d.image_id}: {code}"
    return d.image_id, None


def _delete_snapshot(ec2: EC2Client, snap: str, image_id: str) -> str:
    """'deleted', 'kept' or an error text."""
    try:
        ec2.delete_snapshot(SnapshotId=snap)
    except ClientError as exc:
        code = _code(exc)
        if code == "InvalidSnapshot.NotFound":
            return "gone"
        if code == "InvalidSnapshot.InUse":
            log.warning("Snapshot %s of %s is still in use; kept.", snap, image_id)
            return "kept"
        return f"delete snapshot {snap} (of {image_id}): {code}"
    return "deleted"


def apply_plan(
    ec2: EC2Client,
    plan: Plan,
    policy: RetentionPolicy,
    *,
    workers: int = APPLY_WORKERS,
    before_deregister: Callable[[list[Decision]], None] | None = None,
    deleted_snapshots: list[str] | None = None,
) -> dict[str, Any]:
    """Write the plan: unmark, mark (batched by value), deregister, delete orphaned snapshots.

    Nothing happens on a dry run or a stopped plan. Deregistrations and snapshot deletions
    run on a small pool; per-image errors are collected and returned, after the rest was applied.
    ``before_deregister`` runs just before the first deregistration (the Recycle Bin tag); the
    ids of deleted snapshots are appended to ``deleted_snapshots``.
    """
    applied: dict[str, Any] = {
        "unmarked": 0,
        "marked": 0,
        "deregistered": 0,
        "snapshots_deleted": 0,
        "snapshots_kept": 0,
        "errors": [],
    }
    todo = plan.to_apply()
    if not todo:
        return applied

    unmark = [d.image_id for d in todo[Action.UNMARK]]
    _tag_call(ec2.delete_tags, unmark, [{"Key": policy.mark_tag}], "removing mark tags")
    applied["unmarked"] = len(unmark)

    by_value: dict[str, list[str]] = defaultdict(list)
    for d in todo[Action.MARK]:
        by_value[str(d.mark_value)].append(d.image_id)
    for value, ids in by_value.items():
        _tag_call(ec2.create_tags, ids, [{"Key": policy.mark_tag, "Value": value}], "writing mark tags")
        applied["marked"] += len(ids)

    leaving = todo[Action.DEREGISTER]
    errors: list[str] = []
    gone: set[str] = set()
    if leaving and before_deregister is not None:
        before_deregister(leaving)
    if leaving:

        def sole_user(snap: str, image_id: str) -> bool:
            return set(plan.snapshot_users.get(snap, ())) <= {image_id}

        def deregister_then_delete(d: Decision) -> tuple[str, str | None, list[tuple[str, str]]]:
            # the snapshots only this image uses go right after it (no wait for the other
            # deregistrations); a shared one waits until every user of it is gone (below)
            image_id, error = _deregister(ec2, d)
            if error:
                return image_id, error, []
            mine = [s for s in d.snapshot_ids if sole_user(s, image_id)]
            return image_id, None, [(s, _delete_snapshot(ec2, s, image_id)) for s in mine]

        outcomes: list[tuple[str, str]] = []
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="retention-apply") as pool:
            for image_id, error, deleted in pool.map(deregister_then_delete, leaving):
                if error:
                    errors.append(error)
                else:
                    gone.add(image_id)
                    outcomes += deleted
            jobs = []
            for d in leaving:
                if d.image_id not in gone:
                    continue
                for snap in d.snapshot_ids:
                    if sole_user(snap, d.image_id):
                        continue  # done with its image
                    if not set(plan.snapshot_users.get(snap, ())) <= gone:
                        applied["snapshots_kept"] += 1  # another user of it failed to go: keep
                        continue
                    jobs.append((snap, d.image_id))
            outcomes += [
                (job[0], outcome)
                for job, outcome in zip(jobs, pool.map(lambda job: _delete_snapshot(ec2, *job), jobs), strict=True)
            ]
        for snap, outcome in outcomes:
            if outcome == "deleted":
                applied["snapshots_deleted"] += 1
                if deleted_snapshots is not None:
                    deleted_snapshots.append(snap)
            elif outcome == "kept":
                applied["snapshots_kept"] += 1
            elif outcome != "gone":
                errors.append(outcome)
    applied["deregistered"] = len(gone)
    applied["errors"] = errors
    return applied


def one_call_each(
    pool: ThreadPoolExecutor, items: Sequence[T], call: Callable[[T], Any], what: Callable[[T], str]
) -> list[str]:
    """``call(item)`` for every item on ``pool`` (EC2 has no batch form of these calls); an AWS
    refusal becomes ``"<what(item)>: <code>"`` in the returned list instead of an exception, so
    one image never stops the others and the next run tries the failed ones again."""

    def one(item: T) -> str | None:
        try:
            call(item)
        except ClientError as exc:
            return f"{what(item)}: {_code(exc)}"
        return None

    return [e for e in pool.map(one, items) if e]


DEPRECATION_WORKERS = 10  # one call per image (no batch API): as many as botocore's pool holds (10)


def sync_deprecations(
    ec2: EC2Client, plan: Plan, images: Sequence[Image], now: datetime, *, workers: int = DEPRECATION_WORKERS
) -> dict[str, Any]:
    """Make AWS's DeprecationTime show the marks (``deprecation.changes``): one call per image
    that differs, on a pool as wide as botocore's connection pool (the listings are done by
    then). Errors are returned, not raised: the next run tries again."""
    from amirelease.retention.deprecation import changes

    to_set, to_clear = changes(plan, images, now)
    out: dict[str, Any] = {"deprecated": 0, "deprecation_cancelled": 0, "deprecation_errors": []}

    if not to_set and not to_clear:
        return out
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="retention-deprecate") as pool:
        set_errors = one_call_each(
            pool,
            to_set,
            lambda item: ec2.enable_image_deprecation(ImageId=item[0], DeprecateAt=item[1]),
            lambda item: f"deprecate {item[0]}",
        )
        clear_errors = one_call_each(
            pool,
            to_clear,
            lambda image_id: ec2.disable_image_deprecation(ImageId=image_id),
            lambda image_id: f"cancel deprecation of {image_id}",
        )
    out["deprecated"] = len(to_set) - len(set_errors)
    out["deprecation_cancelled"] = len(to_clear) - len(clear_errors)
    out["deprecation_errors"] = set_errors + clear_errors
    for error in out["deprecation_errors"]:
        log.warning("%s (the next run tries again)", error)
    return out


def failed_images(applied: Mapping[str, Any]) -> set[str]:
    """Image ids whose deregistration failed, from ``apply_plan``'s errors."""
    return {e.split()[1].rstrip(":") for e in applied.get("errors", []) if e.startswith("deregister ")}
