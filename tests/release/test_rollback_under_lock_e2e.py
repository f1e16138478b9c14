"""A rollback decides under the release lock (issue 26, item 3), through Airflow against the
sandbox: the issue's scenario, replayed. A release (A) holds demo-web's lock and is baking; a
rollback is triggered, resolves "roll back what runs now" at once, then waits at release_lock.
A goes live. Once the rollback holds the lock, mark_rolled_back sees that what runs now is not
what it was asked to roll back, and stops: nothing marked, nothing held, nothing built."""

from __future__ import annotations

import json
import logging

import pytest

from amirelease.aws import AwsClients
from amirelease.handoffs import RollbackTarget
from amirelease.ledger import Ledger, utcnow
from amirelease.operators.rollback import MarkRolledBackOperator, resolve_target
from tests.release.conftest import (
    LEDGER_BUCKET,
    ReleaseHoldingTheLock,
    clients,
    failure,
    group_images,
    ledger_records,
    load_dag,
    outcome,
    run_images,
    task_states,
)
from tests.release.invariant import ledger_tells_the_truth
from tests.release.test_rollback_e2e import _tags

# the tests that release on a shared demo-web fleet run in two groups ("fleet", "fleet-b": each on one
# worker, with its own fleet built once; tests/conftest.py fleet_env)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("fleet-b")]


def _images(sb) -> list[dict]:
    ec2, _, _ = clients(sb)
    return ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:App", "Values": ["demo-web"]}])["Images"]


def test_a_release_that_went_live_while_the_rollback_waited_stops_the_rollback(fleet_env, tmp_path):
    sb = fleet_env
    _, _, s3 = clients(sb)
    if len({r["version"] for r in ledger_records(sb) if r["outcome"] == "succeeded"}) < 2:  # something to go back to
        first = load_dag("ami_release").test(run_conf={"app": "demo-web", "version": "9.0.0"})
        assert first.state == "success", outcome(first)
    since = utcnow()
    before = {r["release_id"]: r for r in ledger_records(sb)}
    holds_before = {i["ImageId"] for i in _images(sb) if "ForensicHold" in _tags(i)}

    conf = {"app": "demo-web", "version": "9.1.0", "notes": "A goes live while the rollback waits"}
    with ReleaseHoldingTheLock(s3, tmp_path, conf) as a:
        live_when_asked = group_images(sb)
        rb = load_dag("ami_rollback").test(
            run_conf={"app": "demo-web", "reason": "INC-26: 5xx on what runs now (asked before A went live)"}
        )
        a.wait()
    assert a.result and a.result[1] == "success", a.output[-3000:]
    records = {r["pipeline_run"]: r for r in ledger_records(sb)}
    a_rec = records[a.result[0]]
    asked = RollbackTarget.from_xcom(_xcom(rb, "preflight", key="rollback_target"))  # what preflight proposed
    assert asked.current_release_id in before and set(asked.current_amis.values()) == live_when_asked  # asked before A

    states = task_states(rb)
    assert rb.state == "failed" and states["release_lock"] == "success", states
    assert states["mark_rolled_back"] == "failed", states
    # the bake ran beside the check and the mark (dag.test: one task at a time, before or after the mark):
    # stopped by the refusal, or its AMI deregistered by record — nothing it built is kept
    assert states["bake"] in ("success", "failed"), states
    assert states["smoke_test"] == states["apply_infrastructure"] == "upstream_failed", states
    words = failure(rb, "mark_rolled_back")
    assert words == (
        f"PreflightError: 9.1.0 ({a_rec['release_id']}) went live at {a_rec['finished_at']}, after you asked to roll "
        f"back {asked.current_version} ({asked.current_release_id}); nothing was marked or held by this "
        "rollback and nothing it built is kept. Trigger ami_rollback again to roll back 9.1.0 Fix: look at what "
        "runs now (Releases page, or python -m amirelease.cli history demo-web) and trigger ami_rollback again if "
        "you still need to roll back"
    ), words

    # nothing marked or held, nothing built, no record of the refused rollback, the lock released
    after = {r["release_id"]: r for r in ledger_records(sb)}
    assert set(after) == set(before) | {a_rec["release_id"]}, "the refused rollback wrote a ledger record"
    # A's own record step may move AWS's deregistration protection to its newest releases
    # (protection.py: it lifts it from a release that fell out of the protected ones, and says so
    # in that release's record); whether it does depends on how many releases the shared fleet
    # has. Everything else in every earlier record must be as it was.
    moved_by_a = {"deregistration_protection"}
    changed = {
        rid: {
            k: (rec.get(k), after[rid].get(k))
            for k in (set(rec) | set(after[rid])) - moved_by_a
            if rec.get(k) != after[rid].get(k)
        }
        for rid, rec in before.items()
    }
    changed = {rid: diff for rid, diff in changed.items() if diff}
    assert changed == {}, f"a record changed: {changed}"
    assert not after[a_rec["release_id"]]["rolled_back"] and not after[a_rec["release_id"]]["forensic_hold"]
    assert {i["ImageId"] for i in _images(sb) if "ForensicHold" in _tags(i)} == holds_before
    assert run_images(sb, rb.run_id) == []
    assert not a.lock_held()
    assert group_images(sb) == set(a_rec["amis"].values())  # A is what runs
    assert ledger_tells_the_truth(sb, since) == []

    # asked again now, the rollback's re-check under the lock agrees with what runs
    again = resolve_target(
        AwsClients(region_name="us-east-1"),
        Ledger(s3, LEDGER_BUCKET),
        "demo-web",
        {"reason": "INC-26: now roll back 9.1.0"},
        logging.getLogger("test"),
    )
    assert again.current_release_id == a_rec["release_id"]
    MarkRolledBackOperator(task_id="mark_rolled_back", resolved=again.to_xcom(), region_name="us-east-1").recheck(again)
    assert s3.list_objects_v2(Bucket=LEDGER_BUCKET, Prefix="locks/").get("KeyCount", 0) == 0


def _xcom(dr, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = session.query(XComModel).filter_by(run_id=dr.run_id, task_id=task_id, key=key).one().value
    return json.loads(value) if isinstance(value, str) else value
