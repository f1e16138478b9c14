"""sandbox/aws/autoscaling_limits.py: Auto Scaling DescribeAccountLimits counts the region's groups
and launch configurations as they are made and deleted, beside AWS's default quotas."""

from __future__ import annotations

from tests.sandbox.conftest import no_retry_client


def test_the_counts_follow_the_groups_and_configurations_of_the_region(sandbox):
    asg = no_retry_client(sandbox, "autoscaling")
    before = asg.describe_account_limits()
    assert (before["MaxNumberOfAutoScalingGroups"], before["MaxNumberOfLaunchConfigurations"]) == (500, 200)
    groups = len(asg.describe_auto_scaling_groups()["AutoScalingGroups"])
    assert before["NumberOfAutoScalingGroups"] == groups

    image = sandbox.create_image("limits", age_days=1)
    asg.create_launch_configuration(LaunchConfigurationName="limits-lc", ImageId=image, InstanceType="t3.micro")
    for n in range(3):
        asg.create_auto_scaling_group(
            AutoScalingGroupName=f"limits-{n}",
            LaunchConfigurationName="limits-lc",
            MinSize=0,
            MaxSize=1,
            DesiredCapacity=0,
            VPCZoneIdentifier=",".join(sandbox.account["subnet_ids"]),
        )
    asg.delete_auto_scaling_group(AutoScalingGroupName="limits-2", ForceDelete=True)
    after = asg.describe_account_limits()
    assert after["NumberOfAutoScalingGroups"] == groups + 2
    assert after["NumberOfLaunchConfigurations"] == before["NumberOfLaunchConfigurations"] + 1
    other = sandbox.client("autoscaling", region="us-west-2")  # a region counts its own
    assert other.describe_account_limits()["NumberOfAutoScalingGroups"] == 0
