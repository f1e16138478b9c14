"""RollOutOperator alone against the sandbox, in seconds: the hand-offs it is given (plan, bake,
apply) as the pipeline would give them; the group and its launch template made by the test's own
clients. It starts one instance refresh per group to the applied version, with the catalog's
preferences; a retry attaches to that refresh instead of starting another; someone else's refresh
in progress is refused in words."""

from __future__ import annotations

import pytest

from amirelease.errors import RolloutError
from amirelease.handoffs import BakeResult, InfrastructureResult, RefreshHandle, RegionInfrastructure, from_xcom_list
from amirelease.operators.rollout import RollOutOperator
from tests.retention.conftest import make_group

GROUP = "demo-web-asg"  # the group demo-web's catalog entry targets


def _roll_out(plan, ami: str, template_id: str, version: int) -> list[RefreshHandle]:
    bake = BakeResult(release_id=plan.release_id, ami_id=ami, amis={"us-east-1": ami}, source_ami=ami, reused=False)
    infra = InfrastructureResult(
        regions=(
            RegionInfrastructure(
                region="us-east-1",
                state_key="terraform/demo-web/us-east-1/terraform.tfstate",
                plan=None,
                launch_template_id=template_id,
                launch_template_version=version,
                auto_scaling_groups=(GROUP,),
            ),
        )
    )
    op = RollOutOperator(
        task_id="roll_out",
        region_name="us-east-1",
        plan=plan.to_xcom(),
        bake=bake.to_xcom(),
        infrastructure=infra.to_xcom(),
    )
    return from_xcom_list(RefreshHandle, op.execute({}))


def _starts(sb) -> int:
    return sb.request_counts().get("autoscaling:StartInstanceRefresh", 0)


def test_it_starts_one_refresh_to_the_applied_version_and_a_retry_attaches(release_env, release_plan):
    sb = release_env
    sb.configure(refresh_batch_seconds=30.0)  # the refresh stays in progress while the test looks
    old = sb.account["vendor_images"]["amazon-linux"]
    fleet = make_group(sb, GROUP, old, desired=2, version="$Latest")
    ec2 = sb.client("ec2", internal=True)
    ec2.create_launch_template_version(
        LaunchTemplateId=fleet["template_id"], LaunchTemplateData={"ImageId": old, "InstanceType": "t3.small"}
    )
    sb.reset_request_counts()

    [handle] = _roll_out(release_plan(), old, fleet["template_id"], 2)
    assert (handle.auto_scaling_group, handle.launch_template_version, handle.timeout_minutes) == (GROUP, 2, 60)
    asg = sb.client("autoscaling", internal=True)
    [refresh] = asg.describe_instance_refreshes(AutoScalingGroupName=GROUP)["InstanceRefreshes"]
    assert refresh["InstanceRefreshId"] == handle.refresh_id
    assert refresh["DesiredConfiguration"]["LaunchTemplate"]["Version"] == "2"
    prefs = refresh["Preferences"]
    assert (prefs["MinHealthyPercentage"], prefs["InstanceWarmup"]) == (66, 60)
    assert prefs["CheckpointPercentages"] == [34, 100]
    assert prefs["AutoRollback"] is True and _starts(sb) == 1

    # a retry of the task (the refresh still in progress): the same refresh, no second start
    [again] = _roll_out(release_plan(), old, fleet["template_id"], 2)
    assert again.refresh_id == handle.refresh_id and _starts(sb) == 1

    # another release's version while that refresh runs: refused, naming it and the way out
    with pytest.raises(RolloutError, match=f"an instance refresh \\({handle.refresh_id}, ") as err:
        _roll_out(release_plan(), old, fleet["template_id"], 1)
    assert "cancel-instance-refresh --auto-scaling-group-name demo-web-asg" in str(err.value)
    assert _starts(sb) == 1
