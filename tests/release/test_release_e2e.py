"""End-to-end releases through Airflow (dag.test) against the sandbox account and Vault."""

from __future__ import annotations

import json

import pytest

from tests.release.conftest import (
    clients,
    group_images,
    ledger_records,
    run_images,
    running_instances,
    task_states,
)

pytestmark = pytest.mark.e2e


def test_good_release_replaces_every_instance_and_records_it(release_env, release_dag):
    sb = release_env
    before = group_images(sb)
    # the smoke instance's SSM agent "registers" only after two tries, as on a booting host
    sb.faults.fail(
        "ssm:SendCommand", code="InvalidInstanceId", message="Instances not in a valid state for account", times=2
    )
    dr = release_dag.test(run_conf={"app": "demo-web", "version": "1.2.0", "notes": "e2e"})
    assert dr.state == "success", task_states(dr)

    images = run_images(sb, dr.run_id)
    assert len(images) == 1
    ami = images[0]
    tags = {t["Key"]: t["Value"] for t in ami["Tags"]}
    assert tags["App"] == "demo-web" and tags["Version"] == "1.2.0" and tags["ReleaseStatus"] == "released"
    assert tags["SourceAmi"] == sb.account["vendor_images"]["amazon-linux"]
    assert tags["RunList"] == "linux-base demo-web::default@2.3.1"
    assert tags["PipelineRun"] == dr.run_id and tags["BuiltBy"] == "ami-release-pipeline"
    assert group_images(sb) == {ami["ImageId"]} != before

    ec2, asg, s3 = clients(sb)
    lt = ec2.describe_launch_templates(LaunchTemplateNames=["demo-web"])["LaunchTemplates"][0]
    default = ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"], Versions=["$Default"])[
        "LaunchTemplateVersions"
    ][0]
    assert default["LaunchTemplateData"]["ImageId"] == ami["ImageId"]
    assert running_instances(sb, "ami-smoke-test") == [] and running_instances(sb, "ami-bake-builder") == []

    [record] = [r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id]
    assert record["outcome"] == "succeeded" and record["amis"] == {"us-east-1": ami["ImageId"]}
    assert record["cookbook_versions"] == {"linux-base": "1.4.0", "demo-web": "2.3.1"}
    assert record["verification"]["verified"] is True and record["refreshes"][0]["refresh_id"]
    # the lock is released
    assert "locks/demo-web.json" not in [
        o["Key"] for o in s3.list_objects_v2(Bucket="ami-release-ledger-123456789012").get("Contents", [])
    ]


def test_failed_smoke_test_changes_nothing_downstream(release_env, release_dag):
    sb = release_env
    sb.faults.fail_ssm("*", exit_code=7, stdout="", stderr="nginx: [emerg] bind() failed")
    ec2, asg, _ = clients(sb)
    lt_versions = len(ec2.describe_launch_template_versions(LaunchTemplateName="demo-web")["LaunchTemplateVersions"])
    before = group_images(sb)

    dr = release_dag.test(run_conf={"app": "demo-web", "version": "1.3.0"})
    states = task_states(dr)
    assert dr.state == "failed"
    assert states["smoke_test"] == "failed" and states["roll_out"] == "upstream_failed"
    assert (
        len(ec2.describe_launch_template_versions(LaunchTemplateName="demo-web")["LaunchTemplateVersions"])
        == lt_versions
    )
    assert asg.describe_instance_refreshes(AutoScalingGroupName="demo-web-asg")["InstanceRefreshes"] == []
    assert group_images(sb) == before
    assert running_instances(sb, "ami-smoke-test") == []
    [record] = [r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id]
    assert record["outcome"] == "failed" and record["failed_task"] == "smoke_test"
    assert "exit code 7, expected 0" in record["failure_reason"] and "bind() failed" in record["failure_reason"]
    tags = {t["Key"]: t["Value"] for t in run_images(sb, dr.run_id)[0]["Tags"]}
    assert tags["ReleaseStatus"] == "failed" and tags["FailedTask"] == "smoke_test"


def test_refresh_failing_midway_fails_the_wait_with_aws_reason(release_env, release_dag):
    sb = release_env
    sb.faults.fail_refresh_at("demo-web-asg", 50, reason="Instance i-0bad failed ELB health checks (injected)")
    dr = release_dag.test(run_conf={"app": "demo-web", "version": "1.4.0"})
    states = task_states(dr)
    assert dr.state == "failed" and states["wait_for_refresh[0]"] == "failed", states
    assert states["verify"] == "upstream_failed"
    [record] = [r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id]
    assert record["failed_task"] == "wait_for_refresh"
    assert "failed ELB health checks (injected)" in record["failure_reason"]
    assert "ended Rollback" in record["failure_reason"] or "ended Failed" in record["failure_reason"]


def test_bake_retry_reuses_the_ami_of_the_first_try(release_env, release_dag):
    sb = release_env
    # Packer succeeds, then the bake task's own post-build check (the builder safety net,
    # the only DescribeInstances that filters on this purpose after Packer) fails once.
    # (a non-retryable code: botocore would silently retry a 5xx)
    sb.faults.fail(
        "ec2:DescribeInstances", code="UnauthorizedOperation", match="ami-bake-builder", skip=1, times=1, status=403
    )
    dr = release_dag.test(run_conf={"app": "demo-web", "version": "1.5.0"})
    assert dr.state == "success", task_states(dr)
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id="bake.packer-chef-linux")
            .one()
        )
        assert ti.try_number == 2
    assert len(run_images(sb, dr.run_id)) == 1  # the retry built nothing new
    assert sb.request_counts().get("ec2:CreateImage") == 1


def test_secrets_never_leave_vault_unmasked(release_env, release_dag, vault_sandbox, capfd, caplog):
    sb = release_env
    secret_values = [v for values in vault_sandbox.seeded.values() for v in values.values() if v.startswith("sandbox-")]
    dr = release_dag.test(run_conf={"app": "demo-web", "version": "1.6.0"})
    assert dr.state == "success", task_states(dr)
    out, err = capfd.readouterr()
    logs = out + err + caplog.text
    assert "PKR_VAR_secrets" in logs  # the bake did run Packer with secrets in its environment
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        xcoms = [json.dumps(x.value, default=str) for x in session.query(XComModel).filter_by(run_id=dr.run_id)]
        rendered = [json.dumps(r.rendered_fields, default=str) for r in session.query(RTIF).filter_by(run_id=dr.run_id)]
    assert xcoms and rendered
    tags = json.dumps([i.get("Tags") for i in run_images(sb, dr.run_id)])
    records = json.dumps(ledger_records(sb))
    for secret in secret_values:
        for where, text in {
            "task logs": logs,
            "xcom": "\n".join(xcoms),
            "rendered fields": "\n".join(rendered),
            "AMI tags": tags,
            "ledger": records,
        }.items():
            assert secret not in text, f"secret leaked into {where}"
