"""Rollback by roll-forward through Airflow against the sandbox (issue: rollback + ledger)."""

from __future__ import annotations

from datetime import UTC

import pytest

from tests.release.conftest import clients, group_images, ledger_records, load_dag, mutations, run_images, task_states

pytestmark = pytest.mark.e2e


def _tags(image: dict) -> dict:
    return {t["Key"]: t["Value"] for t in image.get("Tags", [])}


def test_rollback_re_releases_the_last_good_release_as_a_new_ami(release_env, capsys):
    sb = release_env
    release = load_dag("ami_release")
    r1 = release.test(run_conf={"app": "demo-web", "version": "1.0.0", "notes": "first"})
    r2 = release.test(run_conf={"app": "demo-web", "version": "1.1.0", "notes": "second"})
    assert r1.state == r2.state == "success"
    ami1 = run_images(sb, r1.run_id)[0]
    ami2 = run_images(sb, r2.run_id)[0]
    assert group_images(sb) == {ami2["ImageId"]}

    rollback = load_dag("ami_rollback")
    rb = rollback.test(run_conf={"app": "demo-web", "reason": "1.1.0 leaks memory under load (INC-4711)"})
    assert rb.state == "success", task_states(rb)

    [ami3] = run_images(sb, rb.run_id)
    t3 = _tags(ami3)
    assert ami3["ImageId"] not in (ami1["ImageId"], ami2["ImageId"])  # a new AMI, not a swap
    assert t3["ReReleaseOf"] == _tags(ami1)["ReleaseId"] and t3["Version"] == "1.0.0"
    assert t3["RunList"] == _tags(ami1)["RunList"]
    assert group_images(sb) == {ami3["ImageId"]}

    ec2, _, _ = clients(sb)
    still = ec2.describe_images(ImageIds=[ami2["ImageId"]])["Images"][0]  # kept for forensics
    assert "ForensicHold" in _tags(still) and "INC-4711" in _tags(still)["ForensicHoldReason"]

    records = {r["pipeline_run"]: r for r in ledger_records(sb)}
    assert records[r1.run_id]["reason"] == "first" and records[r1.run_id]["forensic_hold"] is None
    assert records[r2.run_id]["forensic_hold"]["reason"].startswith("1.1.0 leaks memory")
    rec3 = records[rb.run_id]
    assert rec3["kind"] == "re-release" and rec3["re_release_of"] == records[r1.run_id]["release_id"]
    assert "INC-4711" in rec3["reason"] and rec3["outcome"] == "succeeded" and rec3["dag_id"] == "ami_rollback"

    # Retention, 100 days on: the held AMI is kept, the unused unheld 1.0.0 AMI is marked.
    from datetime import datetime, timedelta

    from amirelease.operators.retention import AmiRetentionOperator

    later = datetime.now(UTC) + timedelta(days=100)
    AmiRetentionOperator(task_id="retention", region_name="us-east-1").execute(
        {"data_interval_end": later, "logical_date": later}
    )
    assert "maid_status" not in _tags(ec2.describe_images(ImageIds=[ami2["ImageId"]])["Images"][0])
    assert "maid_status" in _tags(ec2.describe_images(ImageIds=[ami1["ImageId"]])["Images"][0])
    assert "maid_status" not in _tags(ec2.describe_images(ImageIds=[ami3["ImageId"]])["Images"][0])  # in use

    # The history CLI reads what the pipeline wrote; release-hold lifts the hold (tags + ledger).
    from amirelease import cli

    capsys.readouterr()
    assert cli.main(["history", "demo-web"]) == 0
    out = capsys.readouterr().out.splitlines()
    table = [
        line
        for line in out[next(i for i, line in enumerate(out) if line.startswith("started")) :]
        if "demo-web-" in line
    ]
    assert len(table) == 3
    assert "first" in table[0] and "held" in table[1] and "re-release of" in table[2] and "INC-4711" in table[2]
    rid2 = records[r2.run_id]["release_id"]
    assert cli.main(["release-hold", "demo-web", rid2, "--reason", "forensics done"]) == 0
    assert "ForensicHold" not in _tags(ec2.describe_images(ImageIds=[ami2["ImageId"]])["Images"][0])
    hold = next(r for r in ledger_records(sb) if r["pipeline_run"] == r2.run_id)["forensic_hold"]
    assert hold["release_reason"] == "forensics done" and hold["released_at"]


def test_rollback_without_an_earlier_release_is_refused_and_changes_nothing(release_env):
    sb = release_env
    rollback = load_dag("ami_rollback")
    rb = rollback.test(run_conf={"app": "demo-web", "reason": "nothing to go back to, on purpose"})
    states = task_states(rb)
    assert rb.state == "failed" and states["resolve_target"] == "failed", states
    assert mutations(sb) == {}
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        msg = session.query(XComModel).filter_by(run_id=rb.run_id, task_id="resolve_target", key="failure").one().value
    assert "no earlier successful release to roll back to" in msg and "release a fixed version" in msg
