"""sandbox/aws/fast.py: the compiled describe rendering answers exactly like moto's serializer,
sees every mutation, and pages DescribeImages / DescribeInstances by MaxResults/NextToken."""

from __future__ import annotations

import contextlib

import pytest
from botocore.exceptions import ClientError

from sandbox.aws import fast

OTHER_OWNER = "137112412989"  # the Amazon Linux vendor images


@contextlib.contextmanager
def _fast(on: bool, verify: bool = False):
    old, old_verify = fast.set_enabled(on), fast.VERIFY
    fast.VERIFY = verify
    try:
        yield
    finally:
        fast.set_enabled(old)
        fast.VERIFY = old_verify


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _build_account(sb):
    """Images (own/vendor, tagged, escaped text, deregistered) and instances in several states."""
    ec2 = sb.client("ec2")
    own = [
        sb.create_image(
            f"fast-{n}",
            age_days=n * 3,
            in_use=n % 4 == 0,
            tags={"App": "web" if n % 2 else "api", "N": str(n), "Odd": "a&b<c>\"d'"},
            description=f"build {n} & <more>",
        )
        for n in range(12)
    ]
    ec2.deregister_image(ImageId=own[-1])
    ec2.create_tags(Resources=[own[0]], Tags=[{"Key": "RetainIndefinitely", "Value": "true"}])
    ec2.delete_tags(Resources=[own[1]], Tags=[{"Key": "N"}])
    ami = sb.account["vendor_images"]["amazon-linux"]
    subnet = sb.account["subnet_ids"][1]
    reservations = []
    for count, tags in [(1, {"Role": "solo"}), (3, {"Role": "trio", "App": "web"}), (5, {"Role": "five"})]:
        resp = ec2.run_instances(
            ImageId=own[2] if count == 3 else ami,
            MinCount=count,
            MaxCount=count,
            InstanceType="t3.small",
            SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        )
        reservations.append([i["InstanceId"] for i in resp["Instances"]])
    ec2.stop_instances(InstanceIds=[reservations[2][0], reservations[2][1]])
    ec2.terminate_instances(InstanceIds=[reservations[2][4]])
    ec2.create_tags(Resources=[reservations[1][0]], Tags=[{"Key": "Extra", "Value": "x<y"}])
    return own, reservations


def _queries(sb, own, reservations):
    ec2 = sb.client("ec2")
    ami = sb.account["vendor_images"]["amazon-linux"]
    lt_id = sb.account["launch_template"]["id"]
    calls = {
        "images_self": lambda: ec2.describe_images(Owners=["self"]),
        "images_all": lambda: ec2.describe_images(),
        "images_other": lambda: ec2.describe_images(Owners=[OTHER_OWNER]),
        "images_self_other": lambda: ec2.describe_images(Owners=["self", OTHER_OWNER]),
        "images_tag": lambda: ec2.describe_images(Filters=[{"Name": "tag:App", "Values": ["web"]}]),
        "images_tag_key": lambda: ec2.describe_images(Filters=[{"Name": "tag-key", "Values": ["RetainIndefinitely"]}]),
        "images_name": lambda: ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["fast-1*"]}]),
        "images_ids": lambda: ec2.describe_images(ImageIds=[own[0], own[3], own[-1]]),
        "images_image_id": lambda: ec2.describe_images(Filters=[{"Name": "image-id", "Values": [own[4], ami]}]),
        "images_owner_filter": lambda: ec2.describe_images(Filters=[{"Name": "owner-id", "Values": [OTHER_OWNER]}]),
        "instances": lambda: ec2.describe_instances(),
        "instances_big_page": lambda: ec2.describe_instances(MaxResults=1000),
        "instances_state": lambda: ec2.describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": ["stopped", "terminated"]}]
        ),
        "instances_tag": lambda: ec2.describe_instances(Filters=[{"Name": "tag:Role", "Values": ["trio", "solo"]}]),
        "instances_tag_key": lambda: ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": ["Extra"]}]),
        "instances_image": lambda: ec2.describe_instances(Filters=[{"Name": "image-id", "Values": [own[2]]}]),
        "instances_ids": lambda: ec2.describe_instances(InstanceIds=[reservations[1][1], reservations[2][3]]),
        "instances_asg": lambda: ec2.describe_instances(
            Filters=[{"Name": "tag:aws:autoscaling:groupName", "Values": ["demo-web-asg"]}]
        ),
        "snapshots": lambda: ec2.describe_snapshots(OwnerIds=["self"]),
        "snapshots_all": lambda: ec2.describe_snapshots(),
        "lt_versions": lambda: ec2.describe_launch_template_versions(LaunchTemplateId=lt_id),
    }
    return {name: _strip(call()) for name, call in calls.items()}


def test_fast_rendering_equals_moto(fleet):
    own, reservations = _build_account(fleet)
    with _fast(False):
        moto = _queries(fleet, own, reservations)
    # VERIFY renders every fast response with moto's serializer as well and fails on any byte difference
    with _fast(True, verify=True):
        quick = _queries(fleet, own, reservations)
    assert quick == moto
    assert len(moto["images_self"]["Images"]) == len(fleet.account["aged_images"]) + 11
    assert {t["Value"] for i in moto["images_tag"]["Images"] for t in i["Tags"] if t["Key"] == "Odd"} == {"a&b<c>\"d'"}
    assert sorted(i["State"]["Name"] for r in moto["instances_state"]["Reservations"] for i in r["Instances"]) == [
        "stopped",
        "stopped",
        "terminated",
    ]
    assert moto["instances_tag_key"]["Reservations"][0]["Instances"][0]["InstanceId"] == reservations[1][0]


def test_mutations_are_seen(sandbox):
    own, reservations = _build_account(sandbox)
    ec2 = sandbox.client("ec2")

    def snapshot():
        images = {i["ImageId"]: i for i in ec2.describe_images(Owners=["self"])["Images"]}
        instances = {i["InstanceId"]: i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
        return images, instances

    with _fast(True, verify=True):
        images, instances = snapshot()
        assert own[3] in images and own[-1] not in images
        ec2.create_tags(Resources=[own[3], reservations[0][0]], Tags=[{"Key": "New", "Value": "1"}])
        ec2.delete_tags(Resources=[own[4]], Tags=[{"Key": "App"}])
        ec2.deregister_image(ImageId=own[5])
        new_image = sandbox.create_image("fast-new", age_days=0, tags={"App": "web"})
        ec2.stop_instances(InstanceIds=[reservations[1][2]])
        ec2.terminate_instances(InstanceIds=[reservations[0][0]])
        run = ec2.run_instances(ImageId=own[3], MinCount=2, MaxCount=2, InstanceType="t3.micro")
        images, instances = snapshot()
    assert {"Key": "New", "Value": "1"} in images[own[3]]["Tags"]
    assert "App" not in {t["Key"] for t in images[own[4]]["Tags"]}
    assert own[5] not in images and new_image in images
    assert instances[reservations[1][2]]["State"]["Name"] == "stopped"
    assert instances[reservations[0][0]]["State"]["Name"] == "terminated"
    assert {"Key": "New", "Value": "1"} in instances[reservations[0][0]]["Tags"]
    assert all(instances[i["InstanceId"]]["ImageId"] == own[3] for i in run["Instances"])
    with _fast(False):
        assert snapshot() == (images, instances)


def _pages(ec2, op, key, **kwargs):
    pages, token = [], kwargs.pop("NextToken", None)
    while True:
        resp = getattr(ec2, op)(**kwargs, **({"NextToken": token} if token else {}))
        pages.append(resp[key])
        token = resp.get("NextToken")
        if not token:
            return pages


def test_describe_images_pages_by_max_results(sandbox):
    own, _ = _build_account(sandbox)
    ec2 = sandbox.client("ec2")
    everything = ec2.describe_images(Owners=["self"])["Images"]
    assert "NextToken" not in ec2.describe_images(Owners=["self"])
    pages = _pages(ec2, "describe_images", "Images", Owners=["self"], MaxResults=5)
    assert [len(p) for p in pages[:-1]] == [5] * (len(pages) - 1) and 1 <= len(pages[-1]) <= 5
    assert [i for p in pages for i in p] == everything
    paginated = [
        i
        for page in ec2.get_paginator("describe_images").paginate(
            Owners=["self"], Filters=[{"Name": "tag:App", "Values": ["web"]}], PaginationConfig={"PageSize": 2}
        )
        for i in page["Images"]
    ]
    assert paginated == ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:App", "Values": ["web"]}])["Images"]
    # an image deregistered between pages does not derail the listing
    first = ec2.describe_images(Owners=["self"], MaxResults=5)
    ec2.deregister_image(ImageId=first["Images"][-1]["ImageId"])
    rest = _pages(ec2, "describe_images", "Images", Owners=["self"], MaxResults=5, NextToken=first["NextToken"])
    assert [i["ImageId"] for i in first["Images"] + [i for p in rest for i in p]] == [i["ImageId"] for i in everything]
    with pytest.raises(ClientError) as err:
        ec2.describe_images(ImageIds=[own[0]], MaxResults=5)
    assert err.value.response["Error"]["Code"] == "InvalidParameterCombination"
    with pytest.raises(ClientError) as err:
        ec2.describe_images(Owners=["self"], MaxResults=5, NextToken="not-a-token")
    assert err.value.response["Error"]["Code"] == "InvalidNextToken"


def test_describe_instances_pages_by_instance(sandbox):
    _, reservations = _build_account(sandbox)
    ec2 = sandbox.client("ec2", internal=True)

    def flat(pages):
        return [(r["ReservationId"], i["InstanceId"]) for p in pages for r in p for i in r["Instances"]]

    everything = ec2.describe_instances()["Reservations"]
    pages = _pages(ec2, "describe_instances", "Reservations", MaxResults=5)
    assert all(sum(len(r["Instances"]) for r in p) == 5 for p in pages[:-1])
    assert flat(pages) == flat([everything])
    # a reservation split across pages keeps its id and fields
    by_id = {r["ReservationId"]: r for r in everything}
    for page in pages:
        for part in page:
            whole = by_id[part["ReservationId"]]
            assert {k: v for k, v in part.items() if k != "Instances"} == {
                k: v for k, v in whole.items() if k != "Instances"
            }
    filters = [
        {"Name": "instance-state-name", "Values": ["running", "pending"]},
        {"Name": "tag:Role", "Values": ["trio", "five"]},
    ]
    paged = flat(_pages(ec2, "describe_instances", "Reservations", Filters=filters, MaxResults=2))
    assert paged == flat([ec2.describe_instances(Filters=filters)["Reservations"]])
    assert len(paged) == 3 + 2
    # the paginator (botocore's PageSize -> MaxResults) sees every instance once
    paginated = [
        i["InstanceId"]
        for page in ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 6})
        for r in page["Reservations"]
        for i in r["Instances"]
    ]
    assert paginated == [i for _, i in flat([everything])]
    # an instance terminated between pages is still listed once, in place
    first = ec2.describe_instances(MaxResults=5)
    ec2.terminate_instances(InstanceIds=[first["Reservations"][-1]["Instances"][-1]["InstanceId"]])
    rest = _pages(ec2, "describe_instances", "Reservations", MaxResults=5, NextToken=first["NextToken"])
    assert [i for _, i in flat([first["Reservations"]] + rest)] == [i for _, i in flat([everything])]
    with pytest.raises(ClientError) as err:
        ec2.describe_instances(InstanceIds=[reservations[0][0]], MaxResults=5)
    assert err.value.response["Error"]["Code"] == "InvalidParameterCombination"


def test_fast_path_is_installed(sandbox):
    from moto.core.responses import ActionResult

    assert ActionResult.execute_result is fast._execute_result
    assert fast.enabled()
    ec2 = sandbox.client("ec2", internal=True)
    with _fast(True, verify=True):
        assert ec2.describe_images(Owners=["self"])["Images"]


def test_a_reset_account_that_brings_the_same_ids_back_in_another_order_still_pages_whole(sandbox):
    """moto's ids come from its random generator; seeded again after a reset (as the retention
    bench seeds each account it makes), the same instance ids come back in another order. The
    listing's positions must start afresh then: a 10,000-AMI account made after a 5,000-AMI one
    listed 8 fewer instances (the retention run stopped, rightly, on the incomplete listing)."""
    from moto.moto_api._internal import mock_random

    ami = sandbox.account["vendor_images"]["amazon-linux"]
    ec2 = sandbox.client("ec2", internal=True)

    def launch(seed: int) -> str:
        mock_random.seed(seed)
        return ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]

    def listed() -> list[str]:
        pages = ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 1})
        return [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]]

    first, second = launch(1), launch(2)
    assert [i for i in listed() if i in (first, second)] == [first, second]
    sandbox.reset()
    assert (launch(2), launch(1)) == (second, first)  # the same ids, in the other order
    everything = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert listed() == everything and {first, second} <= set(everything)
