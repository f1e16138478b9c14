"""The pure side of resolving what groups reference: what to ask AWS directly, and the verdict."""

from __future__ import annotations

from amirelease.retention.references import direct_asks, index_alias_versions, listed_last, resolve_templates


def v(tid, number, image, default=False, name=None):
    return {
        "LaunchTemplateId": tid,
        "LaunchTemplateName": name or tid.replace("lt-", "n-"),
        "VersionNumber": number,
        "DefaultVersion": default,
        "LaunchTemplateData": {"ImageId": image},
    }


LISTING = [v("lt-a", 3, "ami-a3"), v("lt-a", 1, "ami-a1", default=True), v("lt-b", 2, "ami-b2", default=True)]
USED = {
    ("id", "lt-a"): {"$Latest": {"g1"}, "$Default": {"g2"}, "2": {"g3"}},
    ("id", "lt-b"): {"$Latest": {"g4"}},
    ("id", "lt-c"): {"$Default": {"g5"}},  # not in the listing at all
}


def test_direct_asks_only_what_the_listing_lacks():
    alias = index_alias_versions(LISTING)
    asks = direct_asks(
        {k: s for k, s in USED.items() if k[1] != "lt-c"}, alias, distrust_latest=False, last=listed_last(LISTING)
    )
    # lt-a: v2 was not listed; lt-b is listed last, so its $Latest may have been cut off
    assert asks == {("id", "lt-a"): ["2"], ("id", "lt-b"): ["$Latest"]}


def test_a_template_missing_from_the_listing_is_asked_and_latest_is_no_longer_trusted():
    alias = index_alias_versions(LISTING)
    distrust = any(key not in alias for key in USED)
    asks = direct_asks(USED, alias, distrust_latest=distrust, last=set())
    assert asks == {
        ("id", "lt-a"): ["$Latest", "2"],
        ("id", "lt-b"): ["$Latest"],
        ("id", "lt-c"): ["$Default"],
    }


def test_resolve_protects_what_was_found_warns_on_what_aws_says_is_gone_and_names_the_rest():
    alias = index_alias_versions(LISTING)
    asks = {("id", "lt-a"): ["$Latest", "2"], ("id", "lt-b"): ["$Latest"], ("id", "lt-c"): ["$Default"]}
    found = {("id", "lt-a"): {"$Latest": v("lt-a", 4, "ami-a4")}, ("id", "lt-b"): {"$Latest": v("lt-b", 2, "ami-b2")}}
    absent = {("id", "lt-a"): {"2"}}
    refs, warnings, unresolved = resolve_templates(USED, alias, asks, found, absent)
    # $Latest from the direct answer (v4), not the listing's highest number (v3)
    assert refs["ami-a4"] == ["referenced by launch template lt-a v4 (ASG g1)"]
    assert "ami-a3" not in refs
    assert refs["ami-a1"] == ["referenced by launch template lt-a v1 (ASG g2)"]
    assert refs["ami-b2"] == ["referenced by launch template lt-b v2 (ASG g4)"]
    assert warnings == [
        "launch template lt-a has no version 2 or does not exist (used by ASG g3); it references no image"
    ]
    assert unresolved == [
        "Auto Scaling group g5 uses launch template lt-c version $Default, which AWS returned neither in the "
        "listing of all templates nor when asked for it directly (check: aws ec2 describe-launch-template-versions "
        "--launch-template-id lt-c --versions '$Default')"
    ]
