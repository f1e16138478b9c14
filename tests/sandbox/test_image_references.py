"""sandbox/aws/image_references.py: DescribeImageReferences as the EC2 API reference says."""

from __future__ import annotations

from tests.sandbox.conftest import code_of


def _refs(ec2, image_ids, **kw):
    kw.setdefault("IncludeAllResourceTypes", True)
    return {
        (r["ImageId"], r["ResourceType"], r["Arn"].rsplit("/", 1)[-1])
        for r in ec2.describe_image_references(ImageIds=image_ids, **kw)["ImageReferences"]
    }


def test_instances_launch_templates_within_version_depth_and_ssm_parameters(sandbox, ec2):
    used = sandbox.create_image("used", age_days=90, in_use=True)
    old = sandbox.create_image("old", age_days=90)
    unused = sandbox.create_image("unused", age_days=90)
    lt = ec2.create_launch_template(LaunchTemplateName="refs", LaunchTemplateData={"ImageId": old})["LaunchTemplate"]
    for _ in range(3):  # versions 2-4 name another image: `old` is only in version 1
        ec2.create_launch_template_version(
            LaunchTemplateId=lt["LaunchTemplateId"], LaunchTemplateData={"ImageId": unused}
        )
    import boto3

    ssm = boto3.client(
        "ssm",
        endpoint_url=sandbox.endpoint_url,
        region_name=sandbox.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ssm.put_parameter(Name="/golden/web", Value=used, Type="String", DataType="aws:ec2:image")
    instance = ec2.describe_instances(Filters=[{"Name": "image-id", "Values": [used]}])["Reservations"][0]["Instances"][
        0
    ]["InstanceId"]
    found = _refs(ec2, [used, old, unused])
    assert (used, "ec2:Instance", instance) in found
    assert (used, "ssm:Parameter", "web") in found
    assert (old, "ec2:LaunchTemplate", lt["LaunchTemplateId"]) in found  # default depth 10
    assert (unused, "ec2:LaunchTemplate", lt["LaunchTemplateId"]) in found
    shallow = _refs(
        ec2,
        [old, unused],
        IncludeAllResourceTypes=False,
        ResourceTypes=[
            {
                "ResourceType": "ec2:LaunchTemplate",
                "ResourceTypeOptions": [{"OptionName": "version-depth", "OptionValues": ["3"]}],
            }
        ],
    )
    assert shallow == {(unused, "ec2:LaunchTemplate", lt["LaunchTemplateId"])}  # version 1 is 4th newest


def test_instance_state_option(sandbox, ec2):
    used = sandbox.create_image("used", age_days=90, in_use=True)
    instance = ec2.describe_instances(Filters=[{"Name": "image-id", "Values": [used]}])["Reservations"][0]["Instances"][
        0
    ]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[instance])
    assert (used, "ec2:Instance", instance) in _refs(ec2, [used])  # default: every state
    only_running = [
        {
            "ResourceType": "ec2:Instance",
            "ResourceTypeOptions": [{"OptionName": "state-name", "OptionValues": ["running"]}],
        }
    ]
    assert _refs(ec2, [used], IncludeAllResourceTypes=False, ResourceTypes=only_running) == set()


def test_limits_and_required_parameters(sandbox, ec2):
    images = [sandbox.create_image(f"i{n}", age_days=90) for n in range(11)]
    assert (
        code_of(lambda: ec2.describe_image_references(ImageIds=images, IncludeAllResourceTypes=True))
        == "InvalidParameterValue"
    )
    assert code_of(lambda: ec2.describe_image_references(ImageIds=images[:1])) == "MissingParameter"


def test_paging(sandbox, ec2):
    image = sandbox.create_image("many", age_days=90)
    for n in range(7):
        ec2.create_launch_template(LaunchTemplateName=f"t{n}", LaunchTemplateData={"ImageId": image})
    first = ec2.describe_image_references(ImageIds=[image], IncludeAllResourceTypes=True, MaxResults=5)
    assert len(first["ImageReferences"]) == 5 and first["NextToken"]
    pages = list(
        ec2.get_paginator("describe_image_references").paginate(
            ImageIds=[image], IncludeAllResourceTypes=True, PaginationConfig={"PageSize": 5}
        )
    )
    assert sum(len(p["ImageReferences"]) for p in pages) == 7
