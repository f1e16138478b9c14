"""Which images Auto Scaling groups and launch configurations still name (pure functions).

The operator fetches the raw API pages; these functions turn them into
``image id -> [readable reason]``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

TemplateKey = tuple[str, str]  # ("id", "lt-…") or ("name", "web")


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
                used[key][str(spec.get("Version") or "$Default")].add(name)
    return {k: dict(v) for k, v in used.items()}


def template_references(
    template: TemplateKey,
    specs: Mapping[str, set[str]],
    versions: Iterable[Mapping[str, Any]],
) -> dict[str, list[str]]:
    """Images in the fetched versions of one template (only the versions groups use were fetched)."""
    groups = ", ".join(sorted({g for names in specs.values() for g in names}))
    refs: dict[str, list[str]] = defaultdict(list)
    for version in versions:
        image_id = (version.get("LaunchTemplateData") or {}).get("ImageId")
        if not image_id:
            continue
        lt_id = version.get("LaunchTemplateId") or template[1]
        refs[image_id].append(
            f"referenced by launch template {lt_id} v{version.get('VersionNumber', '?')} (ASG {groups})"
        )
    return dict(refs)


def launch_configuration_references(
    configurations: Iterable[Mapping[str, Any]], groups: Iterable[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """Images named by any launch configuration (used by a group or not)."""
    users: dict[str, list[str]] = defaultdict(list)
    for group in groups:
        if group.get("LaunchConfigurationName"):
            users[group["LaunchConfigurationName"]].append(group.get("AutoScalingGroupName", "?"))
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
