"""Which images Auto Scaling groups still name (pure functions).

The AWS side fetches raw API pages: the groups, the ``$Latest``/``$Default`` versions of
every launch template in the account (one paged call), the numbered versions groups pin
(one call per such template), and the launch configurations groups use. These functions
turn them into ``image id -> [readable reason]``, each reason naming the template version
and exactly the groups that use that version.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
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


def pinned_needed(
    used: Mapping[TemplateKey, Mapping[str, set[str]]], alias: Mapping[TemplateKey, Mapping[str, Any]]
) -> dict[TemplateKey, list[str]]:
    """Numbered versions groups pin that the account-wide listing did not already return."""
    out: dict[TemplateKey, list[str]] = {}
    for key, specs in used.items():
        known = alias.get(key, {})
        numbers = sorted((s for s in specs if s not in ALIASES and s not in known), key=lambda s: (len(s), s))
        if numbers:
            out[key] = numbers
    return out


def template_references(
    used: Mapping[TemplateKey, Mapping[str, set[str]]],
    alias: Mapping[TemplateKey, Mapping[str, Mapping[str, Any]]],
    pinned: Mapping[TemplateKey, Iterable[Mapping[str, Any]]] | None = None,
) -> tuple[dict[str, list[str]], list[str]]:
    """(``image id -> [reasons]``, [warnings]) for the versions groups use.

    A reason names the template version and the groups on it:
    ``referenced by launch template lt-0abc v3 (ASG web-a, web-b)``. A template or version
    that does not exist references no image; it is returned as a warning.
    """
    by_version: dict[tuple[str, int], set[str]] = defaultdict(set)
    images: dict[tuple[str, int], str] = {}
    warnings: list[str] = []
    for key, specs in used.items():
        versions = dict(alias.get(key, {}))
        for v in (pinned or {}).get(key, ()):
            versions[str(v.get("VersionNumber"))] = v
        for spec, groups in specs.items():
            version = versions.get(spec)
            if version is None:
                what = "does not exist" if key not in alias and not versions else f"has no version {spec}"
                warnings.append(
                    f"launch template {key[1]} {what} (used by ASG {', '.join(sorted(groups))}); it references no image"
                )
                continue
            image_id = (version.get("LaunchTemplateData") or {}).get("ImageId")
            if not image_id:
                continue
            ident = (str(version.get("LaunchTemplateId") or key[1]), int(version.get("VersionNumber") or 0))
            by_version[ident] |= set(groups)
            images[ident] = image_id
    refs: dict[str, list[str]] = defaultdict(list)
    for ident in sorted(by_version):
        refs[images[ident]].append(
            f"referenced by launch template {ident[0]} v{ident[1]} (ASG {', '.join(sorted(by_version[ident]))})"
        )
    return dict(refs), warnings


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
