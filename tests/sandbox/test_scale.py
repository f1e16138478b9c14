"""The tag index gives the same answers as moto's scan (small data), and is in place."""

from __future__ import annotations

from sandbox.aws import patches


def _snapshot(sb):
    ec2 = sb.client("ec2")
    out = {
        "images": ec2.describe_images(Owners=["self"])["Images"],
        "all_images": ec2.describe_images()["Images"],
        "by_tag": ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:App", "Values": ["demo-web"]}])["Images"],
        "tag_key": ec2.describe_images(Filters=[{"Name": "tag-key", "Values": ["RetainIndefinitely"]}])["Images"],
        "instances": ec2.describe_instances()["Reservations"],
        "instances_by_tag": ec2.describe_instances(
            Filters=[{"Name": "tag:aws:autoscaling:groupName", "Values": ["demo-web-asg"]}]
        )["Reservations"],
        "instances_by_image": ec2.describe_instances(
            Filters=[{"Name": "image-id", "Values": [sb.account["vendor_images"]["amazon-linux"]]}]
        )["Reservations"],
        "tags": ec2.describe_tags()["Tags"],
        "tags_of_one": ec2.describe_tags(
            Filters=[{"Name": "resource-id", "Values": [sb.account["aged_images"][2]["image_id"]]}]
        )["Tags"],
        "tags_wild": ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": ["ami-*"]}])["Tags"],
        "vpcs": ec2.describe_vpcs()["Vpcs"],
        "subnets": ec2.describe_subnets()["Subnets"],
        "snapshots": ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"],
    }
    return out


def test_tag_index_answers_like_moto(fleet):
    for n in range(20):
        fleet.create_image(
            f"eq-{n}", age_days=n, tags={"App": "demo-web" if n % 2 else "other", "N": str(n)}, in_use=n % 5 == 0
        )
    patched = _snapshot(fleet)
    patches.uninstall_fast_tags()
    try:
        unpatched = _snapshot(fleet)
    finally:
        patches.install_fast_tags()
    assert patched == unpatched
    assert len(patched["images"]) == len(fleet.account["aged_images"]) + 20
    assert patched["tags_of_one"] and patched["by_tag"]


def test_tag_index_installed(sandbox):
    from moto.ec2.models.tags import TagBackend

    assert TagBackend.describe_tags is patches._fast_describe_tags
