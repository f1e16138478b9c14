"""End-to-end releases through Airflow (dag.test) against the sandbox account, Vault and real
Packer and Terraform, on an account where demo-web already runs (the `fleet_env` fixture)."""

from __future__ import annotations

import json

import pytest

from tests.release.conftest import (
    clients,
    failure,
    group_images,
    ledger_records,
    mutations,
    outcome,
    run_images,
    running_instances,
    task_states,
)

# the tests that release on a shared demo-web fleet run in two groups ("fleet", "fleet-b": each on one
# worker, with its own fleet built once; tests/conftest.py fleet_env)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet")]

STATE_KEY = "terraform/demo-web/us-east-1/terraform.tfstate"
LEDGER = "ami-release-ledger-123456789012"


def _lt_latest(sb):
    ec2, _, _ = clients(sb)
    lt = ec2.describe_launch_templates(LaunchTemplateNames=["demo-web"])["LaunchTemplates"][0]
    return lt, ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"], Versions=["$Latest"])[
        "LaunchTemplateVersions"
    ][0]


def test_good_release_applies_the_module_refreshes_and_records_it(fleet_env, release_dag, vault_sandbox, capfd, caplog):
    """One release through every task, with two hiccups on the way (the smoke instance's SSM
    agent registers late; the bake's post-build check fails once, so the bake is retried):
    what it builds, applies, rolls out and records, and where the secrets do not end up."""
    sb = fleet_env
    before = group_images(sb)
    # the smoke instance's SSM agent "registers" only after two tries, as on a booting host
    sb.faults.fail("ssm:SendCommand", code="InvalidInstanceId", message="Instances not in a valid state", times=2)
    # Packer succeeds, then the bake task's own post-build check (the builder safety net, the only
    # DescribeInstances filtering on this purpose after Packer) fails once: the task is retried.
    # (a non-retryable code: botocore would silently retry a 5xx)
    sb.faults.fail(
        "ec2:DescribeInstances", code="UnauthorizedOperation", match="ami-bake-builder", skip=1, times=1, status=403
    )
    keys_before = sb.access_keys()
    dr = release_dag.test(run_conf={"app": "demo-web", "version": "1.2.0", "git_ref": "1.10", "notes": "0"})
    assert dr.state == "success", outcome(dr)
    out, err = capfd.readouterr()

    # Packer and Terraform ran as demo-web's own role (catalog aws.role_arn), assumed with the
    # session tag App=demo-web, never with the workers' credentials (the connection's "testing")
    role = sb.account["app_roles"]["demo-web"]
    sessions = sb.assumed_roles()
    for sender in ("packer", "terraform"):
        used = set()
        for (who, call), keys in sb.access_keys().items():
            if who == sender:
                used |= keys - keys_before.get((who, call), set())
        assert used and {sessions.get(k) for k in used} == {role}, (sender, used)
    asked = [r for r in sb.assume_requests() if r.get("RoleArn") == role]
    assert asked and all(
        (r.get("Tags.member.1.Key"), r.get("Tags.member.1.Value")) == ("App", "demo-web") for r in asked
    )
    logs = out + err + caplog.text
    assert "roll_forward skipped: No automatic rollback: the release succeeded" in logs
    assert "next_stage skipped: No next stage: demo-web has no stages" in logs

    [ami] = run_images(sb, dr.run_id)  # the retry built nothing new
    tags = {t["Key"]: t["Value"] for t in ami["Tags"]}
    assert tags["App"] == "demo-web" and tags["Version"] == "1.2.0" and tags["ReleaseStatus"] == "released"
    assert tags["SourceAmi"] == sb.account["vendor_images"]["amazon-linux"]
    assert tags["RunList"] == "linux-base demo-web::default@2.3.1"
    assert tags["PipelineRun"] == dr.run_id and tags["BuiltBy"] == "ami-release-pipeline"
    # AWS guards what runs (amirelease/protection.py): the live release's AMI is protected from
    # deregistration, so a person's `aws ec2 deregister-image` on it is refused by the API
    assert ami["DeregistrationProtection"] == "enabled-with-cooldown"
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="OperationNotPermitted"):
        sb.client("ec2").deregister_image(ImageId=ami["ImageId"])
    assert tags["GitRef"] == "1.10"  # typed as text, kept as text (not 1.1)
    assert group_images(sb) == {ami["ImageId"]} != before

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        bake = session.query(TaskInstance).filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id="bake").one()
        assert bake.try_number == 2
        # the cluster policy (amirelease/routing.py) put the toolchain's tasks on its queue, no other task
        queues = {ti.task_id: ti.queue for ti in session.query(TaskInstance).filter_by(run_id=dr.run_id)}
        toolchain = {"check_infrastructure", "bake", "apply_infrastructure"}
        assert {queues[t] for t in toolchain} == {"packer-chef-linux"}, queues
        assert {q for t, q in queues.items() if t not in toolchain} == {"default"}, queues
        # record decided for the teardowns after it: nothing to do, so skipped without a task start
        after = session.query(TaskInstance).filter(
            TaskInstance.run_id == dr.run_id, TaskInstance.task_id.in_(["next_stage", "roll_forward"])
        )
        assert sorted((t.task_id, t.state, t.try_number) for t in after) == [
            ("next_stage", "skipped", 0),
            ("roll_forward", "skipped", 0),
        ]
    assert sb.request_counts().get("ec2:CreateImage") == 1
    # the builder security group of the first try was removed (by the first try or the retry)
    assert mutations(sb).get("ec2:CreateSecurityGroup") == mutations(sb).get("ec2:DeleteSecurityGroup") == 1

    # Terraform owns the launch template: the apply made its new version with the new AMI
    lt, latest = _lt_latest(sb)
    assert latest["LaunchTemplateData"]["ImageId"] == ami["ImageId"]
    assert lt["DefaultVersionNumber"] == lt["LatestVersionNumber"] == latest["VersionNumber"]
    rid = tags["ReleaseId"]
    assert running_instances(sb, "ami-smoke-test", rid) == [] and running_instances(sb, "ami-bake-builder", rid) == []

    [record] = [r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id]
    assert record["outcome"] == "succeeded" and record["amis"] == {"us-east-1": ami["ImageId"]}
    assert record["git_ref"] == "1.10" and record["reason"] == "0"
    assert record["cookbook_versions"] == {"linux-base": "1.4.0", "demo-web": "2.3.1"}
    assert record["verification"]["verified"] is True and record["refreshes"][0]["refresh_id"]
    [applied] = record["infrastructure"]["applied"]
    plan = applied["plan"]
    # the next release of an existing fleet changes the image only: nothing added, nothing destroyed
    assert plan["add"] == 0 and plan["destroy"] == 0 and plan["change"] >= 1, plan
    changed = {c["address"] for c in plan["changes"] if c["action"] != "noop"}
    assert "aws_launch_template.web" in changed and not [c for c in plan["changes"] if c["action"] == "create"]
    assert record["launch_template_versions"][0]["launch_template_version"] == latest["VersionNumber"]
    assert record["bundle"]["sha256"] and tags["BundleDigest"] == record["bundle"]["sha256"][:32]
    _, asg, s3 = clients(sb)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=LEDGER).get("Contents", [])]
    assert record["bundle"]["key"] in keys
    assert "locks/demo-web.json" not in keys  # the lock is released
    assert not [k for k in keys if k.endswith(".tflock")]  # and so is Terraform's

    # how long each step took (phases.py): each step's own report, in the pipeline's order; the
    # refresh from AWS's own times; the tools' seconds where the step ran them
    phases = {p["step"]: p for p in record["phases"]}
    assert [p["step"] for p in record["phases"]] == [
        "preflight", "release_lock", "check_infrastructure", "bake", "smoke_test", "apply_infrastructure",
        "roll_out", "wait_for_refresh", "verify", "record",
    ]  # fmt: skip
    assert "tools" not in phases["bake"]  # the phase is the last try's: the retry reused the AMI, no Packer
    assert "terraform plan" in phases["check_infrastructure"]["tools"]
    assert "terraform apply" in phases["apply_infrastructure"]["tools"]
    # the apply plans beside the smoke test, and its phase starts at its first poke. dag.test runs one task
    # at a time, picking among the ready ones: when it picked the apply first, that first poke (the plan)
    # came before the smoke test ended; when it picked the smoke test first (seen under load), the
    # apply's one poke came after it
    first = logs.index("[DAG TEST] starting task_id=apply_infrastructure")
    beside = first < logs.index("[DAG TEST] starting task_id=smoke_test")
    assert (phases["apply_infrastructure"]["started_at"] < phases["smoke_test"]["ended_at"]) == beside, (
        beside,
        phases,
    )
    [refresh] = asg.describe_instance_refreshes(
        AutoScalingGroupName="demo-web-asg", InstanceRefreshIds=[record["refreshes"][0]["refresh_id"]]
    )["InstanceRefreshes"]
    aws_seconds = (refresh["EndTime"] - refresh["StartTime"]).total_seconds()
    assert phases["wait_for_refresh"]["groups"][0]["auto_scaling_group"] == "demo-web-asg"
    assert abs(phases["wait_for_refresh"]["seconds"] - aws_seconds) < 0.1, (phases["wait_for_refresh"], aws_seconds)
    assert phases["preflight"]["ended_at"] <= phases["bake"]["started_at"] < phases["smoke_test"]["started_at"]
    assert phases["verify"]["ended_at"] <= phases["record"]["started_at"] <= record["finished_at"].replace("Z", ".999Z")

    # The secrets: nowhere but in the tools' environments, and yet in AWS where the module puts one
    secret_values = [v for values in vault_sandbox.seeded.values() for v in values.values() if v.startswith("sandbox-")]
    terraform_secret = vault_sandbox.seeded["ami-pipeline/demo-web/runtime"]["api_token"]
    assert terraform_secret in secret_values
    assert "PKR_VAR_secrets" in logs  # the bake did run Packer with secrets in its environment
    assert "terraform | $ terraform apply" in logs  # and Terraform with the module's secret
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.xcom import XComModel

    with create_session() as session:
        xcoms = [json.dumps(x.value, default=str) for x in session.query(XComModel).filter_by(run_id=dr.run_id)]
        rendered = [json.dumps(r.rendered_fields, default=str) for r in session.query(RTIF).filter_by(run_id=dr.run_id)]
    assert xcoms and rendered
    state = s3.get_object(Bucket=LEDGER, Key=STATE_KEY)
    state_text = state["Body"].read().decode()
    assert state["ServerSideEncryption"] == "AES256"  # the state object is encrypted at rest
    for secret in secret_values:
        for where, text in {
            "task logs": logs,
            "xcom": "\n".join(xcoms),
            "rendered fields": "\n".join(rendered),
            "AMI tags": json.dumps(ami.get("Tags")),
            "ledger": json.dumps(ledger_records(sb)),
            "Terraform state": state_text,  # write-only argument + ephemeral variable: not even there
        }.items():
            assert secret not in text, f"secret leaked into {where}"
    ssm = sb.client("ssm")
    assert ssm.get_parameter(Name="/demo-web/api-token", WithDecryption=True)["Parameter"]["Value"] == terraform_secret


def test_failed_smoke_test_changes_nothing_downstream(fleet_env, release_dag):
    sb = fleet_env
    sb.faults.fail_ssm("*", exit_code=7, stdout="", stderr="nginx: [emerg] bind() failed")
    _, asg, _ = clients(sb)
    _, latest_before = _lt_latest(sb)
    refreshes_before = len(asg.describe_instance_refreshes(AutoScalingGroupName="demo-web-asg")["InstanceRefreshes"])
    before = group_images(sb)

    dr = release_dag.test(run_conf={"app": "demo-web", "version": "1.3.0"})
    states = task_states(dr)
    assert dr.state == "failed"
    # the apply planned beside the smoke test (or found it failed first) and applied nothing: skipped
    assert states["smoke_test"] == "failed" and states["apply_infrastructure"] == "skipped", states
    assert states["roll_out"] == "upstream_failed", states
    assert states["record"] == "success"  # it recorded the failure; the run's state is the release's
    assert _lt_latest(sb)[1]["VersionNumber"] == latest_before["VersionNumber"]  # Terraform never applied
    assert len(asg.describe_instance_refreshes(AutoScalingGroupName="demo-web-asg")["InstanceRefreshes"]) == (
        refreshes_before
    )
    assert group_images(sb) == before
    assert running_instances(sb, "ami-smoke-test") == []
    [record] = [r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id]
    assert record["outcome"] == "failed" and record["failed_task"] == "smoke_test"
    assert "exit code 7, expected 0" in record["failure_reason"] and "bind() failed" in record["failure_reason"]
    assert record["infrastructure"]["applied"] == [] and record["infrastructure"]["check"]["regions"]
    # a failed step reports its time too; a step that never ran has none
    steps = [p["step"] for p in record["phases"]]
    assert "smoke_test" in steps and "roll_out" not in steps and "wait_for_refresh" not in steps, steps
    [bake] = [p for p in record["phases"] if p["step"] == "bake"]
    assert 0 < bake["tools"]["packer"] <= bake["seconds"], bake
    tags = {t["Key"]: t["Value"] for t in run_images(sb, dr.run_id)[0]["Tags"]}
    assert tags["ReleaseStatus"] == "failed" and tags["FailedTask"] == "smoke_test"


def test_refresh_failing_midway_fails_the_wait_with_aws_reason(fleet_env, release_dag):
    sb = fleet_env
    sb.faults.fail_refresh_at("demo-web-asg", 50, reason="Instance i-0bad failed ELB health checks (injected)")
    dr = release_dag.test(run_conf={"app": "demo-web", "version": "1.4.0"})
    states = task_states(dr)
    assert dr.state == "failed" and states["wait_for_refresh[0]"] == "failed", states
    assert states["verify"] == "upstream_failed"
    [record] = [r for r in ledger_records(sb) if r["pipeline_run"] == dr.run_id]
    assert record["failed_task"] == "wait_for_refresh"
    assert "failed ELB health checks (injected)" in record["failure_reason"]
    assert "ended Rollback" in record["failure_reason"] or "ended Failed" in record["failure_reason"]
    # demo-web opts in to automatic rollback (include/apps/demo-web.yaml): the failed release
    # started exactly one ami_rollback (issue 20 item 3)
    assert states["roll_forward"] == "success", states
    assert record["automatic_rollback"]["run_id"] == f"rollback_demo-web__auto_{record['release_id']}"
    _rolls_forward_to_the_last_good_release(sb, record)


def _rolls_forward_to_the_last_good_release(sb, failed):
    """The run the failed release started: queued in Airflow with the failed release as
    'replaces' and an empty target, run here as the scheduler would. It re-releases the last
    good release although the fleet already runs that release's AMI (AWS rolled the refresh
    back), marks and holds the failed release (not the one the fleet runs), and the ledger's
    story holds. A rollback never starts another: it has no roll_forward task."""
    from airflow.models import DagRun

    from amirelease.ledger import pick_rollback_target, utcnow
    from tests.release.conftest import load_dag
    from tests.release.invariant import ledger_tells_the_truth

    good = pick_rollback_target(ledger_records(sb), failed["release_id"])
    [queued] = DagRun.find(dag_id="ami_rollback", run_id=failed["automatic_rollback"]["run_id"])
    conf = queued.conf
    assert conf["replaces"] == failed["release_id"] and conf["target"] is None and conf["forensic_hold"], conf
    assert conf["reason"].startswith(f"automatic: demo-web {failed['version']} ({failed['release_id']}) failed at")
    assert failed["pipeline_run"] in conf["reason"] and "failed ELB health checks (injected)" in conf["reason"]

    since = utcnow()
    rollback = load_dag("ami_rollback")
    assert "roll_forward" not in rollback.task_ids and "roll_forward" in load_dag("ami_release").task_ids
    # 'replaces' must name the app's newest release: anything older is refused before anything is built
    stale = rollback.test(run_conf={**conf, "replaces": good["release_id"]})
    assert stale.state == "failed" and task_states(stale)["preflight"] == "failed"
    assert f"started after {good['release_id']}, which this rollback was asked to replace" in failure(
        stale, "preflight"
    )
    assert not [r for r in ledger_records(sb) if r["pipeline_run"] == stale.run_id and not r.get("nothing_built")]
    dr = rollback.test(run_conf=conf)
    assert dr.state == "success", outcome(dr)
    after = ledger_records(sb)
    [re_release] = [r for r in after if r["pipeline_run"] == dr.run_id]
    assert re_release["re_release_of"] == good["release_id"] and re_release["version"] == good["version"]
    marked = next(r for r in after if r["release_id"] == failed["release_id"])
    assert marked["rolled_back"]["by_release_id"] == re_release["release_id"], marked.get("rolled_back")
    assert marked["forensic_hold"]["amis"] == failed["amis"]
    assert not next(r for r in after if r["release_id"] == good["release_id"]).get("rolled_back")  # the good one
    held = run_images(sb, failed["pipeline_run"])[0]
    assert {t["Key"] for t in held["Tags"]} >= {"ForensicHold", "ForensicHoldReason"}
    assert group_images(sb) == set(re_release["amis"].values())
    assert ledger_tells_the_truth(sb, since) == []
