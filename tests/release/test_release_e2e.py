"""End-to-end releases through Airflow (dag.test) against the sandbox account and Vault."""
from __future__ import annotations

import boto3
import pytest

pytestmark = pytest.mark.e2e


def _dag():
    from airflow.models.dagbag import DagBag  # noqa: F401  (airflow import after env set)
    import importlib, sys

    sys.modules.pop("ami_release", None)
    import ami_release  # dags/ on sys.path via the fixture below

    return importlib.reload(ami_release).dag


@pytest.fixture(autouse=True)
def _dags_on_path(monkeypatch):
    from tests.conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "dags"))


def test_good_release(release_env):
    sb = release_env
    dag = _dag()
    dr = dag.test(run_conf={"app": "demo-web", "version": "1.0.0"})
    assert dr.state == "success", dr.state
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=sb.endpoint_url)
    asg = boto3.client("autoscaling", region_name="us-east-1", endpoint_url=sb.endpoint_url)
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:PipelineRun", "Values": [dr.run_id]}])["Images"]
    assert len(images) == 1
    ami = images[0]["ImageId"]
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["demo-web-asg"])["AutoScalingGroups"][0]
    ids = [i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"]
    assert ids
    got = {i["ImageId"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]}
    assert got == {ami}
