"""A version is released once (issue 26): which releases count, the words of a refusal, how a
rebuild is shown, and which of several releases of a version a rollback takes. Pure: no AWS."""

from __future__ import annotations

from amirelease.cli import format_history
from amirelease.ledger import already_released, choice_words, pick_rollback_target, released_words, ways_on
from amirelease.operators.record import refused
from amirelease.ui.present import kind_label
from tests.unit.test_rollback_targets import rec


def test_a_succeeded_release_counts_a_failed_one_does_not():
    h = [rec("r1", "1.1.0", "failed", n=1), rec("r2", "1.2.0", n=2)]
    assert already_released(h, "1.1.0") is None  # its releases all failed: it may be tried again
    assert already_released(h, "1.2.0")["release_id"] == "r2"
    assert already_released(h, "1.2.0", besides="r2") is None  # a run never refuses itself
    h.append({**rec("r3", "1.1.0", n=3), "kind": "rebuild", "rebuild_of": "r0"})
    assert already_released(h, "1.1.0")["release_id"] == "r3"  # a succeeded rebuild counts too
    assert already_released(h, "1.10.0") is None  # text, not a prefix
    h.append(rec("r4", "1.2.0", n=4))  # the ledger already holds two of 1.2.0 (before issue 26): the newest
    assert already_released(h, "1.2.0")["release_id"] == "r4"


def test_the_refusal_names_the_release_and_the_two_ways_on():
    existing = {**rec("demo-web-1.1.0-abc", "1.1.0", n=5), "amis": {"us-east-1": "ami-0123"}}
    existing.update(dag_id="ami_release", pipeline_run="demo-web_1.1.0__2026-12-04T02:46:58Z")
    words = released_words("demo-web", existing)
    assert words == (
        "demo-web 1.1.0 was already released: release demo-web-1.1.0-abc (finished 2026-01-01T00:05:30Z, "
        "AMI ami-0123, run ami_release/demo-web_1.1.0__2026-12-04T02:46:58Z)"
    )
    fix = ways_on("1.1.0")
    assert "ami_rollback with target 1.1.0" in fix and "'rebuild' ticked" in fix and "reason" in fix


def test_a_rollback_by_version_takes_the_newest_succeeded_and_says_so():
    h = [
        rec("r1", "1.1.0", n=1),
        rec("r2", "1.2.0", n=2),
        rec("r3", "1.1.0", n=3),
        rec("r4", "1.1.0", "failed", n=4),
        rec("r5", "1.3.0", n=5),
    ]
    target = pick_rollback_target(h, "r5", "1.1.0")
    assert target["release_id"] == "r3"
    words = choice_words(h, "1.1.0", target)
    assert words is not None and "2 succeeded releases of 1.1.0" in words and "Taking the newest, r3" in words
    assert "release id as the target" in words
    # a release id picks exactly that one, and there is nothing to explain
    by_id = pick_rollback_target(h, "r5", "r1")
    assert by_id["release_id"] == "r1" and choice_words(h, "r1", by_id) is None
    assert choice_words(h, "1.2.0", pick_rollback_target(h, "r5", "1.2.0")) is None  # only one
    assert choice_words(h, None, pick_rollback_target(h, "r5")) is None  # empty target


def test_a_rebuild_is_shown_as_a_rebuild():
    h = [rec("r1", "1.1.0", n=1), {**rec("r2", "1.1.0", n=2), "kind": "rebuild", "rebuild_of": "r1"}]
    h[1]["rebuild_reason"] = "CVE-2026-1234: today's base image"
    table = format_history(h)
    line = next(x for x in table.splitlines() if " r2 " in x)
    assert "rebuild of r1" in line and "CVE-2026-1234" in line, table
    by_id = {r["release_id"]: r for r in h}
    assert kind_label(h[1], by_id) == "rebuild of 1.1.0 (r1)"
    assert kind_label(h[0], by_id) == "release"


def test_a_refusal_under_the_lock_is_a_refusal_only_when_typed():
    before = {"preflight", "check_infrastructure"}
    assert refused("preflight", None, before)
    assert refused("release_lock", "PreflightError: demo-web 1.1.0 was already released…", before)
    assert refused("mark_rolled_back", "PreflightError: 1.2.0 went live at …", before)
    assert not refused("release_lock", "AirflowSensorTimeout: …", before)  # a lock never got: a failed release
    assert not refused("mark_rolled_back", "ClientError: …", before)  # failed half-way: recorded
    assert not refused("bake", "PreflightError: …", before)


def test_a_rollback_stops_in_words_when_what_runs_changed_since_it_was_asked():
    from amirelease.handoffs import BundleRef, RollbackTarget
    from amirelease.operators.rollback import went_live_words

    asked = RollbackTarget(
        app="demo-web",
        version="1.1.0",
        target_release_id="r110",
        bundle=BundleRef(key="k", sha256="0" * 64),
        git_ref=None,
        current_release_id="r115",
        current_version="1.1.5",
        current_amis={"us-east-1": "ami-115"},
    )
    history = [{**rec("r120", "1.2.0", n=9), "finished_at": "2026-12-04T02:49:59Z"}]
    same = {"amis": {"us-east-1": "ami-115"}, "release_id": "r115", "version": "1.1.5"}
    assert went_live_words(asked, same, history) is None
    moved = {"amis": {"us-east-1": "ami-120"}, "release_id": "r120", "version": "1.2.0"}
    assert went_live_words(asked, moved, history) == (
        "1.2.0 (r120) went live at 2026-12-04T02:49:59Z, after you asked to roll back 1.1.5 (r115); nothing was "
        "marked or held by this rollback and nothing it built is kept. Trigger ami_rollback again to roll back 1.2.0"
    )
    # nothing of ours ran when asked: the AMIs are what is compared
    foreign = RollbackTarget.from_xcom({**asked.to_xcom(), "current_release_id": None, "current_version": None})
    assert went_live_words(foreign, {**same, "release_id": None, "version": None}, history) is None
    words = went_live_words(foreign, moved, history)
    assert words is not None and words.startswith("1.2.0 (r120) went live at 2026-12-04T02:49:59Z, after you asked")
    assert "roll back what ran then (ami-115)" in words
    other = {"amis": {"us-east-1": "ami-999"}, "release_id": None, "version": None}  # another AMI not of ours
    words = went_live_words(foreign, other, history)
    assert words is not None and words.startswith("an AMI this pipeline did not build went live, after you asked")
    assert words.endswith("Trigger ami_rollback again to roll back what runs now")


def _story(marked: str) -> list[dict]:
    """The issue's scenario: 1.1.0, 1.1.5, then a rollback asked while 1.2.0 baked; 1.2.0 went
    live at 02:49:59 and the rollback's re-release of 1.1.0 replaced it at 02:51:22."""
    from amirelease.ledger import rolled_back_entry

    h = [
        {**rec("r110", "1.1.0", n=1), "amis": {"us-east-1": "ami-110"}, "dag_id": "ami_release"},
        {**rec("r115", "1.1.5", n=2), "amis": {"us-east-1": "ami-115"}, "dag_id": "ami_release"},
        {**rec("r120", "1.2.0", n=3), "amis": {"us-east-1": "ami-120"}, "dag_id": "ami_release"},
        {**rec("rb", "1.1.0", n=4, re_release_of="r110"), "kind": "re-release", "dag_id": "ami_rollback"},
    ]
    h[3]["amis"] = {"us-east-1": "ami-rb"}
    entry = rolled_back_entry(at="t", by_run="rollback_run", by_dag="ami_rollback", by_release_id="rb", reason="x")
    next(r for r in h if r["release_id"] == marked)["rolled_back"] = entry
    return h


def test_the_ledger_invariant_catches_the_issues_story():
    from tests.release.invariant import story_problems

    fleet = {"ami-rb"}
    assert story_problems(_story("r120"), fleet, fleet) == []  # the truth: 1.2.0 was replaced
    wrong = story_problems(_story("r115"), fleet, fleet)  # what happened before issue 26
    assert any("1.1.5 (r115) is marked rolled back by rb, which replaced 1.2.0 (r120)" in p for p in wrong), wrong
    assert any("replaced 1.2.0 (r120), which is not marked rolled back by it" in p for p in wrong), wrong
    stale = story_problems(_story("r120"), {"ami-120"}, {"ami-rb"})
    assert stale and "the fleet runs ['ami-120']" in stale[0], stale
