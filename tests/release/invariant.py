"""The ledger tells what happened on the fleet (issue 26, item 4): a check run after scenarios
where releases and rollbacks meet. Pure over the ledger's records and what the fleet runs;
``ledger_tells_the_truth(sb)`` reads both from the sandbox."""

from __future__ import annotations

from typing import Any

REACHED_FLEET_TASKS = ("wait_for_refresh", "verify")  # a release that failed here had rolled out


def _went_live(r: dict[str, Any]) -> bool:
    """Did this release's AMI reach the fleet? Succeeded, or failed after its refresh started."""
    if r.get("outcome") == "succeeded":
        return True
    failed = str(r.get("failed_task") or "")
    return bool(r.get("refreshes")) and failed.split("[")[0] in REACHED_FLEET_TASKS


def story_problems(
    records: list[dict[str, Any]], fleet_amis: set[str], template_amis: set[str], since: str = ""
) -> list[str]:
    """What is untrue in the ledger's story of one app, in words; [] when it tells the truth.

    ``since`` (ISO time): judge only what happened from then on (the releases that went live
    after it, the release live at that moment, the rollback marks made after it), so a scenario
    is judged without the shared fleet's earlier history (fault-injection tests leave stories
    this check cannot tell, e.g. a refresh AWS rolled back).

    - the release that went live last is the one the fleet and the launch template run;
    - every release marked rolled back was replaced by the rollback's re-release that marked it:
      it is the release that was live just before that re-release went live;
    - every succeeded re-release of a rollback replaced a release of ours that is marked rolled
      back by it (the first release of an app replaces nothing).
    """
    problems: list[str] = []
    live_order = sorted((r for r in records if _went_live(r)), key=lambda r: str(r.get("finished_at") or ""))
    earlier = [r for r in live_order if str(r.get("finished_at") or "") < since]
    live_order = earlier[-1:] + [r for r in live_order if str(r.get("finished_at") or "") >= since]
    by_id = {str(r.get("release_id")): r for r in records}
    if live_order:
        last = live_order[-1]
        amis = set((last.get("amis") or {}).values())
        if fleet_amis and fleet_amis != amis:
            problems.append(
                f"the fleet runs {sorted(fleet_amis)}, but the last release to go live is "
                f"{last.get('version')} ({last.get('release_id')}) with {sorted(amis)}"
            )
        if template_amis and template_amis != amis:
            problems.append(
                f"the launch template names {sorted(template_amis)}, not {last.get('release_id')}'s {sorted(amis)}"
            )
    before = {str(r.get("release_id")): live_order[i - 1] if i else None for i, r in enumerate(live_order)}
    for r in records:
        rb = r.get("rolled_back")
        if not rb or str(rb.get("at") or "") < since:
            continue
        by = by_id.get(str(rb.get("by_release_id")))
        if by is not None and by.get("outcome") == "succeeded" and before.get(str(by.get("release_id"))) is not r:
            replaced = before.get(str(by.get("release_id")))
            what = f"{replaced.get('version')} ({replaced.get('release_id')})" if replaced else "nothing"
            problems.append(
                f"{r.get('version')} ({r.get('release_id')}) is marked rolled back by {by.get('release_id')}, which "
                f"replaced {what}"
            )
    for r in live_order:
        if r.get("kind") != "re-release" or r.get("dag_id") != "ami_rollback" or r.get("outcome") != "succeeded":
            continue
        replaced = before.get(str(r.get("release_id")))
        if replaced is not None and (replaced.get("rolled_back") or {}).get("by_release_id") != r.get("release_id"):
            problems.append(
                f"{r.get('release_id')} (a rollback's re-release) replaced {replaced.get('version')} "
                f"({replaced.get('release_id')}), which is not marked rolled back by it"
            )
    return problems


def ledger_tells_the_truth(sb, since: str = "", app: str = "demo-web", group: str = "demo-web-asg") -> list[str]:
    """story_problems over the sandbox's ledger, the group's in-service AMIs and its launch template."""
    from tests.release.conftest import clients, group_images, ledger_records

    ec2, asg, _ = clients(sb)
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]
    spec = g.get("LaunchTemplate") or (g.get("MixedInstancesPolicy") or {}).get("LaunchTemplate", {}).get(
        "LaunchTemplateSpecification", {}
    )
    template_amis: set[str] = set()
    if spec.get("LaunchTemplateId"):
        version = spec.get("Version") or "$Default"
        data = ec2.describe_launch_template_versions(LaunchTemplateId=spec["LaunchTemplateId"], Versions=[version])
        template_amis = {v["LaunchTemplateData"].get("ImageId") for v in data["LaunchTemplateVersions"]}
    return story_problems(ledger_records(sb, app), group_images(sb, group), template_amis, since)


def ami_problems(images: list[dict[str, Any]], records: list[dict[str, Any]], region: str = "us-east-1") -> list[str]:
    """No duplicate AMI (pure), in words; [] when there is one AMI per succeeded release record:
    every image that names a release (tag ReleaseId) names one that succeeded and is its recorded
    AMI (a refused or failed run keeps nothing it built), every succeeded release's AMI exists,
    and no release has two. ``images``: the app's images of ours in ``region`` (older images
    without a ReleaseId are no release's and are not judged)."""
    tag = {i["ImageId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])} for i in images}
    by_release: dict[str, list[str]] = {}
    for ami, tags in tag.items():
        if tags.get("ReleaseId"):  # a release's image (older images of the app are no release's)
            by_release.setdefault(tags["ReleaseId"], []).append(ami)
    problems = [
        f"release {rid} has {len(amis)} AMIs: {sorted(amis)}" for rid, amis in by_release.items() if len(amis) > 1
    ]
    succeeded = {
        str(r["release_id"]): {(r.get("amis") or {}).get(region)} for r in records if r.get("outcome") == "succeeded"
    }
    for rid, amis in by_release.items():
        if rid not in succeeded:
            problems.append(f"AMI {sorted(amis)} of {rid}, which has no succeeded release record")
        elif set(amis) != succeeded[rid]:
            problems.append(f"{rid}'s record names {sorted(succeeded[rid])}, AWS holds {sorted(amis)}")
    problems += [f"{rid}'s AMI {sorted(amis)} is gone" for rid, amis in succeeded.items() if rid not in by_release]
    return problems


def leftovers(sb: Any) -> dict[str, list[str]]:
    """What a bake or a smoke test could leave: their instances, Packer's security groups and key pairs."""
    from tests.release.conftest import clients

    ec2, _, _ = clients(sb)
    live = ec2.describe_instances(
        Filters=[
            {"Name": "tag:Purpose", "Values": ["ami-bake-builder", "ami-smoke-test"]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    groups = ec2.describe_security_groups()["SecurityGroups"]
    return {
        "builder/smoke instances": [i["InstanceId"] for r in live for i in r["Instances"]],
        "Packer security groups": [
            g["GroupId"]
            for g in groups
            if g["GroupName"].startswith(("packer", "ami-builder-"))
            or any(t["Key"] == "ReleaseId" for t in g.get("Tags", []))
        ],
        "Packer key pairs": [
            k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("packer")
        ],
    }
