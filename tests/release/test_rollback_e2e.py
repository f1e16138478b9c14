"""Rollback by roll-forward through Airflow against the sandbox: the old release's bundle is
baked again on today's base image and its Terraform module applied again."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from amirelease.aws import AwsClients
from amirelease.ledger import Ledger, utcnow
from amirelease.operators.rollback import resolve_target
from sandbox.gitsource import make_project_repo
from tests.conftest import REPO, provisioned_settings
from tests.release.conftest import (
    LEDGER_BUCKET,
    chef_run,
    clients,
    failure,
    group_images,
    ledger_records,
    load_dag,
    mutations,
    outcome,
    run_images,
    task_states,
)
from tests.release.invariant import ledger_tells_the_truth

# the tests that release on a shared demo-web fleet run in two groups ("fleet", "fleet-b": each on one
# worker, with its own fleet built once; tests/conftest.py fleet_env)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet")]


def _tags(image: dict) -> dict:
    return {t["Key"]: t["Value"] for t in image.get("Tags", [])}


def _instance_types(sb) -> set[str]:
    ec2, asg, _ = clients(sb)
    ids = [
        i["InstanceId"]
        for i in asg.describe_auto_scaling_groups(AutoScalingGroupNames=["demo-web-asg"])["AutoScalingGroups"][0][
            "Instances"
        ]
        if i["LifecycleState"] == "InService"
    ]
    return {i["InstanceType"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]}


def test_rollback_re_applies_the_old_release_exactly_as_a_new_ami(fleet_env, tmp_path, monkeypatch, capsys):
    """demo-web released from its own git repository at two tags, then rolled back after the
    first tag was moved: the rollback bakes the first release's recorded bundle (its commit),
    never what the tag names today. Baked through the sandbox's SSH builder: the cookbook tree
    chef-solo received is each tag's own, and the rollback's is the first tag's again."""
    sb = fleet_env
    provisioned_settings(monkeypatch, sb)
    since = utcnow()
    apps = tmp_path / "apps"
    repo = make_project_repo(tmp_path / "git", REPO / "include", "demo-web", apps)
    monkeypatch.setenv("AMI_RELEASE_APPS_DIR", str(apps))
    repo.tag("v3.0.0")
    commit_a = repo.git("rev-parse", "v3.0.0^{commit}")
    release = load_dag("ami_release")
    r1 = release.test(run_conf={"app": "demo-web", "version": "3.0.0", "git_ref": "v3.0.0", "notes": "A"})
    assert r1.state == "success", outcome(r1)
    assert _instance_types(sb) == {"t3.micro"}

    # B: the module's instance type and a cookbook both change in the app's repository
    definition = repo.definition()
    definition["infrastructure"]["variables"]["instance_type"] = "t3.small"
    repo.write_definition(definition)
    recipe = repo.project / "cookbooks" / "demo-web" / "recipes" / "default.rb"
    recipe.write_text(recipe.read_text() + "\n# B's change\n")
    commit_b = repo.commit("B: bigger instances")
    repo.tag("v3.1.0")
    r2 = release.test(run_conf={"app": "demo-web", "version": "3.1.0", "git_ref": "v3.1.0", "notes": "B"})
    assert r2.state == "success", outcome(r2)
    ami1, ami2 = run_images(sb, r1.run_id)[0], run_images(sb, r2.run_id)[0]
    assert group_images(sb) == {ami2["ImageId"]} and _instance_types(sb) == {"t3.small"}
    records = {r["pipeline_run"]: r for r in ledger_records(sb)}
    rec1, rec2 = records[r1.run_id], records[r2.run_id]
    assert rec1["bundle"]["sha256"] != rec2["bundle"]["sha256"]
    assert (rec1["source"]["commit"], rec2["source"]["commit"]) == (commit_a, commit_b)
    assert rec1["source"]["repository"] == repo.url and rec1["source"]["ref"] == "v3.0.0"
    assert _tags(ami1)["SourceCommit"] == commit_a and _tags(ami2)["SourceCommit"] == commit_b

    # the tag of A is moved onto B's commit: a rollback must not follow it
    repo.tag("v3.0.0", force=True)
    assert repo.git("rev-parse", "v3.0.0^{commit}") == commit_b

    rollback = load_dag("ami_rollback")
    rb = rollback.test(run_conf={"app": "demo-web", "reason": "3.1.0 leaks memory under load (INC-4711)"})
    assert rb.state == "success", outcome(rb)

    [ami3] = run_images(sb, rb.run_id)
    t3 = _tags(ami3)
    assert ami3["ImageId"] not in (ami1["ImageId"], ami2["ImageId"])  # a new AMI, not a swap
    assert t3["ReReleaseOf"] == rec1["release_id"] and t3["Version"] == "3.0.0"
    assert t3["BundleDigest"] == _tags(ami1)["BundleDigest"]  # A's cookbooks, template and module, not today's
    assert t3["SourceAmi"] == sb.account["vendor_images"]["amazon-linux"]  # today's vendor image
    assert group_images(sb) == {ami3["ImageId"]}
    assert _instance_types(sb) == {"t3.micro"}  # A's Terraform definition was applied again

    ec2, _, s3 = clients(sb)
    still = ec2.describe_images(ImageIds=[ami2["ImageId"]])["Images"][0]  # kept for forensics
    assert "ForensicHold" in _tags(still) and "INC-4711" in _tags(still)["ForensicHoldReason"]

    records = {r["pipeline_run"]: r for r in ledger_records(sb)}
    rec2, rec3 = records[r2.run_id], records[rb.run_id]
    assert rec2["rolled_back"]["by_release_id"] == rec3["release_id"] and "INC-4711" in rec2["rolled_back"]["reason"]
    assert rec2["rolled_back"]["by_run"] == rb.run_id and rec2["forensic_hold"]["reason"].startswith("3.1.0 leaks")
    assert rec3["kind"] == "re-release" and rec3["re_release_of"] == rec1["release_id"]
    assert rec3["source_bundle"] == {"release_id": rec1["release_id"], **rec1["bundle"]}
    assert rec3["bundle"]["sha256"] == rec1["bundle"]["sha256"]  # both digests in the record: the same inputs
    assert rec3["source"]["commit"] == commit_a and t3["SourceCommit"] == commit_a  # A's commit, not the moved tag
    assert rec3["outcome"] == "succeeded" and rec3["dag_id"] == "ami_rollback" and "INC-4711" in rec3["reason"]
    assert ledger_tells_the_truth(sb, since) == []  # 3.1.0, replaced by the re-release, is the one marked

    # what chef-solo received over SSH: A's cookbooks, then B's, then A's again for the rollback
    trees = [list(chef_run(sb, rec["release_id"])["cookbooks"].values())[0] for rec in (rec1, rec2, rec3)]
    assert trees[0]["sha256"] != trees[1]["sha256"] and trees[2]["sha256"] == trees[0]["sha256"]
    runs = [chef_run(sb, rec["release_id"])["node"] for rec in (rec1, rec2, rec3)]
    assert [n["demo_web"]["version"] for n in runs] == ["3.0.0", "3.1.0", "3.0.0"]
    assert [n["ami_release"]["commit"] for n in runs] == [commit_a, commit_b, commit_a]  # Chef is told the commit

    # Roll back again with an empty target: never 3.1.0 (rolled back) and never 3.0.0 (its re-release
    # is what runs now and is being rolled back); the newest release before them instead.
    resolved = resolve_target(
        AwsClients(region_name="us-east-1"),
        Ledger(s3, LEDGER_BUCKET),
        "demo-web",
        {"target": "", "reason": "still 5xx after the rollback"},
        logging.getLogger("test"),
    )
    assert resolved.current_release_id == rec3["release_id"]
    assert resolved.version not in ("3.1.0", "3.0.0"), resolved
    assert resolved.target_release_id not in (rec1["release_id"], rec2["release_id"], rec3["release_id"])
    # naming the rolled-back release needs the confirmation
    refused = rollback.test(run_conf={"app": "demo-web", "reason": "1234567890 (numbers only)", "target": "3.1.0"})
    states = task_states(refused)
    assert refused.state == "failed" and states["preflight"] == "failed"
    assert states["record"] == "upstream_failed", states  # refused once, clearly: record does not run
    assert "was rolled back" in failure(refused, "preflight") and "confirm" in failure(refused, "preflight")

    # Retention: once everything is 100 days old, the held AMI is kept, unused unheld ones are marked.
    from amirelease.operators.retention import AmiRetentionOperator

    sb.age_images([ami1["ImageId"], ami2["ImageId"], ami3["ImageId"]], days=100)
    now = datetime.now(UTC)
    AmiRetentionOperator(task_id="retention", region_name="us-east-1").execute(
        {"data_interval_end": now, "logical_date": now}
    )
    assert "maid_status" not in _tags(ec2.describe_images(ImageIds=[ami2["ImageId"]])["Images"][0])  # held
    # 3.0.0's own AMI is a rollback target of what runs now (protect_releases): AWS protects it
    # from deregistration, and retention keeps what AWS protects
    first = ec2.describe_images(ImageIds=[ami1["ImageId"]])["Images"][0]
    assert "maid_status" not in _tags(first) and first["DeregistrationProtection"].startswith("enabled"), first
    assert "maid_status" not in _tags(ec2.describe_images(ImageIds=[ami3["ImageId"]])["Images"][0])  # in use

    # The history CLI reads what the pipeline wrote.
    from amirelease import cli

    capsys.readouterr()
    assert cli.main(["history", "demo-web"]) == 0
    out = capsys.readouterr().out
    line2 = next(line for line in out.splitlines() if rec2["release_id"] in line)
    assert "rolled back" in line2 and "held" in line2


@pytest.mark.parametrize(
    "target,needle",
    [
        ("0", "no successful release '0'"),
        ("00", "no successful release '00'"),
        ("1.10", "no successful release '1.10'"),
    ],
)
def test_rollback_targets_are_text_and_refused_when_unknown(fleet_env, target, needle):
    """`0` once behaved as empty and `1.10` crashed: targets stay text; an unknown one is refused
    before anything changes, with the releases one could choose."""
    sb = fleet_env
    rb = load_dag("ami_rollback").test(run_conf={"app": "demo-web", "reason": "0123456789", "target": target})
    states = task_states(rb)
    assert rb.state == "failed" and states["preflight"] == "failed", states
    assert needle in failure(rb, "preflight")
    assert mutations(sb) == {}
