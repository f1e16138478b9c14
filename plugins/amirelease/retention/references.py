"""Which images Auto Scaling groups still name (pure functions).

The AWS side fetches raw API pages: the groups, the ``$Latest``/``$Default`` versions of
every launch template in the account (one paged call), then, template by template, every
version spec a group uses that this listing lacks (see :func:`direct_asks`), and the launch
configurations groups use. These functions turn them into ``image id -> [readable reason]``,
each reason naming the template version and exactly the groups that use that version, and
name every reference that could not be resolved (the run stops on any).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

TemplateKey = tuple[str, str]  # ("id", "lt-…") or ("name", "web")
ALIASES = ("$Latest", "$Default")


def _template_key(spec: Mapping[str, Any]) -> TemplateKey | None:
    if spec.get("LaunchTemplateId"):
        return ("id", spec["LaunchTemplateId"])
    if spec.get("LaunchTemplateName"):
        return ("name", spec["LaunchTemplateName"])
    return None


def group_template_specs(groups: Iterable[Mapping[str, Any]]) -> dict[TemplateKey, dict[str, set[str]]]:
    """``{template: {version spec: {ASG names}}}`` for every launch template a group uses.

    Covers ``LaunchTemplate`` and ``MixedInstancesPolicy`` (its template and every
    override's template). A missing version means ``$Default``, as in the ASG API.
    """
    used: dict[TemplateKey, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for group in groups:
        name = group.get("AutoScalingGroupName", "?")
        specs = []
        if group.get("LaunchTemplate"):
            specs.append(group["LaunchTemplate"])
        mixed = (group.get("MixedInstancesPolicy") or {}).get("LaunchTemplate") or {}
        if mixed.get("LaunchTemplateSpecification"):
            specs.append(mixed["LaunchTemplateSpecification"])
        for override in mixed.get("Overrides") or []:
            if override.get("LaunchTemplateSpecification"):
                specs.append(override["LaunchTemplateSpecification"])
        for spec in specs:
            key = _template_key(spec)
            if key is not None:
                version = str(spec.get("Version") or "$Default")
                used[key][version if version in ALIASES else version.strip()].add(name)
    return {k: dict(v) for k, v in used.items()}


def index_alias_versions(versions: Iterable[Mapping[str, Any]]) -> dict[TemplateKey, dict[str, Mapping[str, Any]]]:
    """The account-wide ``$Latest``/``$Default`` listing, by template id and by name.

    ``$Latest`` is the highest version number listed for a template, ``$Default`` the one
    flagged ``DefaultVersion``; also every listed version by its number.
    """
    out: dict[TemplateKey, dict[str, Mapping[str, Any]]] = {}
    for v in versions:
        keys = [("id", v.get("LaunchTemplateId")), ("name", v.get("LaunchTemplateName"))]
        for key in keys:
            if not key[1]:
                continue
            entry = out.setdefault((key[0], str(key[1])), {})
            number = int(v.get("VersionNumber") or 0)
            entry[str(number)] = v
            latest = entry.get("$Latest")
            if latest is None or int(latest.get("VersionNumber") or 0) < number:
                entry["$Latest"] = v
            if v.get("DefaultVersion"):
                entry["$Default"] = v
    return out


def listed_last(versions: Sequence[Mapping[str, Any]]) -> set[TemplateKey]:
    """The keys (id and name) of the template a listing names last: the one a cut may have halved."""
    if not versions:
        return set()
    last = versions[-1]
    keys = {("id", str(last.get("LaunchTemplateId") or "")), ("name", str(last.get("LaunchTemplateName") or ""))}
    return {k for k in keys if k[1]}


def direct_asks(
    used: Mapping[TemplateKey, Mapping[str, set[str]]],
    alias: Mapping[TemplateKey, Mapping[str, Any]],
    *,
    distrust_latest: bool,
    last: Collection[TemplateKey] = (),
) -> dict[TemplateKey, list[str]]:
    """The version specs to ask AWS for template by template, because the listing lacks them.

    * a template the account-wide listing does not name at all: every spec groups use of it;
    * ``$Default`` when no listed version of the template is flagged default;
    * a numbered version the listing did not return;
    * ``$Latest`` of the template listed last (a cut may have left out its newest version),
      and of every template when ``distrust_latest`` (the listing is known or suspected to be
      incomplete: ``$Latest`` is the highest number *listed*, which a cut listing gets wrong).
    """
    out: dict[TemplateKey, list[str]] = {}
    for key, specs in used.items():
        known = alias.get(key)
        ask = []
        for spec in specs:
            if known is None or spec not in known:
                ask.append(spec)
            elif spec == "$Latest" and (distrust_latest or key in last):
                ask.append(spec)
        if ask:
            out[key] = sorted(ask, key=lambda s: (s not in ALIASES, len(s), s))
    return out


def _no_version_words(key: TemplateKey, spec: str, names: str) -> str:
    return (
        f"launch template {key[1]} has no version {spec} or does not exist (used by ASG {names}); "
        "it references no image"
    )


def _unresolved_words(key: TemplateKey, spec: str, names: str, number: int | None = None) -> str:
    """A version a group uses that AWS answered neither way, with the command a person checks it by."""
    how = "--launch-template-id" if key[0] == "id" else "--launch-template-name"
    which = f"version {spec} (number {number}), which AWS" if number is not None else f"version {spec}, which AWS"
    return (
        f"Auto Scaling group {names} uses launch template {key[1]} {which} "
        "returned neither in the listing of all templates nor when asked for it directly "
        f"(check: aws ec2 describe-launch-template-versions {how} {key[1]} --versions '{spec}')"
    )


def _version_refs(by_version: Mapping[Any, set[str]], images: Mapping[Any, str]) -> dict[str, list[str]]:
    """``{image id: ["referenced by launch template <id> v<n> (ASG …)", …]}`` from the resolved versions."""
    refs: dict[str, list[str]] = defaultdict(list)
    for ident in sorted(by_version):
        refs[images[ident]].append(
            f"referenced by launch template {ident[0]} v{ident[1]} (ASG {', '.join(sorted(by_version[ident]))})"
        )
    return dict(refs)


def resolve_templates(
    used: Mapping[TemplateKey, Mapping[str, set[str]]],
    alias: Mapping[TemplateKey, Mapping[str, Mapping[str, Any]]],
    asked: Mapping[TemplateKey, Iterable[str]],
    found: Mapping[TemplateKey, Mapping[str, Mapping[str, Any]]],
    absent: Mapping[TemplateKey, Iterable[str]],
) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """(``image id -> [reasons]``, [warnings], [unresolved]) for every version spec groups use.

    A spec that was asked directly is taken from ``found`` (the direct answers, by spec), any
    other from the listing. A spec AWS answered "does not exist" for references no image (a
    warning). A spec neither the listing nor a direct call returned is *unresolved*: the run
    must stop, each entry says which groups, which template and what to do.
    """
    by_version: dict[tuple[str, int], set[str]] = defaultdict(set)
    images: dict[tuple[str, int], str] = {}
    warnings: list[str] = []
    unresolved: list[str] = []
    for key, specs in used.items():
        direct = set(asked.get(key, ()))
        gone = set(absent.get(key, ()))
        for spec, groups in specs.items():
            version = (found.get(key, {}) if spec in direct else alias.get(key, {})).get(spec)
            names = ", ".join(sorted(groups))
            if version is None:
                if spec in gone:
                    warnings.append(_no_version_words(key, spec, names))
                else:
                    unresolved.append(_unresolved_words(key, spec, names))
                continue
            image_id = (version.get("LaunchTemplateData") or {}).get("ImageId")
            if not image_id:
                continue
            ident = (str(version.get("LaunchTemplateId") or key[1]), int(version.get("VersionNumber") or 0))
            by_version[ident] |= set(groups)
            images[ident] = image_id
    return _version_refs(by_version, images), warnings, unresolved


def group_launch_configurations(groups: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{launch configuration name: [ASG names]}`` for the configurations groups use."""
    users: dict[str, list[str]] = defaultdict(list)
    for group in groups:
        if group.get("LaunchConfigurationName"):
            users[group["LaunchConfigurationName"]].append(group.get("AutoScalingGroupName", "?"))
    return dict(users)


def launch_configuration_references(
    configurations: Iterable[Mapping[str, Any]], groups: Iterable[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """Images named by the given launch configurations, with the groups that use each."""
    users = group_launch_configurations(groups)
    refs: dict[str, list[str]] = defaultdict(list)
    for lc in configurations:
        if not lc.get("ImageId"):
            continue
        name = lc.get("LaunchConfigurationName", "?")
        by = f"ASG {', '.join(sorted(users[name]))}" if users.get(name) else "no ASG"
        refs[lc["ImageId"]].append(f"referenced by launch configuration {name} ({by})")
    return dict(refs)


def merge(*maps: Mapping[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for m in maps:
        for image_id, reasons in m.items():
            out[image_id].extend(reasons)
    return dict(out)


# ---------------------------------------------------------------- by number (the cross-check)

VersionKey = tuple[str, int]  # (launch template id, version number): immutable once created
Numbers = tuple[str, int, int]  # (launch template id, latest version number, default version number)


def spec_numbers(spec: str, numbers: Numbers) -> int | None:
    """The version number a spec means, per ``DescribeLaunchTemplates`` (None: not a number)."""
    if spec == "$Latest":
        return numbers[1]
    if spec == "$Default":
        return numbers[2]
    try:
        return int(spec)
    except ValueError:
        return None


def index_listed(versions: Iterable[Mapping[str, Any]]) -> dict[VersionKey, str]:
    """``{(template id, number): image id or ''}`` for every version a listing or a direct call returned."""
    out: dict[VersionKey, str] = {}
    for v in versions:
        if v.get("LaunchTemplateId") and v.get("VersionNumber") is not None:
            out[(str(v["LaunchTemplateId"]), int(v["VersionNumber"]))] = str(
                (v.get("LaunchTemplateData") or {}).get("ImageId") or ""
            )
    return out


def numbered_asks(
    used: Mapping[TemplateKey, Mapping[str, set[str]]],
    numbers: Mapping[TemplateKey, Numbers],
    known: Mapping[VersionKey, str],
) -> dict[str, list[int]]:
    """``{template id: [version numbers]}`` that groups use and neither the listing nor an
    earlier answer returned: the cross-check of the listing against the exact (template,
    version) pairs, by the numbers ``DescribeLaunchTemplates`` gives for ``$Latest``/``$Default``."""
    out: dict[str, set[int]] = defaultdict(set)
    for key, specs in used.items():
        if key not in numbers:
            continue
        tid = numbers[key][0]
        for spec in specs:
            n = spec_numbers(spec, numbers[key])
            if n is not None and (tid, n) not in known:
                out[tid].add(n)
    return {tid: sorted(ns) for tid, ns in out.items()}


def resolve_numbered(
    used: Mapping[TemplateKey, Mapping[str, set[str]]],
    numbers: Mapping[TemplateKey, Numbers],
    known: Mapping[VersionKey, str],
    absent: Collection[VersionKey],
) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """(``image id -> [reasons]``, [warnings], [unresolved]) for the templates ``numbers`` covers.

    Each spec is turned into its version number (``$Latest``/``$Default`` by
    ``DescribeLaunchTemplates``) and looked up in ``known`` (the listing, earlier runs' answers
    and the direct calls). A number AWS said does not exist (``absent``) references no image (a
    warning); one that is in none of them is *unresolved*: the run must stop. A version numbered
    above ``$Latest`` that ``known`` holds (made after ``DescribeLaunchTemplates`` answered, seen
    by the listing) is protected for a ``$Latest`` group too: it may be the latest by now.
    """
    numbers_of: dict[str, list[int]] = defaultdict(list)
    for tid_n in known:
        numbers_of[tid_n[0]].append(tid_n[1])
    by_version: dict[VersionKey, set[str]] = defaultdict(set)
    images: dict[VersionKey, str] = {}
    warnings: list[str] = []
    unresolved: list[str] = []
    for key, specs in used.items():
        if key not in numbers:
            continue
        tid = numbers[key][0]
        for spec, groups in specs.items():
            names = ", ".join(sorted(groups))
            n = spec_numbers(spec, numbers[key])
            if n is None or (tid, n) in absent:
                warnings.append(_no_version_words(key, spec, names))
                continue
            if (tid, n) not in known:
                unresolved.append(_unresolved_words(key, spec, names, number=n))
                continue
            hits = [(tid, n)]
            if spec == "$Latest":
                hits += [(tid, m) for m in sorted(numbers_of[tid]) if m > n]
            for hit in hits:
                image_id = known[hit]
                if image_id:
                    by_version[hit] |= set(groups)
                    images[hit] = image_id
    return _version_refs(by_version, images), warnings, unresolved
